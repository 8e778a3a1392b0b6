"""Mixture-density detection losses (Eq. 3, 5, 6 and 9) with hard negative mining.

All terms are computed in log space (``logsumexp`` / ``log_softmax``) so that no mixture
component underflows, and batched over images and anchors with a mixture dimension K.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from almdn.registry import CLASS_LOSSES, DEFAULT_CLS_LOSS

LocDensity = Literal["paper", "reference"]
#: The classification loss: "eq5" is the paper's pi-weighted sum of component cross-entropies
#: (Eq. 5 / Eq. 9); "type2" is the reference implementation's mixture likelihood of the target
#: class, which does not drive the mixture weights to one component (see
#: :func:`mixture_class_nll`).
ClassLoss = Literal["eq5", "type2"]

_LOG_2PI = math.log(2.0 * math.pi)


def log_variance(var_logits: Tensor, min_variance: float = 1e-6) -> Tensor:
    """``log Sigma`` with ``Sigma = sigmoid(var_logits)`` (Eq. 2), floored at ``min_variance``.

    Computed as ``logsigmoid`` so a very negative logit gives a finite log instead of log(0).
    """
    return F.logsigmoid(var_logits).clamp_min(math.log(min_variance))


def gaussian_log_density(
    target: Tensor,
    means: Tensor,
    var_logits: Tensor,
    density: LocDensity = "paper",
    min_variance: float = 1e-6,
    reference_std_offset: float = 0.3,
) -> Tensor:
    """Log density of ``target`` under each Gaussian component, elementwise.

    ``density="paper"`` (default) reads ``sigmoid(var_logits)`` as the variance Sigma, as Eq. 2
    and 3 write it: ``log N = -(log 2pi + log Sigma)/2 - (t - mu)^2 / (2 Sigma)``.

    ``density="reference"`` follows the authors' code: ``v = sigmoid(var_logits)`` is a standard
    deviation in the exponent and the normaliser is ``sqrt(2pi) (v + 0.3)``, which caps the
    density and keeps early training stable:
    ``log N = -log(sqrt(2pi) (v + 0.3)) - (t - mu)^2 / (2 v^2)``.
    """
    sq = (target - means).square()
    log_v = log_variance(var_logits, min_variance)
    if density == "paper":
        return -0.5 * (_LOG_2PI + log_v) - 0.5 * sq * torch.exp(-log_v)
    if density == "reference":
        std = torch.exp(log_v)
        return -0.5 * _LOG_2PI - torch.log(std + reference_std_offset) - 0.5 * sq * torch.exp(-2.0 * log_v)
    raise ValueError(f"Unknown localization density {density!r}; use 'paper' or 'reference'.")


def mixture_nll(
    target: Tensor,
    means: Tensor,
    var_logits: Tensor,
    weight_logits: Tensor,
    density: LocDensity = "paper",
    eps: float = 1e-9,
    min_variance: float = 1e-6,
) -> Tensor:
    """Negative log-likelihood of a Gaussian mixture per coordinate (the summand of Eq. 3).

    ``-log(sum_k pi_k N(t | mu_k, Sigma_k) + eps)`` with ``pi = softmax(weight_logits)`` over K,
    evaluated as ``-logaddexp(logsumexp_k(log pi_k + log N_k), log eps)``.

    Args:
        target: ``(..., D)`` encoded ground-truth offsets.
        means, var_logits, weight_logits: ``(..., K, D)`` raw head outputs.

    Returns:
        ``(..., D)`` per-coordinate NLL.
    """
    log_pi = F.log_softmax(weight_logits, dim=-2)
    log_n = gaussian_log_density(target.unsqueeze(-2), means, var_logits, density, min_variance)
    log_mix = torch.logsumexp(log_pi + log_n, dim=-2)
    if eps <= 0:
        return -log_mix
    return -torch.logaddexp(log_mix, torch.full_like(log_mix, math.log(eps)))


def perturbed_class_logits(means: Tensor, var_logits: Tensor | None, noise: Tensor | None) -> Tensor:
    """Reparameterised class logits ``c_k = mu_k + sqrt(Sigma_k) * gamma`` (Eq. 4).

    Returns ``means`` unchanged for the "eff" head (no variances) or when ``noise`` is None
    (inference, Eq. 7).
    """
    if var_logits is None or noise is None:
        return means
    return means + torch.sigmoid(var_logits).sqrt() * noise


def mixture_cross_entropy(logits: Tensor, weight_logits: Tensor, targets: Tensor) -> Tensor:
    """Mixture classification loss per anchor, the summand of Eq. 5 / Eq. 9.

    ``-sum_k pi_k (c_k[G] - log sum_p exp c_k[p])``: the pi-weighted cross-entropy of each
    component's (possibly perturbed) logits.

    Args:
        logits: ``(..., K, C+1)`` component logits (``c_k`` of Eq. 4, or ``mu_k`` for "eff").
        weight_logits: ``(..., K)`` mixture weight logits.
        targets: ``(...)`` class index, 0 = background.
    """
    log_p = F.log_softmax(logits, dim=-1)
    index = targets.unsqueeze(-1).unsqueeze(-1).expand(*logits.shape[:-1], 1)
    ce = -log_p.gather(-1, index).squeeze(-1)  # (..., K)
    return (torch.softmax(weight_logits, dim=-1) * ce).sum(-1)


def mixture_class_nll(logits: Tensor, weight_logits: Tensor, targets: Tensor) -> Tensor:
    """Negative log mixture likelihood of the target class per anchor (the reference's "Type-2").

    ``-log sum_k pi_k softmax(c_k)[G]``, evaluated as ``-logsumexp_k(log pi_k + log_softmax(c_k)[G])``
    so no component underflows. Unlike Eq. 5 (:func:`mixture_cross_entropy`), which is linear
    in pi and so minimised by putting all weight on the best component, this is the likelihood
    of the mixture as a whole: every component that explains the target keeps its weight, and
    the class mixture does not collapse to one component.

    Args and shapes as :func:`mixture_cross_entropy`.
    """
    log_p = F.log_softmax(logits, dim=-1)
    index = targets.unsqueeze(-1).unsqueeze(-1).expand(*logits.shape[:-1], 1)
    log_p_target = log_p.gather(-1, index).squeeze(-1)  # (..., K)
    return -torch.logsumexp(F.log_softmax(weight_logits, dim=-1) + log_p_target, dim=-1)


def class_loss_function(name: ClassLoss):
    """The per-anchor classification loss named ``name`` ("eq5" or "type2")."""
    if name == "eq5":
        return mixture_cross_entropy
    if name == "type2":
        return mixture_class_nll
    raise ValueError(f"Unknown classification loss {name!r}; use one of {', '.join(CLASS_LOSSES)}.")


def hard_negative_mask(cls_loss: Tensor, foreground: Tensor, neg_to_pos_ratio: int = 3) -> Tensor:
    """Hard negatives: per image, the ``ratio x positives`` background anchors of highest loss.

    Args:
        cls_loss: ``(B, A)`` per-anchor classification loss used for ranking.
        foreground: ``(B, A)`` bool, positives (never selected as negatives).
    """
    num_negative = neg_to_pos_ratio * foreground.sum(1, keepdim=True)
    ranking = cls_loss.detach().masked_fill(foreground, -float("inf"))
    order = ranking.argsort(1, descending=True)
    rank = order.argsort(1)
    return (rank < num_negative) & ~foreground


def detection_loss(
    head_outputs: dict[str, Tensor | None],
    loc_targets: Tensor,
    cls_targets: Tensor,
    neg_to_pos_ratio: int = 3,
    eta: float = 2.0,
    density: LocDensity = "paper",
    eps: float = 1e-9,
    min_variance: float = 1e-6,
    generator: torch.Generator | None = None,
    per_image: bool = False,
    cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
) -> dict[str, Tensor]:
    """The SSD mixture loss of Eq. 6, batched over images and anchors.

    ``L = (L_loc / eta + L_cl^Pos + L_cl^Neg) / N`` with N the positives in the batch, 0 if N = 0.

    * ``L_loc`` (Eq. 3): mixture NLL of the encoded targets, summed over positives and the 4
      coordinates. A head without box variances (the plain SSD) uses smooth-L1 instead with
      ``eta = 1``, which is the original SSD loss.
    * ``L_cl`` (Eq. 5 "gmm", Eq. 9 "eff"): pi-weighted cross-entropy of each component; for
      "gmm" the logits are perturbed by Eq. 4 with one noise draw per step, reused for the
      hard-negative ranking and the loss. ``cls_loss="type2"`` replaces the pi-weighted sum by
      the mixture likelihood of the target class (:func:`mixture_class_nll`), for positives,
      the ranking of negatives and the mined negatives alike.
    * Hard negatives: ``neg_to_pos_ratio`` x positives per image, ranked by that same loss.

    Args:
        head_outputs: ``bbox_means``, ``bbox_var_logits``, ``bbox_weight_logits`` ``(B, A, K, 4)``,
            ``cls_means``, ``cls_var_logits`` ``(B, A, K, C+1)``, ``cls_weight_logits`` ``(B, A, K)``;
            the variance entries may be None.
        loc_targets: ``(B, A, 4)`` encoded matched boxes (only positives are read).
        cls_targets: ``(B, A)`` matched class, 0 for background.

        per_image: also return ``"per_image"``: each image's own Eq. 6 loss ``(B,)``, normalised
            by its own positives (the target of the LLAL loss-prediction baseline).

    Returns:
        ``{"loss_localization", "loss_classification"}``; their sum is L.
    """
    foreground = cls_targets > 0
    num_pos = int(foreground.sum())
    cls_means = head_outputs["cls_means"]
    cls_var_logits = head_outputs.get("cls_var_logits")
    weight_logits = head_outputs["cls_weight_logits"]
    noise = None
    if cls_var_logits is not None:
        noise = torch.randn(cls_means.shape, generator=generator, device=cls_means.device, dtype=cls_means.dtype)
    loss_fn = class_loss_function(cls_loss)
    # Hard negatives are ranked by the loss of every anchor, but only the positives and the
    # mined negatives (a few hundred of tens of thousands of anchors) enter the loss: rank
    # without a graph, then evaluate the same loss, with the same noise draw, on those anchors
    # alone. Same value and gradient as the loss over all anchors masked, at a fraction of the
    # backward pass.
    with torch.no_grad():
        ranking = loss_fn(perturbed_class_logits(cls_means, cls_var_logits, noise), weight_logits, cls_targets)
    negatives = hard_negative_mask(ranking, foreground, neg_to_pos_ratio)

    if num_pos == 0:
        # Eq. 6: the loss is 0 without positives; multiply to keep the graph for backward().
        zero = cls_means.sum() * 0.0 + head_outputs["bbox_means"].sum() * 0.0
        out = {"loss_localization": zero, "loss_classification": zero.clone()}
        if per_image:
            out["per_image"] = zero.expand(cls_targets.shape[0]).clone()
        return out

    selected = foreground | negatives
    pick = lambda t: None if t is None else t[selected]  # noqa: E731
    selected_loss = loss_fn(perturbed_class_logits(cls_means[selected], pick(cls_var_logits), pick(noise)), weight_logits[selected], cls_targets[selected])

    pos_means = head_outputs["bbox_means"][foreground]  # (P, K, 4)
    pos_targets = loc_targets[foreground]  # (P, 4)
    bbox_var_logits = head_outputs.get("bbox_var_logits")
    if bbox_var_logits is None:
        loc = F.smooth_l1_loss(pos_means[:, 0], pos_targets, reduction="none").sum(1)
        loc_weight = 1.0
    else:
        loc = mixture_nll(
            pos_targets,
            pos_means,
            bbox_var_logits[foreground],
            head_outputs["bbox_weight_logits"][foreground],
            density=density,
            eps=eps,
            min_variance=min_variance,
        ).sum(-1)  # (P,): summed over the 4 coordinates
        loc_weight = 1.0 / eta
    out = {"loss_localization": loc.sum() * loc_weight / num_pos, "loss_classification": selected_loss.sum() / num_pos}
    if per_image:
        image_of_positive = foreground.nonzero()[:, 0]
        loc_i = torch.zeros(cls_targets.shape[0], dtype=loc.dtype, device=loc.device).index_add(0, image_of_positive, loc)
        cls_i = torch.zeros_like(loc_i).index_add(0, selected.nonzero()[:, 0], selected_loss.to(loc_i.dtype))
        out["per_image"] = (loc_i * loc_weight + cls_i) / foreground.sum(1).clamp_min(1)
    return out
