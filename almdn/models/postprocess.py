"""The mixture post-processing shared by every detector (Sec. 3.1-3.3).

Free functions on the raw mixture outputs of a head or box predictor (the dictionary
documented in :mod:`almdn.models.heads`), used by :class:`~almdn.models.ssd.MixtureSSD` (per
anchor) and :class:`~almdn.models.frcnn.MixtureRoIHeads` (per RoI) alike:

* :func:`mixture_parameters`: Eq. 2, raw outputs to weights pi, means and variances Sigma;
* :func:`mixture_predictions`: Eq. 7, the mixture's box and class probabilities;
* :func:`detection_values`: the four uncertainties of Eq. 1 / Eq. 8 and every component's box
  and per-edge standard deviation in pixels, for the detections only;
* :func:`nms_per_image`: one ``batched_nms`` over all images and classes, then each image's
  best ``max_per_image``;
* :func:`split_per_image`: the batch's detections back to one dictionary per image;
* :func:`mixture_records`: a detection's mixture as plain lists (the app draws them,
  ``almdn score`` writes them to ``detections.json``).

Everything is batched over images, anchors (or RoIs) and classes: no Python loop over them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

# BOX_KEYS (re-exported): the detection keys in image pixels, defined beside
# almdn.data.images.restore_boxes, which rescales them.
from almdn.data.images import BOX_KEYS
from almdn.models.losses import log_variance
from almdn.models.uncertainty import (
    classification_uncertainty,
    entropy,
    localization_uncertainty,
    mixture_class_probabilities,
    mixture_mean,
)

__all__ = [
    "BOX_KEYS",
    "MIXTURE_KEYS",
    "detection_values",
    "edge_sigmas",
    "image_limits",
    "mixture_parameters",
    "mixture_predictions",
    "mixture_records",
    "nms_per_image",
    "split_per_image",
]

#: Per-detection mixture keys (N, ...) that describe a detection's distribution.
MIXTURE_KEYS: tuple[str, ...] = (
    "component_boxes", "component_weights", "component_variances", "component_sigmas", "class_weights", "class_probs",
)


def mixture_parameters(raw: Mapping[str, Tensor | None], min_variance: float = 1e-6) -> dict[str, Tensor | None]:
    """Eq. 2 applied to raw outputs (any leading shape): pi by softmax over K (per box
    coordinate for the box mixture), Sigma by sigmoid (floored at ``min_variance``), class
    probabilities by softmax over the classes. A variance a head does not predict stays None."""
    var, cvar = raw["bbox_var_logits"], raw["cls_var_logits"]
    return {
        "bbox_weights": torch.softmax(raw["bbox_weight_logits"], dim=-2),
        "bbox_means": raw["bbox_means"],
        "bbox_variances": None if var is None else log_variance(var, min_variance).exp(),
        "cls_weights": torch.softmax(raw["cls_weight_logits"], dim=-1),
        "cls_probs": torch.softmax(raw["cls_means"], dim=-1),
        "cls_variances": None if cvar is None else log_variance(cvar, min_variance).exp(),
    }


def mixture_predictions(raw: Mapping[str, Tensor | None]) -> tuple[Tensor, Tensor]:
    """Eq. 7: the mixture's encoded box ``sum_k pi_k mu_k`` ``(..., 4)`` and class probabilities
    ``sum_k pi_k softmax(mu_k)`` ``(..., C+1)``. Variances are not needed, so not computed."""
    box = mixture_mean(torch.softmax(raw["bbox_weight_logits"], dim=-2), raw["bbox_means"])
    probs = mixture_class_probabilities(
        torch.softmax(raw["cls_weight_logits"], dim=-1), torch.softmax(raw["cls_means"], dim=-1)
    )
    return box, probs


def image_limits(image_sizes: Sequence[tuple[int, int]] | Tensor, like: Tensor) -> Tensor:
    """``(B, 4)`` clipping limits ``(w, h, w, h)`` of images given as ``(h, w)`` sizes, in
    ``like``'s dtype and device."""
    sizes = torch.as_tensor(image_sizes, dtype=like.dtype, device=like.device)
    return sizes.flip(-1).repeat(1, 2)


def nms_per_image(
    boxes: Tensor,
    scores: Tensor,
    images: Tensor,
    classes: Tensor,
    num_classes: int,
    num_images: int,
    iou_threshold: float,
    max_per_image: int,
) -> Tensor:
    """Indices of the candidates kept by per-image, per-class NMS, grouped by image (in image
    order) and by decreasing score within an image, at most ``max_per_image`` per image.

    One ``batched_nms`` serves the whole batch (the group of a candidate is its image and
    class); the cap is a rank within the image, computed without a loop over images.

    Args:
        boxes, scores: ``(N, 4)`` and ``(N,)`` candidates.
        images, classes: ``(N,)`` each candidate's image and class index (``classes`` in
            ``[0, num_classes)``).
    """
    keep = batched_nms(boxes, scores, images * num_classes + classes, iou_threshold)
    # keep is sorted by score; regroup by image (stable) and cap each image's count.
    keep = keep[torch.sort(images[keep], stable=True).indices]
    kept_images = images[keep]
    counts = torch.bincount(kept_images, minlength=num_images)
    within = torch.arange(kept_images.numel(), device=keep.device) - (torch.cumsum(counts, 0) - counts)[kept_images]
    return keep[within < max_per_image]


def split_per_image(det: Mapping[str, Tensor], images: Tensor, num_images: int) -> list[dict[str, Tensor]]:
    """One dictionary per image from a batch's detections grouped by image (``images`` is
    each detection's image, non-decreasing, as :func:`nms_per_image` orders them)."""
    counts = torch.bincount(images, minlength=num_images).tolist()
    split = {key: value.split(counts) for key, value in det.items()}
    return [{key: split[key][i] for key in det} for i in range(num_images)]


def edge_sigmas(variances: Tensor, component_boxes: Tensor, anchors: Tensor, weights: Sequence[float]) -> Tensor:
    """One standard deviation of each edge ``(x1, y1, x2, y2)`` of every component's box, in
    pixels: ``(N, K, 4)``.

    The components' variances are those of the encoded offsets ``(dx, dy, dw, dh)`` (Eq. 3's
    box parameterization, with the box coder's ``weights``, SSD's (0.1, 0.2) as (10, 10, 5, 5)).
    By the delta method, with ``w_a`` the anchor's (or proposal's) width and ``w`` the
    component box's: ``sd(x1) = sd(x2) = sqrt((w_a sd(dx) / w_x)^2 + (w sd(dw) / (2 w_w))^2)``,
    and the same in y.

    Args:
        variances: ``(N, K, 4)`` component variances of the encoded offsets.
        component_boxes: ``(N, K, 4)`` decoded component boxes.
        anchors: ``(N, 4)`` each detection's anchor (proposal) box.
        weights: the box coder's ``(w_x, w_y, w_w, w_h)``.
    """
    wx, wy, ww, wh = weights
    sd = variances.clamp_min(0).sqrt()
    anchor_wh = (anchors[:, 2:] - anchors[:, :2])[:, None, :]  # (N, 1, 2)
    box_wh = component_boxes[..., 2:] - component_boxes[..., :2]  # (N, K, 2)
    centre = anchor_wh * sd[..., :2] / sd.new_tensor([wx, wy])
    size = box_wh * sd[..., 2:] / sd.new_tensor([ww, wh]) / 2
    sigma = torch.sqrt(centre**2 + size**2)  # (N, K, 2) as (x, y)
    return sigma.repeat(1, 1, 2)


def detection_values(
    mix: Mapping[str, Tensor | None], probs: Tensor, labels: Tensor, anchors: Tensor, box_coder: Any
) -> dict[str, Tensor]:
    """Uncertainties and mixture of N detections.

    From their mixture parameters (:func:`mixture_parameters` of the gathered raw outputs,
    box parameters ``(N, K, 4)``, class ones ``(N, K, C+1)``), their mixed class probabilities
    ``probs`` ``(N, C+1)`` (Eq. 7), labels ``(N,)`` and anchor (proposal) boxes ``(N, 4)``:

    * ``loc_aleatoric``, ``loc_epistemic``: Eq. 1, the maximum over the four coordinates
      (per coordinate in ``loc_*_coords``); NaN for a head without box variances;
    * ``cls_aleatoric``, ``cls_epistemic``: Eq. 8 at the label (:mod:`almdn.models.uncertainty`);
    * ``cls_entropy``: entropy of the mixed class probabilities;
    * ``component_boxes`` (decoded with ``box_coder``), ``component_weights`` (pi per
      coordinate), ``component_variances`` (of the encoded offsets), ``component_sigmas``
      (per edge in pixels, :func:`edge_sigmas`), ``class_weights``, ``class_probs``;
    * ``anchor_boxes``: the anchors themselves.
    """
    w_b, mu_b, var_b = mix["bbox_weights"], mix["bbox_means"], mix["bbox_variances"]  # (N, K, 4)
    n, k = mu_b.shape[:2]
    out: dict[str, Tensor] = {}
    if var_b is not None:
        al, ep = localization_uncertainty(w_b, mu_b, var_b)  # (N, 4) per coordinate
    else:  # plain head: no box distribution, so no localization uncertainty.
        al = ep = mu_b.new_full((n, 4), float("nan"))
        var_b = mu_b.new_full(mu_b.shape, float("nan"))
    out["loc_aleatoric"], out["loc_epistemic"] = al.amax(-1), ep.amax(-1)
    out["loc_aleatoric_coords"], out["loc_epistemic_coords"] = al, ep
    out["component_variances"] = var_b
    out["cls_aleatoric"], out["cls_epistemic"] = classification_uncertainty(
        mix["cls_weights"], mix["cls_probs"], labels, mix["cls_variances"]
    )
    out["cls_entropy"] = entropy(probs)
    # Every component's own box, decoded, for drawing the mixture.
    anchor_rep = anchors.unsqueeze(1).expand(n, k, 4)
    out["component_boxes"] = box_coder.decode_single(mu_b.reshape(-1, 4), anchor_rep.reshape(-1, 4)).view(n, k, 4)
    out["component_sigmas"] = edge_sigmas(var_b, out["component_boxes"], anchors, box_coder.weights)
    out["component_weights"] = w_b
    out["class_weights"], out["class_probs"] = mix["cls_weights"], mix["cls_probs"]
    out["anchor_boxes"] = anchors
    return out


def mixture_records(mixture: Mapping[str, Tensor | np.ndarray]) -> list[dict[str, list]]:
    """Each detection's mixture as plain lists, from the :data:`MIXTURE_KEYS` of N detections.

    Per detection: ``component_boxes`` (K, 4) mean box of each component in pixels,
    ``component_weights`` (K,) its weight pi averaged over the four coordinates,
    ``component_edge_weights`` (K, 4) pi per coordinate (Eq. 2), ``component_variances``
    (K, 4) Sigma of the encoded offsets, ``component_sigmas`` (K, 4) one standard deviation of
    each edge in pixels, ``class_weights`` (K,), ``class_probs`` (K, C+1) and the mixture's
    class probabilities ``mixture_probs`` (C+1,) (Eq. 7).
    """
    t = {key: torch.as_tensor(np.asarray(mixture[key])) if not torch.is_tensor(mixture[key]) else mixture[key].detach().cpu()
         for key in MIXTURE_KEYS}
    columns = {
        "component_boxes": t["component_boxes"],
        "component_weights": t["component_weights"].mean(-1),
        "component_edge_weights": t["component_weights"],
        "component_variances": t["component_variances"],
        "component_sigmas": t["component_sigmas"],
        "class_weights": t["class_weights"],
        "class_probs": t["class_probs"],
        "mixture_probs": mixture_class_probabilities(t["class_weights"], t["class_probs"]),
    }
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[name].tolist() for name in names))]
