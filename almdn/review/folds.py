"""Out-of-fold scoring: which model scores which labeled image.

A model trained on an image has learnt its labels, wrong ones included, so its detections on
that image agree with them: the in-sample model hides the errors a review is meant to find.
Out of fold, the labeled images are split into k folds; fold f's model is trained on the
other k - 1 folds and scores only the images of fold f, so no model scores an image it saw.
The split is a function of the set of image ids and the seed only (not of their order).
The training itself is a round's (:func:`almdn.engine.fit.train_evaluate_save`), once per fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Folds of the out-of-fold scoring: each model is trained on 3/4 of the labeled images.
DEFAULT_FOLDS: int = 4


@dataclass(frozen=True)
class Fold:
    """One fold: its model is trained on ``train_ids`` and scores ``score_ids`` (disjoint;
    together, every labeled image). Ids are sorted."""

    index: int
    train_ids: tuple[int, ...]
    score_ids: tuple[int, ...]


def _unique_ids(image_ids: Iterable[int]) -> np.ndarray:
    ids = np.asarray(list(image_ids), dtype=np.int64).reshape(-1)
    unique = np.unique(ids)
    if len(unique) != len(ids):
        raise ValueError("an image id appears twice; each labeled image is scored once")
    return unique


def fold_of(image_ids: Iterable[int], k: int = DEFAULT_FOLDS, seed: int = 0) -> dict[int, int]:
    """Image id -> the fold whose model scores it (and was not trained on it).

    The ids are sorted, shuffled by ``np.random.default_rng(seed)`` and dealt round-robin, so
    the folds differ in size by at most one and the same ids and seed give the same folds in
    any order. Raises ValueError for fewer than 2 folds, more folds than images, or a repeated id.
    """
    ids = _unique_ids(image_ids)
    k = int(k)
    if k < 2:
        raise ValueError(f"out-of-fold scoring needs at least 2 folds, not {k}")
    if k > len(ids):
        raise ValueError(f"{k} folds need at least {k} labeled images; there are {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.empty(len(ids), dtype=np.int64)
    folds[order] = np.arange(len(ids)) % k
    return dict(zip(ids.tolist(), folds.tolist()))


def out_of_fold(image_ids: Iterable[int], k: int = DEFAULT_FOLDS, seed: int = 0) -> list[Fold]:
    """The k folds of :func:`fold_of`: fold f trains on the images of the other folds and
    scores its own."""
    assignment = fold_of(image_ids, k, seed)
    ids = np.fromiter(assignment.keys(), dtype=np.int64, count=len(assignment))
    folds = np.fromiter(assignment.values(), dtype=np.int64, count=len(assignment))
    return [Fold(f, tuple(ids[folds != f].tolist()), tuple(ids[folds == f].tolist())) for f in range(int(k))]


def out_of_fold_detections(frames: Sequence[pd.DataFrame], folds: Sequence[Fold], model_column: str = "model") -> pd.DataFrame:
    """The out-of-fold detections of the labeled images, from one detection frame per fold.

    ``frames[i]`` holds the detections (an ``image_id`` column, one row per detection) of
    fold ``folds[i]``'s model on any images; only the rows of that fold's ``score_ids`` are
    kept, so every image's detections come from the one model that did not train on it. The
    result has a ``model_column`` with the fold index, which :func:`almdn.review.scoring.label_quality`
    uses to normalise each model's uncertainties over its own detections.
    """
    if len(frames) != len(folds):
        raise ValueError("one detection frame per fold is required")
    seen: set[int] = set()
    parts = []
    for frame, fold in zip(frames, folds):
        scored = set(fold.score_ids)
        if scored & set(fold.train_ids):
            raise ValueError(f"fold {fold.index} scores images it was trained on")
        if scored & seen:
            raise ValueError(f"fold {fold.index} scores images another fold scores")
        seen |= scored
        part = frame[frame["image_id"].isin(scored)].copy()
        part[model_column] = fold.index
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["image_id", model_column])
    return pd.concat(parts, ignore_index=True)
