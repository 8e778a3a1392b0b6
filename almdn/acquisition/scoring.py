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
from almdn.errors import InvalidChoice
from almdn.engine.inference import KeptDetections, kept_detections
from almdn.models import UNCERTAINTY_NAMES

DETECTION_COLUMNS = ("label", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy")

#: The paper's short names (u_alb, u_epb, u_alc, u_epc) for the four uncertainties.
SHORT_NAMES = dict(zip(("alb", "epb", "alc", "epc"), UNCERTAINTY_NAMES))


def _aggregation_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tab. 2's aggregation functions: name -> ("max" | "sum", the uncertainties combined)."""
    groups = {
        "loc": ("alb", "epb"),  # both uncertainties of the localization head
        "cls": ("alc", "epc"),  # both of the classification head
        "al": ("alb", "alc"),  # aleatoric of both heads
        "ep": ("epb", "epc"),  # epistemic of both heads
        "all": ("alb", "epb", "alc", "epc"),
    }
    table = {short: ("max", (short,)) for short in SHORT_NAMES}
    for op in ("sum", "max"):
        table.update({f"{op}_{group}": (op, members) for group, members in groups.items()})
    return table


#: Every aggregation of Tab. 2 by name; ``max_all`` is the paper's (and the default).
AGGREGATIONS: dict[str, tuple[str, tuple[str, ...]]] = _aggregation_table()
DEFAULT_AGGREGATION = "max_all"


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


def image_scores(
    detections: pd.DataFrame, image_ids: Sequence[int], aggregation: str = DEFAULT_AGGREGATION, score_weighted: bool = False
) -> pd.DataFrame:
    """Per image: detection count, the four raw uncertainties (max over detections), their
    z-scored values (Sec. 3.3) and the final ``score`` by ``aggregation`` of the z-values.

    z-scores use the mean and population std over all rows of ``detections`` (the pool's kept
    detections). Images without a kept detection get NaN values and NaN score (see
    :func:`almdn.acquisition.selection.select_batch` for what happens to them).

    Args:
        aggregation: a key of :data:`AGGREGATIONS`; ``"max_all"`` (the paper's best) takes the
            maximum of the four z-scored values, ``"sum_loc"`` the sum of the localization
            head's two, ``"alc"`` only the classification aleatoric one, and so on.
        score_weighted: multiply each detection's uncertainties by its score before the
            z-scores (the expected uncertainty of a detection that is an object with
            probability ``score``). Meant for detections above a low threshold: every image
            with any detection is then ranked, and a near-background detection cannot
            outrank a likely object on its uncertainty alone. The raw columns then hold the
            weighted values.
    """
    if aggregation not in AGGREGATIONS:
        raise InvalidChoice(f"Unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    if score_weighted:
        detections = detections.assign(**{name: detections[name] * detections["score"] for name in UNCERTAINTY_NAMES})
    z = detections[list(UNCERTAINTY_NAMES)].astype(np.float64)
    std = z.std(ddof=0).replace(0.0, 1.0)  # a constant uncertainty carries no ranking signal
    z = (z - z.mean()) / std
    z.columns = [f"z_{c}" for c in UNCERTAINTY_NAMES]
    per_det = pd.concat([detections[["image_id", *UNCERTAINTY_NAMES]], z], axis=1)
    grouped = per_det.groupby("image_id")
    table = grouped.max()
    table.insert(0, "num_detections", grouped.size())
    table = table.reindex(pd.Index(list(image_ids), name="image_id"))
    table["num_detections"] = table["num_detections"].fillna(0).astype(int)
    table["score"] = aggregate(table, aggregation)
    return table.reset_index()


def aggregate(table: pd.DataFrame, aggregation: str = DEFAULT_AGGREGATION) -> pd.Series:
    """An image's final score from its z-scored uncertainties (columns ``z_loc_aleatoric``
    ...) by ``aggregation`` (Tab. 2); NaN for an image without a kept detection
    (``num_detections`` 0). A plain head has no localization uncertainty (NaN): the
    aggregation combines what exists."""
    if aggregation not in AGGREGATIONS:
        raise InvalidChoice(f"Unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    op, members = AGGREGATIONS[aggregation]
    values = table[[f"z_{SHORT_NAMES[m]}" for m in members]]
    score = values.max(axis=1, skipna=True) if op == "max" else values.sum(axis=1, min_count=1)
    score[table["num_detections"].fillna(0).to_numpy() == 0] = np.nan
    return score.astype(np.float64)
