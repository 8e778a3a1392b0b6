"""What the diversity-stage algorithms share: the budget check, the array checks, the empty pick
and the positive map of scores (see :mod:`almdn.acquisition.diversity` for the conventions every
one of them follows)."""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


def _check_budget(budget: int) -> int:
    budget = int(budget)
    if budget < 0:
        raise ValueError("the budget must be >= 0")
    return budget


def _as_matrix(features, name: str = "features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1 and x.size == 0:
        x = x.reshape(0, 0)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D)")
    return x



def _positive_scores(values: np.ndarray, floor: float) -> np.ndarray:
    """Finite scores mapped to [floor, 1 + floor]: (s - min) / (max - min) + floor.

    z-scores can be negative, and a product or a power of a negative score is meaningless;
    the affine map keeps the order, is invariant to the scores' shift and scale, and keeps the
    lowest score's weight above 0. All-equal scores map to 1 + floor.
    """
    if floor <= 0:
        raise ValueError("floor must be > 0")
    if values.size == 0:
        return values.copy()
    lo, hi = values.min(), values.max()
    if hi > lo:
        return (values - lo) / (hi - lo) + floor
    return np.full(values.shape, 1.0 + floor)
