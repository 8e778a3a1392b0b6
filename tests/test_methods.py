"""Acquisition methods by name, and one finite score per pool image from each of them."""

import numpy as np
import pytest
import torch

from almdn.acquisition.methods import BASELINES, get_method
from almdn.acquisition.scoring import score_with_models
from almdn.data.coco import CocoDetectionDataset
from almdn.models import build_model


def test_names_map_to_the_model_each_method_trains():
    assert get_method("almdn").model_variant == {"head": "gmm", "extras_dropout": 0.0, "loss_prediction": False}
    assert get_method("almdn_eff").head == "eff"
    assert get_method("almdn:sum_cls").aggregation == "sum_cls"
    assert get_method("almdn_eff:alc").head == "eff"
    assert get_method("mc_dropout", mc_dropout=0.2).extras_dropout == 0.2
    assert get_method("ensemble", ensemble_size=5).members == 5
    assert get_method("llal").loss_prediction
    # the class-loss variants train their own detector; the default keeps the experiment's loss
    assert get_method("almdn_eq5").model_variant["cls_loss"] == "eq5"
    assert get_method("almdn_type2").model_variant["cls_loss"] == "type2"
    assert "cls_loss" not in get_method("random").model_variant
    assert get_method("almdn_weighted").weighting == "score" and get_method("almdn").weighting == "threshold"
    # every baseline runs on the same gmm detector (Sec. 4.2)
    assert {get_method(b).head for b in BASELINES} == {"gmm"}
    with pytest.raises(ValueError, match="almdn:<aggregation>"):
        get_method("bald")
    with pytest.raises(ValueError, match="max_all"):
        get_method("almdn:mean")


@pytest.fixture(scope="module")
def pool(tiny_demo):
    data = CocoDetectionDataset(tiny_demo["train_annotations"])
    return data.subset(range(12)), [int(i) for i in data.image_ids[:12]], data.subset(range(12, 20))


@pytest.mark.parametrize("name", ["almdn", "almdn_eff", "almdn_weighted", "almdn:sum_all", "random", "entropy", "entropy_weighted", "coreset", "llal", "mc_dropout", "ensemble"])
def test_every_method_gives_one_finite_score_per_pool_image(pool, name):
    images, ids, labeled = pool
    method = get_method(name, ensemble_size=2)
    torch.manual_seed(0)
    models = [build_model("ssd_small", 10, **method.model_variant).eval() for _ in range(method.members)]
    # threshold 0 keeps every detection of the untrained models, so every image has some
    result = score_with_models(method, models, images, ids, labeled=labeled, budget=4, conf_threshold=0.0, mc_passes=2, batch_size=8)
    assert result.scores.index.tolist() == ids
    assert np.isfinite(result.scores.to_numpy()).all()
    assert len(result.table) == len(ids) and result.seconds > 0
    if method.kind == "almdn":
        assert {"z_loc_aleatoric", "z_cls_epistemic", "num_detections"} <= set(result.table.columns)


def test_precomputed_predictions_are_reused(pool):
    images, ids, _ = pool
    model = build_model("ssd_small", 10).eval()
    from almdn.engine.inference import predict

    preds = predict(model, images)
    a = score_with_models(get_method("entropy"), [model], images, ids, predictions=preds, conf_threshold=0.0)
    b = score_with_models(get_method("entropy"), [model], images, ids, conf_threshold=0.0)
    assert np.allclose(a.scores.to_numpy(), b.scores.to_numpy())
    assert a.seconds < b.seconds
