"""Class balance and divergence: rarity weights, the class-balanced greedy batch and CALD's
divergence from the labeled class distribution.

Sources: CALD (Yu et al., "Consistency-based Active Learning for Object Detection"; JS divergence
from the labeled class distribution), the minority quotas of Wu et al. (CVPR 2022) and PPAL's
class weights. Conventions: :mod:`almdn.acquisition.diversity`.
"""

from __future__ import annotations

import numpy as np

from almdn.acquisition.conventions import _EMPTY, _check_budget, _positive_scores  # the diversity family's shared checks


def class_rarity(labeled_counts, smoothing: float = 1.0) -> np.ndarray:
    """Per-class weights in (0, 1] that favour classes rare in the labeled set.

    Why: an early detector is confident on frequent classes, so uncertainty alone
    under-samples the rare ones (issue 19 measured 19% rare-class objects picked against 22%
    in the pool); a weight inversely proportional to the labeled count corrects that (the
    minority-favouring quotas of Wu et al., CVPR 2022; the class weights of PPAL).

    w_c = (n_min + s) / (n_c + s), with n_c the labeled count of class c, n_min the smallest
    and s = ``smoothing`` > 0: the rarest class weighs 1, a class k times as frequent about 1/k.
    """
    n = np.asarray(labeled_counts, dtype=np.float64).reshape(-1)
    if smoothing <= 0:
        raise ValueError("smoothing must be > 0")
    if np.any(n < 0):
        raise ValueError("labeled counts must be non-negative")
    if n.size == 0:
        return n.copy()
    return (n.min() + smoothing) / (n + smoothing)


def _normalise_rows(mass: np.ndarray) -> np.ndarray:
    total = mass.sum(axis=1, keepdims=True)
    return np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)


def class_balanced_greedy(
    scores,
    class_mass,
    labeled_counts,
    budget: int,
    strength: float = 1.0,
    smoothing: float = 1.0,
    normalize: bool = True,
    floor: float = 1.0,
) -> np.ndarray:
    """Greedy picks by uncertainty times a bonus for classes rare among the labeled (+ picked).

    Why: top-K uncertainty keeps picking frequent classes; re-weighting by class rarity after
    every pick spreads the batch over the classes the labeled set lacks (the minority quotas of
    Wu et al., CVPR 2022; PPAL's class-difficulty weights; CALD's class-distribution step).

    Each pick is argmax_i s'_i * (1 + strength * sum_c w_c p_ic), where s' is the score mapped
    to [floor, 1 + floor] (see ``floor``), w = :func:`class_rarity` of the running counts and
    p_i the image's predicted class mass (normalised to a distribution if ``normalize``, so
    the bonus is in [0, strength] and measures the share of rare classes, not the number of
    boxes). After each pick its raw class mass is added to the counts.

    Args:
        scores: ``(N,)`` stage-1 scores (any sign; NaN = no detection, picked last in input
            order).
        class_mass: ``(N, C)`` non-negative predicted class mass per image (e.g. the sum of
            detection confidences per class, or the expected number of objects per class).
        labeled_counts: ``(C,)`` objects per class in the labeled set.
        budget: how many to pick.
        strength: weight of the rarity bonus; 0 gives top-K by score.
        smoothing: :func:`class_rarity`'s smoothing.
        normalize: use each image's class distribution (True) or its raw mass for the bonus.
        floor: the lowest finite score maps to ``floor`` (> 0): (s - min) / (max - min) + floor.
            With the default 1 the scores span [1, 2], so the whole score range counts as
            much as a full rare-class bonus at strength 1; a small floor lets the score
            dominate (the lowest candidate's gain tends to 0).
    """
    budget = _check_budget(budget)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mass = np.asarray(class_mass, dtype=np.float64)
    counts = np.asarray(labeled_counts, dtype=np.float64).reshape(-1).copy()
    if mass.ndim != 2 or mass.shape[0] != len(s) or mass.shape[1] != len(counts):
        raise ValueError("class_mass must be (N, C) with N scores and C labeled counts")
    if np.any(mass < 0):
        raise ValueError("class mass must be non-negative")
    if budget == 0 or len(s) == 0:
        return _EMPTY.copy()
    finite = np.isfinite(s)
    base = np.full(len(s), -np.inf)
    base[finite] = _positive_scores(s[finite], floor)
    share = _normalise_rows(mass) if normalize else mass
    return _running_greedy(finite, counts, mass, budget, lambda c: base * (1.0 + strength * (share @ class_rarity(c, smoothing))))


def _running_greedy(eligible: np.ndarray, counts: np.ndarray, mass: np.ndarray, budget: int, gain) -> np.ndarray:
    """Greedy picks among ``eligible`` by ``gain(counts)`` (one value per image), each pick's
    ``mass`` row added to the running ``counts`` (the labeled set's once the picks are
    labeled); the images not eligible follow, in input order, while the budget lasts."""
    counts = counts.copy()
    available = eligible.copy()
    picks = []
    for _ in range(min(budget, int(eligible.sum()))):
        i = int(np.argmax(np.where(available, gain(counts), -np.inf)))
        picks.append(i)
        available[i] = False
        counts += mass[i]
    rest = np.flatnonzero(~eligible)[: budget - len(picks)]
    return np.concatenate([np.asarray(picks, dtype=np.int64), rest]).astype(np.int64)


def jensen_shannon(p, q) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between each row of ``p`` and ``q``.

    Why: CALD's class-distribution step compares each image's predicted class distribution
    with the labeled set's (Yu et al., Sec. 3.3). JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with
    m = (p + q) / 2 and 0 log 0 = 0; rows and q are normalised here. (It is the square of
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.)
    """
    p = _normalise_rows(np.atleast_2d(np.asarray(p, dtype=np.float64)))
    q = np.asarray(q, dtype=np.float64).reshape(1, -1)
    q = _normalise_rows(q)
    m = 0.5 * (p + q)

    def kl(a):
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return np.sum(np.where(a > 0, a * np.log2(ratio), 0.0), axis=1)

    return 0.5 * kl(p) + 0.5 * kl(np.broadcast_to(q, p.shape))


def divergence_greedy(class_dist, labeled_dist, budget: int) -> np.ndarray:
    """CALD's step: greedily pick the image whose class distribution diverges most from the labeled.

    Why: an image whose predicted classes differ from what is already labeled adds classes the
    model has seen least (Yu et al., "Consistency-based Active Learning for Object Detection",
    Sec. 3.3 and ``cald_train.py`` in we1pingyu/CALD: the JS divergence between an image's
    class distribution and the labeled set's).

    Each pick is argmax_i JS(p_i, q), with p_i = ``class_dist[i]`` normalised and q the
    normalised sum of ``labeled_dist`` and the raw rows of the images picked before it. With
    ``labeled_dist`` all zero and nothing picked, q is uniform. Images whose class mass is all
    zero (no detection) have no distribution: they come last, in input order.

    Args:
        class_dist: ``(N, C)`` non-negative predicted class mass (counts or distributions).
        labeled_dist: ``(C,)`` labeled class mass, in the same units as ``class_dist`` (e.g.
            object counts when the rows are expected object counts).
        budget: how many to pick.
    """
    budget = _check_budget(budget)
    p = np.asarray(class_dist, dtype=np.float64)
    q = np.asarray(labeled_dist, dtype=np.float64).reshape(-1).copy()
    if p.ndim != 2 or p.shape[1] != len(q):
        raise ValueError("class_dist must be (N, C) with C = len(labeled_dist)")
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("class masses must be non-negative")
    if budget == 0 or len(p) == 0:
        return _EMPTY.copy()
    return _running_greedy(p.sum(axis=1) > 0, q, p, budget, lambda ref: jensen_shannon(p, ref if ref.sum() > 0 else np.ones_like(ref)))

