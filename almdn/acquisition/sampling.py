"""Stochastic batches and candidate sets: power sampling, the reserve for images without a
detection and the stage-1 candidates of a two-stage method.

Sources: stochastic batch acquisition (Kirsch et al., "Stochastic Batch Acquisition: A Simple
Baseline for Deep Active Learning", TMLR 2023) and PPAL's candidate set (Yang et al., CVPR 2024).
Conventions: :mod:`almdn.acquisition.diversity`.
"""

from __future__ import annotations

import math

import numpy as np

from almdn.acquisition.conventions import _EMPTY, _check_budget, _positive_scores  # the diversity family's shared checks

POWER_MODES = ("power", "softmax", "softrank")


def power_sample(
    scores,
    budget: int,
    beta: float = 1.0,
    seed: int = 0,
    mode: str = "power",
    floor: float = 0.01,
) -> np.ndarray:
    """Stochastic batch acquisition: sample the batch without replacement instead of top-K.

    Why: top-K takes every near-duplicate of a high-scoring image at once; sampling
    proportionally to a tempered score keeps the preference for high scores and removes most of
    that redundancy at no cost (Kirsch et al., TMLR 2023, Sec. 3).

    Weights over the images with finite scores (Kirsch et al.'s three variants):

    - ``"power"``: w_i = s'_i ** beta, with s' = (s - min) / (max - min) + ``floor``: z-scores can
      be negative, so they are shifted and scaled into [floor, 1 + floor] first (the order is
      kept; the lowest score keeps a small weight, floor ** beta relative).
    - ``"softmax"``: w_i = exp(beta * s_i) (shift-invariant: no mapping needed).
    - ``"softrank"``: w_i = rank_i ** -beta, rank 1 the highest score (ties by input order).

    Sampling without replacement proportionally to w is the Gumbel-top-k trick: the B largest
    log w_i + G_i, G_i ~ Gumbel(0, 1) i.i.d. from ``np.random.default_rng(seed)``, in decreasing
    order (Kool et al., ICML 2019; what Kirsch et al. use). beta -> inf tends to top-K,
    beta = 0 to uniform sampling.

    NaN (and +-inf) scores are never sampled while a finite one remains; when the budget
    exceeds the finite scores they are appended in input order.
    """
    budget = _check_budget(budget)
    if mode not in POWER_MODES:
        raise ValueError(f"Unknown mode '{mode}'; choose one of {', '.join(POWER_MODES)}.")
    if beta < 0:
        raise ValueError("beta must be >= 0")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if budget == 0 or len(s) == 0:
        return _EMPTY.copy()
    finite = np.flatnonzero(np.isfinite(s))
    v = s[finite]
    if mode == "power":
        logw = beta * np.log(_positive_scores(v, floor))
    elif mode == "softmax":
        logw = beta * (v - (v.max() if len(v) else 0.0))
    else:
        rank = np.empty(len(v))
        rank[np.argsort(-v, kind="stable")] = np.arange(1, len(v) + 1)
        logw = -beta * np.log(rank)
    keys = logw + np.random.default_rng(seed).gumbel(size=len(v))
    order = np.argsort(-keys, kind="stable")[:budget]
    rest = np.flatnonzero(~np.isfinite(s))[: budget - len(order)]
    return np.concatenate([finite[order], rest]).astype(np.int64)


def reserve_count(budget: int, reserve_fraction: float) -> int:
    """How many of the batch to reserve for images without a detection: round(fraction x budget).

    Why: almost half the pool can have no kept detection (issue 19); a reserved share lets
    those images compete instead of always coming last. Rounded half up (floor(x + 0.5), not
    Python's half-to-even), capped at the budget.
    """
    budget = _check_budget(budget)
    if not 0.0 <= reserve_fraction <= 1.0:
        raise ValueError("reserve_fraction must be in [0, 1]")
    return min(budget, int(math.floor(reserve_fraction * budget + 0.5)))


def candidate_indices(
    scores,
    budget: int,
    factor: float = 4.0,
    reserve_fraction: float = 0.0,
    seed: int = 0,
    reserve_limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: the candidate set for a diversity stage, and the pool of images with no score.

    Why: the diversity stage should choose among the most uncertain images only, m times the
    budget of them (PPAL: m = 4; CALD: m = 1.2), so that diversity never buys an uninformative
    image (Yang et al., CVPR 2024, Sec. 3.2).

    Returns ``(candidates, reserved)``:

    - candidates: the ceil(factor x budget) highest finite scores (all of them when fewer),
      in decreasing score order, ties in input order;
    - reserved: when ``reserve_fraction > 0``, the NaN-score (no detection) images, in input
      order, as the pool from which the caller picks :func:`reserve_count` images for diversity;
      with ``reserve_limit`` a seeded random subsample of at most that many of them (still in
      input order), so the caller's diversity step stays cheap on a large pool. Empty when
      ``reserve_fraction == 0``. ``seed`` only drives that subsample.
    """
    budget = _check_budget(budget)
    if factor < 0:
        raise ValueError("factor must be >= 0")
    if not 0.0 <= reserve_fraction <= 1.0:
        raise ValueError("reserve_fraction must be in [0, 1]")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.flatnonzero(~np.isnan(s))
    # A tiny tolerance so that e.g. 1.2 x 5 = 6.000000000000001 gives 6, not 7.
    n_candidates = min(len(finite), int(math.ceil(factor * budget - 1e-9)))
    candidates = finite[np.argsort(-s[finite], kind="stable")[:n_candidates]].astype(np.int64)
    reserved = _EMPTY.copy()
    if reserve_fraction > 0:
        reserved = np.flatnonzero(np.isnan(s)).astype(np.int64)
        if reserve_limit is not None and len(reserved) > reserve_limit:
            keep = np.random.default_rng(seed).choice(len(reserved), size=max(0, int(reserve_limit)), replace=False)
            reserved = reserved[np.sort(keep)]
    return candidates, reserved
