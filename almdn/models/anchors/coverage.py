"""Anchor coverage of a dataset's boxes: the boxes, the model's anchors at its input size, the
coverage measurement and the small-object warning (see :mod:`almdn.models.anchors`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

#: SSD's positive-match IoU (lambda_G of Eq. 3): a box whose best anchor is below it has no
#: positive anchor but its own best one.
DEFAULT_IOU_THRESHOLD = 0.5
#: Coverage below which training warns.
DEFAULT_MIN_COVERAGE = 0.5
#: Boxes used by a coverage measurement (a deterministic sample above it) and images read.
MAX_BOXES = 20_000
MAX_IMAGES = 5_000


class AnchorCoverageWarning(UserWarning):
    """Few training boxes have an anchor that overlaps them well (small objects, usually)."""


# ------------------------------------------------------------------------- the boxes

@dataclass
class BoxSet:
    """Ground-truth boxes ``(N, 4)`` in image pixels and each box's image ``(height, width)``."""

    boxes: Tensor
    image_hw: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _image_hw(dataset: Any, index: int) -> tuple[float, float] | None:
    """The (height, width) an image decodes to, from the annotation file or its header."""
    size = dataset.image_sizes[index] if getattr(dataset, "image_sizes", None) is not None else None
    if size is None:
        from PIL import Image

        try:
            with Image.open(dataset.file_paths[index]) as im:
                size = (im.height, im.width)
        except (OSError, ValueError, AttributeError, IndexError):
            return None
    h, w = float(size[0]), float(size[1])
    if getattr(dataset, "max_side", None) and hasattr(dataset, "decode_scale"):
        sx, sy = dataset.decode_scale(index)
        h, w = h * sy, w * sx
    return h, w


def training_boxes(dataset: Any, max_images: int | None = MAX_IMAGES, seed: int = 0) -> BoxSet | None:
    """The boxes of a detection dataset without decoding any image: a
    :class:`~almdn.data.coco.CocoDetectionDataset` (or a ``torch.utils.data.Subset`` of one),
    which gives targets and image sizes cheaply. None for a dataset that cannot (the check is
    then skipped rather than decoding every image). Above ``max_images`` a seeded sample."""
    indices: Sequence[int] | None = None
    if isinstance(dataset, torch.utils.data.Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    if not (hasattr(dataset, "target") and hasattr(dataset, "image_sizes")):
        return None
    indices = list(range(len(dataset))) if indices is None else indices
    if max_images is not None and len(indices) > max_images:
        picked = np.random.default_rng(seed).choice(len(indices), max_images, replace=False)
        indices = [indices[i] for i in sorted(picked)]
    boxes, sizes = [], []
    for i in indices:
        b = dataset.target(i)["boxes"]
        if b.numel() == 0:
            continue
        hw = _image_hw(dataset, i)
        if hw is None:
            continue
        boxes.append(b.reshape(-1, 4).float())
        sizes.append(torch.tensor([hw], dtype=torch.float32).expand(b.shape[0], 2))
    if not boxes:
        return BoxSet(torch.zeros(0, 4), torch.zeros(0, 2))
    return BoxSet(torch.cat(boxes), torch.cat(sizes))


def _sample(box_set: BoxSet, max_boxes: int | None, seed: int = 0) -> BoxSet:
    if max_boxes is None or len(box_set) <= max_boxes:
        return box_set
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(box_set), generator=g)[:max_boxes].sort().values
    return BoxSet(box_set.boxes[idx], box_set.image_hw[idx])


# --------------------------------------------------------------- the model's side

def is_ssd(model: nn.Module) -> bool:
    return isinstance(getattr(model, "anchor_generator", None), DefaultBoxGenerator)


def is_faster_rcnn(model: nn.Module) -> bool:
    return hasattr(getattr(model, "rpn", None), "anchor_generator")


def model_input(model: nn.Module, box_set: BoxSet) -> tuple[Tensor, Tensor]:
    """Boxes in the pixels of the model's input, and each box's input (padded batch) size
    ``(height, width)``, resized as the model's transform resizes the image."""
    h, w = box_set.image_hw[:, 0], box_set.image_hw[:, 1]
    if is_ssd(model):  # fixed (H, W) resize, aspect ratio not kept
        size_h, size_w = (float(v) for v in model.size)
        new_h, new_w = torch.full_like(h, size_h), torch.full_like(w, size_w)
        padded = torch.stack([new_h, new_w], 1)
    elif is_faster_rcnn(model):  # torchvision's GeneralizedRCNNTransform, at evaluation's size
        t = model.transform
        min_size = float(t.min_size[-1])
        scale = torch.minimum(min_size / torch.minimum(h, w), float(t.max_size) / torch.maximum(h, w))
        new_h, new_w = torch.floor(h * scale), torch.floor(w * scale)
        d = float(getattr(t, "size_divisible", 32) or 1)
        padded = torch.stack([torch.ceil(new_h / d) * d, torch.ceil(new_w / d) * d], 1)
    else:
        raise TypeError(f"Anchor coverage needs an SSD or Faster R-CNN model, not {type(model).__name__}.")
    ratio = torch.stack([new_w / w, new_h / h, new_w / w, new_h / h], 1)
    return box_set.boxes * ratio, padded


class _Modes:
    """Evaluation mode inside the block, every module's own mode restored after it (a model
    may keep frozen parts in eval mode while training)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


@torch.no_grad()
def feature_shapes(model: nn.Module, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """The (height, width) of every feature map the anchors are tiled on, for one input size
    (one backbone pass over a blank image, the model left exactly as it was)."""
    param = next(model.parameters())
    x = torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]), device=param.device, dtype=param.dtype)
    with _Modes(model):
        features = model.backbone(x)
    maps = list(features.values()) if isinstance(features, dict) else list(features)
    return [tuple(int(v) for v in f.shape[-2:]) for f in maps]


def grid_anchors(generator: nn.Module, shapes: Sequence[tuple[int, int]], input_hw: tuple[int, int]) -> Tensor:
    """Every anchor ``(A, 4)`` (xyxy, input pixels) ``generator`` tiles on feature maps of
    ``shapes`` for an input of ``input_hw``; only shapes are read, so blank tensors stand in."""
    h, w = int(input_hw[0]), int(input_hw[1])
    image_list = ImageList(torch.empty(1, 1, h, w), [(h, w)])
    feats = [torch.empty(1, 1, fh, fw) for fh, fw in shapes]
    return generator(image_list, feats)[0]


def _generator(model: nn.Module) -> nn.Module:
    return model.anchor_generator if is_ssd(model) else model.rpn.anchor_generator


def best_anchor_iou(boxes: Tensor, anchors: Tensor, chunk_elements: int = 1 << 24) -> Tensor:
    """``(N,)``: each box's highest IoU with any anchor, ``box_iou`` over chunks of boxes
    (about ``chunk_elements`` IoU values at a time, so a big anchor set stays in memory)."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros(0)
    rows = max(1, chunk_elements // max(1, anchors.shape[0]))
    return torch.cat([box_iou(part, anchors).amax(1) for part in boxes.split(rows)])


# ------------------------------------------------------------------------ coverage

@dataclass
class AnchorCoverage:
    """How well a model's anchors cover a set of boxes.

    Attributes:
        fraction: boxes whose best anchor IoU is >= ``threshold``.
        median_iou: median best anchor IoU.
        threshold: the IoU threshold.
        num_boxes: boxes measured.
        median_box: median box side ``sqrt(w h)`` at the model's input, pixels.
        smallest_anchor: smallest anchor side (the shorter side of its smallest box), pixels.
        input_size: the model's input ``(height, width)`` (SSD) or the most common padded size
            (Faster R-CNN).
        family: "ssd" or "frcnn".
        best_iou: each measured box's best anchor IoU.
    """

    fraction: float
    median_iou: float
    threshold: float
    num_boxes: int
    median_box: float
    smallest_anchor: float
    input_size: tuple[int, int]
    family: str
    best_iou: Tensor = field(repr=False)

    def summary(self) -> str:
        return (f"{self.fraction:.0%} of {self.num_boxes} boxes have an anchor with IoU >= {self.threshold:g} "
                f"(median best IoU {self.median_iou:.2f})")


def _coverage(best: Tensor, inputs: Tensor, boxes: Tensor, anchors_min_side: float, threshold: float, family: str) -> AnchorCoverage:
    n = int(best.numel())
    sides = ((boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)).sqrt()
    common = torch.unique(inputs, dim=0, return_counts=True)
    input_size = tuple(int(v) for v in common[0][common[1].argmax()]) if n else (0, 0)
    return AnchorCoverage(
        fraction=float((best >= threshold).float().mean()) if n else 1.0,
        median_iou=float(best.median()) if n else float("nan"),
        threshold=float(threshold),
        num_boxes=n,
        median_box=float(sides.median()) if n else float("nan"),
        smallest_anchor=anchors_min_side,
        input_size=input_size,  # type: ignore[arg-type]
        family=family,
        best_iou=best,
    )


def _anchor_sets(model: nn.Module, generator: nn.Module, inputs: Tensor, shapes_cache: dict | None = None):
    """(index of the boxes, anchors) per distinct input size."""
    shapes_cache = {} if shapes_cache is None else shapes_cache
    sizes, inverse = torch.unique(inputs, dim=0, return_inverse=True)
    for k, hw in enumerate(sizes.tolist()):
        key = (int(hw[0]), int(hw[1]))
        if key not in shapes_cache:
            shapes_cache[key] = feature_shapes(model, key)
        yield (inverse == k).nonzero(as_tuple=True)[0], grid_anchors(generator, shapes_cache[key], key)


def anchor_coverage(
    model: nn.Module,
    data: Any,
    threshold: float = DEFAULT_IOU_THRESHOLD,
    max_boxes: int | None = MAX_BOXES,
    generator: nn.Module | None = None,
) -> AnchorCoverage | None:
    """Anchor coverage of ``data``'s boxes (a dataset, see :func:`training_boxes`, or a
    :class:`BoxSet`) for ``model`` (an SSD or a Faster R-CNN of :mod:`almdn.models`), with its
    own anchors or ``generator``'s. None when the dataset cannot give its boxes cheaply."""
    box_set = data if isinstance(data, BoxSet) else training_boxes(data)
    if box_set is None:
        return None
    box_set = _sample(box_set, max_boxes)
    boxes, inputs = model_input(model, box_set)
    generator = generator if generator is not None else _generator(model)
    best = torch.zeros(len(box_set))
    smallest = float("inf")
    for idx, anchors in _anchor_sets(model, generator, inputs):
        best[idx] = best_anchor_iou(boxes[idx], anchors.to(boxes))
        smallest = min(smallest, float(torch.minimum(anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]).min()))
    return _coverage(best, inputs, boxes, smallest, threshold, "ssd" if is_ssd(model) else "frcnn")


def coverage_message(
    coverage: AnchorCoverage, min_coverage: float = DEFAULT_MIN_COVERAGE, anchors_set: bool = False, advice: str | None = None,
) -> str | None:
    """The warning sentence for a coverage below ``min_coverage`` (None otherwise);
    ``anchors_set``: the model's anchors were already chosen or fitted (so only the input
    size is left to advise); ``advice``: what the user can do, in the words of where the model
    is set up (a project's rounds have settings, not command-line options), instead of the
    command-line options."""
    if coverage.num_boxes == 0 or coverage.fraction >= min_coverage:
        return None
    h, w = coverage.input_size
    what = (
        f"Only {coverage.summary()}; the median box is {coverage.median_box:.0f} px at the model's {w}x{h} input "
        f"and its smallest anchor {coverage.smallest_anchor:.0f} px"
    )
    if advice is None:
        advice = _option_advice(coverage.family, anchors_set)
    return f"{what}. Objects this small are matched poorly and will be missed: {advice}."


def _option_advice(family: str, anchors_set: bool) -> str:
    """What to do, in ``almdn train``'s options and the experiment config's keys."""
    if anchors_set:
        return (
            "its anchors are already set or fitted, so a larger --image-size (a finer anchor grid, larger objects in pixels) "
            "is what is left (experiment config: image_size in the model section)"
        )
    if family == "ssd":
        return (
            "train with --fit-anchors (fits the anchor scales and ratios to these boxes), or set --anchor-scales / "
            "--anchor-ratios yourself, and a larger --image-size for a finer anchor grid (experiment config: "
            "fit_anchors, anchor_scales, anchor_ratios, image_size in the model section)"
        )
    return (
        "set smaller --anchor-scales (RPN anchor sizes as fractions of the input's shorter side, one per level) or a "
        "larger --image-size (experiment config: anchor_scales, image_size in the model section)"
    )


def _measure(model: nn.Module, data: Any, min_coverage: float, threshold: float, advice: str | None) -> tuple[AnchorCoverage | None, str | None]:
    """The coverage and its warning sentence (None, None for a model without anchors)."""
    if not (is_ssd(model) or is_faster_rcnn(model)):
        return None, None
    coverage = anchor_coverage(model, data, threshold=threshold)
    config = getattr(model, "config", None) or {}
    anchors_set = any(config.get(k) is not None for k in ("anchor_scales", "anchor_ratios", "anchor_sizes"))
    return coverage, coverage_message(coverage, min_coverage, anchors_set, advice) if coverage is not None else None


def check_anchor_coverage(
    model: nn.Module,
    data: Any,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    threshold: float = DEFAULT_IOU_THRESHOLD,
    advice: str | None = None,
) -> AnchorCoverage | None:
    """Measure the anchor coverage and warn (:class:`AnchorCoverageWarning`) below
    ``min_coverage``; returns the coverage (None where it cannot be measured)."""
    coverage, message = _measure(model, data, min_coverage, threshold, advice)
    if message:
        warnings.warn(AnchorCoverageWarning(message), stacklevel=2)
    return coverage


def not_checked(exc: BaseException) -> str:
    """The sentence for a coverage check that failed (a diagnostic never stops what it checks)."""
    return f"Anchor coverage was not checked ({type(exc).__name__}: {exc})."


def coverage_warning(
    model: nn.Module,
    data: Any,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    threshold: float = DEFAULT_IOU_THRESHOLD,
    advice: str | None = None,
) -> str | None:
    """The warning sentence of :func:`check_anchor_coverage`, returned instead of issued, for
    callers that must go on whatever happens and show it their own way (a training run, a
    project's import or round, the app). Never raises: a failure to measure is itself the
    sentence (:func:`not_checked`)."""
    try:
        return _measure(model, data, min_coverage, threshold, advice)[1]
    except Exception as exc:  # noqa: BLE001 - a diagnostic never breaks what it checks
        return not_checked(exc)


