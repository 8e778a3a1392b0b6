"""From per-detection uncertainties to one informativeness score per image (Sec. 3.3).

For each of the four uncertainties: z-score every kept detection with the mean and the
population standard deviation over ALL kept detections of the scored pool, take the maximum
over an image's detections, and score the image by the maximum of its four values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from almdn.models import UNCERTAINTY_NAMES

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


def image_scores(detections: pd.DataFrame, image_ids: Sequence[int]) -> pd.DataFrame:
    """Per image: detection count, the four raw uncertainties (max over detections), their
    z-scored values (Sec. 3.3) and the final score ``max`` of the four z-values.

    z-scores use the mean and population std over all rows of ``detections`` (the pool's kept
    detections). Images without a kept detection get NaN values and NaN score.
    """
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
    table["score"] = table[[f"z_{c}" for c in UNCERTAINTY_NAMES]].max(axis=1, skipna=True)
    return table.reset_index()
