"""Aleatoric and epistemic uncertainty from Gaussian-mixture parameters (Eq. 1 and Eq. 8).

Every function takes tensors with a mixture dimension K and any number of leading
dimensions (images, anchors or detections), so uncertainties for a whole batch are one
expression with no Python loop. Shapes use ``...`` for those leading dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mixture_mean(weights: Tensor, means: Tensor, dim: int = -2) -> Tensor:
    """The mixture's mean ``sum_k pi_k mu_k`` along the mixture dimension ``dim`` (Eq. 7)."""
    return (weights * means).sum(dim)


def localization_uncertainty(weights: Tensor, means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate aleatoric and epistemic uncertainty of a box mixture (Eq. 1).

    Args:
        weights: mixture weights pi, ``(..., K, 4)``, summing to 1 over K.
        means: component means mu (encoded box offsets), ``(..., K, 4)``.
        variances: component variances Sigma, ``(..., K, 4)``.

    Returns:
        ``(aleatoric, epistemic)``, each ``(..., 4)``:
        ``u_al = sum_k pi_k Sigma_k`` and ``u_ep = sum_k pi_k (mu_k - sum_j pi_j mu_j)^2``.
    """
    aleatoric = (weights * variances).sum(-2)
    centre = mixture_mean(weights, means).unsqueeze(-2)
    epistemic = (weights * (means - centre).square()).sum(-2)
    return aleatoric, epistemic


def mixture_class_probabilities(weights: Tensor, component_probs: Tensor) -> Tensor:
    """Class probability of the mixture, ``P = sum_k pi_k softmax(mu_k)`` (Eq. 7).

    Args:
        weights: ``(..., K)`` mixture weights of the classification head.
        component_probs: ``(..., K, C+1)`` per-component softmax probabilities.
    """
    return (weights.unsqueeze(-1) * component_probs).sum(-2)


def classification_uncertainty(
    weights: Tensor,
    component_probs: Tensor,
    labels: Tensor,
    variances: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Aleatoric and epistemic uncertainty of a class mixture at class ``labels``.

    Args:
        weights: ``(..., K)`` mixture weights pi.
        component_probs: ``(..., K, C+1)`` softmax(mu_k) of each component.
        labels: ``(...)`` integer class at which the uncertainty is read (the detection's class).
        variances: ``(..., K, C+1)`` class variances Sigma_k of the "gmm" head, or ``None``
            for the "eff" head.

    Returns:
        ``(aleatoric, epistemic)``, each ``(...)``.

        * epistemic (Eq. 1 at class c): ``sum_k pi_k (p_k[c] - P[c])^2`` with ``P`` the mixture's
          probability (Eq. 7), as the reference implementation computes it.
        * aleatoric, "gmm" head (Eq. 1 at class c): ``sum_k pi_k Sigma_k[c]``.
        * aleatoric, "eff" head (Eq. 8): the diagonal entry c of
          ``sum_k pi_k (diag(p_k) - p_k p_k^T)``, i.e. ``sum_k pi_k p_k[c] (1 - p_k[c])``.
    """
    index = labels.unsqueeze(-1).unsqueeze(-1).expand(*component_probs.shape[:-1], 1)
    p_c = component_probs.gather(-1, index).squeeze(-1)  # (..., K)
    mixed_c = (weights * p_c).sum(-1, keepdim=True)
    epistemic = (weights * (p_c - mixed_c).square()).sum(-1)
    if variances is None:
        aleatoric = (weights * p_c * (1.0 - p_c)).sum(-1)
    else:
        aleatoric = (weights * variances.gather(-1, index).squeeze(-1)).sum(-1)
    return aleatoric, epistemic


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy (nats) of a probability vector; zero-probability entries contribute 0."""
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim)
