"""Training augmentation: SSD's recipe on ``torchvision.transforms.v2`` with box support.

The paper trains SSD with the augmentation of Liu et al. (photometric distortion, zoom-out,
IoU crop, horizontal flip), as torchvision's detection reference scripts do for SSD; Faster
R-CNN gets the horizontal flip only, as in those scripts. Boxes travel as
``tv_tensors.BoundingBoxes``, so every geometric transform moves them with the pixels, and
``SanitizeBoundingBoxes`` drops the boxes a crop cut away (with their labels).

Seeding: every sample's random draws come from its own generator state, seeded by the training
seed and the sample's position in the training stream (see :class:`AugmentedDataset`). The
augmentation of a step is therefore a pure function of (seed, iteration): a resumed run, a run
with data-loading workers and an uninterrupted run see the same images, and the global random
stream that the mixture noise uses is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
import numpy as np
from torchvision import tv_tensors
from torchvision.ops.boxes import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from almdn.registry import AUGMENT_POLICIES, DEFAULT_AUGMENT  # noqa: F401  (AUGMENT_POLICIES: re-exported)

#: One of :data:`almdn.registry.AUGMENT_POLICIES`.
AugmentPolicy = str


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms run, and how strongly.

    Attributes:
        policy: "ssd" (photometric distortion, zoom-out, IoU crop, flip), "flip" (horizontal
            flip only, Faster R-CNN's), "none", or "auto": "ssd" for SSD models, "flip" for
            Faster R-CNN.
        zoom_out_max: largest canvas side as a multiple of the image's (torchvision: 4.0);
            the image is placed at random on a canvas filled with ``fill``.
        zoom_out_p: probability of a zoom-out.
        hflip: flip horizontally with probability 0.5 (off for classes that a mirror changes,
            such as digits).
        fill: RGB fill of the zoom-out canvas, in [0, 1] (the dataset's mean colour).
    """

    policy: AugmentPolicy = DEFAULT_AUGMENT
    zoom_out_max: float = 4.0
    zoom_out_p: float = 0.5
    hflip: bool = True
    fill: tuple[float, float, float] = (0.485, 0.456, 0.406)

    def resolve(self, two_stage: bool) -> str:
        """The concrete policy for a model: "auto" means "flip" for two-stage detectors."""
        if self.policy not in AUGMENT_POLICIES:
            raise ValueError(f"Unknown augmentation {self.policy!r}; choose one of {', '.join(AUGMENT_POLICIES)}.")
        if self.policy == "auto":
            return "flip" if two_stage else "ssd"
        return self.policy


class FastIoUCrop(v2.RandomIoUCrop):
    """``v2.RandomIoUCrop`` with the same random draws and the same result, in a third of its time.

    SSD's IoU crop tries up to 40 crops per sampled IoU option, and with the demo's small
    objects most options fail all 40: torchvision spends ~25 tensor operations on each trial, a
    third of a demo training step on this CPU (``bench/results/train-speed-cpu.md``). Here the
    box format conversion and the box centres are computed once per image, a trial's scale,
    offset and centre tests run on Python and float32 numbers equal to torchvision's tensor
    arithmetic (float32 products and sums, exact integer comparisons), and only a trial that
    passes them computes the IoU, with torchvision's ``box_iou``. The generator is drawn exactly
    as torchvision draws it (one ``randint`` per option, one or two ``rand(2)`` per trial), so
    the crop, the boxes and every later random draw are those of ``v2.RandomIoUCrop``
    (``tests/test_augment.py`` compares the two sample by sample).
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        from torchvision.transforms.v2._utils import get_bounding_boxes, query_size  # torchvision's own RandomIoUCrop reads its inputs with these; no public API

        orig_h, orig_w = query_size(flat_inputs)
        bboxes = get_bounding_boxes(flat_inputs)
        xyxy = F.convert_bounding_box_format(bboxes.as_subclass(torch.Tensor), bboxes.format, tv_tensors.BoundingBoxFormat.XYXY)
        cxs = (0.5 * (xyxy[..., 0] + xyxy[..., 2])).tolist()
        cys = (0.5 * (xyxy[..., 1] + xyxy[..., 3])).tolist()
        f32 = np.float32
        lo, span = f32(self.min_scale), f32(self.max_scale - self.min_scale)
        fw, fh = f32(orig_w), f32(orig_h)
        while True:
            idx = int(torch.randint(low=0, high=len(self.options), size=(1,)))
            min_jaccard_overlap = self.options[idx]
            if min_jaccard_overlap >= 1.0:
                return dict()
            for _ in range(self.trials):
                u0, u1 = torch.rand(2).tolist()
                new_w = int(fw * (lo + span * f32(u0)))
                new_h = int(fh * (lo + span * f32(u1)))
                aspect_ratio = new_w / new_h
                if not (self.min_aspect_ratio <= aspect_ratio <= self.max_aspect_ratio):
                    continue
                u0, u1 = torch.rand(2).tolist()
                left = int(f32(orig_w - new_w) * f32(u0))
                top = int(f32(orig_h - new_h) * f32(u1))
                right, bottom = left + new_w, top + new_h
                if left == right or top == bottom:
                    continue
                within = [left < cx < right and top < cy < bottom for cx, cy in zip(cxs, cys)]
                if not any(within):
                    continue
                is_within_crop_area = torch.tensor(within, dtype=torch.bool)
                ious = box_iou(xyxy[is_within_crop_area], torch.tensor([[left, top, right, bottom]], dtype=xyxy.dtype, device=xyxy.device))
                if ious.max() < min_jaccard_overlap:
                    continue
                return dict(top=top, left=left, height=new_h, width=new_w, is_within_crop_area=is_within_crop_area)


def build_transform(config: AugmentConfig, two_stage: bool = False) -> v2.Transform | None:
    """The transform for ``config`` (None when nothing is to be done)."""
    policy = config.resolve(two_stage)
    steps: list[v2.Transform] = []
    if policy == "ssd":
        steps += [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: list(config.fill), "others": 0}, side_range=(1.0, config.zoom_out_max), p=config.zoom_out_p),
            FastIoUCrop(),
        ]
    if policy in ("ssd", "flip") and config.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if not steps:
        return None
    # IoU crop can leave boxes outside the crop or too thin: drop them with their labels.
    steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(steps)


class AugmentedDataset(Dataset):
    """A detection dataset whose samples pass through ``transform`` with their own seed.

    ``dataset[(index, position)]`` augments sample ``index`` with a generator seeded by
    ``(seed, position)``, ``position`` being the sample's place in the training stream (the
    training sampler yields such pairs); ``dataset[index]`` returns the sample unchanged.
    """

    def __init__(self, dataset: Dataset, transform: v2.Transform, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, position = key
        image, target = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + int(position))
            return augment(image, target, self.transform)


def augment(image: torch.Tensor, target: dict[str, Any], transform: v2.Transform) -> tuple[torch.Tensor, dict[str, Any]]:
    """Apply ``transform`` to a float image ``(3, H, W)`` and its target (``boxes`` xyxy
    pixels, ``labels``), drawing from torch's current random state."""
    h, w = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    out_image, out_target = transform(tv_tensors.Image(image), {**target, "boxes": boxes})
    out_target["boxes"] = out_target["boxes"].as_subclass(torch.Tensor)
    return out_image.as_subclass(torch.Tensor), out_target
