"""The second stage of acquisition (almdn/acquisition/batch.py): candidates, diversity, class
balance, the no-detection reserve, power sampling and typicality, each pick with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from almdn.acquisition.batch import BatchInputs, BatchPolicy, class_mass, policy_from_name, score_drivers, select, weighted_kcenter


def _blobs(n_per=8, centers=((0, 0), (10, 0), (0, 10), (10, 10), (5, 20)), seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(c) + rng.normal(0, 0.3, (n_per, 2)) for c in centers])
    return x, np.repeat(np.arange(len(centers)), n_per)


def _scores(values, start=100):
    return pd.Series(np.asarray(values, dtype=np.float64), index=pd.Index(range(start, start + len(values)), name="image_id"))


def test_ten_copies_of_the_most_uncertain_image_give_at_most_one():
    x, _ = _blobs()
    x = np.concatenate([np.repeat(x[:1], 10, axis=0), x[1:]])  # 10 identical copies first
    scores = np.r_[np.full(10, 9.0), np.linspace(1, 2, len(x) - 10)]
    inputs = BatchInputs(_scores(scores), embeddings=x, labeled_embeddings=np.zeros((0, 2)))
    top = select(BatchPolicy("topk"), inputs, 5)
    assert top.image_ids == [100, 101, 102, 103, 104]  # the paper's top-B: all copies
    diverse = select(BatchPolicy("kcenter", factor=8), inputs, 5)
    assert sum(i < 110 for i in diverse.image_ids) <= 1
    assert len(set(diverse.image_ids)) == 5


def test_kcenter_picks_one_per_planted_cluster_and_skips_labeled_regions():
    x, cluster = _blobs()
    inputs = BatchInputs(_scores(np.ones(len(x))), embeddings=x, labeled_embeddings=x[cluster == 0][:1])
    batch = select(BatchPolicy("kcenter", factor=10), inputs, 4)
    assert sorted(cluster[np.asarray(batch.image_ids) - 100]) == [1, 2, 3, 4]
    assert all("covers a region" in r for r in batch.reasons)


def test_class_balance_on_a_planted_imbalance_picks_the_rare_class_first():
    # 6 images predicted as class 0 (heavily labeled), 1 image as class 2 (never labeled)
    mass = np.zeros((7, 3))
    mass[:6, 0] = 1.0
    mass[6, 2] = 1.0
    scores = _scores([3.0, 2.9, 2.8, 2.7, 2.6, 2.0, 2.5])  # the rare-class image is mid-ranked
    inputs = BatchInputs(scores, class_mass=mass, labeled_counts=np.array([50.0, 5.0, 0.0]), class_names=["a", "b", "c"])
    batch = select(BatchPolicy("balance", factor=4, balance=1.0), inputs, 2)
    assert batch.image_ids[0] == 106
    assert "adds class 'c' (0 labeled boxes)" in batch.reasons[0]
    frequent = select(BatchPolicy("balance", factor=4, balance=1.0), BatchInputs(scores, class_mass=mass, labeled_counts=np.array([50.0, 5.0, 0.0])), 2)
    assert "adds class" not in frequent.reasons[1]  # its class '0' is the most labeled: no reason to name
    faint = BatchInputs(scores, class_mass=np.tile([[0.9, 0.8, 0.02]], (7, 1)), labeled_counts=np.array([50.0, 5.0, 0.0]), class_names=["a", "b", "c"])
    # a faint 0.02 of the unlabeled class weighs less than a sure 0.8 of the scarce one
    assert "adds class 'b' (5 labeled boxes)" in select(BatchPolicy("balance", factor=4, balance=1.0), faint, 1).reasons[0]
    weighted, _ = weighted_kcenter(np.eye(7), np.zeros((1, 7)) + 0.5, 1, mass, np.array([50.0, 5.0, 0.0]), balance=5.0)
    assert weighted.tolist() == [6]  # equal distances: the rare class decides


def test_half_the_pool_without_detections_still_fills_the_batch_by_the_reserve():
    x, _ = _blobs(n_per=4)
    scores = np.where(np.arange(len(x)) % 2 == 0, np.linspace(1, 2, len(x)), np.nan)
    inputs = BatchInputs(_scores(scores), embeddings=x, labeled_embeddings=x[:1], class_mass=np.ones((len(x), 2)), labeled_counts=np.ones(2))
    batch = select(BatchPolicy("kcenter", factor=2, reserve=0.3), inputs, 10)
    assert len(batch.image_ids) == 10 and len(set(batch.image_ids)) == 10
    unscored = [i for i in batch.image_ids if np.isnan(scores[i - 100])]
    assert len(unscored) == 3 and batch.by_score == 7
    assert sum("reserved share" in r for r in batch.reasons) == 3
    # more than the scored images: the rest fills from the unscored ones
    assert len(select(BatchPolicy("topk"), inputs, len(x) - 2).image_ids) == len(x) - 2


def test_the_same_seed_gives_the_same_batch():
    rng = np.random.default_rng(3)
    scores = _scores(rng.normal(size=60))
    x = rng.normal(size=(60, 4))
    for policy in (BatchPolicy("power"), BatchPolicy("typiclust"), BatchPolicy("kcenter")):
        inputs = BatchInputs(scores, embeddings=x, labeled_embeddings=x[:0])
        a, b = select(policy, inputs, 8, seed=5), select(policy, inputs, 8, seed=5)
        assert a.image_ids == b.image_ids and len(set(a.image_ids)) == 8
    p1 = select(BatchPolicy("power"), BatchInputs(scores), 8, seed=1).image_ids
    p2 = select(BatchPolicy("power"), BatchInputs(scores), 8, seed=2).image_ids
    assert p1 != p2


def test_labeled_images_are_never_chosen_and_missing_inputs_are_one_sentence():
    inputs = BatchInputs(_scores([5.0, 4.0, 3.0]))
    assert select(BatchPolicy("topk"), inputs, 2, labeled=[100]).image_ids == [101, 102]
    with pytest.raises(ValueError, match="needs embeddings"):
        select(BatchPolicy("kcenter"), inputs, 2)
    short = select(BatchPolicy("topk"), inputs, 5)
    assert short.shortfall == 2 and "Only 3 unlabeled images" in short.message


def test_drivers_class_mass_and_names():
    table = pd.DataFrame({"image_id": [1, 2], "z_loc_aleatoric": [0.5, np.nan], "z_cls_epistemic": [2.25, np.nan]})
    assert score_drivers(table).tolist() == ["cls_epistemic z 2.25", None]
    detections = pd.DataFrame({"image_id": [1, 1, 3], "label": [1, 2, 2], "score": [0.5, 0.75, 1.0]})
    assert class_mass(detections, [1, 2, 3], 2).tolist() == [[0.5, 0.75], [0.0, 0.0], [0.0, 1.0]]
    assert policy_from_name("almdn") is None and policy_from_name("almdn+cald").factor == 1.2
    with pytest.raises(ValueError, match="Unknown second stage"):
        policy_from_name("almdn+nope")
