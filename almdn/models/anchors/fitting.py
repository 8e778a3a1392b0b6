"""Fitting an SSD's anchors to a dataset's boxes (YOLO's autoanchor) and giving a model the
fitted anchors (see :mod:`almdn.models.anchors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from almdn.models.anchors.coverage import (  # _sample: the anchors package's own box sampler
    DEFAULT_IOU_THRESHOLD,
    MAX_BOXES,
    AnchorCoverage,
    BoxSet,
    _sample,
    anchor_coverage,
    feature_shapes,
    is_ssd,
    model_input,
    training_boxes,
)
from almdn.models.anchors.generation import ssd_anchor_generator


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
