"""What a model's forward passes give acquisition: the kept detections, features, several passes.

:func:`detections_frame` turns predictions into one row per kept detection (the one filter,
:func:`almdn.engine.inference.kept_mask`); the image score of Sec. 3.3 over those rows (z-scores
over ALL kept detections of the scored pool, maximum per image, the aggregations of Tab. 2) is
:mod:`almdn.acquisition.aggregation`, which the methods of :mod:`almdn.acquisition.methods`
apply.

:func:`kept_pool_detections` is the one scoring path of a pool (``almdn score`` and a project's
:func:`almdn.workflow.score_pool`): batched on the device, boxes back in each image's own
pixels (:func:`almdn.data.images.restore_boxes`), and under ``torchrun`` sharded over the
processes with every process's kept detections gathered, so the z-score statistics cover the
whole pool and the ranking equals a single process's exactly. :func:`method_inputs` computes
what an acquisition method needs from its trained models (the experiment runner).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from almdn.acquisition.methods import Method, PoolInputs, PoolScores
from almdn.data.coco import collate_detection
from almdn.data.images import restore_boxes
from almdn.engine import distributed
from almdn.engine.checkpoint import resolve_device
from almdn.engine.inference import KeptDetections, kept_detections, kept_mask, predict
from almdn.models import UNCERTAINTY_NAMES
from almdn.models.postprocess import BOX_KEYS
from almdn.registry import DEFAULT_CONF_THRESHOLD, DEFAULT_LOW_THRESHOLD
# The pandas half (Tab. 2 aggregations, z-scores) lives in a torch-free module that the app reads.
from almdn.acquisition.aggregation import AGGREGATIONS, DEFAULT_AGGREGATION, SHORT_NAMES, aggregate, image_scores  # noqa: F401

DETECTION_COLUMNS = ("label", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy")


def detections_frame(
    predictions: Sequence[dict[str, torch.Tensor]],
    image_ids: Sequence[int],
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
) -> pd.DataFrame:
    """One row per detection with ``score >= conf_threshold`` (the kept detections).

    Columns: ``image_id``, ``detection`` (index within the image's detections), label, score,
    box, the four raw uncertainties and the class entropy.
    """
    if len(predictions) != len(image_ids):
        raise ValueError("one prediction per image id is required")
    counts = torch.tensor([len(p["scores"]) for p in predictions], dtype=torch.long)
    if int(counts.sum()) == 0:
        return pd.DataFrame(columns=["image_id", "detection", *DETECTION_COLUMNS])
    cat = {k: torch.cat([p[k] for p in predictions]) for k in ("labels", "scores", "boxes", *UNCERTAINTY_NAMES, "cls_entropy")}
    ids = torch.repeat_interleave(torch.as_tensor(list(image_ids), dtype=torch.long), counts)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    within = torch.arange(len(ids)) - starts  # numbered before the threshold
    keep = kept_mask(cat["scores"], conf_threshold)
    cat = {k: v[keep] for k, v in cat.items()}
    return pd.DataFrame(
        {
            "image_id": ids[keep].numpy(),
            "detection": within[keep].numpy(),
            "label": cat["labels"].numpy(),
            "score": cat["scores"].numpy(),
            **{name: cat["boxes"][:, i].numpy() for i, name in enumerate(("x1", "y1", "x2", "y2"))},
            **{name: cat[name].numpy() for name in (*UNCERTAINTY_NAMES, "cls_entropy")},
        }
    )


class PoolDetections(NamedTuple):
    """What :func:`kept_pool_detections` returns: the kept detections as :func:`detections_frame`
    builds them, and a bool per pool item (False: the image could not be read)."""

    detections: pd.DataFrame
    readable: np.ndarray


def kept_pool_detections(
    model,
    dataset,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    amp: str = "off",
    channels_last: bool = False,
    progress: bool = False,
    mixture: bool = False,
    desc: str = "score",
    on_progress=None,
    should_stop=None,
) -> PoolDetections:
    """The kept detections of every pool image, ready for :func:`image_scores`, with their
    boxes in each image's own pixels (a large image decoded reduced: ``dataset.box_scale``).

    Equal to ``detections_frame`` over :func:`~almdn.engine.inference.predict`'s readable
    images. Inside a process group (torchrun) each rank predicts a contiguous run of whole
    batches (:func:`~almdn.engine.distributed.shard_range`, so each batch is one a single
    process would run) and every rank receives all ranks' detections in pool order: the
    z-scores, the image scores and the ranking are then exactly the single-process ones.
    ``dataset.image_ids`` (or the positions) identify the images. ``mixture``: the frame also
    has a column per :data:`~almdn.models.postprocess.MIXTURE_KEYS`, one array per detection
    (its component boxes, weights, variances, per-edge sigmas, class weights and probabilities).
    ``on_progress`` and ``should_stop``: :func:`~almdn.engine.inference.inference_batches`' hooks.
    """
    start, stop = distributed.shard_range(len(dataset), batch_size, distributed.rank(), distributed.world_size())
    kept = kept_detections(model, dataset, conf_threshold, batch_size, device, num_workers, amp, channels_last, start, stop, progress,
                           desc=desc, on_progress=on_progress, should_stop=should_stop, mixture=mixture)
    index, values, readable, total, mixtures = kept.index, kept.values, kept.readable, kept.num_detections, kept.mixture or {}
    if distributed.is_active():
        index = torch.cat(distributed.all_gather_tensors(index))
        values = torch.cat(distributed.all_gather_tensors(values))
        mixtures = {key: torch.cat(distributed.all_gather_tensors(value)) for key, value in mixtures.items()}
        readable = torch.cat(distributed.all_gather_tensors(readable.to(torch.uint8))).bool()
        total = sum(distributed.all_gather_objects(total))
    if total == 0:
        return PoolDetections(pd.DataFrame(columns=["image_id", "detection", *DETECTION_COLUMNS, *mixtures]), readable.numpy())
    values, mixtures = _restored(dataset, index[:, 0], values, mixtures)
    image_ids = np.asarray(getattr(dataset, "image_ids", range(len(dataset))), dtype=np.int64)
    frame = pd.DataFrame(
        {
            "image_id": image_ids[index[:, 0].numpy()],
            "detection": index[:, 1].numpy(),
            "label": index[:, 2].numpy(),
            **{name: values[:, j].numpy() for j, name in enumerate(KeptDetections.VALUE_COLUMNS)},
            **{key: pd.Series(list(value.numpy()), dtype=object) for key, value in mixtures.items()},  # an array per row
        }
    )
    return PoolDetections(frame, readable.numpy())


def _restored(dataset, positions: torch.Tensor, values: torch.Tensor, mixtures: dict[str, torch.Tensor]):
    """The kept detections' pixel values (the box columns of ``values``, the mixture's
    component boxes and sigmas) back in their images' own pixels, through
    :func:`~almdn.data.images.restore_boxes` per image that was decoded reduced."""
    if not hasattr(dataset, "box_scale"):
        return values, mixtures
    box = slice(1, 5)  # x1, y1, x2, y2 of KeptDetections.VALUE_COLUMNS
    values, mixtures = values.clone(), {key: value.clone() for key, value in mixtures.items()}
    for position in torch.unique(positions).tolist():
        scale = dataset.box_scale(position)
        if scale == (1.0, 1.0):
            continue
        rows = positions == position
        restored = restore_boxes({"boxes": values[rows, box], **{k: mixtures[k][rows] for k in BOX_KEYS if k in mixtures}}, scale)
        values[rows, box] = restored["boxes"]
        for key in BOX_KEYS:
            if key in mixtures:
                mixtures[key][rows] = restored[key]
    return values, mixtures


# ------------------------------------------------------------- what a method needs of its models
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


#: The model method each pass-based or feature-based kind calls.
_MODEL_NEEDS = {"mc_dropout": "forward_mc_dropout", "ensemble": "forward_ensemble", "coreset": "image_features"}


def method_inputs(
    method: Method,
    models: list,
    pool: Dataset,
    pool_ids: list[int],
    labeled: Dataset | None = None,
    budget: int = 0,
    seed: int = 0,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    low_threshold: float = DEFAULT_LOW_THRESHOLD,
    mc_passes: int = 25,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    predictions: list[dict] | None = None,
) -> PoolInputs:
    """What ``method`` needs (:attr:`Method.needs`) from its trained models on the pool.

    Args:
        models: the method's trained detector(s) (``method.members`` of them).
        pool, pool_ids: the unlabeled images and their ids, in the same order.
        labeled: the labeled images (core-set measures distances to them).
        budget: B (core-set's greedy selection needs it); seed: the random stream.
        conf_threshold: detections at or above it are kept for scoring (Sec. 3.3).
        low_threshold: the detections a score-weighted method (``weighting="score"``) reads.
        predictions: the first model's detections on ``pool`` if already computed (methods on
            the same model share them), else computed here.
    """
    device = resolve_device(device)
    needs = method.needs
    call = _MODEL_NEEDS.get(method.kind)
    if call and not hasattr(models[0], call):
        raise ValueError(f"The {method.kind} baseline is not available for {type(models[0]).__name__}; use the SSD detectors for it.")
    inputs = PoolInputs(list(pool_ids), budget=budget, seed=seed)
    if needs & {"detections", "predicted_loss"} and predictions is None:
        predictions = predict(models[0], pool, batch_size=batch_size, device=device)
    if "detections" in needs:
        inputs.detections = detections_frame(predictions, pool_ids, method.detection_threshold(conf_threshold, low_threshold))
    if "predicted_loss" in needs:
        inputs.predicted_loss = torch.stack([p["predicted_loss"] for p in predictions])
    if "passes" in needs:
        inputs.passes = detections_frame(_averaged_predictions(models, pool, batch_size, device, mc_passes), pool_ids, conf_threshold)
    if "features" in needs:
        if labeled is None:
            raise ValueError("core-set needs the labeled images")
        inputs.pool_features = _features(models[0], pool, batch_size, device)
        inputs.labeled_features = _features(models[0], labeled, batch_size, device)
    return inputs


def score_with_models(method: Method, models: list, pool: Dataset, pool_ids: list[int], **options) -> PoolScores:
    """Score every pool image with ``method`` on its trained models: :func:`method_inputs`
    (``options`` are its keywords), then :meth:`Method.score`; ``seconds`` counts both."""
    t0 = time.perf_counter()
    result = method.score(method_inputs(method, models, pool, pool_ids, **options))
    result.seconds = time.perf_counter() - t0
    return result
