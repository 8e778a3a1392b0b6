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

The algorithms live by family: :mod:`~almdn.acquisition.coverage` (k-center, k-medoids, the
matching distance), :mod:`~almdn.acquisition.class_balance` (class rarity, the class-balanced
greedy batch, Jensen-Shannon divergence), :mod:`~almdn.acquisition.cold_start` (typicality,
TypiClust) and :mod:`~almdn.acquisition.sampling` (power sampling, the reserve, the candidate
set); :mod:`~almdn.acquisition.conventions` holds their shared checks. This module gathers them
under one name.

Sources: PPAL (Yang et al., "Plug and Play Active Learning for Object Detection", CVPR 2024;
k-center-initialised k-medoids over a category-conditioned matching distance), CALD (Yu et al.,
"Consistency-based Active Learning for Object Detection"; JS divergence from the labeled class
distribution), TypiClust (Hacohen et al., "Active Learning on a Budget", ICML 2022), stochastic
batch acquisition (Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for Deep
Active Learning", TMLR 2023) and the core-set (Sener & Savarese, "Active Learning for
Convolutional Neural Networks: A Core-Set Approach", ICLR 2018).
"""

from __future__ import annotations

# The families, imported as modules: the names below are theirs.
from . import class_balance, cold_start, coverage, sampling

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
    "weighted_kcenter_greedy",
]

POWER_MODES = sampling.POWER_MODES
candidate_indices = sampling.candidate_indices
class_balanced_greedy = class_balance.class_balanced_greedy
class_rarity = class_balance.class_rarity
divergence_greedy = class_balance.divergence_greedy
euclidean_distances = coverage.euclidean_distances
jensen_shannon = class_balance.jensen_shannon
kcenter_greedy = coverage.kcenter_greedy
kcenter_greedy_from_distances = coverage.kcenter_greedy_from_distances
kmedoids = coverage.kmedoids
matching_distance = coverage.matching_distance
power_sample = sampling.power_sample
reserve_count = sampling.reserve_count
typicality = cold_start.typicality
typiclust = cold_start.typiclust
weighted_kcenter_greedy = coverage.weighted_kcenter_greedy
