"""From per-detection uncertainties to one informativeness score per image (Sec. 3.3).

For each of the four uncertainties: z-score every kept detection with the mean and the
population standard deviation over ALL kept detections of the scored pool, take the maximum
over an image's detections, and score the image by the maximum of its four values. The other
aggregations the paper compares in Tab. 2 (single uncertainties, sums and maxima of pairs and
of all four, over the same z-scored image values) are options, see :data:`AGGREGATIONS`.

:func:`pool_detections` is the scoring path for large pools: batched on the device, and under
``torchrun`` sharded over the processes with every process's kept detections gathered, so the
z-score statistics cover the whole pool and the ranking equals a single process's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from almdn.engine import distributed
from almdn.engine.inference import KeptDetections, kept_detections
from almdn.models import UNCERTAINTY_NAMES
# The pandas half (Tab. 2 aggregations, z-scores) lives in a torch-free module that the app reads.
from almdn.acquisition.aggregation import AGGREGATIONS, DEFAULT_AGGREGATION, SHORT_NAMES, aggregate, image_scores  # noqa: F401

DETECTION_COLUMNS = ("label", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy")


def detections_frame(
    predictions: Sequence[dict[str, torch.Tensor]],
    image_ids: Sequence[int],
    conf_threshold: float = 0.5,
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
    frame = pd.DataFrame(
        {
            "image_id": ids.numpy(),
            "detection": (torch.arange(len(ids)) - starts).numpy(),
            "label": cat["labels"].numpy(),
            "score": cat["scores"].numpy(),
            **{name: cat["boxes"][:, i].numpy() for i, name in enumerate(("x1", "y1", "x2", "y2"))},
            **{name: cat[name].numpy() for name in (*UNCERTAINTY_NAMES, "cls_entropy")},
        }
    )
    return frame[frame["score"] >= conf_threshold].reset_index(drop=True)


class PoolDetections(NamedTuple):
    """What :func:`pool_detections` returns: the kept detections as :func:`detections_frame`
    builds them, and a bool per pool item (False: the image could not be read)."""

    detections: pd.DataFrame
    readable: np.ndarray


def pool_detections(
    model,
    dataset,
    conf_threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    amp: str = "off",
    channels_last: bool = False,
    progress: bool = False,
    mixture: bool = False,
) -> PoolDetections:
    """The kept detections of every pool image, ready for :func:`image_scores`.

    Equal to ``detections_frame`` over :func:`~almdn.engine.inference.predict`'s readable
    images. Inside a process group (torchrun) each rank predicts a contiguous run of whole
    batches (:func:`~almdn.engine.distributed.shard_range`, so each batch is one a single
    process would run) and every rank receives all ranks' detections in pool order: the
    z-scores, the image scores and the ranking are then exactly the single-process ones.
    ``dataset.image_ids`` (or the positions) identify the images. ``mixture``: the frame also
    has a column per :data:`~almdn.models.postprocess.MIXTURE_KEYS`, one array per detection
    (its component boxes, weights, variances, per-edge sigmas, class weights and probabilities).
    """
    start, stop = distributed.shard_range(len(dataset), batch_size, distributed.rank(), distributed.world_size())
    kept = kept_detections(model, dataset, conf_threshold, batch_size, device, num_workers, amp, channels_last, start, stop, progress, mixture=mixture)
    index, values, readable, total, mixtures = kept.index, kept.values, kept.readable, kept.num_detections, kept.mixture or {}
    if distributed.is_active():
        index = torch.cat(distributed.all_gather_tensors(index))
        values = torch.cat(distributed.all_gather_tensors(values))
        mixtures = {key: torch.cat(distributed.all_gather_tensors(value)) for key, value in mixtures.items()}
        readable = torch.cat(distributed.all_gather_tensors(readable.to(torch.uint8))).bool()
        total = sum(distributed.all_gather_objects(total))
    if total == 0:
        return PoolDetections(pd.DataFrame(columns=["image_id", "detection", *DETECTION_COLUMNS, *mixtures]), readable.numpy())
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
