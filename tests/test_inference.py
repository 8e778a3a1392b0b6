"""predict / evaluate over datasets: alignment, broken files, metric keys."""

import numpy as np
import torch
from PIL import Image

from almdn.data.coco import CocoDetectionDataset
from almdn.data.images import ImageFolderDataset
from almdn.engine.inference import evaluate, predict
from almdn.models import build_model


def test_predict_keeps_order_and_marks_unreadable_images(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((64, 80, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"broken")
    torch.manual_seed(0)
    model = build_model("ssd_small", 3)
    preds = predict(model, ImageFolderDataset.from_folder(tmp_path), batch_size=2)
    assert len(preds) == 3 and preds[1] is None
    assert preds[0]["boxes"].shape[1] == 4 and (preds[0]["boxes"][:, 2] <= 80 + 1e-4).all()


def test_evaluate_returns_the_coco_and_voc_metrics(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["test_annotations"])
    torch.manual_seed(0)
    metrics = evaluate(build_model("ssd_small", len(ds.classes), class_names=ds.classes), ds, batch_size=8)
    for key in ("map50", "map75", "map", "voc07_map50"):
        assert 0.0 <= metrics[key] <= 0.05, key  # an untrained model finds (almost) nothing
