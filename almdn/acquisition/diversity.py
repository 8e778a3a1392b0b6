"""The second acquisition stage: diversity, class balance, cold start and stochastic batches.

Pure algorithms over arrays (numpy, scipy, scikit-learn; no torch). Every function takes
arrays over N candidate images in a fixed order and returns ``np.ndarray`` of int indices into
them, in pick order. Conventions shared by all of them:

- **Deterministic.** Randomness comes only from ``np.random.default_rng(seed)`` (or a seeded
  scikit-learn estimator); the same inputs and seed give the same batch.
- **Ties are broken by input order** (``argmax`` / ``argmin`` / stable sorts take the first).
- **Budgets.** ``budget < 0`` raises ``ValueError``; ``budget == 0`` or ``N == 0`` returns an
  empty array; ``budget > N`` returns as many as there are (never a repeated index).
- **Missing scores.** A NaN score (an image without a kept detection) is never chosen while an
  image with a finite score remains; when the budget exceeds the finite scores, the NaN images
  follow in input order.

Sources: PPAL (Yang et al., "Plug and Play Active Learning for Object Detection", CVPR 2024;
k-center-initialised k-medoids over a category-conditioned matching distance), CALD (Yu et al.,
"Consistency-based Active Learning for Object Detection"; JS divergence from the labeled class
distribution), TypiClust (Hacohen et al., "Active Learning on a Budget", ICML 2022), stochastic
batch acquisition (Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for Deep
Active Learning", TMLR 2023) and the core-set (Sener & Savarese, "Active Learning for
Convolutional Neural Networks: A Core-Set Approach", ICLR 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "POWER_MODES",
    "candidate_indices",
    "class_balanced_greedy",
    "class_rarity",
    "divergence_greedy",
    "euclidean_distances",
    "jensen_shannon",
    "kcenter_greedy",
    "kcenter_greedy_from_distances",
    "kmedoids",
    "matching_distance",
    "power_sample",
    "reserve_count",
    "typicality",
    "typiclust",
]

POWER_MODES = ("power", "softmax", "softrank")

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


def _farthest_first(min_dist: np.ndarray, budget: int, distance_to, first: int | None = None) -> np.ndarray:
    """Greedy farthest-first from the current ``min_dist`` (-inf marks an excluded point).

    ``distance_to(i)`` gives every point's distance to point ``i``; ``first`` (if given) is
    the first pick. The argmax takes the first maximum, so ties go to input order; picked
    points are masked so none repeats.
    """
    min_dist = min_dist.copy()
    picks = np.empty(min(budget, int(np.sum(min_dist > -np.inf))), dtype=np.int64)
    for k in range(len(picks)):
        i = first if (k == 0 and first is not None) else int(np.argmax(min_dist))
        picks[k] = i
        min_dist = np.minimum(min_dist, distance_to(i))
        min_dist[picks[: k + 1]] = -np.inf
    return picks


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
    budget = _check_budget(budget)
    x = _as_matrix(features)
    if budget == 0 or len(x) == 0:
        return _EMPTY.copy()
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

    return _farthest_first(min_dist, budget, distance_to, first)


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
    return _farthest_first(min_dist, budget, lambda i: d[:, i], first)


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


def class_rarity(labeled_counts, smoothing: float = 1.0) -> np.ndarray:
    """Per-class weights in (0, 1] that favour classes rare in the labeled set.

    Why: an early detector is confident on frequent classes, so uncertainty alone
    under-samples the rare ones (issue 19 measured 19% rare-class objects picked against 22%
    in the pool); a weight inversely proportional to the labeled count corrects that (the
    minority-favouring quotas of Wu et al., CVPR 2022; the class weights of PPAL).

    w_c = (n_min + s) / (n_c + s), with n_c the labeled count of class c, n_min the smallest
    and s = ``smoothing`` > 0: the rarest class weighs 1, a class k times as frequent about 1/k.
    """
    n = np.asarray(labeled_counts, dtype=np.float64).reshape(-1)
    if smoothing <= 0:
        raise ValueError("smoothing must be > 0")
    if np.any(n < 0):
        raise ValueError("labeled counts must be non-negative")
    if n.size == 0:
        return n.copy()
    return (n.min() + smoothing) / (n + smoothing)


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


def _normalise_rows(mass: np.ndarray) -> np.ndarray:
    total = mass.sum(axis=1, keepdims=True)
    return np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)


def class_balanced_greedy(
    scores,
    class_mass,
    labeled_counts,
    budget: int,
    strength: float = 1.0,
    smoothing: float = 1.0,
    normalize: bool = True,
    floor: float = 1.0,
) -> np.ndarray:
    """Greedy picks by uncertainty times a bonus for classes rare among the labeled (+ picked).

    Why: top-K uncertainty keeps picking frequent classes; re-weighting by class rarity after
    every pick spreads the batch over the classes the labeled set lacks (the minority quotas of
    Wu et al., CVPR 2022; PPAL's class-difficulty weights; CALD's class-distribution step).

    Each pick is argmax_i s'_i * (1 + strength * sum_c w_c p_ic), where s' is the score mapped
    to [floor, 1 + floor] (see ``floor``), w = :func:`class_rarity` of the running counts and
    p_i the image's predicted class mass (normalised to a distribution if ``normalize``, so
    the bonus is in [0, strength] and measures the share of rare classes, not the number of
    boxes). After each pick its raw class mass is added to the counts.

    Args:
        scores: ``(N,)`` stage-1 scores (any sign; NaN = no detection, picked last in input
            order).
        class_mass: ``(N, C)`` non-negative predicted class mass per image (e.g. the sum of
            detection confidences per class, or the expected number of objects per class).
        labeled_counts: ``(C,)`` objects per class in the labeled set.
        budget: how many to pick.
        strength: weight of the rarity bonus; 0 gives top-K by score.
        smoothing: :func:`class_rarity`'s smoothing.
        normalize: use each image's class distribution (True) or its raw mass for the bonus.
        floor: the lowest finite score maps to ``floor`` (> 0): (s - min) / (max - min) + floor.
            With the default 1 the scores span [1, 2], so the whole score range counts as
            much as a full rare-class bonus at strength 1; a small floor lets the score
            dominate (the lowest candidate's gain tends to 0).
    """
    budget = _check_budget(budget)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mass = np.asarray(class_mass, dtype=np.float64)
    counts = np.asarray(labeled_counts, dtype=np.float64).reshape(-1).copy()
    if mass.ndim != 2 or mass.shape[0] != len(s) or mass.shape[1] != len(counts):
        raise ValueError("class_mass must be (N, C) with N scores and C labeled counts")
    if np.any(mass < 0):
        raise ValueError("class mass must be non-negative")
    if budget == 0 or len(s) == 0:
        return _EMPTY.copy()
    finite = np.isfinite(s)
    base = np.full(len(s), -np.inf)
    base[finite] = _positive_scores(s[finite], floor)
    share = _normalise_rows(mass) if normalize else mass
    picks = []
    available = finite.copy()
    for _ in range(min(budget, int(finite.sum()))):
        gain = np.where(available, base * (1.0 + strength * (share @ class_rarity(counts, smoothing))), -np.inf)
        i = int(np.argmax(gain))
        picks.append(i)
        available[i] = False
        counts += mass[i]
    rest = np.flatnonzero(~finite)[: budget - len(picks)]
    return np.concatenate([np.asarray(picks, dtype=np.int64), rest]).astype(np.int64)


def jensen_shannon(p, q) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between each row of ``p`` and ``q``.

    Why: CALD's class-distribution step compares each image's predicted class distribution
    with the labeled set's (Yu et al., Sec. 3.3). JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with
    m = (p + q) / 2 and 0 log 0 = 0; rows and q are normalised here. (It is the square of
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.)
    """
    p = _normalise_rows(np.atleast_2d(np.asarray(p, dtype=np.float64)))
    q = np.asarray(q, dtype=np.float64).reshape(1, -1)
    q = _normalise_rows(q)
    m = 0.5 * (p + q)

    def kl(a):
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return np.sum(np.where(a > 0, a * np.log2(ratio), 0.0), axis=1)

    return 0.5 * kl(p) + 0.5 * kl(np.broadcast_to(q, p.shape))


def divergence_greedy(class_dist, labeled_dist, budget: int) -> np.ndarray:
    """CALD's step: greedily pick the image whose class distribution diverges most from the labeled.

    Why: an image whose predicted classes differ from what is already labeled adds classes the
    model has seen least (Yu et al., "Consistency-based Active Learning for Object Detection",
    Sec. 3.3 and ``cald_train.py`` in we1pingyu/CALD: the JS divergence between an image's
    class distribution and the labeled set's).

    Each pick is argmax_i JS(p_i, q), with p_i = ``class_dist[i]`` normalised and q the
    normalised sum of ``labeled_dist`` and the raw rows of the images picked before it. With
    ``labeled_dist`` all zero and nothing picked, q is uniform. Images whose class mass is all
    zero (no detection) have no distribution: they come last, in input order.

    Args:
        class_dist: ``(N, C)`` non-negative predicted class mass (counts or distributions).
        labeled_dist: ``(C,)`` labeled class mass, in the same units as ``class_dist`` (e.g.
            object counts when the rows are expected object counts).
        budget: how many to pick.
    """
    budget = _check_budget(budget)
    p = np.asarray(class_dist, dtype=np.float64)
    q = np.asarray(labeled_dist, dtype=np.float64).reshape(-1).copy()
    if p.ndim != 2 or p.shape[1] != len(q):
        raise ValueError("class_dist must be (N, C) with C = len(labeled_dist)")
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("class masses must be non-negative")
    if budget == 0 or len(p) == 0:
        return _EMPTY.copy()
    has_mass = p.sum(axis=1) > 0
    available = has_mass.copy()
    picks = []
    for _ in range(min(budget, int(has_mass.sum()))):
        ref = q if q.sum() > 0 else np.ones_like(q)
        gain = np.where(available, jensen_shannon(p, ref), -np.inf)
        i = int(np.argmax(gain))
        picks.append(i)
        available[i] = False
        q += p[i]
    rest = np.flatnonzero(~has_mass)[: budget - len(picks)]
    return np.concatenate([np.asarray(picks, dtype=np.int64), rest]).astype(np.int64)


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


def power_sample(
    scores,
    budget: int,
    beta: float = 1.0,
    seed: int = 0,
    mode: str = "power",
    floor: float = 0.01,
) -> np.ndarray:
    """Stochastic batch acquisition: sample the batch without replacement instead of top-K.

    Why: top-K takes every near-duplicate of a high-scoring image at once; sampling
    proportionally to a tempered score keeps the preference for high scores and removes most of
    that redundancy at no cost (Kirsch et al., TMLR 2023, Sec. 3).

    Weights over the images with finite scores (Kirsch et al.'s three variants):

    - ``"power"``: w_i = s'_i ** beta, with s' = (s - min) / (max - min) + ``floor``: z-scores can
      be negative, so they are shifted and scaled into [floor, 1 + floor] first (the order is
      kept; the lowest score keeps a small weight, floor ** beta relative).
    - ``"softmax"``: w_i = exp(beta * s_i) (shift-invariant: no mapping needed).
    - ``"softrank"``: w_i = rank_i ** -beta, rank 1 the highest score (ties by input order).

    Sampling without replacement proportionally to w is the Gumbel-top-k trick: the B largest
    log w_i + G_i, G_i ~ Gumbel(0, 1) i.i.d. from ``np.random.default_rng(seed)``, in decreasing
    order (Kool et al., ICML 2019; what Kirsch et al. use). beta -> inf tends to top-K,
    beta = 0 to uniform sampling.

    NaN (and +-inf) scores are never sampled while a finite one remains; when the budget
    exceeds the finite scores they are appended in input order.
    """
    budget = _check_budget(budget)
    if mode not in POWER_MODES:
        raise ValueError(f"Unknown mode '{mode}'; choose one of {', '.join(POWER_MODES)}.")
    if beta < 0:
        raise ValueError("beta must be >= 0")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if budget == 0 or len(s) == 0:
        return _EMPTY.copy()
    finite = np.flatnonzero(np.isfinite(s))
    v = s[finite]
    if mode == "power":
        logw = beta * np.log(_positive_scores(v, floor))
    elif mode == "softmax":
        logw = beta * (v - (v.max() if len(v) else 0.0))
    else:
        rank = np.empty(len(v))
        rank[np.argsort(-v, kind="stable")] = np.arange(1, len(v) + 1)
        logw = -beta * np.log(rank)
    keys = logw + np.random.default_rng(seed).gumbel(size=len(v))
    order = np.argsort(-keys, kind="stable")[:budget]
    rest = np.flatnonzero(~np.isfinite(s))[: budget - len(order)]
    return np.concatenate([finite[order], rest]).astype(np.int64)


def reserve_count(budget: int, reserve_fraction: float) -> int:
    """How many of the batch to reserve for images without a detection: round(fraction x budget).

    Why: almost half the pool can have no kept detection (issue 19); a reserved share lets
    those images compete instead of always coming last. Rounded half up (floor(x + 0.5), not
    Python's half-to-even), capped at the budget.
    """
    budget = _check_budget(budget)
    if not 0.0 <= reserve_fraction <= 1.0:
        raise ValueError("reserve_fraction must be in [0, 1]")
    return min(budget, int(math.floor(reserve_fraction * budget + 0.5)))


def candidate_indices(
    scores,
    budget: int,
    factor: float = 4.0,
    reserve_fraction: float = 0.0,
    seed: int = 0,
    reserve_limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: the candidate set for a diversity stage, and the pool of images with no score.

    Why: the diversity stage should choose among the most uncertain images only, m times the
    budget of them (PPAL: m = 4; CALD: m = 1.2), so that diversity never buys an uninformative
    image (Yang et al., CVPR 2024, Sec. 3.2).

    Returns ``(candidates, reserved)``:

    - candidates: the ceil(factor x budget) highest finite scores (all of them when fewer),
      in decreasing score order, ties in input order;
    - reserved: when ``reserve_fraction > 0``, the NaN-score (no detection) images, in input
      order, as the pool from which the caller picks :func:`reserve_count` images for diversity;
      with ``reserve_limit`` a seeded random subsample of at most that many of them (still in
      input order), so the caller's diversity step stays cheap on a large pool. Empty when
      ``reserve_fraction == 0``. ``seed`` only drives that subsample.
    """
    budget = _check_budget(budget)
    if factor < 0:
        raise ValueError("factor must be >= 0")
    if not 0.0 <= reserve_fraction <= 1.0:
        raise ValueError("reserve_fraction must be in [0, 1]")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.flatnonzero(~np.isnan(s))
    # A tiny tolerance so that e.g. 1.2 x 5 = 6.000000000000001 gives 6, not 7.
    n_candidates = min(len(finite), int(math.ceil(factor * budget - 1e-9)))
    candidates = finite[np.argsort(-s[finite], kind="stable")[:n_candidates]].astype(np.int64)
    reserved = _EMPTY.copy()
    if reserve_fraction > 0:
        reserved = np.flatnonzero(np.isnan(s)).astype(np.int64)
        if reserve_limit is not None and len(reserved) > reserve_limit:
            keep = np.random.default_rng(seed).choice(len(reserved), size=max(0, int(reserve_limit)), replace=False)
            reserved = reserved[np.sort(keep)]
    return candidates, reserved
