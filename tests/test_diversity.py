"""The second acquisition stage (almdn/acquisition/diversity.py): planted clusters, duplicates,
class imbalance, seeds, PPAL's matching distance, TypiClust, power sampling and edge cases."""

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from almdn.acquisition import diversity as dv
from almdn.acquisition.diversity import (
    candidate_indices,
    class_balanced_greedy,
    class_rarity,
    divergence_greedy,
    euclidean_distances,
    jensen_shannon,
    kcenter_greedy,
    kcenter_greedy_from_distances,
    kmedoids,
    matching_distance,
    power_sample,
    reserve_count,
    typicality,
    typiclust,
    weighted_kcenter_greedy,
)

CENTRES = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0], [10.0, 40.0]])


def _blobs(n_per=30, spread=0.5, seed=0, centres=CENTRES):
    """Well-separated Gaussian blobs: (features, blob id of each point)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


def _with_copies(x, copies=10):
    """``x`` plus ``copies`` identical copies of a point far from every blob (the most uncertain
    image, say): returns the features and the copies' indices."""
    dup = np.tile([[40.0, 40.0]], (copies, 1))
    return np.concatenate([x, dup]), np.arange(len(x), len(x) + copies)


def test_module_is_torch_free():
    tree = ast.parse(Path(dv.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "math", "collections", "numpy", "scipy", "sklearn"}


# --- k-center and k-medoids ------------------------------------------------------------------


def test_kcenter_picks_one_point_per_planted_cluster():
    x, blob = _blobs()
    picks = kcenter_greedy(x, 5)
    assert picks.dtype == np.int64 and len(picks) == 5
    assert sorted(blob[picks]) == [0, 1, 2, 3, 4]
    # Without centers the first pick is the point nearest the mean.
    assert picks[0] == np.argmin(np.linalg.norm(x - x.mean(0), axis=1))
    # The same from the distance matrix (first pick: the medoid of the whole set).
    picks_d = kcenter_greedy_from_distances(euclidean_distances(x), 5)
    assert sorted(blob[picks_d]) == [0, 1, 2, 3, 4]


def test_kcenter_starts_from_given_centers():
    x, blob = _blobs()
    # Blobs 0 and 1 are already covered by labeled images: the 3 picks cover the other three.
    picks = kcenter_greedy(x, 3, centers=CENTRES[:2])
    assert sorted(blob[picks]) == [2, 3, 4]
    fixed = np.flatnonzero(blob < 2)[[0, 30]]
    picks_d = kcenter_greedy_from_distances(euclidean_distances(x), 3, fixed=fixed)
    assert sorted(blob[picks_d]) == [2, 3, 4] and not set(picks_d) & set(fixed)


def test_weighted_kcenter_follows_the_weight_and_reports_each_pick_s_distance():
    x, blob = _blobs()
    plain, dist = weighted_kcenter_greedy(x, 3, centers=CENTRES[:2])
    assert np.array_equal(plain, kcenter_greedy(x, 3, centers=CENTRES[:2]))
    assert np.allclose(dist, [np.linalg.norm(x[p] - np.concatenate([CENTRES[:2], x[plain[:k]]]), axis=1).min() for k, p in enumerate(plain)])
    assert np.all(np.diff(dist) <= 0)  # farthest first: each pick no farther than the one before
    # blob 4 (10, 40) is the farthest from the labeled blobs; a weight of 5 on blob 2 (0, 20)
    # until a point of it is picked makes blob 2 the first pick instead
    def weight(picks):
        return np.where((blob == 2) & ~np.isin(2, blob[picks]), 5.0, 1.0)
    weighted, _ = weighted_kcenter_greedy(x, 3, centers=CENTRES[:2], weight=weight)
    assert blob[plain[0]] == 4 and blob[weighted[0]] == 2 and sorted(blob[weighted]) == [2, 3, 4]
    _, first_dist = weighted_kcenter_greedy(x, 1)
    assert np.isinf(first_dist[0])  # no centers: the first pick has no nearest center


def test_kmedoids_picks_one_medoid_per_planted_cluster_near_its_centre():
    x, blob = _blobs()
    d = euclidean_distances(x)
    medoids = kmedoids(d, 5)
    assert len(set(medoids.tolist())) == 5 and sorted(blob[medoids]) == [0, 1, 2, 3, 4]
    # Each medoid minimises the summed distance within its blob.
    for m in medoids:
        members = np.flatnonzero(blob == blob[m])
        assert m == members[np.argmin(d[np.ix_(members, members)].sum(1))]
    # The default initialisation is k-center greedy on the matrix, as in PPAL.
    assert np.array_equal(kmedoids(d, 5), kmedoids(d, 5, init=kcenter_greedy_from_distances(d, 5)))


def test_kmedoids_returns_k_distinct_medoids_even_with_duplicate_points():
    d = euclidean_distances(np.zeros((6, 2)))  # six identical points
    medoids = kmedoids(d, 3)
    assert len(medoids) == 3 and len(set(medoids.tolist())) == 3
    with pytest.raises(ValueError):
        kmedoids(d, 3, init=[0, 0, 1])


def test_ten_copies_of_the_most_uncertain_image_yield_at_most_one_in_a_batch():
    x, _ = _blobs()
    x, copies = _with_copies(x)
    scores = np.linspace(0.0, 1.0, len(x))
    scores[copies] = 5.0  # the copies are the most uncertain images of the pool
    cand, _ = candidate_indices(scores, 5, factor=len(x) / 5)  # every image is a candidate
    assert set(copies) <= set(cand[:10].tolist())  # top-K would take 5 copies
    for batch in (
        cand[kcenter_greedy(x[cand], 5)],
        cand[kcenter_greedy(x[cand], 6)],
        cand[kmedoids(euclidean_distances(x[cand]), 6)],
        kcenter_greedy_from_distances(euclidean_distances(x), 6),
    ):
        assert len(set(batch.tolist()) & set(copies.tolist())) <= 1
    # Same with PPAL's matching distance: ten images holding the same detection.
    feats = [x[i : i + 1] for i in range(len(x))]
    dist = matching_distance(feats, [np.zeros(1, int)] * len(x), [np.ones(1)] * len(x), metric="euclidean")
    batch = kmedoids(dist, 6)
    assert len(set(batch.tolist()) & set(copies.tolist())) <= 1


# --- PPAL's matching distance ----------------------------------------------------------------


def test_matching_distance_hand_built_value_weighted_and_symmetric():
    feats = [np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]])]
    labels = [np.array([0, 1]), np.array([0, 1])]
    scores = [np.array([3.0, 1.0]), np.array([1.0, 1.0])]
    d = matching_distance(feats, labels, scores, metric="euclidean")
    # a -> b: (3 * 5 + 1 * 0) / 4 = 3.75; b -> a: (1 * 5 + 1 * 0) / 2 = 2.5; mean 3.125.
    assert d[0, 1] == pytest.approx(3.125) and d[1, 0] == pytest.approx(3.125)
    assert d[0, 0] == 0.0 and d[1, 1] == 0.0


def test_matching_distance_cosine_pads_an_unmatched_class():
    feats = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0]])]
    labels = [np.array([0, 1]), np.array([0])]
    scores = [np.ones(2), np.ones(1)]
    d = matching_distance(feats, labels, scores)  # cosine, pad 2 (the maximum)
    # a -> b: (0 + 2) / 2 = 1 (its class-1 detection has no counterpart); b -> a: 0.
    assert d[0, 1] == pytest.approx(0.5)
    assert matching_distance(feats, labels, scores, pad_distance=1.0)[0, 1] == pytest.approx(0.25)


def test_matching_distance_only_matches_the_same_class():
    # b holds a class-1 detection exactly on a's class-0 one, and a class-0 one at distance 10.
    feats = [np.array([[0.0, 0.0]]), np.array([[0.0, 0.0], [6.0, 8.0]])]
    labels = [np.array([0]), np.array([1, 0])]
    scores = [np.ones(1), np.ones(2)]
    d = matching_distance(feats, labels, scores, metric="euclidean", pad_distance=100.0)
    # a -> b: 10 (not 0); b -> a: (pad 100 for class 1 + 10) / 2 = 55; mean 32.5.
    assert d[0, 1] == pytest.approx(32.5)


def test_matching_distance_images_without_detections_and_random_symmetry():
    rng = np.random.default_rng(3)
    n = 12
    counts = rng.integers(0, 5, n)
    counts[[2, 7]] = 0
    feats = [rng.standard_normal((c, 8)) for c in counts]
    labels = [rng.integers(0, 3, c) for c in counts]
    scores = [rng.random(c) for c in counts]
    for metric in ("cosine", "euclidean"):
        d = matching_distance(feats, labels, scores, metric=metric, pad_distance=7.0, chunk_size=5)
        assert d.shape == (n, n) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
        assert np.all(d[2, np.arange(n) != 2] == 7.0) and d[2, 7] == 7.0
        # The vectorised form equals a direct double loop over detections.
        for a in range(n):
            for b in range(n):
                if a == b or not counts[a] or not counts[b]:
                    continue

                def directed(i, j):
                    fi, fj = feats[i], feats[j]
                    if metric == "cosine":
                        fi = fi / np.linalg.norm(fi, axis=1, keepdims=True)
                        fj = fj / np.linalg.norm(fj, axis=1, keepdims=True)
                        dist = 1 - fi @ fj.T
                    else:
                        dist = np.linalg.norm(fi[:, None] - fj[None], axis=2)
                    dist = np.where(labels[i][:, None] == labels[j][None], dist, np.inf).min(1)
                    dist[np.isinf(dist)] = 7.0
                    return np.sum(scores[i] * dist) / np.sum(scores[i])

                assert d[a, b] == pytest.approx((directed(a, b) + directed(b, a)) / 2)
    empty = matching_distance([np.zeros((0, 4))] * 3, [np.zeros(0, int)] * 3, [np.zeros(0)] * 3)
    assert np.array_equal(empty, 2.0 * (1 - np.eye(3)))
    assert matching_distance([], [], []).shape == (0, 0)


# --- class balance ---------------------------------------------------------------------------


def test_class_rarity_weighs_the_rarest_class_one():
    w = class_rarity([100, 10, 0], smoothing=1.0)
    assert w[2] == 1.0 and w[0] < w[1] < w[2]
    assert w[1] == pytest.approx(1 / 11) and w[0] == pytest.approx(1 / 101)
    assert class_rarity([]).shape == (0,)


def test_class_balance_picks_the_rare_class_first():
    # Labeled: 200 objects of class 0, 5 of class 1. Images 0-3 show class 0 with higher
    # scores; image 4 shows the rare class 1; image 5 is a low-scoring class-0 image.
    counts = np.array([200.0, 5.0])
    mass = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [2, 0]], dtype=float)
    scores = np.array([1.0, 0.98, 0.96, 0.94, 0.9, 0.5])
    assert class_balanced_greedy(scores, mass, counts, 2, strength=0.0).tolist() == [0, 1]  # top-K
    picks = class_balanced_greedy(scores, mass, counts, 6, strength=1.0)
    assert picks.tolist() == [4, 0, 1, 2, 3, 5]
    # CALD's divergence step likewise.
    assert divergence_greedy(mass, counts, 1).tolist() == [4]


def test_class_balance_updates_counts_after_each_pick():
    # Two rare-class images: after the first is picked the rare class is rare no more (its
    # predicted mass of 100 lifts the count above class 0's 50), so the second pick goes to the
    # best class-0 image although the other rare-class image scores higher.
    counts = np.array([50.0, 0.0])
    mass = np.array([[0, 100], [0, 100], [50, 0], [50, 0]], dtype=float)
    scores = np.array([1.0, 1.0, 0.95, 0.0])
    assert class_balanced_greedy(scores, mass, counts, 4).tolist() == [0, 2, 1, 3]
    assert divergence_greedy(mass, counts, 2).tolist() == [0, 2]


def test_jensen_shannon_matches_scipy_and_zero_mass_rows_come_last():
    rng = np.random.default_rng(0)
    p, q = rng.random((6, 4)), rng.random(4)
    want = [jensenshannon(row, q, base=2) ** 2 for row in p]
    assert np.allclose(jensen_shannon(p, q), want)
    mass = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=float)
    assert divergence_greedy(mass, [0.0, 0.0], 4).tolist()[2:] == [0, 2]
    # NaN scores come last in class-balanced greedy too.
    picks = class_balanced_greedy([np.nan, 0.2, np.nan, 0.1], mass, [1.0, 1.0], 4)
    assert picks.tolist()[2:] == [0, 2]


# --- cold start: TypiClust -------------------------------------------------------------------


def test_typicality_is_highest_at_the_blob_centre():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((200, 2)), [[6.0, 6.0]]])  # one outlier, last
    t = typicality(x, n_neighbors=20)
    assert np.argmin(t) == 200
    assert np.linalg.norm(x[np.argmax(t)]) < np.quantile(np.linalg.norm(x[:200], axis=1), 0.2)
    assert typicality(np.zeros((1, 3))).shape == (1,) and typicality(np.zeros((0, 3))).shape == (0,)


def test_typiclust_one_typical_point_per_cluster():
    x, blob = _blobs(n_per=40, spread=1.0, seed=2)
    # An outlier inside blob 0's reach, which TypiClust must never take as "typical".
    x = np.concatenate([x, [[3.5, 3.5]]])
    blob = np.concatenate([blob, [0]])
    picks = typiclust(x, np.zeros(len(x), bool), 5, seed=0)
    assert sorted(blob[picks]) == [0, 1, 2, 3, 4] and len(x) - 1 not in picks
    for i in picks:
        members = np.flatnonzero(blob == blob[i])
        radius = np.linalg.norm(x[members] - CENTRES[blob[i]], axis=1)
        assert np.linalg.norm(x[i] - CENTRES[blob[i]]) <= np.quantile(radius, 0.5)


def test_typiclust_skips_clusters_already_labeled():
    x, blob = _blobs(n_per=40, spread=1.0, seed=2)
    labeled = np.zeros(len(x), bool)
    labeled[[0, 40]] = True  # one labeled image in blobs 0 and 1
    picks = typiclust(x, labeled, 3, seed=0)
    assert sorted(blob[picks]) == [2, 3, 4] and not labeled[picks].any()
    # Beyond the clusters: more picks than clusters still gives distinct unlabeled points.
    many = typiclust(x, labeled, 12, seed=0)
    assert len(set(many.tolist())) == 12 and not labeled[many].any()


def test_typiclust_seeds():
    x = np.random.default_rng(5).random((150, 4))  # no structure: the clustering depends on the seed
    mask = np.zeros(len(x), bool)
    a, b = typiclust(x, mask, 8, seed=0), typiclust(x, mask, 8, seed=0)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, typiclust(x, mask, 8, seed=s)) for s in (1, 2, 3))


# --- stochastic batches ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", dv.POWER_MODES)
def test_power_sample_seeds_nan_and_large_beta(mode):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(60)  # z-scores: negative ones included
    scores[::3] = np.nan
    a = power_sample(scores, 10, beta=1.0, seed=4, mode=mode)
    assert np.array_equal(a, power_sample(scores, 10, beta=1.0, seed=4, mode=mode))
    assert any(not np.array_equal(a, power_sample(scores, 10, beta=1.0, seed=s, mode=mode)) for s in (5, 6, 7))
    assert len(set(a.tolist())) == 10 and np.isfinite(scores[a]).all()
    # Every finite score first (in some order), then the NaN ones in input order.
    full = power_sample(scores, 60, seed=4, mode=mode)
    assert sorted(full[:40].tolist()) == np.flatnonzero(np.isfinite(scores)).tolist()
    assert full[40:].tolist() == np.flatnonzero(np.isnan(scores)).tolist()
    # beta large: top-K exactly (in decreasing score order).
    topk = np.argsort(-np.where(np.isnan(scores), -np.inf, scores), kind="stable")[:10]
    assert power_sample(scores, 10, beta=1e4, seed=4, mode=mode).tolist() == topk.tolist()


def test_power_sample_prefers_high_scores_but_not_only():
    scores = np.arange(100, dtype=float)
    hits = np.zeros(100)
    for seed in range(200):
        hits[power_sample(scores, 10, beta=2.0, seed=seed)] += 1
    assert hits[90:].mean() > 3 * hits[:50].mean()  # tempered preference for high scores
    assert (hits[:90] > 0).sum() > 30  # not top-K: the batch reaches well below the top 10
    # beta = 0 is uniform: all-equal weights.
    assert power_sample(np.full(5, 3.0), 5, beta=0.0, seed=0).shape == (5,)


# --- stage 1 candidates ----------------------------------------------------------------------


def test_candidate_indices_and_reserve():
    scores = np.array([0.5, np.nan, 2.0, -1.0, np.nan, 2.0, 0.1])
    cand, res = candidate_indices(scores, 1, factor=2.5)  # ceil(2.5) = 3
    assert cand.tolist() == [2, 5, 0] and res.size == 0
    assert candidate_indices(scores, 5, factor=1.2)[0].tolist() == [2, 5, 0, 6, 3]  # all finite
    assert len(candidate_indices(np.arange(10.0), 5, factor=1.2)[0]) == 6
    _, res = candidate_indices(scores, 2, reserve_fraction=0.5)
    assert res.tolist() == [1, 4]
    big = np.full(100, np.nan)
    sub = candidate_indices(big, 4, reserve_fraction=0.25, reserve_limit=10, seed=1)[1]
    assert len(sub) == 10 and np.array_equal(sub, np.sort(sub))
    assert np.array_equal(sub, candidate_indices(big, 4, reserve_fraction=0.25, reserve_limit=10, seed=1)[1])
    assert reserve_count(10, 0.25) == 3 and reserve_count(10, 0.0) == 0 and reserve_count(3, 1.0) == 3


def test_half_the_pool_without_detections_still_fills_the_batch():
    # 40 images, the odd ones without a detection (NaN); budget 10 with 30% reserved for them.
    x, _ = _blobs(n_per=8)
    scores = np.where(np.arange(40) % 2 == 0, np.linspace(0, 1, 40), np.nan)
    budget = 10
    cand, reserved = candidate_indices(scores, budget, factor=4.0, reserve_fraction=0.3)
    assert len(cand) == 20 and np.isfinite(scores[cand]).all()  # all 20 finite (< 4 x 10)
    assert reserved.tolist() == list(range(1, 40, 2))
    n_reserved = reserve_count(budget, 0.3)
    batch = np.concatenate([cand[kcenter_greedy(x[cand], budget - n_reserved)], reserved[kcenter_greedy(x[reserved], n_reserved, centers=x[cand])]])
    assert len(batch) == budget and len(set(batch.tolist())) == budget
    assert np.isnan(scores[batch]).sum() == n_reserved == 3
    # Without a reserve, a budget above the scored images is filled with the unscored ones.
    assert len(power_sample(scores, 25)) == 25 and np.isnan(scores[power_sample(scores, 25)[20:]]).all()


# --- edge cases ------------------------------------------------------------------------------


def _selectors():
    """Each selector as f(n, budget) on a pool of n images with distinct features."""
    rng = np.random.default_rng(0)

    def feats(n):
        return rng.standard_normal((n, 3))

    return {
        "kcenter": lambda n, b: kcenter_greedy(feats(n), b),
        "kcenter_d": lambda n, b: kcenter_greedy_from_distances(euclidean_distances(feats(n)), b),
        "kmedoids": lambda n, b: kmedoids(euclidean_distances(feats(n)), b),
        "balanced": lambda n, b: class_balanced_greedy(rng.random(n), rng.random((n, 3)), np.ones(3), b),
        "divergence": lambda n, b: divergence_greedy(rng.random((n, 3)), np.ones(3), b),
        "typiclust": lambda n, b: typiclust(feats(n), np.zeros(n, bool), b),
        "power": lambda n, b: power_sample(rng.random(n), b),
        "candidates": lambda n, b: candidate_indices(rng.random(n), b, factor=1.0)[0],
    }


@pytest.mark.parametrize("name", list(_selectors()))
def test_edge_cases(name):
    select = _selectors()[name]
    for n, budget, want in ((8, 0, 0), (8, 20, 8), (0, 3, 0), (1, 1, 1), (1, 5, 1)):
        picks = select(n, budget)
        assert isinstance(picks, np.ndarray) and picks.dtype.kind == "i", (n, budget)
        assert len(picks) == want and len(set(picks.tolist())) == want, (n, budget)
        assert picks.size == 0 or (picks.min() >= 0 and picks.max() < n)
    with pytest.raises(ValueError):
        select(4, -1)
