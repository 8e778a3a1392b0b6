"""Typicality and TypiClust: the cold-start choice of representative, diverse images.

Source: TypiClust (Hacohen et al., "Active Learning on a Budget", ICML 2022). Conventions:
:mod:`almdn.acquisition.diversity`.
"""

from __future__ import annotations

import numpy as np

from almdn.acquisition.conventions import _EMPTY, _as_matrix, _check_budget  # the diversity family's shared checks
from almdn.acquisition.coverage import euclidean_distances


def typicality(features, n_neighbors: int = 20, eps: float = 1e-5) -> np.ndarray:
    """TypiClust's typicality: the inverse mean distance to the k nearest neighbours, ``(N,)``.

    Why: at the smallest budgets the most useful labels are the most representative, dense
    points, not the uncertain outliers (Hacohen et al., ICML 2022, Eq. 4:
    Typicality(x) = (1/k * sum_{x_i in kNN(x)} ||x - x_i||)^-1; ``calculate_typicality`` in
    avihu111/TypiClust adds ``eps`` = 1e-5 to the mean).

    k = min(n_neighbors, N - 1), the point itself excluded. With N = 1 (no neighbours) the mean
    distance is taken as 0, so the typicality is 1 / eps.
    """
    x = _as_matrix(features)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    k = min(int(n_neighbors), n - 1)
    if k < 1:
        return np.full(n, 1.0 / eps)
    mean_knn = np.empty(n)
    chunk = max(1, 2**22 // n)  # about 32 MB of distances at a time
    for start in range(0, n, chunk):
        dist = euclidean_distances(x[start : start + chunk], x)
        rows = np.arange(len(dist))
        dist[rows, start + rows] = np.inf  # the point itself is not its own neighbour
        mean_knn[start : start + chunk] = np.partition(dist, k - 1, axis=1)[:, :k].mean(axis=1)
    return 1.0 / (mean_knn + eps)


def typiclust(
    features,
    labeled_mask,
    budget: int,
    n_neighbors: int = 20,
    seed: int = 0,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    minibatch_above: int = 50,
    n_init: int = 10,
) -> np.ndarray:
    """TypiClust (TPC-RP): the most typical point of each uncovered k-means cluster.

    Why: the cold-start choice for the first, smallest budgets, where a weak model's
    uncertainty is noise and typical, diverse points beat it (Hacohen et al., ICML 2022,
    Alg. 1; ``deep-al/pycls/al/typiclust.py`` in avihu111/TypiClust).

    1. k-means (seeded) into K = min(|labeled| + budget, max_clusters, N) clusters; scikit-learn
       ``KMeans`` (``n_init`` restarts), ``MiniBatchKMeans`` when K > ``minibatch_above``, as
       TypiClust does.
    2. Repeat ``budget`` times: among clusters that still have unlabeled, unpicked points and
       more than ``min_cluster_size`` members (TypiClust drops smaller ones as outliers; when
       none is left, every cluster is eligible), take the one with the fewest labeled + picked
       points, then the largest, then the lowest cluster id; pick its unlabeled, unpicked point
       of highest :func:`typicality`, computed among the cluster's members with
       k = min(n_neighbors, size // 2) (at least 1), as TypiClust does.

    Args:
        features: ``(N, D)`` embeddings of the whole pool, labeled images included.
        labeled_mask: ``(N,)`` bool, True for images already labeled (never picked).
        budget: how many to pick (at most the number of unlabeled points).
        seed: k-means ``random_state``.

    Returns:
        Indices of unlabeled points, in pick order.
    """
    budget = _check_budget(budget)
    x = _as_matrix(features)
    labeled = np.asarray(labeled_mask, dtype=bool).reshape(-1)
    if len(labeled) != len(x):
        raise ValueError("labeled_mask must have one entry per feature row")
    n_unlabeled = int((~labeled).sum())
    budget = min(budget, n_unlabeled)
    if budget == 0:
        return _EMPTY.copy()
    n_clusters = max(1, min(int(labeled.sum()) + budget, int(max_clusters), len(x)))
    if n_clusters == 1:
        cluster = np.zeros(len(x), dtype=np.int64)
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if n_clusters > minibatch_above:
            km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=max(1024, 3 * n_clusters))
        else:
            km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init)
        cluster = km.fit_predict(x).astype(np.int64)
    n_clusters = int(cluster.max()) + 1
    size = np.bincount(cluster, minlength=n_clusters)
    covered = np.bincount(cluster[labeled], minlength=n_clusters)
    remaining = np.bincount(cluster[~labeled], minlength=n_clusters)
    available = ~labeled
    typical: dict[int, np.ndarray] = {}
    picks = np.empty(budget, dtype=np.int64)
    for b in range(budget):
        open_ = remaining > 0
        eligible = open_ & (size > min_cluster_size)
        if not eligible.any():
            eligible = open_
        # Fewest covered first, then largest, then lowest id: lexsort's last key is the primary.
        ids = np.flatnonzero(eligible)
        c = int(ids[np.lexsort((ids, -size[ids], covered[ids]))[0]])
        members = np.flatnonzero(cluster == c)
        if c not in typical:
            k = max(1, min(int(n_neighbors), len(members) // 2))
            typical[c] = typicality(x[members], n_neighbors=k)
        t = np.where(available[members], typical[c], -np.inf)
        i = int(members[int(np.argmax(t))])
        picks[b] = i
        available[i] = False
        covered[c] += 1
        remaining[c] -= 1
    return picks

