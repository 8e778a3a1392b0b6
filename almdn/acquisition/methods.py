"""Acquisition methods by name: which model each one needs, and how it scores a pool.

Every method runs on the same detector (Sec. 4.2: "we reproduce all numbers by applying each
sampling method to the proposed GMM architecture"); what differs is the model variant it
trains (:class:`Method`) and the function that turns that model's outputs into one score per
pool image (:func:`score_pool`, built from :mod:`~almdn.acquisition.scoring` and
:mod:`~almdn.acquisition.baselines`).

Names: ``almdn`` (the paper's score on the gmm head, ``max_all``), ``almdn_eff`` (the same on
the eff head), ``almdn:<aggregation>`` (any aggregation of Tab. 2, e.g. ``almdn:sum_cls``),
``random``, ``entropy``, ``coreset``, ``llal``, ``mc_dropout``, ``ensemble``; ``typiclust``
(the cold-start choice); and any of them followed by ``+<stage>``, a second stage that turns the
scores into a batch (``almdn+kcenter_balanced``, ``almdn+kmedoids``, ``almdn+power``, ...:
:func:`almdn.acquisition.batch.policy_from_name`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from almdn.acquisition.batch import BatchPolicy, policy_from_name
from almdn.acquisition.baselines import coreset_scores, loss_prediction_scores, mean_entropy_scores, random_scores
from almdn.acquisition.scoring import AGGREGATIONS, DEFAULT_AGGREGATION, detections_frame, image_scores
from almdn.data.coco import collate_detection
from almdn.engine.checkpoint import resolve_device
from almdn.engine.inference import predict

BASELINES = ("random", "entropy", "coreset", "llal", "mc_dropout", "ensemble")


@dataclass(frozen=True)
class Method:
    """An acquisition method and the model variant it trains.

    Attributes:
        name: as given by the user.
        kind: "almdn", or one of :data:`BASELINES`.
        head: the mixture head ("gmm" or "eff").
        aggregation: Tab. 2 aggregation of the almdn score.
        extras_dropout: dropout on the extra layers while training and scoring (MC-dropout).
        loss_prediction: train LLAL's learning-loss module with the detector.
        members: independently trained models (the ensemble's 3).
        cls_loss: the classification loss its detector trains with ("eq5" or "type2"); None
            keeps the experiment's (``model.cls_loss``, else :data:`almdn.registry.DEFAULT_CLS_LOSS`).
        weighting: which detections the almdn score reads: "threshold" (the paper's: those
            scoring at least the confidence threshold) or "score" (every detection above the
            low threshold, each uncertainty weighted by the detection's score, so that every
            image with a detection is ranked; :func:`~almdn.acquisition.scoring.image_scores`).
    """

    name: str
    kind: str
    head: str = "gmm"
    aggregation: str = DEFAULT_AGGREGATION
    extras_dropout: float = 0.0
    loss_prediction: bool = False
    members: int = 1
    cls_loss: str | None = None
    weighting: str = "threshold"
    batch: BatchPolicy | None = None

    @property
    def model_variant(self) -> dict:
        """The build_model keywords that distinguish this method's detector."""
        variant = {"head": self.head, "extras_dropout": self.extras_dropout, "loss_prediction": self.loss_prediction}
        if self.cls_loss is not None:
            variant["cls_loss"] = self.cls_loss
        return variant


def get_method(name: str, mc_dropout: float = 0.1, ensemble_size: int = 3) -> Method:
    """The :class:`Method` called ``name`` (see the module docstring for the names)."""
    if name == "typiclust":
        return Method(name, "typiclust", batch=policy_from_name(name))
    if "+" in name:  # <first stage>+<second stage>, e.g. almdn+kcenter_balanced
        first = get_method(name.split("+", 1)[0], mc_dropout, ensemble_size)
        return dataclasses.replace(first, name=name, batch=policy_from_name(name))
    if name == "almdn":
        return Method(name, "almdn")
    if name == "almdn_eff":
        return Method(name, "almdn", head="eff")
    if name in ("almdn_eq5", "almdn_type2"):
        return Method(name, "almdn", cls_loss=name.split("_")[1])
    if name == "almdn_weighted":
        return Method(name, "almdn", weighting="score")
    if name.startswith("almdn:") or name.startswith("almdn_eff:"):
        base, aggregation = name.split(":", 1)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"Unknown aggregation '{aggregation}' in method '{name}'; choose one of {', '.join(AGGREGATIONS)}.")
        return Method(name, "almdn", head="eff" if base == "almdn_eff" else "gmm", aggregation=aggregation)
    if name in ("random", "entropy", "coreset"):
        return Method(name, name)
    if name == "llal":
        return Method(name, name, loss_prediction=True)
    if name == "mc_dropout":
        return Method(name, name, extras_dropout=mc_dropout)
    if name == "ensemble":
        return Method(name, name, members=ensemble_size)
    known = ["almdn", "almdn_eff", "almdn_eq5", "almdn_type2", "almdn_weighted", "almdn:<aggregation>", *BASELINES, "typiclust", "<method>+<stage>"]
    raise ValueError(f"Unknown acquisition method '{name}'; choose one of {', '.join(known)}.")


@dataclass
class PoolScores:
    """One acquisition pass over the pool.

    Attributes:
        scores: one score per pool image (index: image id), NaN = no kept detection.
        table: per-image detail: for the almdn methods the four raw and z-scored uncertainties
            (:func:`~almdn.acquisition.scoring.image_scores`), else just the score.
        seconds: wall-clock time of the pass (forward passes included).
    """

    scores: pd.Series
    table: pd.DataFrame
    seconds: float


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)


@torch.no_grad()
def _features(model, dataset: Dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    model.to(device).eval()
    chunks = [model.image_features([img.to(device) for img in images]).cpu() for images, _ in _loader(dataset, batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def acquisition_features(
    model, dataset: Dataset, boxes: list[torch.Tensor] | None = None, batch_size: int = 32, device: torch.device | None = None,
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """What the second stage of acquisition compares images by (:mod:`almdn.acquisition.batch`).

    Returns ``(N, D)`` image embeddings, the global-average-pooled last trunk map (core-set's
    representation), and, when ``boxes`` (each image's kept detections, in its own pixels) are
    given, one feature per detection: RoIAlign (2 x 2, averaged) of the stride-8 and stride-16
    trunk maps at the detection's box, concatenated (PPAL's detection features, on an SSD).
    """
    from torchvision.ops import roi_align

    if not hasattr(getattr(model, "backbone", None), "forward_trunk"):
        raise ValueError(f"Image embeddings for a diverse batch are not available for {type(model).__name__}; use the SSD detectors for it.")
    device = resolve_device(device)
    model.to(device).eval()
    embeddings, det_features, start = [], [], 0
    for images, _ in _loader(dataset, batch_size):
        image_list, _, original_sizes = model.preprocess([img.to(device) for img in images])
        maps = model.backbone.forward_trunk(image_list.tensors)
        embeddings.append(maps[-1].mean(dim=(2, 3)).cpu())
        if boxes is not None:
            rois = []
            for j, ((h0, w0), (h1, w1)) in enumerate(zip(original_sizes, image_list.image_sizes)):
                b = boxes[start + j].to(device, torch.float32).reshape(-1, 4) * torch.tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0], device=device)
                rois.append(b)
            size = image_list.tensors.shape[-1]
            pooled = [roi_align(m, rois, output_size=2, spatial_scale=m.shape[-1] / size, sampling_ratio=2, aligned=True).mean(dim=(2, 3)) for m in maps[:2]]
            feats = torch.cat(pooled, dim=1).cpu()
            det_features.extend(feats.split([len(r) for r in rois]))
        start += len(images)
    emb = torch.cat(embeddings).double().numpy() if embeddings else np.zeros((0, 0))
    return emb, None if boxes is None else [f.double().numpy() for f in det_features]


@torch.no_grad()
def _averaged_predictions(models, dataset: Dataset, batch_size: int, device: torch.device, passes: int) -> list[dict]:
    """Detections from class probabilities averaged over dropout passes (one model) or over
    the members of an ensemble (several models)."""
    for m in models:
        m.to(device).eval()
    out = []
    for images, _ in _loader(dataset, batch_size):
        images = [img.to(device) for img in images]
        if len(models) == 1:
            dets = models[0].forward_mc_dropout(images, passes)
        else:
            dets = models[0].forward_ensemble(images, list(models[1:]))
        out.extend({k: v.cpu() for k, v in d.items()} for d in dets)
    return out


def score_pool(
    method: Method,
    models: list,
    pool: Dataset,
    pool_ids: list[int],
    labeled: Dataset | None = None,
    budget: int = 0,
    seed: int = 0,
    conf_threshold: float = 0.5,
    low_threshold: float = 0.05,
    mc_passes: int = 25,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    predictions: list[dict] | None = None,
) -> PoolScores:
    """Score every pool image with ``method``.

    Args:
        models: the method's trained detector(s) (``method.members`` of them).
        pool, pool_ids: the unlabeled images and their ids, in the same order.
        labeled: the labeled images (core-set measures distances to them).
        budget: B (core-set's greedy selection needs it).
        seed: random stream (the random baseline).
        conf_threshold: detections at or above it are kept for scoring (Sec. 3.3).
        low_threshold: the detections a score-weighted method (``weighting="score"``) reads.
        predictions: the first model's detections on ``pool`` if already computed (the almdn
            and entropy methods share them), else computed here.
    """
    device = resolve_device(device)
    t0 = time.perf_counter()
    kind = method.kind
    needs = {"mc_dropout": "forward_mc_dropout", "ensemble": "forward_ensemble", "coreset": "image_features"}.get(kind)
    if needs and not hasattr(models[0], needs):
        raise ValueError(f"The {kind} baseline is not available for {type(models[0]).__name__}; use the SSD detectors for it.")
    table = None
    if kind == "random":
        scores = random_scores(pool_ids, seed)
    elif kind == "typiclust":  # needs no score: the batch stage reads the embeddings
        scores = pd.Series(0.0, index=pd.Index(list(pool_ids), name="image_id"), name="score")
    elif kind in ("almdn", "entropy", "llal"):
        if predictions is None:
            predictions = predict(models[0], pool, batch_size=batch_size, device=device)
        if kind == "llal":
            scores = loss_prediction_scores(torch.stack([p["predicted_loss"] for p in predictions]), pool_ids)
        else:
            weighted = kind == "almdn" and method.weighting == "score"
            detections = detections_frame(predictions, pool_ids, low_threshold if weighted else conf_threshold)
            if kind == "almdn":
                table = image_scores(detections, pool_ids, method.aggregation, score_weighted=weighted)
                scores = table.set_index("image_id")["score"]
            else:
                scores = mean_entropy_scores(detections, pool_ids)
    elif kind in ("mc_dropout", "ensemble"):
        averaged = _averaged_predictions(models, pool, batch_size, device, mc_passes)
        scores = mean_entropy_scores(detections_frame(averaged, pool_ids, conf_threshold), pool_ids)
    elif kind == "coreset":
        if labeled is None:
            raise ValueError("core-set needs the labeled images")
        pool_features = _features(models[0], pool, batch_size, device)
        labeled_features = _features(models[0], labeled, batch_size, device)
        scores = coreset_scores(pool_features, labeled_features, budget, pool_ids)
    else:
        raise ValueError(f"unknown method kind {kind!r}")
    if table is None:
        table = scores.rename("score").reset_index()
    seconds = time.perf_counter() - t0
    return PoolScores(scores.astype(np.float64), table, seconds)
