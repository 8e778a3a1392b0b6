"""bench/label_noise.py's numpy parts: the planted noise (exact shares, disjoint, shifted
boxes at the IoU asked for, spurious boxes away from the objects) and the measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from almdn.review import label_quality, labels_frame, pairwise_iou

BENCH = Path(__file__).resolve().parents[1] / "bench" / "label_noise.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("label_noise_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_labels(num_images: int = 100, per_image: int = 4) -> pd.DataFrame:
    """Non-overlapping 20-30 px boxes on a 128 px grid, classes 1..10."""
    rng = np.random.default_rng(5)
    targets = []
    for _ in range(num_images):
        corners = np.array([[4, 4], [68, 4], [4, 68], [68, 68]])[:per_image]
        sizes = rng.uniform(20, 30, (per_image, 2))
        targets.append({"boxes": np.concatenate([corners, corners + sizes], 1), "labels": rng.integers(1, 11, per_image)})
    return labels_frame(targets, list(range(1, num_images + 1)))


def test_the_planted_noise_has_the_asked_shares_and_kinds(bench):
    clean = clean_labels()
    n = len(clean)
    labels, deleted = bench.corrupt(clean, 10, (128, 128), np.random.default_rng(0))
    assert len(deleted) == round(0.05 * n)
    counts = labels["planted"].value_counts()
    assert counts["class"] == counts["loose"] == round(0.05 * n) and counts["spurious"] == round(0.02 * n)
    assert len(labels) == n - len(deleted) + counts["spurious"]
    # renumbered within each image
    assert (labels.groupby("image_id")["label_index"].apply(lambda s: list(s) == list(range(len(s))))).all()
    # flipped classes differ from the true ones; shifted boxes overlap their true box at 0.4-0.65
    truth = clean.set_index(["image_id", "x1", "y1"])
    flipped = labels[labels["planted"] == "class"]
    true_class = truth.loc[list(zip(flipped["image_id"], flipped["x1"], flipped["y1"])), "label"].to_numpy()
    assert (flipped["label"].to_numpy() != true_class).all()
    assert flipped["label"].between(1, 10).all()
    clean_boxes = clean.groupby("image_id")[["x1", "y1", "x2", "y2"]].apply(lambda g: g.to_numpy())
    for row in labels[labels["planted"] == "loose"].itertuples():
        best = pairwise_iou(np.array([[row.x1, row.y1, row.x2, row.y2]]), clean_boxes[row.image_id]).max()
        assert 0.4 <= best < 0.65
    for row in labels[labels["planted"] == "spurious"].itertuples():
        assert pairwise_iou(np.array([[row.x1, row.y1, row.x2, row.y2]]), clean_boxes[row.image_id]).max() < 0.2
    # the same seed plants the same noise
    again, _ = bench.corrupt(clean, 10, (128, 128), np.random.default_rng(0))
    pd.testing.assert_frame_equal(labels, again)


def test_a_perfect_scorer_gets_full_marks_and_a_constant_one_chance(bench):
    positive = np.zeros(200, dtype=bool)
    positive[:10] = True
    target = np.arange(200)
    perfect = bench.kind_metrics(positive.astype(float), positive, target, 10, 10, np.random.default_rng(0))
    assert perfect["auroc"] == 1.0 and perfect["precision_at_k"] == 1.0
    assert perfect["precision_top"] == 1.0 and perfect["recall_top"] == 1.0 and perfect["top"] == 10
    constant = bench.kind_metrics(np.zeros(200), positive, target, 10, 10, np.random.default_rng(0))
    assert constant["auroc"] == 0.5  # ties never favour the planted errors
    assert bench.auroc(np.zeros(3), np.zeros(3, dtype=bool)) is None


def test_measure_finds_the_planted_errors_from_the_detections_of_a_perfect_model(bench):
    """A model that detects every true object, exactly: the planted errors of every kind rank
    first (missing boxes through the deleted ones). The uncertainties here are noise, so the
    mixture scoring of missing boxes only nearly does: the detections of boxes shifted below
    IoU 0.5 are unmatched, hence missing-box candidates too, and noise lifts some of them."""
    clean = clean_labels(60)
    labels, deleted = bench.corrupt(clean, 10, (128, 128), np.random.default_rng(1))
    rng = np.random.default_rng(2)
    n = len(clean)
    detections = clean.rename(columns={"label_index": "detection"}).assign(
        score=0.95, loc_aleatoric=rng.uniform(0.01, 0.02, n), loc_epistemic=rng.uniform(0.001, 0.002, n),
        cls_aleatoric=rng.uniform(0.01, 0.02, n), cls_epistemic=rng.uniform(0.001, 0.002, n), cls_entropy=0.2)
    items = label_quality(detections, labels, all_items=True)
    result = bench.measure(items, labels, deleted, ["mixture", "plain"], 0.05, seed=0)
    for kind in ("missing", "class", "loose", "spurious"):
        assert result[kind]["plain"]["auroc"] == pytest.approx(1.0), kind
        plain = result[kind]["plain"]
        assert plain["precision_at_k"] == 1.0 and plain["precision_top"] == plain["precision_top_ceiling"], kind
        assert plain["top"] == int(np.ceil(0.05 * len(labels)))
        assert result[kind]["mixture"]["auroc"] >= (0.95 if kind == "missing" else 1.0), kind
        assert result[kind]["rule"]["recall"] == 1.0, kind
    assert result["missing"]["mixture"]["planted"] == len(deleted)


def test_cleanlab_gets_its_input_format_and_the_detections_come_back_in_order(bench):
    """cleanlab's labels (classes from 0) and predictions (one (M_k, 5) array per class and
    image), and the (image, detection) of each predicted box in cleanlab's class-by-class order;
    a degenerate box, which cleanlab refuses, is left out. Runs without cleanlab installed."""
    labels = labels_frame([{"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([2])}], [5])
    detections = pd.DataFrame({
        "image_id": [5, 5, 5, 9], "detection": [0, 1, 2, 0], "label": [3, 1, 3, 2], "score": [0.9, 0.8, 0.7, 0.6],
        "x1": [0.0, 1, 2, 3], "y1": [0.0, 1, 2, 3], "x2": [10.0, 11, 2, 13], "y2": [10.0, 11, 12, 13],
    })
    cl_labels, cl_predictions, order = bench.cleanlab_inputs(detections, labels, [5, 9], num_classes=3)
    assert cl_labels[0]["labels"].tolist() == [1] and cl_labels[0]["bboxes"].shape == (1, 4)
    assert cl_labels[1]["labels"].shape == (0,) and cl_labels[1]["bboxes"].shape == (0, 4)
    assert [p.shape for p in cl_predictions[0]] == [(1, 5), (0, 5), (1, 5)]  # detection 2 is degenerate
    assert cl_predictions[0][2][0].tolist() == pytest.approx([0, 0, 10, 10, 0.9])
    assert [p.shape for p in cl_predictions[1]] == [(0, 5), (1, 5), (0, 5)]
    assert order == [(5, 1), (5, 0), (9, 0)]


def test_cleanlab_scores_fill_a_column_when_it_is_installed(bench):
    pytest.importorskip("cleanlab")
    clean = clean_labels(20)
    labels, deleted = bench.corrupt(clean, 10, (128, 128), np.random.default_rng(1))
    detections = clean.rename(columns={"label_index": "detection"}).assign(
        score=0.95, loc_aleatoric=0.01, loc_epistemic=0.001, cls_aleatoric=0.01, cls_epistemic=0.001, cls_entropy=0.2)
    items = bench.add_cleanlab(label_quality(detections, labels, all_items=True), detections, labels, 10)
    assert items["cleanlab"].between(0, 1).all()
    result = bench.measure(items, labels, deleted, ["cleanlab"], 0.05, seed=0)
    assert result["class"]["cleanlab"]["auroc"] > 0.5


def test_cleanlab_qualities_become_error_scores_with_nan_as_no_evidence(bench):
    """NaN (a box cleanlab did not consider) is quality 1, error 0; a rounding error above 1
    is clipped; lower quality, higher error. Runs without cleanlab installed."""
    errors = bench.cleanlab_error(np.array([np.nan, 1.0 + 3e-8, 1.0, 0.25, 0.0, -1e-9]))
    assert errors.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.75, 1.0, 1.0])
    assert bench.cleanlab_error(np.zeros(0)).shape == (0,)


def test_cleanlab_column_on_images_without_labels_or_detections(bench):
    """An image with labels and no detection, one with a confident detection and no label, one
    with neither: every item gets a score in [0, 1], the unlabeled detection is overlooked
    (a missing box), the label no prediction reaches gets no error from badloc."""
    pytest.importorskip("cleanlab")
    labels = labels_frame([
        {"boxes": np.array([[10.0, 10, 40, 40], [60, 60, 90, 90]]), "labels": np.array([1, 2])},
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)},
        {"boxes": np.array([[5.0, 5, 30, 30]]), "labels": np.array([1])},
    ], [1, 2, 3])
    detections = pd.DataFrame({
        "image_id": [1, 1, 2], "detection": [0, 1, 0], "label": [1, 1, 2], "score": [0.9, 0.3, 0.95],
        "x1": [10.0, 61, 20], "y1": [10.0, 61, 20], "x2": [40.0, 90, 60], "y2": [40.0, 90, 60],
        "loc_aleatoric": 0.01, "loc_epistemic": 0.001, "cls_aleatoric": 0.01, "cls_epistemic": 0.001, "cls_entropy": 0.2,
    })
    items = bench.add_cleanlab(label_quality(detections, labels, all_items=True), detections, labels, 2)
    assert items["cleanlab"].notna().all() and items["cleanlab"].between(0, 1).all()
    missing = items[items["kind"] == "missing"].set_index("image_id")["cleanlab"]
    assert missing[2] > 0.5 and missing[1] == 0.0  # image 2's detection is overlooked; image 1's matches its label
    loose = items[items["kind"] == "loose"].set_index(["image_id", "label_index"])["cleanlab"]
    assert loose[(1, 0)] == pytest.approx(0.0, abs=1e-9) and loose[(3, 0)] == 0.0
