"""Tests for almdn.engine.metrics (COCO mAP via pycocotools and PASCAL VOC AP)."""

import math

import numpy as np
import pytest
import torch

from almdn.engine.metrics import (
    box_iou_xyxy,
    coco_map,
    evaluate_predictions,
    voc07_map,
    voc_ap,
)


def _t(boxes, labels, difficult=None):
    d = {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
         "labels": np.asarray(labels, dtype=np.int64).reshape(-1)}
    if difficult is not None:
        d["difficult"] = np.asarray(difficult, dtype=bool)
    return d


def _p(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float64).reshape(-1),
            "labels": np.asarray(labels, dtype=np.int64).reshape(-1)}


def _empty_pred():
    return _p(np.zeros((0, 4)), [], [])


def _random_targets(rng, n_images, num_classes, max_gt=4):
    targets = []
    for _ in range(n_images):
        m = int(rng.integers(0, max_gt + 1))
        xy = rng.uniform(0, 200, size=(m, 2))
        wh = rng.uniform(20, 120, size=(m, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, num_classes + 1, size=m)
        targets.append(_t(boxes, labels))
    return targets


A = [10.0, 10.0, 110.0, 110.0]
B = [50.0, 60.0, 150.0, 160.0]
FAR = [300.0, 300.0, 350.0, 350.0]


# -------------------------------------------------------------------------
def test_box_iou():
    iou = box_iou_xyxy(np.array([[0, 0, 100, 100]]), np.array([[20, 0, 120, 100], [0, 0, 100, 100], [200, 200, 210, 210]]))
    np.testing.assert_allclose(iou, [[8000 / 12000, 1.0, 0.0]])
    assert box_iou_xyxy(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def _hand_written_iou(a, b):
    """The hand-written IoU that torchvision.ops.box_iou replaced (kept here as the reference)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def test_box_iou_matches_the_hand_written_one_with_degenerate_and_inverted_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(60, 2))
    wh = rng.uniform(-20, 60, size=(60, 2))  # some inverted
    boxes = np.concatenate([xy, xy + wh], axis=1)
    boxes[:5, 2:] = boxes[:5, :2]  # points
    boxes[5:10, 2] = boxes[5:10, 0]  # zero width
    np.testing.assert_allclose(box_iou_xyxy(boxes, boxes[::-1]), _hand_written_iou(boxes, boxes[::-1]), rtol=1e-12, atol=1e-15)
    assert box_iou_xyxy(boxes, boxes).dtype == np.float64


def test_perfect_predictions():
    rng = np.random.default_rng(0)
    targets = _random_targets(rng, 12, 3)
    preds = [_p(t["boxes"], np.ones(len(t["labels"])), t["labels"]) for t in targets]
    res = evaluate_predictions(preds, targets, 3)
    assert res["map50"] == pytest.approx(1.0)
    assert res["map75"] == pytest.approx(1.0)
    assert res["map"] == pytest.approx(1.0)
    assert res["voc07_map50"] == pytest.approx(1.0)
    for c in (1, 2, 3):
        assert res["per_class_ap50"][c] == pytest.approx(1.0)
        assert res["voc07_per_class_ap50"][c] == pytest.approx(1.0)


def test_torch_tensor_inputs():
    targets = [{"boxes": torch.tensor([A]), "labels": torch.tensor([1]), "image_id": 7}]
    preds = [{"boxes": torch.tensor([A]), "scores": torch.tensor([0.3]), "labels": torch.tensor([1])}]
    res = evaluate_predictions(preds, targets, 1)
    assert res["map50"] == pytest.approx(1.0)
    assert res["voc07_map50"] == pytest.approx(1.0)


def test_voc07_hand_computed():
    # One class, image 0 has GT A, image 1 has GT B.
    # Detections ranked by score:
    #   0.9 image 0 on A  -> TP   tp=1 fp=0  recall=1/2  precision=1/1
    #   0.8 image 1 FAR   -> FP   tp=1 fp=1  recall=1/2  precision=1/2
    #   0.7 image 1 on B  -> TP   tp=2 fp=1  recall=2/2  precision=2/3
    # 11-point: t in {0,.1,.2,.3,.4,.5} (6 points): max precision with recall>=t = 1
    #           t in {.6,.7,.8,.9,1.0}  (5 points): only recall=1 qualifies -> 2/3
    # AP = (6 * 1 + 5 * 2/3) / 11 = 28/33
    targets = [_t([A], [1]), _t([B], [1])]
    preds = [_p([A], [0.9], [1]), _p([FAR, B], [0.8, 0.7], [1, 1])]
    expected_07 = (6 * 1.0 + 5 * (2.0 / 3.0)) / 11.0
    res = voc07_map(preds, targets, 1)
    assert abs(res["map"] - expected_07) < 1e-9
    assert abs(res["per_class_ap"][1] - expected_07) < 1e-9
    # VOC2010+ area: recall 0->0.5 at precision 1, 0.5->1 at envelope 2/3 -> 1/2 + 1/3
    res_area = voc07_map(preds, targets, 1, use_07_metric=False)
    assert abs(res_area["map"] - (0.5 + 0.5 * 2.0 / 3.0)) < 1e-9
    # COCO 101-point: recall thresholds 0..0.50 (51 points) -> 1, 0.51..1.00 (50 points) -> 2/3
    coco = coco_map(preds, targets, 1)
    assert coco["map50"] == pytest.approx((51 + 50 * 2.0 / 3.0) / 101.0, abs=1e-9)


def test_voc_ap_direct():
    assert voc_ap(np.array([]), np.array([])) == 0.0
    # recall exactly 0.3 must satisfy the t=0.3 threshold
    rec = np.array([0.1, 0.2, 0.3])
    prec = np.array([1.0, 1.0, 1.0])
    assert voc_ap(rec, prec) == pytest.approx(4.0 / 11.0, abs=1e-12)


def test_coco_iou_between_05_and_075():
    gt = [0.0, 0.0, 100.0, 100.0]
    shifted = [20.0, 0.0, 120.0, 100.0]  # IoU = 8000 / 12000 = 0.667
    targets = [_t([gt], [1]), _t([[0, 0, 50, 50]], [2])]
    preds = [_p([shifted], [0.9], [1]), _p([[10, 0, 60, 50]], [0.8], [2])]  # IoU 40*50/(60*50)=0.667
    res = coco_map(preds, targets, 2)
    assert res["map50"] == pytest.approx(1.0)
    assert res["map75"] == pytest.approx(0.0)
    # matched at thresholds .50, .55, .60, .65 out of 10
    assert res["map"] == pytest.approx(0.4)
    assert voc07_map(preds, targets, 2)["map"] == pytest.approx(1.0)
    assert voc07_map(preds, targets, 2, iou_threshold=0.75)["map"] == pytest.approx(0.0)


def test_duplicate_detection_is_false_positive():
    # duplicate on A (score 0.8) outranks the TP on B (score 0.7): same curve as TP, FP, TP
    targets = [_t([A], [1]), _t([B], [1])]
    dup = [A[0] + 1, A[1], A[2] + 1, A[3]]
    preds = [_p([A, dup], [0.9, 0.8], [1, 1]), _p([B], [0.7], [1])]
    voc = voc07_map(preds, targets, 1)["map"]
    assert voc < 1.0
    assert voc == pytest.approx(28.0 / 33.0, abs=1e-9)
    assert coco_map(preds, targets, 1)["map50"] < 1.0
    # if the duplicate scores below every TP it does not hurt AP
    preds_low = [_p([A, dup], [0.9, 0.1], [1, 1]), _p([B], [0.7], [1])]
    assert voc07_map(preds_low, targets, 1)["map"] == pytest.approx(1.0)


def test_devkit_vs_best_unmatched_matching():
    g1 = [0.0, 0.0, 100.0, 100.0]
    g2 = [0.0, 0.0, 100.0, 80.0]
    d2 = [0.0, 0.0, 100.0, 90.0]  # IoU 0.9 with g1 (already taken), 0.889 with g2
    targets = [_t([g1, g2], [1, 1])]
    preds = [_p([g1, d2], [0.9, 0.8], [1, 1])]
    # devkit: d2's best GT is g1, already matched -> FP; recall stays 1/2
    # 11-point: t<=0.5 -> 1 (6 points), t>0.5 -> 0 -> 6/11
    assert voc07_map(preds, targets, 1)["map"] == pytest.approx(6.0 / 11.0, abs=1e-12)
    assert voc07_map(preds, targets, 1, matching="best_unmatched")["map"] == pytest.approx(1.0)
    assert coco_map(preds, targets, 1)["map50"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        voc07_map(preds, targets, 1, matching="nope")


def test_difficult_gt_ignored():
    C = [200.0, 200.0, 260.0, 260.0]
    targets = [_t([A, C], [1, 1], difficult=[False, True])]
    # a high-scoring detection on the difficult box is neither TP nor FP
    preds = [_p([C, A], [0.95, 0.5], [1, 1])]
    assert voc07_map(preds, targets, 1)["map"] == pytest.approx(1.0)
    assert voc07_map(preds, targets, 1, matching="best_unmatched")["map"] == pytest.approx(1.0)
    assert coco_map(preds, targets, 1)["map50"] == pytest.approx(1.0)
    # missing the difficult box does not lower recall
    preds_missed = [_p([A], [0.5], [1])]
    assert voc07_map(preds_missed, targets, 1)["map"] == pytest.approx(1.0)
    assert coco_map(preds_missed, targets, 1)["map50"] == pytest.approx(1.0)
    # sanity: if C were a regular GT, missing it would cost recall
    targets_regular = [_t([A, C], [1, 1])]
    assert voc07_map(preds_missed, targets_regular, 1)["map"] < 1.0
    assert coco_map(preds_missed, targets_regular, 1)["map50"] < 1.0
    # a class whose only GT is difficult has no GT -> nan, excluded
    targets2 = [_t([A, C], [1, 2], difficult=[False, True])]
    preds2 = [_p([A, C], [0.5, 0.9], [1, 2])]
    voc = voc07_map(preds2, targets2, 2)
    assert math.isnan(voc["per_class_ap"][2]) and voc["map"] == pytest.approx(1.0)
    coco = coco_map(preds2, targets2, 2)
    assert math.isnan(coco["per_class_ap50"][2]) and coco["map50"] == pytest.approx(1.0)


def test_no_predictions():
    targets = [_t([A], [1]), _t([B], [2])]
    preds = [_empty_pred(), _empty_pred()]
    res = evaluate_predictions(preds, targets, 3)
    assert res["map"] == 0.0 and res["map50"] == 0.0 and res["map75"] == 0.0
    assert res["voc07_map50"] == 0.0
    assert res["per_class_ap50"][1] == 0.0 and math.isnan(res["per_class_ap50"][3])
    assert res["voc07_per_class_ap50"][2] == 0.0 and math.isnan(res["voc07_per_class_ap50"][3])
    # also with no images at all / no GT at all -> nan, no crash
    assert math.isnan(evaluate_predictions([], [], 2)["map50"])
    res = evaluate_predictions([_p([A], [0.5], [1])], [_t(np.zeros((0, 4)), [])], 2)
    assert math.isnan(res["map50"]) and math.isnan(res["voc07_map50"])


def test_predictions_on_images_without_targets_are_false_positives():
    # image 0: GT A detected with score 0.5; image 1: no GT, detection with score 0.9
    targets = [_t([A], [1]), _t(np.zeros((0, 4)), [])]
    preds = [_p([A], [0.5], [1]), _p([A], [0.9], [1])]
    # ranked: FP (p=0, r=0), TP (p=1/2, r=1) -> every interpolated point is 1/2
    assert voc07_map(preds, targets, 1)["map"] == pytest.approx(0.5, abs=1e-12)
    assert coco_map(preds, targets, 1)["map50"] == pytest.approx(0.5, abs=1e-12)
    # without the extra image the result is perfect
    assert voc07_map(preds[:1], targets[:1], 1)["map"] == pytest.approx(1.0)


def test_class_without_gt_excluded_from_mean():
    targets = [_t([A], [1]), _t([B], [1])]
    # a class-3 detection (no class-3 GT anywhere) and no class-2 anything
    preds = [_p([A, B], [0.9, 0.8], [1, 3]), _p([B], [0.7], [1])]
    voc = voc07_map(preds, targets, 3)
    assert voc["map"] == pytest.approx(1.0)
    assert math.isnan(voc["per_class_ap"][2]) and math.isnan(voc["per_class_ap"][3])
    coco = coco_map(preds, targets, 3)
    assert coco["map50"] == pytest.approx(1.0) and coco["map"] == pytest.approx(1.0)
    assert math.isnan(coco["per_class_ap50"][2]) and math.isnan(coco["per_class_ap50"][3])


def test_max_dets_parameter():
    # 150 false positives of class 1 outrank the one true positive of the image
    rng = np.random.default_rng(1)
    xy = rng.uniform(300, 400, size=(150, 2))
    fps = np.concatenate([xy, xy + 10], axis=1)
    boxes = np.concatenate([fps, [A]])
    scores = np.concatenate([np.linspace(0.99, 0.5, 150), [0.1]])
    preds = [_p(boxes, scores, np.ones(151))]
    targets = [_t([A], [1])]
    assert coco_map(preds, targets, 1)["map50"] == 0.0  # TP beyond the top 100
    assert coco_map(preds, targets, 1, max_dets=200)["map50"] > 0.0
    assert coco_map(preds, targets, 1, max_dets=5)["map50"] == 0.0


def test_input_validation():
    with pytest.raises(ValueError):
        voc07_map([_empty_pred()], [], 1)
    with pytest.raises(ValueError):
        coco_map([_p([A], [0.5], [0])], [_t([A], [1])], 1)  # background label
    with pytest.raises(ValueError):
        voc07_map([_p([A], [0.5], [1])], [_t([A], [3])], 2)  # label > num_classes


def test_coco_and_voc_area_agree_on_random_data():
    rng = np.random.default_rng(1234)
    num_classes = 3
    targets = _random_targets(rng, 30, num_classes)
    preds = []
    for t in targets:
        boxes, labels = t["boxes"], t["labels"]
        keep = rng.uniform(size=len(labels)) < 0.85  # some misses
        wh = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=0).reshape(-1, 4)
        noisy = boxes + rng.normal(0, 0.08, size=boxes.shape) * wh
        noisy = noisy[keep]
        # scores loosely correlated with localisation quality
        scores = rng.uniform(0.3, 1.0, size=len(noisy))
        plabels = labels[keep].copy()
        flip = rng.uniform(size=len(plabels)) < 0.1  # some wrong classes
        plabels[flip] = rng.integers(1, num_classes + 1, size=int(flip.sum()))
        n_fp = int(rng.integers(0, 4))
        xy = rng.uniform(0, 250, size=(n_fp, 2))
        fp = np.concatenate([xy, xy + rng.uniform(15, 80, size=(n_fp, 2))], axis=1)
        preds.append(_p(np.concatenate([noisy, fp]),
                        np.concatenate([scores, rng.uniform(0.0, 0.9, size=n_fp)]),
                        np.concatenate([plabels, rng.integers(1, num_classes + 1, size=n_fp)])))
    coco = coco_map(preds, targets, num_classes)
    voc_area = voc07_map(preds, targets, num_classes, use_07_metric=False)
    voc_area_bu = voc07_map(preds, targets, num_classes, use_07_metric=False, matching="best_unmatched")
    voc_11 = voc07_map(preds, targets, num_classes)
    assert 0.2 < coco["map50"] < 0.99  # the data set is neither trivial nor hopeless
    assert abs(coco["map50"] - voc_area["map"]) < 0.05
    assert abs(coco["map50"] - voc_area_bu["map"]) < 0.05
    for c in range(1, num_classes + 1):
        assert abs(coco["per_class_ap50"][c] - voc_area["per_class_ap"][c]) < 0.08
    assert abs(voc_11["map"] - voc_area["map"]) < 0.08
    # map is an average over stricter thresholds
    assert coco["map"] <= coco["map50"] and coco["map75"] <= coco["map50"]


def _devkit_reference_ap(preds, targets, cls, thr=0.5, use_07=True):
    """Straight loop port of the devkit's voc_eval (no +1, IoU >= thr), as a reference."""
    gts = {}
    npos = 0
    for i, t in enumerate(targets):
        m = t["labels"] == cls
        diff = t.get("difficult", np.zeros(len(t["labels"]), bool))[m]
        gts[i] = {"boxes": t["boxes"][m], "difficult": diff, "det": [False] * int(m.sum())}
        npos += int((~diff).sum())
    dets = [(s, i, b) for i, p in enumerate(preds)
            for b, s, l in zip(p["boxes"], p["scores"], p["labels"]) if l == cls]
    order = sorted(range(len(dets)), key=lambda k: -dets[k][0])
    tp, fp = [], []
    for k in order:
        _, i, b = dets[k]
        R = gts[i]
        ovmax, jmax = -np.inf, -1
        if len(R["boxes"]):
            ov = box_iou_xyxy(b[None], R["boxes"])[0]
            jmax = int(np.argmax(ov))
            ovmax = ov[jmax]
        if ovmax >= thr:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp.append(1); fp.append(0); R["det"][jmax] = True
                else:
                    tp.append(0); fp.append(1)
            else:
                tp.append(0); fp.append(0)
        else:
            tp.append(0); fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric=use_07)


def test_vectorised_voc_matches_devkit_loop_and_coco_matches_summarize():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib, io

    rng = np.random.default_rng(7)
    num_classes = 3
    targets = _random_targets(rng, 25, num_classes, max_gt=6)
    for t in targets:  # some difficult boxes
        t["difficult"] = rng.uniform(size=len(t["labels"])) < 0.2
    preds = []
    for t in targets:
        n = len(t["labels"])
        idx = rng.integers(0, max(n, 1), size=2 * n) if n else np.zeros(0, int)
        boxes = t["boxes"][idx] + rng.normal(0, 8, size=(len(idx), 4)) if n else np.zeros((0, 4))
        preds.append(_p(boxes, rng.uniform(size=len(idx)), t["labels"][idx] if n else []))
    for use_07 in (True, False):
        res = voc07_map(preds, targets, num_classes, use_07_metric=use_07)
        for c in range(1, num_classes + 1):
            ref = _devkit_reference_ap(preds, targets, c, use_07=use_07)
            assert res["per_class_ap"][c] == pytest.approx(ref, abs=1e-12)

    # coco_map's numbers are COCOeval.summarize()'s stats[0:3]
    res = coco_map(preds, targets, num_classes)
    images, anns, results = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1})
        for b, l, d in zip(t["boxes"], t["labels"], t["difficult"]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(l),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(d)})
        for b, s, l in zip(p["boxes"], p["scores"], p["labels"]):
            results.append({"image_id": i + 1, "category_id": int(l), "score": float(s),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c} for c in range(1, num_classes + 1)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    assert res["map"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert res["map50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert res["map75"] == pytest.approx(ev.stats[2], abs=1e-12)


def test_greedy_match_takes_the_best_unmatched_box_of_the_same_class_by_score():
    from almdn.engine.metrics import greedy_match

    gt_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.0]])
    gt_labels = np.array([1, 1])
    boxes = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    labels = np.array([1, 1, 1, 2])
    is_tp, iou = greedy_match(boxes, scores, labels, gt_boxes, gt_labels)
    # by score: det 1 takes box 0 (IoU 1), det 2 takes box 1 (IoU 0.9), det 0 finds both used,
    # det 3 has no box of its class
    assert is_tp.tolist() == [False, True, True, False]
    np.testing.assert_allclose(iou, [1.0, 1.0, 0.9, 0.0])
    none_tp, none_iou = greedy_match(boxes, scores, labels, np.zeros((0, 4)), np.zeros(0, int))
    assert not none_tp.any() and (none_iou == 0).all()
