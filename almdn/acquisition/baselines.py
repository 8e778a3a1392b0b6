"""The baselines of Tab. 4, each a small function from model outputs or features to one score
per image (higher = more informative), on the same architecture as the paper's method.

- random: a seeded uniform draw.
- entropy (Roy et al.): the mean classification entropy over an image's kept detections.
- MC-dropout (Gal et al.) and ensemble (Beluch et al.): the same mean entropy, of class
  probabilities averaged over 25 dropout passes or over 3 independently trained models
  (``MixtureSSD.forward_mc_dropout`` / ``forward_ensemble`` produce those detections).
- core-set (Sener & Savarese): greedy k-center on backbone features.
- LLAL (Yoo & Kweon): the loss predicted by the learning-loss module.

Images without a kept detection get NaN from the detection-based scores, like the paper's own
score; :func:`almdn.acquisition.selection.select_batch` applies the user's policy to them.
torch is imported only by the two that compute with it, so the stored-score ranking (the
app's Label page) reads the others without it.
"""

from __future__ import annotations

from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


def random_scores(image_ids: Sequence[int], seed: int) -> pd.Series:
    """Uniform random scores: top-B of them is a uniform random sample of the pool."""
    values = np.random.default_rng(seed).random(len(image_ids))
    return pd.Series(values, index=pd.Index(list(image_ids), name="image_id"), name="score")


def mean_entropy_scores(
    detections: pd.DataFrame, image_ids: Sequence[int], score_weighted: bool = False, total: bool = False,
) -> pd.Series:
    """Mean ``cls_entropy`` over each image's kept detections (NaN without any).

    ``score_weighted``: each detection counts by its score, sum(s * H) / sum(s), the class
    entropy expected of the image's objects when a detection is one with probability ``s``.
    Meant for detections above a low threshold: the images where the model is not yet sure of
    any object (half the demo pool at 200 labels) then compete instead of coming last.

    ``total``: the sum instead of the mean, sum(s * H) (score-weighted) or sum(H): the class
    entropy of all the image's expected objects, so that an image with more uncertain objects
    ranks above one with a single one of the same entropy.
    """
    if score_weighted:
        weighted = detections.assign(sh=detections["cls_entropy"] * detections["score"]).groupby("image_id")[["sh", "score"]].sum()
        means = (weighted["sh"] / (1.0 if total else weighted["score"])).where(weighted["score"] > 0)
    else:
        grouped = detections.groupby("image_id")["cls_entropy"]
        means = grouped.sum() if total else grouped.mean()
    return means.reindex(pd.Index(list(image_ids), name="image_id")).astype(np.float64).rename("score")


def coreset_scores(pool_features: "torch.Tensor", labeled_features: "torch.Tensor", budget: int, image_ids: Sequence[int]) -> pd.Series:
    """Greedy k-center (core-set) as scores whose top-``budget`` is the greedy selection.

    Each pick is the pool image farthest (Euclidean) from the labeled set and the images
    picked before it; its score is that distance at the time it was picked. Images not picked
    score their distance to the final set of centers, which is never above any pick's score,
    so ranking by score reproduces the greedy order. With an empty labeled set the distances
    start from the pool's mean feature.

    Args:
        pool_features: ``(N, D)`` features of the pool images, in ``image_ids`` order.
        labeled_features: ``(M, D)`` features of the labeled images.
        budget: how many centers to pick greedily.
    """
    import torch

    pool = pool_features.double()
    centers = labeled_features.double() if len(labeled_features) else pool.mean(0, keepdim=True)
    min_dist = torch.full((len(pool),), float("inf"), dtype=torch.float64)
    for chunk in centers.split(4096):  # bounded memory for large labeled sets
        min_dist = torch.minimum(min_dist, torch.cdist(pool, chunk).min(1).values)
    scores = min_dist.clone()
    picked = torch.zeros(len(pool), dtype=torch.bool)
    for _ in range(min(budget, len(pool))):
        candidate = torch.where(picked, -1.0, min_dist)
        i = int(candidate.argmax())  # first maximum: ties in pool order
        scores[i], picked[i] = min_dist[i], True
        min_dist = torch.minimum(min_dist, torch.cdist(pool, pool[i : i + 1]).squeeze(1))
    scores[~picked] = min_dist[~picked]
    return pd.Series(scores.numpy(), index=pd.Index(list(image_ids), name="image_id"), name="score")


def loss_prediction_scores(predicted_loss: "torch.Tensor | np.ndarray", image_ids: Sequence[int]) -> pd.Series:
    """LLAL: the learning-loss module's predicted detection loss of each image."""
    import torch

    values = np.asarray(torch.as_tensor(predicted_loss, dtype=torch.float64))
    return pd.Series(values, index=pd.Index(list(image_ids), name="image_id"), name="score")
