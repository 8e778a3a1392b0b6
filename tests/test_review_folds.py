"""Out-of-fold scoring (almdn.review.folds): every labeled image in exactly one fold, never
scored by a model that trained on it, the same folds for the same seed."""

from __future__ import annotations

import pandas as pd
import pytest

from almdn.review import fold_of, out_of_fold, out_of_fold_detections

IDS = list(range(3, 103, 2))  # 50 image ids, not 0..n-1


def test_every_image_is_scored_by_exactly_one_fold_that_did_not_train_on_it():
    folds = out_of_fold(IDS, k=4, seed=3)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    scored = [i for f in folds for i in f.score_ids]
    assert sorted(scored) == sorted(IDS)  # every image once
    for fold in folds:
        assert not set(fold.score_ids) & set(fold.train_ids)  # no model scores an image it saw
        assert sorted(fold.score_ids + fold.train_ids) == sorted(IDS)  # and trains on all the others
    assert {len(f.score_ids) for f in folds} <= {12, 13}  # balanced
    assignment = fold_of(IDS, k=4, seed=3)
    assert all(i in folds[assignment[i]].score_ids for i in IDS)


def test_the_folds_are_deterministic_by_seed_and_independent_of_order():
    assert out_of_fold(IDS, 5, seed=1) == out_of_fold(list(reversed(IDS)), 5, seed=1)
    assert fold_of(IDS, 5, seed=1) == fold_of(IDS, 5, seed=1)
    assert fold_of(IDS, 5, seed=1) != fold_of(IDS, 5, seed=2)


def test_bad_fold_counts_and_repeated_ids_are_refused():
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_of(IDS, 1)
    with pytest.raises(ValueError, match="labeled images"):
        fold_of(IDS[:3], 4)
    with pytest.raises(ValueError, match="twice"):
        fold_of([1, 2, 2, 3], 2)


def test_out_of_fold_detections_keep_each_fold_s_own_images():
    folds = out_of_fold(IDS, k=3, seed=0)
    # each fold's model run over every image (as a round would score the labeled set)
    frames = [pd.DataFrame({"image_id": IDS, "score": [0.1 * (f.index + 1)] * len(IDS)}) for f in folds]
    merged = out_of_fold_detections(frames, folds)
    assert sorted(merged["image_id"]) == sorted(IDS)
    assignment = fold_of(IDS, k=3, seed=0)
    assert (merged["model"] == merged["image_id"].map(assignment)).all()
    assert (merged["score"] == 0.1 * (merged["model"] + 1)).all()  # the rows of the scoring fold's model
    with pytest.raises(ValueError, match="one detection frame per fold"):
        out_of_fold_detections(frames[:2], folds)
