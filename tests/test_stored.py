"""Acquisition from a model version's stored scores (:mod:`almdn.acquisition.stored`)."""

from __future__ import annotations

import numpy as np
import pytest

from almdn.display import store_tables as views
from almdn.acquisition.baselines import mean_entropy_scores
from almdn.acquisition.stored import acquisition_scores, select_for_labeling
from almdn.projects.store import StoreError
from tests.app_support import project, store  # noqa: F401


def test_acquisition_scores_by_method(store):
    pool = store.image_ids("pool")
    almdn = acquisition_scores(store, "almdn")
    stored = store.image_scores().set_index("image_id")["score"]
    assert almdn.reindex(stored.index).to_numpy() == pytest.approx(stored.to_numpy())
    summed = acquisition_scores(store, "almdn:sum_all")
    table = store.image_scores().set_index("image_id")
    assert summed.loc[pool[0]] == pytest.approx(table.loc[pool[0], ["z_loc_aleatoric", "z_loc_epistemic", "z_cls_aleatoric", "z_cls_epistemic"]].sum())
    entropy = acquisition_scores(store, "entropy")
    expected = mean_entropy_scores(store.detections(), pool)
    assert entropy.to_numpy() == pytest.approx(expected.to_numpy())
    r1, r2 = acquisition_scores(store, "random", seed=1), acquisition_scores(store, "random", seed=2)
    assert sorted(r1.index) == sorted(pool) and not np.allclose(r1.to_numpy(), r2.to_numpy())
    with pytest.raises(ValueError, match="Unknown acquisition method"):
        acquisition_scores(store, "coreset")


def test_entropy_weighted_ranks_by_the_stored_weighted_entropy_and_asks_an_old_scoring_to_rescore(store):
    from almdn.errors import InvalidChoice

    pool = store.image_ids("pool")
    stored = store.image_scores().set_index("image_id")["entropy_weighted"].reindex(pool)
    assert stored.notna().any()
    scores = acquisition_scores(store, "entropy_weighted")
    assert scores.index.tolist() == pool and scores.to_numpy() == pytest.approx(stored.to_numpy(), nan_ok=True)
    batch = select_for_labeling(store, 3, "entropy_weighted")
    assert batch.image_ids == stored.sort_values(ascending=False, kind="stable").index[:3].tolist()
    assert all(r.startswith("mean class entropy rank") for r in batch.reasons)
    with store.transaction() as conn:  # a scoring made before the store kept it (schema 6)
        conn.execute("UPDATE scorings SET low_threshold = NULL")
    with pytest.raises(InvalidChoice, match="scored before the store kept the score-weighted entropy; score the pool again"):
        acquisition_scores(store, "entropy_weighted")


def test_selection_leaves_out_images_already_sent(store):
    first = select_for_labeling(store, 5)
    assert first.image_ids == views.pool_table(store)["image_id"].iloc[:5].tolist()
    row = store.ls_project("http://127.0.0.1:1", 7, "t")
    store.record_batch(row, [(100 + i, image_id) for i, image_id in enumerate(first.image_ids[:2])], 1, 5)
    second = select_for_labeling(store, 5)
    assert second.image_ids[:3] == first.image_ids[2:] and not set(first.image_ids[:2]) & set(second.image_ids)
    with pytest.raises(ValueError, match="K must be at least 1"):
        select_for_labeling(store, 0)


def test_by_default_the_versions_own_score_in_ranking_order(store):
    own = acquisition_scores(store, None)
    ranking = store.pool_ranking()
    assert own.index.tolist() == ranking["image_id"].tolist()
    assert own.to_numpy() == pytest.approx(ranking["score"].astype(float).to_numpy(), nan_ok=True)
    # the paper's method is the same score (the project was scored with max_all)
    assert acquisition_scores(store, "almdn").reindex(own.index).to_numpy() == pytest.approx(own.to_numpy(), nan_ok=True)
    assert select_for_labeling(store, 3, None).image_ids == ranking["image_id"].iloc[:3].tolist()


# --------------------------------------------------------------------------- the two-stage methods (issue 19)


def test_two_stage_methods_choose_k_distinct_pool_images_each_with_why(store):
    from almdn.acquisition.stored import TWO_STAGE_METHODS

    pool = set(store.image_ids("pool"))
    ids, vectors = store.embeddings(1)  # the scoring kept the pool's and the labeled images' embeddings
    assert set(ids.tolist()) == pool | set(store.labeled_image_ids()) and vectors.dtype == np.float32 and vectors.shape[0] == len(ids)
    batch = select_for_labeling(store, 5, "almdn+kcenter_balanced")
    assert len(batch.image_ids) == len(set(batch.image_ids)) == 5 and set(batch.image_ids) <= pool
    assert len(batch.reasons) == 5 and all(isinstance(r, str) and r for r in batch.reasons)
    assert any("covers a region no labeled image is near" in r for r in batch.reasons), batch.reasons
    assert batch.why() == dict(zip(batch.image_ids, batch.reasons))
    for method in TWO_STAGE_METHODS:
        chosen = select_for_labeling(store, 4, method)
        assert len(set(chosen.image_ids)) == 4 and set(chosen.image_ids) <= pool and all(chosen.reasons), method
    assert select_for_labeling(store, 4, "almdn+kcenter").image_ids == select_for_labeling(store, 4, "almdn+kcenter").image_ids  # stable preview
    # images out for labeling are left out, and count as covered
    row = store.ls_project("http://127.0.0.1:1", 7, "t")
    store.record_batch(row, [(100 + i, image_id) for i, image_id in enumerate(batch.image_ids[:2])], 1, 5, why=batch.why())
    again = select_for_labeling(store, 5, "almdn+kcenter_balanced")
    assert not set(again.image_ids) & set(batch.image_ids[:2])
    assert store.tasks()["selected_why"].tolist() == batch.reasons[:2]
    # the one-stage methods say why too
    top = select_for_labeling(store, 3, "almdn")
    assert all(r.startswith("uncertainty rank ") for r in top.reasons)
    assert select_for_labeling(store, 2, "random").reasons == ["a random sample of the pool"] * 2


def test_a_version_scored_without_embeddings_gives_one_sentence(store):
    with store.transaction() as conn:
        conn.execute("DELETE FROM embeddings")  # as a store scored before embeddings were kept
    before = select_for_labeling(store, 5, "almdn").image_ids
    for method in ("almdn+kcenter_balanced", "almdn+kcenter", "typiclust"):
        with pytest.raises(StoreError, match="re-score the pool") as caught:
            select_for_labeling(store, 5, method)
        assert "\n" not in str(caught.value) and str(caught.value).count(". ") == 0
    # the methods that need no embeddings keep working, the old ones unchanged
    assert len(select_for_labeling(store, 5, "almdn+balance").image_ids) == 5
    assert len(select_for_labeling(store, 5, "almdn+power").image_ids) == 5
    assert select_for_labeling(store, 5, "almdn").image_ids == before == views.pool_table(store)["image_id"].iloc[:5].tolist()


def test_entropy_weighted_balance_ranks_by_its_own_first_stage_and_the_faint_class_mass(store):
    """entropy_weighted+balance: candidates by the stored weighted entropy (not the paper's
    score), class balance by the stored class mass of the faint detections; a scoring made
    before the store kept that mass gives one sentence."""
    k = 3
    weighted = acquisition_scores(store, "entropy_weighted")
    assert acquisition_scores(store, "entropy_weighted+balance").equals(weighted)
    candidates = weighted.sort_values(ascending=False, kind="stable").index[: 4 * k].tolist()
    batch = select_for_labeling(store, k, "entropy_weighted+balance")
    assert len(set(batch.image_ids)) == k and set(batch.image_ids) <= set(candidates)
    assert all(r.startswith("uncertainty rank ") and int(r.split()[2].rstrip(";")) <= 4 * k for r in batch.reasons), batch.reasons
    # the same picks as the second stage run by hand on the stored inputs
    from almdn.acquisition.batch import BatchInputs, select
    from almdn.acquisition.methods import get_method

    labels = store.labels(split="labeled")["class_id"].to_numpy()
    counts = np.bincount(labels - 1, minlength=len(store.classes())).astype(float)
    pool = [int(i) for i in weighted.index]
    inputs = BatchInputs(weighted, class_mass=store.class_mass(None, pool), labeled_counts=counts, class_names=store.classes())
    assert inputs.class_mass.shape == (len(pool), len(store.classes())) and inputs.class_mass.sum() > 0
    assert select(get_method("entropy_weighted+balance").batch, inputs, k).image_ids == batch.image_ids
    with store.transaction() as conn:  # a scoring made before schema 8
        conn.execute("UPDATE scorings SET class_mass_kept = 0")
    with pytest.raises(StoreError, match="scored before the store kept the classes of its faint detections") as caught:
        select_for_labeling(store, k, "entropy_weighted+balance")
    assert "\n" not in str(caught.value)
    assert len(select_for_labeling(store, k, "almdn+balance").image_ids) == k  # the paper's first stage reads the kept detections
