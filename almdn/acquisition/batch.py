"""From per-image scores to a batch: the second stage of acquisition, and why each image is in it.

The paper labels the top-B images by its score (Sec. 3.3). At a few hundred labels that batch
is redundant (near-duplicates score high together), crowded and short of the classes the
labeled set lacks, and it never reaches the images without a detection above the threshold.
A :class:`BatchPolicy` adds a second stage, in the manner of PPAL (Yang et al., CVPR 2024) and
CALD (Yu et al.):

1. **candidates**: the top ``M = factor x B`` images by the stage-1 score
   (:func:`~almdn.acquisition.diversity.candidate_indices`), and optionally a share
   ``reserve`` of the batch kept for images with no kept detection (they compete by diversity);
2. **the batch**, by ``stage2``:

   - ``topk``: the paper's top-B;
   - ``kcenter``: greedy k-center over image embeddings (pooled trunk features), with the
     labeled images as fixed centers, each candidate's distance weighted by the rarity of its
     predicted classes in the labeled set (``balance``; 0 = plain k-center);
   - ``kmedoids``: PPAL's k-medoids (k-center initialised) over the category-conditioned
     matching distance between images' detection features;
   - ``balance``: uncertainty times a rare-class bonus, greedy
     (:func:`~almdn.acquisition.diversity.class_balanced_greedy`);
   - ``cald``: CALD's greedy Jensen-Shannon divergence from the labeled class distribution;
   - ``power``: stochastic power sampling of the scores (Kirsch et al., TMLR 2023), no
     candidate cut;
   - ``typiclust``: the cold-start choice (Hacohen et al., ICML 2022): the most typical image
     of each uncovered k-means cluster of the embeddings, no scores needed.

Every pick carries one sentence saying why it was chosen (:attr:`Batch.reasons`): its
uncertainty driver, the region it covers, the rare class it adds, or the cluster it stands for.
numpy / pandas only: the app's Label page selects from stored scores without torch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from almdn.acquisition import diversity
from almdn.acquisition.aggregation import score_driver

#: The second stages of :class:`BatchPolicy` and what each needs beside the scores.
STAGE2_NEEDS: dict[str, frozenset[str]] = {
    "topk": frozenset(),
    "kcenter": frozenset({"embeddings"}),
    "kmedoids": frozenset({"detection_features"}),
    "balance": frozenset({"class_mass"}),
    "cald": frozenset({"class_mass"}),
    "power": frozenset(),
    "typiclust": frozenset({"embeddings"}),
}


@dataclass(frozen=True)
class BatchPolicy:
    """How a batch is chosen from stage-1 scores (see the module docstring).

    Attributes:
        stage2: one of :data:`STAGE2_NEEDS`.
        factor: candidates per batch image, ``M = ceil(factor x B)`` (PPAL: 4; CALD: 1.2).
        reserve: share of the batch reserved for images without a kept detection, chosen
            farthest from the labeled and chosen images (needs embeddings; 0: none, they only
            fill a shortfall, as in the paper).
        balance: strength of the rare-class weight in ``kcenter`` and ``balance``.
        beta: the exponent of ``power`` sampling; ``power_mode``: "power", "softmax" or "softrank".
    """

    stage2: str = "topk"
    factor: float = 4.0
    reserve: float = 0.0
    balance: float = 0.0
    beta: float = 1.0
    power_mode: str = "softrank"

    def __post_init__(self) -> None:
        if self.stage2 not in STAGE2_NEEDS:
            raise ValueError(f"Unknown second stage '{self.stage2}'; choose one of {', '.join(STAGE2_NEEDS)}.")
        if self.factor < 1 or not 0 <= self.reserve <= 1 or self.balance < 0:
            raise ValueError("factor must be >= 1, reserve in [0, 1] and balance >= 0")

    @property
    def needs(self) -> frozenset[str]:
        """What the stage needs beside the scores ("embeddings", "class_mass", "detection_features")."""
        extra = {"embeddings"} if self.reserve > 0 else set()
        if self.stage2 == "kcenter" and self.balance > 0:
            extra.add("class_mass")
        return STAGE2_NEEDS[self.stage2] | extra


@dataclass
class BatchInputs:
    """What a policy may read, every array in the order of ``scores``' index (the pool).

    Attributes:
        scores: stage-1 score per pool image (index: image id; NaN = no kept detection).
        drivers: per image, the sentence naming the uncertainty behind its score (optional).
        embeddings: ``(N, D)`` image embeddings of the pool; ``labeled_embeddings`` ``(M, D)``.
        class_mass: ``(N, C)`` predicted class mass per pool image (sum of kept detections'
            confidences per class); ``labeled_counts``: ``(C,)`` labeled objects per class.
        detection_features, detection_labels, detection_scores: per pool image, its kept
            detections' feature vectors ``(n_i, F)``, classes and confidences (``kmedoids``).
        class_names: for the reasons.
    """

    scores: pd.Series
    drivers: pd.Series | None = None
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    class_mass: np.ndarray | None = None
    labeled_counts: np.ndarray | None = None
    detection_features: Sequence[np.ndarray] | None = None
    detection_labels: Sequence[np.ndarray] | None = None
    detection_scores: Sequence[np.ndarray] | None = None
    class_names: Sequence[str] = ()

    def subset(self, keep: np.ndarray) -> BatchInputs:
        """The same inputs for the pool positions ``keep`` only."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        listed = lambda a: None if a is None else [a[i] for i in keep]  # noqa: E731
        return BatchInputs(
            self.scores.iloc[keep], None if self.drivers is None else self.drivers.iloc[keep], pick(self.embeddings), self.labeled_embeddings,
            pick(self.class_mass), self.labeled_counts, listed(self.detection_features), listed(self.detection_labels),
            listed(self.detection_scores), self.class_names,
        )


@dataclass
class Batch:
    """The chosen images in pick order, each with why (one sentence), and what went short."""

    image_ids: list[int]
    reasons: list[str]
    by_score: int
    shortfall: int = 0
    message: str = field(default="")

    def why(self) -> dict[int, str]:
        return dict(zip(self.image_ids, self.reasons))


def _require(policy: BatchPolicy, inputs: BatchInputs) -> None:
    missing = [n for n in sorted(policy.needs) if getattr(inputs, n) is None]
    if missing:
        raise ValueError(f"The {policy.stage2} batch needs {', '.join(missing)}, which this model version did not provide.")


def _score_reason(inputs: BatchInputs, i: int, rank: int) -> str:
    driver = None if inputs.drivers is None else inputs.drivers.iloc[i]
    return f"uncertainty rank {rank}" + (f" ({driver})" if isinstance(driver, str) and driver else "")


def _rare_class(inputs: BatchInputs, i: int, counts: np.ndarray) -> str | None:
    """The class that weighs most in the image's rarity bonus (its predicted mass times the
    class's rarity in the labeled set), in words; None unless that class is in the rarer half
    of the labeled classes (a frequent class is no reason). Weighing by mass keeps a faint
    0.05 detection of a rare class from naming it over a sure detection of a scarce one."""
    if inputs.class_mass is None or counts is None or not inputs.class_mass[i].any():
        return None
    c = int(np.argmax(inputs.class_mass[i] * diversity.class_rarity(counts)))
    if counts[c] > np.median(counts):
        return None
    name = inputs.class_names[c] if c < len(inputs.class_names) else str(c)
    return f"adds class '{name}' ({int(counts[c])} labeled boxes)"


def weighted_kcenter(
    embeddings: np.ndarray, labeled_embeddings: np.ndarray | None, budget: int, class_mass: np.ndarray | None = None,
    labeled_counts: np.ndarray | None = None, balance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center whose gain is the distance to the nearest labeled or chosen image times
    ``1 + balance x`` the rarity of the image's predicted classes (core-set, Sener & Savarese,
    with the minority weighting of Wu et al., CVPR 2022). Returns the picks and each pick's
    distance at the time it was picked.

    Why: diversity alone spends the batch on odd backgrounds; the rarity weight steers it to
    regions that hold the classes the labeled set lacks.
    """
    weight = None
    if balance > 0 and class_mass is not None and labeled_counts is not None:
        mass = np.asarray(class_mass, dtype=np.float64)
        share = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)
        counts = np.asarray(labeled_counts, dtype=np.float64)

        def weight(picks: np.ndarray) -> np.ndarray:  # the rarity once the picks so far are labeled
            return 1.0 + balance * (share @ diversity.class_rarity(counts + mass[picks].sum(axis=0)))

    centers = labeled_embeddings if labeled_embeddings is not None and len(labeled_embeddings) else None
    return diversity.weighted_kcenter_greedy(embeddings, max(int(budget), 0), centers, weight)


def _candidate_stage(
    policy: BatchPolicy, pool: BatchInputs, values: np.ndarray, rank: np.ndarray, counts: np.ndarray | None, n_main: int,
) -> tuple[list[int], list[str]]:
    """Stage 2 over the stage-1 candidates (top-K, k-center, k-medoids, class balance, CALD):
    the picks (indices into ``pool``) and why each was chosen."""
    cand, _ = diversity.candidate_indices(values, n_main, factor=1.0 if policy.stage2 == "topk" else policy.factor)
    sub = pool.subset(cand)
    if policy.stage2 == "topk" or n_main == 0:
        local = np.arange(min(n_main, len(cand)))
        reasons = [_score_reason(pool, int(cand[j]), rank[cand[j]]) for j in local]
    elif policy.stage2 == "kcenter":
        local, dist = weighted_kcenter(sub.embeddings, pool.labeled_embeddings, n_main, sub.class_mass, counts, policy.balance)
        reasons = []
        running = None if counts is None else counts.copy()
        for j, d in zip(local, dist):
            i = int(cand[j])
            parts = [_score_reason(pool, i, rank[i]), "covers a region no labeled image is near" + ("" if not np.isfinite(d) else f" (distance {d:.2f})")]
            if policy.balance > 0 and running is not None and (rare := _rare_class(pool, i, running)):
                parts.append(rare)
            if running is not None and pool.class_mass is not None:
                running = running + pool.class_mass[i]
            reasons.append("; ".join(parts))
    elif policy.stage2 == "kmedoids":
        distances = diversity.matching_distance(sub.detection_features, sub.detection_labels, sub.detection_scores)
        local = diversity.kmedoids(distances, min(n_main, len(cand)))
        reasons = [f"{_score_reason(pool, int(cand[j]), rank[cand[j]])}; stands for a group of similar candidates (class-matched detections)" for j in local]
    elif policy.stage2 == "balance":
        local = diversity.class_balanced_greedy(sub.scores.to_numpy(dtype=np.float64), sub.class_mass, counts, n_main, strength=policy.balance or 1.0)
        running = counts.copy()
        reasons = []
        for j in local:
            i = int(cand[j])
            rare = _rare_class(pool, i, running)
            reasons.append("; ".join(filter(None, [_score_reason(pool, i, rank[i]), rare])))
            running = running + pool.class_mass[i]
    elif policy.stage2 == "cald":
        dist = counts / max(counts.sum(), 1e-12)
        local = diversity.divergence_greedy(sub.class_mass, dist, n_main)
        reasons = [f"{_score_reason(pool, int(cand[j]), rank[cand[j]])}; its predicted classes differ most from the labeled set's" for j in local]
    return [int(cand[j]) for j in local], reasons


def select(
    policy: BatchPolicy, inputs: BatchInputs, budget: int, labeled: Collection[int] = (), seed: int = 0,
) -> Batch:
    """The batch of ``budget`` pool images by ``policy`` (see the module docstring).

    Images already labeled are never chosen. Ties break in pool order; the same inputs and
    seed give the same batch. A pool smaller than the budget yields all of it and says so.
    """
    if budget < 0:
        raise ValueError("the budget must be >= 0")
    if inputs.scores.index.has_duplicates:
        raise ValueError("each pool image must have exactly one score")
    _require(policy, inputs)
    keep = np.flatnonzero(~inputs.scores.index.isin(list(labeled)))
    pool = inputs.subset(keep)
    ids = pool.scores.index.to_numpy()
    values = pool.scores.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    rank = np.full(len(values), 0, np.int64)
    order = np.argsort(-np.where(finite, values, -np.inf), kind="stable")
    rank[order] = np.arange(1, len(values) + 1)
    counts = None if pool.labeled_counts is None else np.asarray(pool.labeled_counts, dtype=np.float64)

    n_reserve = 0
    if policy.reserve > 0 and (~finite).any():
        n_reserve = min(diversity.reserve_count(budget, policy.reserve), int((~finite).sum()))
    n_main = min(budget - n_reserve, int(finite.sum()))
    picks: list[int] = []
    reasons: list[str] = []

    if policy.stage2 == "typiclust":
        picks = _typiclust_picks(pool, budget, seed)
        reasons = ["the most typical image of a cluster of the pool with no labeled image"] * len(picks)
        n_main, n_reserve = len(picks), 0
    elif policy.stage2 == "power":
        chosen = diversity.power_sample(values, n_main, beta=policy.beta, seed=seed, mode=policy.power_mode)
        picks = [int(i) for i in chosen]
        reasons = [f"sampled in proportion to its score ({_score_reason(pool, i, rank[i])})" for i in picks]
    else:
        picks, reasons = _candidate_stage(policy, pool, values, rank, counts, n_main)

    if n_reserve:
        reserved = _reserved_picks(pool, finite, picks, n_reserve)
        picks += reserved
        reasons += ["no detection above the threshold: chosen for the reserved share, far from every labeled and chosen image"] * len(reserved)

    # A shortfall (too few scored images) is filled as the paper does: unscored images in pool order.
    if len(picks) < budget:
        taken = set(picks)
        rest = [i for i in range(len(ids)) if i not in taken][: budget - len(picks)]
        picks += rest
        reasons += [_score_reason(pool, i, rank[i]) if finite[i] else "no detection above the threshold: fills the batch" for i in rest]
    by_score = sum(1 for i in picks if finite[i])
    shortfall = budget - len(picks)
    message = ""
    if shortfall:
        message = f"Only {len(picks)} unlabeled images are left, fewer than the {budget} asked for: all of them were selected."
    return Batch([int(ids[i]) for i in picks], reasons, by_score, shortfall, message)


def _typiclust_picks(pool: BatchInputs, budget: int, seed: int) -> list[int]:
    """No scores: the typical image of each uncovered cluster, over the whole unlabeled pool
    (the labeled images cover their clusters)."""
    labeled = pool.labeled_embeddings
    everything = np.concatenate([pool.embeddings, labeled]) if labeled is not None and len(labeled) else pool.embeddings
    mask = np.zeros(len(everything), bool)
    mask[len(pool.embeddings):] = True
    chosen = diversity.typiclust(everything, mask, budget, seed=seed)
    return [int(i) for i in chosen if i < len(pool.embeddings)][:budget]


def _reserved_picks(pool: BatchInputs, finite: np.ndarray, picks: list[int], n_reserve: int) -> list[int]:
    """The reserved share: images with no kept detection, farthest from everything labeled or chosen."""
    none = np.flatnonzero(~finite)
    centers = [pool.labeled_embeddings] if pool.labeled_embeddings is not None and len(pool.labeled_embeddings) else []
    if picks:
        centers.append(pool.embeddings[picks])
    chosen = diversity.kcenter_greedy(pool.embeddings[none], n_reserve, np.concatenate(centers) if centers else None)
    return [int(none[j]) for j in chosen]


def score_drivers(table: pd.DataFrame) -> pd.Series:
    """Per image (index: image id), the z-scored uncertainty its score comes from, in words
    (e.g. "cls_epistemic z 2.31"), from an :func:`~almdn.acquisition.aggregation.image_scores`
    table (:func:`~almdn.acquisition.aggregation.score_driver`); None without a score."""
    if "image_id" not in table or not any(c.startswith("z_") for c in table.columns):
        return pd.Series(None, index=table.get("image_id", pd.Index([])), dtype=object)
    driver, z = score_driver(table)
    words = [f"{name} z {value:.2f}" if name is not None else None for name, value in zip(driver, z)]
    return pd.Series(words, index=table["image_id"].to_numpy(), dtype=object)


def class_mass(detections: pd.DataFrame, image_ids: Sequence[int], num_classes: int) -> np.ndarray:
    """``(N, C)``: per image, the summed confidence of its kept detections of each class
    (labels 1..C, 0 is background), in ``image_ids`` order."""
    mass = np.zeros((len(image_ids), num_classes))
    if len(detections):
        pos = pd.Index(list(image_ids)).get_indexer(detections["image_id"])
        ok = (pos >= 0) & (detections["label"].to_numpy() >= 1) & (detections["label"].to_numpy() <= num_classes)
        np.add.at(mass, (pos[ok], detections["label"].to_numpy()[ok].astype(int) - 1), detections["score"].to_numpy(dtype=np.float64)[ok])
    return mass


def policy_from_name(name: str) -> BatchPolicy | None:
    """The second stage a method name asks for (the part after ``+``), or None for top-B.

    ``almdn+kcenter`` (factor 4, no balance), ``almdn+kcenter_balanced`` (balance 1, reserve
    10 %), ``almdn+kmedoids``, ``almdn+balance``, ``almdn+cald`` (factor 1.2), ``almdn+power``,
    ``typiclust``.
    """
    if name == "typiclust":
        return BatchPolicy("typiclust")
    if "+" not in name:
        return None
    stage = name.split("+", 1)[1]
    presets = {
        "kcenter": BatchPolicy("kcenter"),
        "kcenter_balanced": BatchPolicy("kcenter", balance=1.0, reserve=0.1),
        "kmedoids": BatchPolicy("kmedoids"),
        "balance": BatchPolicy("balance", balance=1.0),
        "cald": BatchPolicy("cald", factor=1.2),
        "power": BatchPolicy("power"),
    }
    if stage not in presets:
        raise ValueError(f"Unknown second stage '{stage}' in '{name}'; choose one of {', '.join(presets)}.")
    return presets[stage]


__all__ = ["Batch", "BatchInputs", "BatchPolicy", "STAGE2_NEEDS", "class_mass", "policy_from_name", "score_drivers", "select", "weighted_kcenter"]
