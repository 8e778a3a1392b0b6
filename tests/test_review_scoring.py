"""Label-quality scores (almdn.review.scoring): each kind of error found on a planted image,
the mixture scoring breaking the ties of the plain one, every threshold a parameter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.ops import box_iou

from almdn.review import KINDS, SCORINGS, label_quality, labels_frame, pairwise_iou
from almdn.review.scoring import RESULT_COLUMNS, overlapping_pairs, uncertainty_quantiles

#: The true objects of the planted image (image 7): class, box.
OBJECTS = [(1, (10, 10, 40, 40)), (2, (60, 10, 95, 45)), (3, (10, 60, 45, 95)), (4, (60, 60, 95, 95)), (5, (100, 10, 125, 40))]


def detection(image_id, label, score, box, loc=0.01, cls=0.01, entropy=0.3):
    return {
        "image_id": image_id, "label": label, "score": score, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
        "loc_aleatoric": loc, "loc_epistemic": loc / 10, "cls_aleatoric": cls, "cls_epistemic": cls / 10, "cls_entropy": entropy,
    }


def frame(rows) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    out["detection"] = out.groupby("image_id").cumcount()
    return out


def reference_rows(n: int = 20) -> list[dict]:
    """Clean, well detected objects on other images (ids 100..), with spread uncertainties:
    the population the quantiles of image 7's detections are read against."""
    rng = np.random.default_rng(0)
    return [detection(100 + i, 1 + i % 5, 0.9, (20, 20, 60, 60), loc=float(rng.uniform(0.005, 0.05)),
                      cls=float(rng.uniform(0.005, 0.05)), entropy=float(rng.uniform(0.1, 0.5))) for i in range(n)]


def reference_labels(n: int = 20) -> list[tuple[int, int, tuple]]:
    return [(100 + i, 1 + i % 5, (20, 20, 60, 60)) for i in range(n)]


def labels_of(items) -> pd.DataFrame:
    """(image_id, class, box) triples -> a labels frame."""
    by_image: dict[int, list] = {}
    for image_id, label, box in items:
        by_image.setdefault(image_id, []).append((label, box))
    ids = sorted(by_image)
    targets = [{"boxes": np.array([b for _, b in by_image[i]], dtype=float), "labels": np.array([c for c, _ in by_image[i]])} for i in ids]
    return labels_frame(targets, ids)


def planted():
    """The model detects the five objects of image 7 (and some low-score clutter); the labels
    have one error of each kind: object 0's box deleted, object 1's class flipped (2 -> 7),
    object 2's box shifted, and a spurious box where nothing is."""
    dets = [detection(7, c, 0.92, (b[0] + 1, b[1], b[2], b[3] + 1)) for c, b in OBJECTS]
    dets += [detection(7, 6, 0.05, (100, 70, 120, 90), loc=0.2, cls=0.2, entropy=1.5)]  # clutter, not near the spurious box
    dets += reference_rows()
    labels = [(7, 7, OBJECTS[1][1]), (7, 3, (16, 66, 51, 101)), (7, OBJECTS[3][0], OBJECTS[3][1]), (7, OBJECTS[4][0], OBJECTS[4][1]),
              (7, 2, (70, 105, 90, 125))]
    return frame(dets), labels_of(labels + reference_labels())


def test_each_planted_error_is_found_as_its_kind():
    dets, labels = planted()
    queue = label_quality(dets, labels)
    assert list(queue.columns) == [*RESULT_COLUMNS, *SCORINGS]
    found = {kind: queue[queue["kind"] == kind] for kind in KINDS}
    # the deleted box: the detection of object 0 is the one missing box
    assert len(found["missing"]) == 1
    row = found["missing"].iloc[0]
    assert (row["image_id"], row["detection"], row["class"]) == (7, 0, 1) and pd.isna(row["label_index"])
    # the flipped class: label 0 (class 7) matched by a confident detection of class 2
    assert len(found["class"]) == 1
    row = found["class"].iloc[0]
    assert (row["image_id"], row["label_index"], row["class"], row["other_class"], row["detection"]) == (7, 0, 7, 2, 1)
    # the shifted box: label 1, IoU with its detection 0.55 (still a match: not a missing box)
    assert len(found["loose"]) == 1
    row = found["loose"].iloc[0]
    assert (row["image_id"], row["label_index"]) == (7, 1) and 0.3 <= row["iou"] < 0.75
    # the spurious box: label 4, nothing covers it
    assert len(found["spurious"]) == 1
    row = found["spurious"].iloc[0]
    assert (row["image_id"], row["label_index"]) == (7, 4) and pd.isna(row["detection"])
    assert (row[list(SCORINGS)] == 1.0).all()
    # the box of a label row is the label's, of a missing row the detection's
    assert tuple(found["spurious"].iloc[0][["x1", "y1", "x2", "y2"]]) == (70, 105, 90, 125)
    assert tuple(found["missing"].iloc[0][["x1", "y1", "x2", "y2"]]) == (11, 10, 40, 41)


def test_all_items_scores_every_label_and_confident_detection():
    dets, labels = planted()
    items = label_quality(dets, labels, all_items=True)
    confident = int((dets["score"] >= 0.5).sum())
    assert (items["kind"] == "missing").sum() == confident
    for kind in ("class", "loose", "spurious"):
        assert (items["kind"] == kind).sum() == len(labels)
    assert items["flagged"].sum() == 4
    # the planted error of each kind ranks first by every scoring
    for kind in KINDS:
        rows = items[items["kind"] == kind]
        for scoring in SCORINGS:
            assert rows.loc[rows[scoring].idxmax(), "flagged"], (kind, scoring)
    assert (items[list(SCORINGS)].to_numpy() >= 0).all() and (items[list(SCORINGS)].to_numpy() <= 1).all()


@pytest.mark.parametrize("kind", ["missing", "class", "loose"])
def test_the_mixture_scoring_ranks_the_planted_error_first_where_the_plain_one_ties(kind):
    """Two candidates of a kind that confidence and IoU cannot tell apart: the planted error
    (the model is sure of it) and a model error (its mixture is uncertain where the kind
    looks: all four for a missing box, the class mixture for a class, the box mixture for a
    loose box). Their class entropies are equal too, so the entropy scoring ties as well."""
    certain, unsure = {"loc": 0.005, "cls": 0.005}, {"loc": 0.005, "cls": 0.005}
    unsure.update({"missing": {"loc": 0.2, "cls": 0.2}, "class": {"cls": 0.2}, "loose": {"loc": 0.2}}[kind])
    dets, labels = reference_rows(), reference_labels()
    if kind == "missing":  # two unlabelled confident detections
        dets += [detection(7, 1, 0.9, (10, 10, 40, 40), **unsure), detection(7, 2, 0.9, (60, 60, 90, 90), **certain)]
    elif kind == "class":  # two labels of class 3 detected confidently as class 1
        dets += [detection(7, 1, 0.9, (10, 10, 40, 40), **unsure), detection(7, 1, 0.9, (60, 60, 90, 90), **certain)]
        labels += [(7, 3, (10, 10, 40, 40)), (7, 3, (60, 60, 90, 90))]
    else:  # two labels shifted by the same amount from their detections
        dets += [detection(7, 1, 0.9, (10, 10, 40, 40), **unsure), detection(7, 1, 0.9, (60, 60, 90, 90), **certain)]
        labels += [(7, 1, (18, 10, 48, 40)), (7, 1, (68, 60, 98, 90))]
    items = label_quality(frame(dets), labels_of(labels), all_items=True)
    rows = items[(items["kind"] == kind) & (items["image_id"] == 7)]
    assert rows["flagged"].all() and len(rows) == 2
    planted_box = (60, 60) if kind == "missing" else (68, 60) if kind == "loose" else (60, 60)
    is_planted = (rows["x1"] == planted_box[0]) & (rows["y1"] == planted_box[1])
    assert rows["plain"].nunique() == 1 and rows["entropy"].nunique() == 1  # plain and entropy tie
    assert rows.loc[is_planted, "mixture"].iloc[0] > rows.loc[~is_planted, "mixture"].iloc[0]
    queue = label_quality(frame(dets), labels_of(labels), kinds=[kind])
    assert tuple(queue.iloc[0][["x1", "y1"]]) == planted_box  # the queue puts it first


def test_spurious_counts_any_confidence_and_the_mixture_discounts_unsure_cover():
    dets = reference_rows() + [
        detection(7, 1, 0.05, (10, 10, 40, 40), loc=0.2, cls=0.2),  # weak and unsure
        detection(7, 1, 0.05, (60, 60, 90, 90), loc=0.005, cls=0.005),  # weak but sure
    ]
    labels = labels_of(reference_labels() + [(7, 1, (10, 10, 40, 40)), (7, 1, (60, 60, 90, 90))])
    items = label_quality(frame(dets), labels, all_items=True, kinds=["spurious"])
    mine = items[items["image_id"] == 7].set_index("x1")
    assert not mine["flagged"].any()  # covered at some confidence: not flagged by default
    assert mine.loc[10, "plain"] == mine.loc[60, "plain"] == pytest.approx(0.95)
    assert mine.loc[10, "mixture"] > mine.loc[60, "mixture"]
    flagged = label_quality(frame(dets), labels, kinds=["spurious"], cover_score=0.1)
    assert set(flagged["image_id"]) == {7} and len(flagged) == 2  # a cover below cover_score does not count


def test_every_threshold_is_a_parameter():
    dets, labels = planted()
    assert (label_quality(dets, labels, conf_threshold=0.95)["kind"] == "missing").sum() == 0  # 0.92 is no longer confident
    assert (label_quality(dets, labels, match_iou=0.99)["kind"] == "missing").sum() == 5  # nothing matches any more
    assert (label_quality(dets, labels, loose_iou=0.2, min_loose_iou=0.1)["kind"] == "loose").sum() == 0
    assert (label_quality(dets, labels, loose_iou=0.99)["kind"] == "loose").sum() > 1  # near-perfect boxes count as loose
    assert (label_quality(dets, labels, cover_iou=0.01)["kind"] == "spurious").sum() == 1  # nothing touches it at all
    assert (label_quality(dets, labels, combine="mean")["kind"].value_counts() == 1).all()
    with pytest.raises(ValueError, match="kind"):
        label_quality(dets, labels, kinds=["typo"])
    with pytest.raises(ValueError, match="combine"):
        label_quality(dets, labels, combine="sum")
    with pytest.raises(ValueError, match="cls_entropy"):
        label_quality(dets.drop(columns="cls_entropy"), labels)


def test_quantiles_are_taken_within_each_model():
    """Out-of-fold frames mix models whose uncertainties have different scales: each
    detection's quantile is read against its own model's confident detections."""
    a = [detection(i, 1, 0.9, (0, 0, 10, 10), loc=0.01 * (i + 1)) for i in range(4)]
    b = [detection(10 + i, 1, 0.9, (0, 0, 10, 10), loc=1.0 * (i + 1)) for i in range(4)]
    dets = frame(a + b)
    dets["model"] = [0] * 4 + [1] * 4
    q = uncertainty_quantiles(dets, 0.5)
    np.testing.assert_allclose(q["loc_aleatoric"].to_numpy(), [0.125, 0.375, 0.625, 0.875] * 2)
    pooled = uncertainty_quantiles(dets, 0.5, model_column=None)
    assert pooled["loc_aleatoric"].iloc[3] < pooled["loc_aleatoric"].iloc[4]


def test_empty_inputs_and_nan_box_uncertainties():
    dets, labels = planted()
    none = label_quality(dets.iloc[0:0], labels, all_items=True)
    assert (none["kind"] == "missing").sum() == 0
    assert none[none["kind"] == "spurious"]["flagged"].all()
    unlabeled = label_quality(dets, labels.iloc[0:0])
    assert set(unlabeled["kind"]) == {"missing"}
    plain_head = dets.assign(loc_aleatoric=np.nan, loc_epistemic=np.nan)  # a head without box variances
    loose = label_quality(plain_head, labels, kinds=["loose"], all_items=True)
    assert loose["mixture"].notna().all()


def test_labels_frame_and_iou():
    frame_ = labels_frame([{"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]]), "labels": torch.tensor([1, 2])},
                           {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)},
                           {"boxes": np.array([[1.0, 2, 3, 4]]), "labels": np.array([3])}], [4, 5, 6])
    assert frame_["image_id"].tolist() == [4, 4, 6] and frame_["label_index"].tolist() == [0, 1, 0]
    assert frame_["label"].tolist() == [1, 2, 3]
    rng = np.random.default_rng(1)

    def boxes(n):
        xs, ys = np.sort(rng.uniform(0, 100, (n, 2)), 1), np.sort(rng.uniform(0, 100, (n, 2)), 1)
        return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)

    a, b = boxes(7), boxes(5)
    np.testing.assert_allclose(pairwise_iou(a, b), box_iou(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-6, atol=1e-9)


def test_the_scoring_module_imports_no_torch():
    code = "import sys, almdn.review; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pairs_taken_in_runs_of_images_are_the_same_pairs():
    dets, labels = planted()
    whole = overlapping_pairs(labels, dets)
    runs = overlapping_pairs(labels, dets, chunk=3)  # about one image a run
    order_whole, order_runs = np.lexsort(whole[:2]), np.lexsort(runs[:2])
    for a, b in zip(whole, runs):
        np.testing.assert_array_equal(a[order_whole], b[order_runs])
    assert len(whole[0]) > 0 and (whole[2] > 0).all()
