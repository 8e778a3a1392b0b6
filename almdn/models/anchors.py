"""Anchor coverage of a dataset's boxes, the small-object warning, and anchor fitting.

A detector can only learn a box that some anchor (SSD's default box, Faster R-CNN's RPN
anchor) overlaps well: SSD matches an anchor to a ground-truth box at IoU >= 0.5 (plus each
box's best anchor). When the dataset's objects are much smaller than the smallest anchor
(300 px aerial photos of trees in a 320 px MobileNetV2 SSD, whose smallest anchor side is about
37 px), most boxes have no such anchor and training quietly learns little about them.

* :func:`anchor_coverage` measures it: every training box is resized the way the model's
  transform resizes its image (SSD: a fixed square resize; Faster R-CNN: shorter side to
  ``min_size``, capped by ``max_size``, padded to a multiple of 32), compared with every anchor
  the model generates at that input size (one ``box_iou`` per chunk of boxes, no loop over
  anchors), and summarised as the fraction of boxes whose best anchor IoU reaches a threshold
  and the median best IoU.
* :func:`check_anchor_coverage` warns (:class:`AnchorCoverageWarning`, with the numbers and
  the options to use) below a coverage threshold; training calls it when a run starts.
  :func:`coverage_warning` returns that sentence instead, and never raises, for callers that
  show it their own way (a project's import and rounds: :mod:`almdn.workflow`, the app).
* :func:`fit_anchors` fits an SSD's anchor scales (one per feature level, plus the last
  level's upper scale, kept increasing) and aspect ratios (as many per level as the model has,
  so the head keeps its shape) to the boxes, as YOLO's autoanchor does: a data-driven start
  (quantiles of the boxes' sizes and elongations) refined by a seeded mutation search whose
  fitness is the coverage itself, measured with the real anchor grid. The result is kept only
  if it covers more boxes than the model's own anchors.

The options reach :func:`almdn.models.build_model` as ``anchor_scales`` (fractions of the input
side) and ``anchor_ratios`` (per level, or one list for every level) and are stored in the
model's config, so a checkpoint rebuilds the same anchors.
"""

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


# ----------------------------------------------------------------------------- options

def parse_anchor_scales(text: str | None) -> list[float] | None:
    """``"0.05,0.1,0.2"`` -> ``[0.05, 0.1, 0.2]`` (None / empty -> None)."""
    if text is None or not str(text).strip():
        return None
    try:
        return [float(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"Anchor scales {text!r} are not comma-separated numbers (e.g. 0.04,0.1,0.2,0.4).") from None


def parse_anchor_ratios(text: str | None) -> list[float] | list[list[float]] | None:
    """``"2,3"`` (every level) or ``"2;2,3;2"`` (per level, ``;`` between levels)."""
    if text is None or not str(text).strip():
        return None
    try:
        levels = [[float(v) for v in part.split(",") if v] for part in str(text).replace(" ", "").split(";")]
    except ValueError:
        raise ValueError(f"Anchor ratios {text!r} are not comma-separated numbers (e.g. 2,3 or 2;2,3;2 per level).") from None
    return levels[0] if len(levels) == 1 else levels


def ssd_anchor_generator(
    base: DefaultBoxGenerator,
    arch: str,
    anchor_scales: Sequence[float] | None = None,
    anchor_ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
) -> DefaultBoxGenerator:
    """``base`` (an architecture's default anchors) with its scales and/or aspect ratios
    replaced; ``base`` itself when neither is given (the default model is untouched).

    ``anchor_scales``: L+1 increasing fractions of the input side for L feature levels (level
    k's square anchors have sides s_k and sqrt(s_k s_k+1), SSD's rule). ``anchor_ratios``: one
    list for every level or one list per level; each ratio r >= 1 adds boxes r:1 and 1:r.
    """
    if anchor_scales is None and anchor_ratios is None:
        return base
    levels = len(base.aspect_ratios)
    scales = list(base.scales) if anchor_scales is None else [float(s) for s in anchor_scales]
    if len(scales) != levels + 1:
        raise ValueError(
            f"{arch} has {levels} feature levels: give {levels + 1} anchor scales (one per level plus the last "
            f"level's upper scale, increasing fractions of the input side), not {len(scales)}."
        )
    if any(s <= 0 for s in scales) or any(b < a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"Anchor scales {scales} must be positive and increasing.")
    if anchor_ratios is None:
        ratios = [list(r) for r in base.aspect_ratios]
    elif all(isinstance(r, (int, float)) for r in anchor_ratios):
        ratios = [[float(r) for r in anchor_ratios] for _ in range(levels)]
    else:
        ratios = [[float(r) for r in level] for level in anchor_ratios]  # type: ignore[union-attr]
        if len(ratios) != levels:
            raise ValueError(f"{arch} has {levels} feature levels: give one list of anchor ratios, or {levels} lists (one per level).")
    if any(r <= 0 for level in ratios for r in level):
        raise ValueError(f"Anchor ratios {ratios} must be positive.")
    return DefaultBoxGenerator(ratios, scales=scales, steps=base.steps, clip=base.clip)


def normalized_ratios(anchor_ratios: Any) -> list[float] | list[list[float]] | None:
    """Anchor ratios as plain floats (lists kept as lists) for a model's config."""
    if anchor_ratios is None:
        return None
    if all(isinstance(r, (int, float)) for r in anchor_ratios):
        return [float(r) for r in anchor_ratios]
    return [[float(r) for r in level] for level in anchor_ratios]


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


# ------------------------------------------------------------------------- fitting

def _grid_best_iou(boxes: Tensor, generator: DefaultBoxGenerator, shapes: Sequence[tuple[int, int]], input_hw: tuple[int, int]) -> Tensor:
    """The same value as ``best_anchor_iou(boxes, grid_anchors(generator, shapes, input_hw))``
    without forming every box-anchor pair: on a grid of same-sized anchors the IoU with an
    axis-aligned box falls with the centre distance along x and along y separately, so the best
    anchor of each (level, width-height pair) is the one at the grid centre nearest the box's
    centre. Costs N x (anchors per location, summed over levels) instead of N x A."""
    h, w = float(input_hw[0]), float(input_hw[1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    best = boxes.new_zeros(boxes.shape[0])
    for k, (fh, fw) in enumerate(shapes):
        if generator.steps is not None:
            x_f, y_f = w / generator.steps[k], h / generator.steps[k]
        else:
            x_f, y_f = float(fw), float(fh)
        # centres at (j + 0.5) / f of the side (DefaultBoxGenerator), nearest one per box
        jx = torch.clamp(torch.round(cx / w * x_f - 0.5), 0, fw - 1)
        jy = torch.clamp(torch.round(cy / h * y_f - 0.5), 0, fh - 1)
        ax, ay = (jx + 0.5) / x_f * w, (jy + 0.5) / y_f * h
        wh = generator._wh_pairs[k].to(boxes)
        wh = wh.clamp(0, 1) if generator.clip else wh
        aw, ah = wh[:, 0] * w, wh[:, 1] * h  # (P,)
        ix = (torch.minimum(boxes[:, 2:3], ax[:, None] + aw / 2) - torch.maximum(boxes[:, 0:1], ax[:, None] - aw / 2)).clamp_min(0)
        iy = (torch.minimum(boxes[:, 3:4], ay[:, None] + ah / 2) - torch.maximum(boxes[:, 1:2], ay[:, None] - ah / 2)).clamp_min(0)
        inter = ix * iy
        iou = inter / (area[:, None] + aw * ah - inter)
        best = torch.maximum(best, iou.amax(1))
    return best


@dataclass
class AnchorFit:
    """Fitted SSD anchors and the coverage of the same boxes before and after.

    ``anchor_scales`` / ``anchor_ratios`` are :func:`almdn.models.build_model`'s keywords;
    ``improved`` is False when the model's own anchors were kept (nothing covered more)."""

    anchor_scales: list[float]
    anchor_ratios: list[list[float]]
    before: AnchorCoverage
    after: AnchorCoverage
    improved: bool

    def build_options(self) -> dict[str, Any]:
        return {"anchor_scales": self.anchor_scales, "anchor_ratios": self.anchor_ratios} if self.improved else {}

    def summary(self) -> str:
        if not self.improved:
            return f"Anchor fit kept the model's anchors ({self.before.summary()}; no fit covered more)."
        scales = ",".join(f"{s:.6g}" for s in self.anchor_scales)
        ratios = ";".join(",".join(f"{r:.6g}" for r in level) for level in self.anchor_ratios)
        text = (f"Anchors fitted to {self.before.num_boxes} boxes: coverage {self.before.fraction:.0%} -> {self.after.fraction:.0%}, "
                f"median best IoU {self.before.median_iou:.2f} -> {self.after.median_iou:.2f} "
                f"(the same as --anchor-scales {scales} --anchor-ratios '{ratios}').")
        if self.after.fraction < 0.8:
            text += " A larger --image-size gives objects this small a finer anchor grid."
        return text


def _quantile_start(boxes: Tensor, input_hw: tuple[int, int], levels: int, counts: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scales at evenly spaced quantiles of the boxes' sizes (fractions of the input side)
    and ratios at quantiles of their elongations max(w/h, h/w)."""
    h, w = input_hw
    nw = ((boxes[:, 2] - boxes[:, 0]) / w).clamp_min(1e-4).numpy()
    nh = ((boxes[:, 3] - boxes[:, 1]) / h).clamp_min(1e-4).numpy()
    sizes = np.sqrt(nw * nh)
    scales = np.quantile(sizes, (np.arange(levels + 1) + 0.5) / (levels + 1))
    elong = np.exp(np.abs(np.log(nw / nh)))
    ratios = [np.quantile(elong, (np.arange(c) + 0.5) / c) if c else np.zeros(0) for c in counts]
    return scales, ratios


def fit_anchors(
    model: nn.Module,
    data: Any,
    threshold: float = DEFAULT_IOU_THRESHOLD,
    generations: int = 1000,
    sample: int = 5000,
    sigma: float = 0.15,
    seed: int = 0,
    max_boxes: int | None = MAX_BOXES,
) -> AnchorFit:
    """Fit an SSD's anchor scales and ratios to the boxes of ``data`` (autoanchor).

    The search vector is every level's scale (L+1, increasing, in fractions of the input side)
    and every level's aspect ratios (as many as the model has, >= 1). It starts from the better
    of the model's anchors and the boxes' quantiles (:func:`_quantile_start`) and mutates them
    multiplicatively (log-normal, ``sigma``) for ``generations`` steps, keeping a mutation when
    its fitness ``coverage + 0.25 * mean best IoU`` (on a ``sample`` of the boxes, the real
    anchor grid) is higher. Returns :class:`AnchorFit`; coverage before/after is measured on
    all (up to ``max_boxes``) boxes, and the fit is kept only where it covers more of them.
    """
    if not is_ssd(model):
        raise ValueError(
            "Anchor fitting is implemented for the SSD architectures; for Faster R-CNN set the RPN anchor sizes "
            "(--anchor-scales) and --image-size yourself."
        )
    box_set = data if isinstance(data, BoxSet) else training_boxes(data)
    if box_set is None or len(box_set) == 0:
        raise ValueError("Anchor fitting needs a dataset with boxes.")
    box_set = _sample(box_set, max_boxes)
    boxes, inputs = model_input(model, box_set)
    input_hw = (int(inputs[0, 0]), int(inputs[0, 1]))
    shapes = feature_shapes(model, input_hw)
    base: DefaultBoxGenerator = model.anchor_generator
    levels = len(base.aspect_ratios)
    counts = [len(r) for r in base.aspect_ratios]
    fit_boxes = _sample(BoxSet(boxes, inputs), sample, seed).boxes

    def make(scales: np.ndarray, ratios: np.ndarray) -> DefaultBoxGenerator:
        split = np.split(ratios, np.cumsum(counts)[:-1]) if counts else []
        return DefaultBoxGenerator([[float(r) for r in lv] for lv in split], scales=[float(s) for s in scales], steps=base.steps, clip=base.clip)

    def fitness(scales: np.ndarray, ratios: np.ndarray, on: Tensor) -> float:
        best = _grid_best_iou(on, make(scales, ratios), shapes, input_hw)
        return float((best >= threshold).float().mean() + 0.25 * best.mean())

    def clean(scales: np.ndarray, ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.sort(np.clip(scales, 1e-3, 1.5)), np.clip(ratios, 1.0, 8.0)

    own = (np.asarray(base.scales, dtype=float), np.asarray([float(r) for lv in base.aspect_ratios for r in lv], dtype=float))
    q_scales, q_ratios = _quantile_start(fit_boxes, input_hw, levels, counts)
    quant = clean(q_scales, np.concatenate(q_ratios) if counts else np.zeros(0))
    starts = [clean(*own), quant]
    # Also the model's own scale pattern shifted onto the boxes' median size.
    shift = float(np.median(q_scales) / np.median(own[0]))
    starts.append(clean(own[0] * shift, own[1]))
    scored = [(fitness(s, r, fit_boxes), s, r) for s, r in starts]
    best_f, best_s, best_r = max(scored, key=lambda t: t[0])
    rng = np.random.default_rng(seed)
    n_s = best_s.size
    for _ in range(generations):
        vec = np.log(np.concatenate([best_s, best_r]))
        mask = rng.random(vec.size) < 0.5
        if not mask.any():
            mask[rng.integers(vec.size)] = True
        vec = vec + mask * rng.normal(0.0, sigma, vec.size) * rng.random()
        s, r = clean(np.exp(vec[:n_s]), np.exp(vec[n_s:]))
        f = fitness(s, r, fit_boxes)
        if f > best_f:
            best_f, best_s, best_r = f, s, r
    best_s, best_r = np.round(best_s, 5), np.round(best_r, 4)  # what the config stores, measured as stored
    before = anchor_coverage(model, BoxSet(box_set.boxes, box_set.image_hw), threshold, max_boxes=None)
    after = anchor_coverage(model, BoxSet(box_set.boxes, box_set.image_hw), threshold, max_boxes=None, generator=make(best_s, best_r))
    assert before is not None and after is not None
    improved = (after.fraction, after.median_iou) > (before.fraction, before.median_iou)
    if not improved:
        after = before
        best_s, best_r = own
    ratios = np.split(best_r, np.cumsum(counts)[:-1]) if counts else []
    return AnchorFit(
        anchor_scales=[float(s) for s in best_s],
        anchor_ratios=[[float(r) for r in lv] for lv in ratios],
        before=before,
        after=after,
        improved=improved,
    )


def frcnn_anchor_options(
    arch: str,
    image_size: int,
    default_sizes: Sequence[Sequence[int]],
    anchor_scales: Sequence[float] | None,
    anchor_ratios: Sequence[float] | None,
) -> dict[str, Any]:
    """Faster R-CNN's ``anchor_sizes`` / ``aspect_ratios`` from the same options as the SSD's:
    ``anchor_scales`` one per FPN level, fractions of the input's shorter side
    (``image_size``), turned into pixels; ``anchor_ratios`` r >= 1 each giving r:1 and 1:r
    beside the square (torchvision's ratio is height / width)."""
    options: dict[str, Any] = {}
    if anchor_scales is not None:
        scales = [float(s) for s in anchor_scales]
        if len(scales) != len(default_sizes):
            raise ValueError(f"{arch} has {len(default_sizes)} anchor levels: give {len(default_sizes)} anchor scales (fractions of the input's shorter side).")
        if any(s <= 0 for s in scales):
            raise ValueError(f"Anchor scales {scales} must be positive.")
        options["anchor_sizes"] = tuple((max(1, round(s * image_size)),) for s in scales)
    if anchor_ratios is not None:
        if not all(isinstance(r, (int, float)) for r in anchor_ratios):
            raise ValueError(f"{arch} shares its anchor ratios between levels: give one list (e.g. 2,3).")
        if any(r <= 0 for r in anchor_ratios):
            raise ValueError(f"Anchor ratios {list(anchor_ratios)} must be positive.")
        ratios = {1.0} | {float(r) for r in anchor_ratios} | {1.0 / float(r) for r in anchor_ratios}
        options["aspect_ratios"] = tuple(sorted(ratios))
    return options


def apply_fitted_anchors(model: nn.Module, fit: AnchorFit) -> nn.Module:
    """Give ``model`` (an SSD) the fitted anchors in place and record them in ``model.config``.

    The same as building it with ``fit.build_options()``: anchors hold no weights and the fit
    keeps every level's number of ratios, so the head (and any loaded weights) stay as they
    are. Nothing changes when the fit kept the model's own anchors."""
    if not fit.improved:
        return model
    arch = model.config.get("arch", type(model).__name__) if isinstance(getattr(model, "config", None), dict) else type(model).__name__
    generator = ssd_anchor_generator(model.anchor_generator, arch, fit.anchor_scales, fit.anchor_ratios)
    if generator.num_anchors_per_location() != model.anchor_generator.num_anchors_per_location():
        raise ValueError("Fitted anchors must keep the number of anchors per location.")
    model.anchor_generator = generator
    if isinstance(getattr(model, "config", None), dict):
        model.config.update(fit.build_options())
    return model
