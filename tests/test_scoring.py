"""Per-detection tables and the paper's image score (Sec. 3.3) against a hand computation."""

import math

import numpy as np
import pytest
import pandas as pd
import torch

from almdn.acquisition.scoring import detections_frame, image_scores, kept_pool_detections
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


def _two_image_table(aggregation):
    # Image 1: one detection with loc_al 1, loc_ep 4, cls_al 0, cls_ep 2; image 2: one with 3, 0, 2, 0.
    preds = [_pred([0.9], [[1.0], [4.0], [0.0], [2.0]]), _pred([0.9], [[3.0], [0.0], [2.0], [0.0]])]
    return image_scores(detections_frame(preds, [1, 2]), [1, 2], aggregation).set_index("image_id")


def test_every_aggregation_of_table_2_is_available():
    from almdn.acquisition.scoring import AGGREGATIONS

    assert len(AGGREGATIONS) == 14  # Tab. 2's rows besides random sampling
    assert AGGREGATIONS["max_all"] == ("max", ("alb", "epb", "alc", "epc"))
    assert AGGREGATIONS["sum_al"] == ("sum", ("alb", "alc"))


def test_aggregations_against_a_hand_computation():
    # Two detections per uncertainty: z = (v - mean) / pop std = -1 or +1 for each column.
    # z per image:   alb   epb   alc   epc
    #   image 1:     -1    +1    -1    +1
    #   image 2:     +1    -1    +1    -1
    expected = {
        "alb": (-1, 1), "epc": (1, -1), "sum_loc": (0, 0), "sum_cls": (0, 0), "sum_al": (-2, 2),
        "sum_ep": (2, -2), "sum_all": (0, 0), "max_loc": (1, 1), "max_al": (-1, 1), "max_ep": (1, -1), "max_all": (1, 1),
    }
    for aggregation, (s1, s2) in expected.items():
        table = _two_image_table(aggregation)
        assert table.loc[1, "score"] == pytest.approx(s1), aggregation
        assert table.loc[2, "score"] == pytest.approx(s2), aggregation


def test_unknown_aggregation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="max_all"):
        _two_image_table("mean_all")


def test_images_without_detections_have_no_score_under_every_aggregation():
    preds = [_pred([0.9], [[1.0], [4.0], [0.0], [2.0]]), _pred([], [[]] * 4)]
    for aggregation in ("sum_all", "max_all", "alc"):
        table = image_scores(detections_frame(preds, [1, 2]), [1, 2], aggregation).set_index("image_id")
        assert pd.isna(table.loc[2, "score"])


def test_pool_detections_equal_detections_frame_of_predict_exactly(tmp_path):
    from PIL import Image

    from almdn.data.images import ImageFolderDataset
    from almdn.engine.inference import predict
    from almdn.models import build_model

    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (96, 96 if i != 4 else 112, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes(b"broken")
    pool = ImageFolderDataset.from_folder(tmp_path)
    torch.manual_seed(0)
    model = build_model("ssd_small", 3)
    preds = predict(model, pool, batch_size=3)
    ok = [i for i, p in enumerate(preds) if p is not None]
    # the median top score: some images keep detections, some keep none; 0.7 keeps nothing at all
    threshold = float(np.median([float(preds[i]["scores"].max()) for i in ok]))
    for conf, images_kept in ((threshold, (1, len(ok) - 1)), (0.7, (0, 0))):
        reference = detections_frame([preds[i] for i in ok], [pool.image_ids[i] for i in ok], conf)
        got = kept_pool_detections(model, pool, conf, batch_size=3)
        pd.testing.assert_frame_equal(got.detections, reference, check_exact=True)
        assert got.readable.tolist() == [True, True, False, True, True, True, True]
        assert images_kept[0] <= got.detections["image_id"].nunique() <= images_kept[1]


def test_score_weighted_uncertainties_rank_every_image_with_a_detection_and_weight_by_score():
    # image 10: one confident detection with small uncertainty; image 11: only a faint detection
    # (score 0.2) with a large one; image 12: nothing at all.
    preds = [_pred([0.9], [[1.0]] * 4), _pred([0.2], [[3.0]] * 4), _pred([], [[]] * 4)]
    paper = image_scores(detections_frame(preds, [10, 11, 12], conf_threshold=0.5), [10, 11, 12])
    assert paper["score"].notna().tolist() == [True, False, False]  # the paper's score cannot rank image 11
    frame = detections_frame(preds, [10, 11, 12], conf_threshold=0.05)
    weighted = image_scores(frame, [10, 11, 12], score_weighted=True).set_index("image_id")
    assert weighted["loc_aleatoric"].tolist()[:2] == pytest.approx([0.9, 0.6])  # uncertainty x score
    assert weighted.loc[10, "score"] > weighted.loc[11, "score"]  # 0.9 > 0.6 after weighting
    assert math.isnan(weighted.loc[12, "score"])
    unweighted = image_scores(frame, [10, 11, 12]).set_index("image_id")
    assert unweighted.loc[11, "score"] > unweighted.loc[10, "score"]  # without weights the faint one wins


def test_score_driver_names_the_uncertainty_the_score_comes_from():
    from almdn.acquisition.aggregation import score_driver

    table = pd.DataFrame({"image_id": [1, 2, 3], "z_loc_aleatoric": [0.5, 3.0, np.nan], "z_loc_epistemic": [0.1, 0.2, np.nan],
                          "z_cls_aleatoric": [1.0, 0.3, np.nan], "z_cls_epistemic": [2.25, -1.0, np.nan], "score": [2.25, 3.0, np.nan]})
    driver, z = score_driver(table)
    assert driver.tolist() == ["cls_epistemic", "loc_aleatoric", None] and z[:2].tolist() == [2.25, 3.0] and np.isnan(z[2])
    # under an aggregation of the class head only, the box uncertainty cannot drive
    assert score_driver(table, "max_cls")[0].tolist() == ["cls_epistemic", "cls_aleatoric", None]
    assert score_driver(table[["image_id", "score"]])[0].tolist() == [None, None, None]
