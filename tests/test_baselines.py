"""Each baseline: one finite score per image, and a planted uncertain image ranked above a
planted easy one."""

import numpy as np
import pandas as pd
import pytest
import torch

from almdn.acquisition.baselines import coreset_scores, loss_prediction_scores, mean_entropy_scores, random_scores
from almdn.acquisition.methods import PoolInputs, get_method
from almdn.acquisition.selection import select_batch


def test_random_scores_are_finite_seeded_and_uniform_over_the_pool():
    ids = list(range(100, 200))
    a, b, c = random_scores(ids, 3), random_scores(ids, 3), random_scores(ids, 4)
    assert a.index.tolist() == ids and np.isfinite(a).all()
    assert a.equals(b) and not a.equals(c)
    # top-10 of many seeds hits every image about equally often
    hits = pd.concat([random_scores(ids, s).nlargest(10) for s in range(300)]).index.value_counts()
    assert len(hits) == 100 and hits.max() < 3 * hits.mean()


def test_entropy_is_the_mean_over_an_image_s_detections():
    frame = pd.DataFrame({"image_id": [1, 1, 2, 3, 3, 3], "cls_entropy": [0.2, 0.4, 1.5, 0.0, 0.1, 0.2]})
    scores = mean_entropy_scores(frame, [1, 2, 3, 4])
    assert scores.loc[1] == np.float64(0.3) or abs(scores.loc[1] - 0.3) < 1e-12
    assert scores.loc[2] == 1.5 and abs(scores.loc[3] - 0.1) < 1e-12
    assert np.isnan(scores.loc[4])  # no detection: the selection policy decides
    assert select_batch(scores, 1).image_ids == [2]  # the planted uncertain image first


def test_score_weighted_entropy_counts_each_detection_by_its_score():
    # image 1: a sure object of low entropy and a faint one of high entropy; image 2 only faint ones
    frame = pd.DataFrame({"image_id": [1, 1, 2, 2], "score": [0.9, 0.1, 0.1, 0.3], "cls_entropy": [0.2, 1.2, 1.0, 0.6]})
    scores = mean_entropy_scores(frame, [1, 2, 3], score_weighted=True)
    assert abs(scores.loc[1] - (0.9 * 0.2 + 0.1 * 1.2) / 1.0) < 1e-12  # 0.3, not the plain mean 0.7
    assert abs(scores.loc[2] - (0.1 * 1.0 + 0.3 * 0.6) / 0.4) < 1e-12  # 0.7: the image of faint detections is ranked, first
    assert np.isnan(scores.loc[3])
    assert select_batch(scores, 1).image_ids == [2]
    method = get_method("entropy_weighted")
    assert method.detection_threshold(0.5, 0.05) == 0.05 and get_method("entropy").detection_threshold(0.5, 0.05) == 0.5
    assert method.score(PoolInputs([1, 2, 3], detections=frame)).scores.equals(scores)


def test_summed_weighted_entropy_ranks_more_uncertain_objects_first():
    # image 1: two faint objects of entropy 1.0; image 2: one of the same; image 3: sure, low entropy
    frame = pd.DataFrame({"image_id": [1, 1, 2, 3], "score": [0.3, 0.3, 0.3, 0.9], "cls_entropy": [1.0, 1.0, 1.0, 0.1]})
    totals = mean_entropy_scores(frame, [1, 2, 3, 4], score_weighted=True, total=True)
    assert totals.loc[[1, 2, 3]].tolist() == pytest.approx([0.6, 0.3, 0.09])
    assert np.isnan(totals.loc[4])
    means = mean_entropy_scores(frame, [1, 2, 3, 4], score_weighted=True)
    assert means.loc[1] == pytest.approx(means.loc[2])  # the mean cannot tell them apart
    assert mean_entropy_scores(frame, [1, 2], total=True).tolist() == pytest.approx([2.0, 1.0])
    method = get_method("entropy_weighted_sum")
    assert method.detection_threshold(0.5, 0.05) == 0.05
    batch = method.select(method.score(PoolInputs([1, 2, 3, 4], detections=frame)).scores, 2)
    assert batch.image_ids == [1, 2] and batch.reasons[0].startswith("summed class entropy rank 1")
    stored = pd.DataFrame({"entropy_weighted": [0.5]}, index=pd.Index([1], name="image_id"))
    with pytest.raises(ValueError, match="only the weighted mean"):  # a project's stored scores cannot give the sum
        method.score(PoolInputs([1], image_table=stored))


def _brute_force_k_center(pool, labeled, budget):
    """The greedy k-center order by a direct double loop (the definition)."""
    centers = [tuple(x) for x in labeled]
    order = []
    for _ in range(budget):
        best, best_d = None, -1.0
        for i, x in enumerate(pool):
            if i in order:
                continue
            d = min(np.linalg.norm(np.subtract(x, c)) for c in centers)
            if d > best_d:
                best, best_d = i, d
        order.append(best)
        centers.append(tuple(pool[best]))
    return order


def test_coreset_scores_reproduce_greedy_k_center():
    rng = np.random.default_rng(0)
    pool, labeled = rng.normal(size=(40, 3)), rng.normal(size=(5, 3))
    ids = list(range(1000, 1040))
    scores = coreset_scores(torch.tensor(pool), torch.tensor(labeled), 8, ids)
    assert np.isfinite(scores).all() and len(scores) == 40
    expected = [ids[i] for i in _brute_force_k_center(pool, labeled, 8)]
    assert select_batch(scores, 8).image_ids == expected


def test_coreset_picks_the_planted_outlier_and_skips_near_duplicates():
    labeled = torch.zeros(3, 2)
    pool = torch.tensor([[0.1, 0.0], [10.0, 10.0], [10.0, 10.01], [0.0, 0.2], [-5.0, 0.0]])
    scores = coreset_scores(pool, labeled, 2, [1, 2, 3, 4, 5])
    chosen = select_batch(scores, 2).image_ids
    assert chosen == [3, 5]  # the farther of the two outliers, then the next farthest, not its duplicate


def test_coreset_without_labeled_images_starts_from_the_pool_mean():
    pool = torch.tensor([[0.0], [1.0], [2.0], [9.0]])
    scores = coreset_scores(pool, torch.zeros(0, 1), 1, [1, 2, 3, 4])
    assert np.isfinite(scores).all()
    assert select_batch(scores, 1).image_ids == [4]


def test_loss_prediction_scores_rank_the_highest_predicted_loss_first():
    scores = loss_prediction_scores(torch.tensor([0.5, 3.0, -1.0]), [7, 8, 9])
    assert scores.to_dict() == {7: 0.5, 8: 3.0, 9: -1.0}
    assert select_batch(scores, 1).image_ids == [8]


def test_every_score_is_float64():
    for s in (random_scores([1, 2], 0), loss_prediction_scores([1.0, 2.0], [1, 2]), coreset_scores(torch.rand(3, 2), torch.rand(2, 2), 1, [1, 2, 3])):
        assert s.dtype == np.float64
