"""Top-B selection: ties, images without detections, budgets larger than the pool."""

import numpy as np
import pandas as pd
import pytest

from almdn.acquisition.selection import select_batch


def _scores(values, ids=None):
    ids = ids if ids is not None else list(range(1, len(values) + 1))
    return pd.Series(values, index=pd.Index(ids, name="image_id"), dtype=float)


def test_highest_scores_first():
    sel = select_batch(_scores([0.1, 3.0, -1.0, 2.0]), budget=2)
    assert sel.image_ids == [2, 4]
    assert sel.by_score == 2 and sel.shortfall == 0 and sel.message == ""


def test_ties_are_broken_by_pool_order_and_never_shrink_the_batch():
    sel = select_batch(_scores([1.0, 5.0, 5.0, 5.0, 0.0], ids=[10, 30, 20, 40, 50]), budget=2)
    assert sel.image_ids == [30, 20]  # the first two of the tied three, in pool order
    assert len(select_batch(_scores([7.0] * 6), budget=4).image_ids) == 4


def test_images_without_detections_come_last_in_pool_order():
    scores = _scores([np.nan, 0.5, np.nan, -2.0, np.nan])
    sel = select_batch(scores, budget=4, no_detection="last")
    assert sel.image_ids == [2, 4, 1, 3]
    assert sel.by_score == 2


def test_random_policy_fills_the_leftover_budget_with_a_seeded_sample():
    scores = _scores([np.nan] * 20 + [1.0])
    a = select_batch(scores, budget=6, no_detection="random", seed=1)
    b = select_batch(scores, budget=6, no_detection="random", seed=1)
    c = select_batch(scores, budget=6, no_detection="random", seed=2)
    assert a.image_ids[0] == 21 and a.by_score == 1
    assert a.image_ids == b.image_ids and a.image_ids != c.image_ids
    assert len(set(a.image_ids)) == 6 and set(a.image_ids) <= set(range(1, 22))
    assert a.image_ids[1:] != [1, 2, 3, 4, 5]  # not simply pool order


def test_budget_larger_than_the_pool_selects_everything_and_says_so():
    sel = select_batch(_scores([1.0, np.nan, 2.0]), budget=5, labeled=[1])
    assert sel.image_ids == [3, 2]
    assert sel.shortfall == 3
    assert "Only 2 unlabeled images are left" in sel.message and "5" in sel.message


def test_labeled_images_are_never_selected_whatever_their_score():
    scores = _scores([100.0, 50.0, 1.0, 0.0])
    sel = select_batch(scores, budget=2, labeled=[1, 2])
    assert sel.image_ids == [3, 4]
    assert not set(sel.image_ids) & {1, 2}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="no-detection policy"):
        select_batch(_scores([1.0]), 1, no_detection="first")
    with pytest.raises(ValueError, match="exactly one score"):
        select_batch(_scores([1.0, 2.0], ids=[3, 3]), 1)
    with pytest.raises(ValueError, match="budget"):
        select_batch(_scores([1.0]), -1)
