"""Per-detection tables and the paper's image score (Sec. 3.3) against a hand computation."""

import math

import numpy as np
import pandas as pd
import torch

from almdn.acquisition.scoring import detections_frame, image_scores
from almdn.models import UNCERTAINTY_NAMES


def _pred(scores, values):
    n = len(scores)
    out = {"scores": torch.tensor(scores), "labels": torch.ones(n, dtype=torch.long), "boxes": torch.zeros(n, 4), "cls_entropy": torch.zeros(n)}
    for name, v in zip(UNCERTAINTY_NAMES, values):
        out[name] = torch.tensor(v)
    return out


def test_detections_below_the_confidence_threshold_are_dropped():
    preds = [_pred([0.9, 0.3], [[1.0, 2.0]] * 4), _pred([], [[]] * 4), _pred([0.6], [[5.0]] * 4)]
    frame = detections_frame(preds, [10, 11, 12], conf_threshold=0.5)
    assert frame["image_id"].tolist() == [10, 12]
    assert frame["detection"].tolist() == [0, 0]


def test_z_scores_at_detection_level_then_max_per_image_then_max_of_four():
    # loc_aleatoric over the pool's 3 kept detections: [1, 2, 6] -> mean 3, population std sqrt(14/3)
    loc_al = [[1.0, 2.0], [6.0]]
    other = [[0.0, 0.0], [0.0]]  # constant: carries no signal, z = 0
    preds = [_pred([0.9, 0.8], [loc_al[0], other[0], other[0], other[0]]), _pred([0.7], [loc_al[1], other[1], other[1], other[1]]), _pred([], [[]] * 4)]
    table = image_scores(detections_frame(preds, [1, 2, 3]), [1, 2, 3]).set_index("image_id")
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3)
    assert table.loc[1, "loc_aleatoric"] == 2.0
    assert table.loc[1, "z_loc_aleatoric"] == np.float64((2 - 3) / std)
    assert table.loc[2, "z_loc_aleatoric"] == np.float64((6 - 3) / std)
    assert table.loc[1, "score"] == max((2 - 3) / std, 0.0)
    assert table.loc[2, "score"] == (6 - 3) / std
    assert table.loc[3, "num_detections"] == 0 and pd.isna(table.loc[3, "score"])
    assert table.index.tolist() == [1, 2, 3]
