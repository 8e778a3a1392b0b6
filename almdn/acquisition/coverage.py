"""Coverage: greedy k-center (the core-set), k-medoids and PPAL's matching distance.

Sources: the core-set (Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
Core-Set Approach", ICLR 2018) and PPAL (Yang et al., "Plug and Play Active Learning for Object
Detection", CVPR 2024; k-center-initialised k-medoids over a category-conditioned matching
distance). Conventions: :mod:`almdn.acquisition.diversity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from almdn.acquisition.conventions import _EMPTY, _as_matrix, _check_budget  # the diversity family's shared checks


def _as_distances(distances) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim == 1 and d.size == 0:
        d = d.reshape(0, 0)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError("distances must be a square (N, N) matrix")
    return d


def euclidean_distances(a, b=None, chunk_size: int = 4096) -> np.ndarray:
    """``(N, M)`` Euclidean distances between the rows of ``a`` and of ``b`` (``b = a`` if None).

    Why: k-center and k-medoids over pooled image embeddings need one distance matrix.
    Computed as sqrt(|a|^2 + |b|^2 - 2 a.b), clipped at 0, in row chunks of ``chunk_size``.
    """
    a = _as_matrix(a, "a")
    b = a if b is None else _as_matrix(b, "b")
    out = np.empty((len(a), len(b)), dtype=np.float64)
    if not len(a) or not len(b):
        return out
    bb = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), chunk_size):
        ac = a[start : start + chunk_size]
        sq = np.einsum("ij,ij->i", ac, ac)[:, None] + bb[None, :] - 2.0 * (ac @ b.T)
        out[start : start + chunk_size] = np.sqrt(np.maximum(sq, 0.0))
    if b is a:
        np.fill_diagonal(out, 0.0)
    return out


def _min_distance_to(x: np.ndarray, centers: np.ndarray, chunk_size: int = 4096) -> np.ndarray:
    """Each row of ``x``'s distance to its nearest row of ``centers`` (inf without centers)."""
    out = np.full(len(x), np.inf)
    for start in range(0, len(centers), chunk_size):
        out = np.minimum(out, euclidean_distances(x, centers[start : start + chunk_size]).min(axis=1))
    return out


def _farthest_first(min_dist: np.ndarray, budget: int, distance_to, first: int | None = None, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy farthest-first from the current ``min_dist`` (-inf marks an excluded point).

    ``distance_to(i)`` gives every point's distance to point ``i``; ``first`` (if given) is
    the first pick. ``weight(picks)`` (if given) is a positive factor per point on its distance,
    from the picks so far (a weighted k-center's gain). The argmax takes the first maximum, so
    ties go to input order; picked points are masked so none repeats. Returns the picks and each
    pick's distance to its nearest center when it was picked.
    """
    min_dist = min_dist.copy()
    picks = np.empty(min(budget, int(np.sum(min_dist > -np.inf))), dtype=np.int64)
    at_pick = np.empty(len(picks))
    for k in range(len(picks)):
        if k == 0 and first is not None:
            i = first
        else:
            i = int(np.argmax(min_dist if weight is None else min_dist * weight(picks[:k])))
        picks[k], at_pick[k] = i, min_dist[i]
        min_dist = np.minimum(min_dist, distance_to(i))
        min_dist[picks[: k + 1]] = -np.inf
    return picks, at_pick


def kcenter_greedy(features, budget: int, centers=None) -> np.ndarray:
    """Greedy k-center (farthest-first traversal) over Euclidean features: the core-set.

    Why: a batch that covers the feature space cannot hold two near-duplicates while a distinct
    image is far from every pick (Sener & Savarese, ICLR 2018, Alg. 1; the 2-approximation of
    Gonzalez 1985).

    Each pick is the point whose distance to its nearest center (``centers``, e.g. the labeled
    images, plus the points picked before it) is largest: u = argmax_i min_j ||x_i - c_j||.
    Without ``centers`` the first pick is the point nearest the features' mean (deterministic,
    where Sener & Savarese and PPAL start at random). Ties go to input order; identical points
    are at distance 0 from a pick, so a copy is taken only once every point is covered.

    Args:
        features: ``(N, D)`` candidate features.
        budget: how many to pick (at most N are returned).
        centers: ``(M, D)`` features that already count as chosen (not candidates), or None.

    Returns:
        ``min(budget, N)`` distinct indices into ``features``, in pick order.
    """
    return weighted_kcenter_greedy(features, budget, centers)[0]


def weighted_kcenter_greedy(features, budget: int, centers=None, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kcenter_greedy` whose gain is the distance to the nearest center times
    ``weight(picks)``, a positive factor per point computed from the picks so far (e.g. the
    rarity of each image's predicted classes once the picks are labeled; None: 1). Returns the
    picks and each pick's distance to its nearest center when it was picked (inf for a first
    pick without ``centers``)."""
    budget = _check_budget(budget)
    x = _as_matrix(features)
    if budget == 0 or len(x) == 0:
        return _EMPTY.copy(), np.zeros(0)
    c = None if centers is None else _as_matrix(centers, "centers")
    first = None
    if c is not None and len(c):
        if c.shape[1] != x.shape[1]:
            raise ValueError("centers must have the features' dimension")
        min_dist = _min_distance_to(x, c)
    else:
        min_dist = np.full(len(x), np.inf)
        first = int(np.argmin(euclidean_distances(x, x.mean(axis=0, keepdims=True))[:, 0]))
    sq = np.einsum("ij,ij->i", x, x)

    def distance_to(i: int) -> np.ndarray:
        return np.sqrt(np.maximum(sq + sq[i] - 2.0 * (x @ x[i]), 0.0))

    return _farthest_first(min_dist, budget, distance_to, first, weight)


def kcenter_greedy_from_distances(distances, budget: int, fixed=None) -> np.ndarray:
    """Greedy k-center on a precomputed ``(N, N)`` distance matrix (any dissimilarity).

    Why: the category-conditioned matching distance of PPAL is not Euclidean over one vector,
    so k-center and the k-medoids initialisation must work from the matrix (PPAL,
    ``DiversitySampler.k_centroid_greedy``; Sener & Savarese's Alg. 1).

    Each pick is u = argmax_i min_{j in fixed or picked} d(i, j), never a ``fixed`` or already
    picked index. With no ``fixed`` the first pick is the matrix's medoid (smallest row sum;
    PPAL starts at random, this is the deterministic analogue of "nearest the mean").

    Args:
        distances: ``(N, N)``; row i holds d(i, .). It need not be symmetric: d(i, j) is read
            from row i.
        budget: how many to pick (at most N - len(fixed)).
        fixed: indices into the same matrix that already count as centers (e.g. labeled
            images placed in the matrix), or None.
    """
    budget = _check_budget(budget)
    d = _as_distances(distances)
    n = len(d)
    if budget == 0 or n == 0:
        return _EMPTY.copy()
    fixed = np.zeros(0, dtype=np.int64) if fixed is None else np.unique(np.asarray(fixed, dtype=np.int64))
    first = None
    if len(fixed):
        min_dist = d[:, fixed].min(axis=1)
        min_dist[fixed] = -np.inf
    else:
        min_dist = np.full(n, np.inf)
        first = int(np.argmin(d.sum(axis=1)))
    return _farthest_first(min_dist, budget, lambda i: d[:, i], first)[0]


def kmedoids(distances, k: int, init=None, max_iter: int = 50) -> np.ndarray:
    """Alternating (Voronoi-iteration) k-medoids on a precomputed distance matrix.

    Why: PPAL's stage 2 picks the batch as the medoids of the candidates, so each pick stands
    for a group of similar images rather than being an extreme point as in k-center
    (Yang et al., CVPR 2024, Sec. 3.3; ``DiversitySampler.kmeans`` in ChenhongyiYang/PPAL;
    the alternating algorithm of Park & Jun 2009).

    Initialised by :func:`kcenter_greedy_from_distances` (as PPAL does), then repeated until the
    medoids stop changing or ``max_iter`` rounds: (1) assign every point to its nearest medoid,
    argmin_c d(i, m_c) (ties to the earlier medoid; a medoid is always assigned to itself, so no
    cluster empties even with duplicate points); (2) replace each medoid by the member with the
    smallest sum of distances to its cluster, argmin_{i in C} sum_{j in C} d(i, j) (ties to
    input order). The cluster update is one matrix product, no loop over clusters.

    Args:
        distances: ``(N, N)`` dissimilarities, ideally symmetric with a zero diagonal.
        k: number of medoids (the batch size); at most N are returned.
        init: ``k`` distinct initial medoid indices, or None for k-center greedy.
        max_iter: maximal number of assign/update rounds.

    Returns:
        ``min(k, N)`` distinct medoid indices, ordered like their initial medoids.
    """
    k = _check_budget(k)
    d = _as_distances(distances)
    n = len(d)
    if k == 0 or n == 0:
        return _EMPTY.copy()
    if init is None:
        medoids = kcenter_greedy_from_distances(d, k)
    else:
        medoids = np.asarray(init, dtype=np.int64).reshape(-1)
        if len(np.unique(medoids)) != len(medoids) or len(medoids) != min(k, n):
            raise ValueError(f"init must hold {min(k, n)} distinct indices")
    k = len(medoids)
    cluster_ids = np.arange(k)
    for _ in range(int(max_iter)):
        assign = np.argmin(d[:, medoids], axis=1)
        assign[medoids] = cluster_ids
        onehot = np.zeros((n, k))
        onehot[np.arange(n), assign] = 1.0
        cost = d @ onehot  # cost[i, c] = sum over members j of cluster c of d(i, j)
        cost[onehot == 0] = np.inf  # a medoid must be a member of its cluster
        updated = np.argmin(cost, axis=0).astype(np.int64)
        if np.array_equal(updated, medoids):
            break
        medoids = updated
    return medoids


def matching_distance(
    det_features: Sequence,
    det_labels: Sequence,
    det_scores: Sequence,
    metric: str = "cosine",
    pad_distance: float | None = None,
    chunk_size: int = 2048,
) -> np.ndarray:
    """PPAL's category-conditioned matching distance between images, ``(N, N)``.

    Why: two images are redundant for a detector when they hold similar objects of the same
    classes, which one pooled embedding per image blurs (Yang et al., CVPR 2024, Sec. 3.3,
    "category-conditioned matching similarity").

    For images a and b with detections i (feature f_i, class c_i, score s_i):
    d(a -> b) = sum_{i in a} s_i * min_{j in b, c_j = c_i} dist(f_i, f_j) / sum_{i in a} s_i,
    and D(a, b) = (d(a -> b) + d(b -> a)) / 2. PPAL writes it as a similarity (max cosine,
    score-weighted); this is the same quantity as a distance, 1 - cos for ``"cosine"``.

    - A detection of a with no same-class detection in b counts ``pad_distance``.
    - An image without detections is at ``pad_distance`` from every other image (including
      other images without detections: nothing says they are alike) and at 0 from itself.
    - An image whose scores sum to 0 is weighted uniformly.
    - The diagonal is exactly 0.

    Vectorised over detection pairs: all detections are concatenated, one pairwise matrix
    (in row chunks of ``chunk_size`` detections) with different-class pairs at +inf, a
    ``np.minimum.reduceat`` over each image's columns and an ``np.add.reduceat`` over each
    image's rows.

    Args:
        det_features: per image an ``(n_i, D)`` array of detection features.
        det_labels: per image ``(n_i,)`` integer classes.
        det_scores: per image ``(n_i,)`` non-negative weights (detection confidences).
        metric: ``"cosine"`` (1 - cosine similarity, in [0, 2]) or ``"euclidean"``.
        pad_distance: the distance of an unmatched detection; None means the metric's maximum:
            2.0 for cosine, the largest distance between any two detections for Euclidean
            (0 when no image has a detection: then all off-diagonal distances are equal).
        chunk_size: detections per block of the pairwise matrix (memory: chunk x all).
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"Unknown metric '{metric}'; choose 'cosine' or 'euclidean'.")
    n = len(det_features)
    if len(det_labels) != n or len(det_scores) != n:
        raise ValueError("det_features, det_labels and det_scores must hold one entry per image")
    labels = [np.asarray(x, dtype=np.int64).reshape(-1) for x in det_labels]
    scores = [np.asarray(x, dtype=np.float64).reshape(-1) for x in det_scores]
    counts = np.array([len(x) for x in labels], dtype=np.int64)
    if any(len(s) != c for s, c in zip(scores, counts)):
        raise ValueError("each image needs one score per detection")
    nonempty = np.flatnonzero(counts > 0)
    feats = [np.asarray(det_features[i], dtype=np.float64).reshape(counts[i], -1) for i in nonempty]
    if pad_distance is None and metric == "cosine":
        pad_distance = 2.0
    out = np.zeros((n, n))
    if len(nonempty) == 0:
        out[:] = 0.0 if pad_distance is None else pad_distance
        np.fill_diagonal(out, 0.0)
        return out
    f = np.concatenate(feats)
    lab = np.concatenate([labels[i] for i in nonempty])
    w = np.concatenate([scores[i] for i in nonempty])
    if np.any(w < 0):
        raise ValueError("detection scores must be non-negative")
    starts = np.concatenate([[0], np.cumsum(counts[nonempty])[:-1]])
    if metric == "cosine":
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    total = len(f)
    nearest = np.empty((total, len(nonempty)))
    largest = 0.0
    for start in range(0, total, chunk_size):
        rows = slice(start, start + chunk_size)
        if metric == "cosine":
            dist = np.clip(1.0 - f[rows] @ f.T, 0.0, 2.0)
        else:
            dist = euclidean_distances(f[rows], f)
        largest = max(largest, float(dist.max()))
        dist[lab[rows, None] != lab[None, :]] = np.inf
        nearest[rows] = np.minimum.reduceat(dist, starts, axis=1)
    pad = largest if pad_distance is None else float(pad_distance)
    nearest[np.isinf(nearest)] = pad
    wsum = np.add.reduceat(w, starts)
    uniform = wsum <= 0
    if uniform.any():  # images whose scores sum to 0: plain mean over their detections
        w = np.where(np.repeat(uniform, counts[nonempty]), 1.0, w)
        wsum = np.add.reduceat(w, starts)
    directed = np.add.reduceat(w[:, None] * nearest, starts, axis=0) / wsum[:, None]  # d(a -> b)
    out[:] = pad
    out[np.ix_(nonempty, nonempty)] = 0.5 * (directed + directed.T)
    np.fill_diagonal(out, 0.0)
    return out

