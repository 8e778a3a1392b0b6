"""predict / evaluate over datasets: alignment, broken files, metric keys."""

import numpy as np
import torch
from PIL import Image

from almdn.data.coco import CocoDetectionDataset
from almdn.data.images import ImageFolderDataset
from almdn.engine.inference import collate_pool, evaluate, kept_detections, predict
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


def test_kept_detections_of_a_range_are_that_slice_of_the_whole_run(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["test_annotations"])
    torch.manual_seed(0)
    model = build_model("ssd_small", len(ds.classes))
    whole = kept_detections(model, ds, conf_threshold=0.09, batch_size=4)
    part = kept_detections(model, ds, conf_threshold=0.09, batch_size=4, start=8, stop=16)
    rows = (whole.index[:, 0] >= 8) & (whole.index[:, 0] < 16)
    assert 0 < int(rows.sum()) < len(whole.index)
    assert torch.equal(part.index, whole.index[rows]) and torch.equal(part.values, whole.values[rows])
    assert len(part.readable) == 8 and bool(part.readable.all()) and (whole.values[:, 0] >= 0.09).all()
    preds = predict(model, ds, batch_size=4)
    assert whole.num_detections == sum(len(p["scores"]) for p in preds)


def test_collate_pool_stacks_equal_sizes_and_keeps_unreadable_images_as_none():
    a, b, c = torch.zeros(3, 4, 5), torch.ones(3, 4, 5), torch.ones(3, 6, 5)
    images, readable = collate_pool([(a, {}), (b, {})])
    assert images.shape == (2, 3, 4, 5) and readable.tolist() == [True, True]
    images, readable = collate_pool([(a, {}), (None, {}), (c, {})])
    assert isinstance(images, list) and images[1] is None and readable.tolist() == [True, False, True]
