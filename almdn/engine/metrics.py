"""Detection-quality metrics computed from plain predictions and ground truth.

No model code lives here: every function takes per-image dictionaries and
returns plain Python numbers, so the same code serves training-time
evaluation, the evaluation script and the CLI.

Input format (shared by every public function)
----------------------------------------------
``predictions`` and ``targets`` are lists with one dict per image, in the same
order (the i-th prediction belongs to the i-th target; ``image_id`` is not used
for pairing).  Values may be torch tensors or numpy arrays (or nested lists).

* prediction dict: ``boxes`` float ``[N, 4]`` as ``(x1, y1, x2, y2)`` pixel
  coordinates, ``scores`` ``[N]``, ``labels`` int ``[N]`` in ``1..num_classes``
  (0 is background and is not allowed here).
* target dict: ``boxes`` ``[M, 4]`` xyxy, ``labels`` ``[M]`` in
  ``1..num_classes``, optional ``difficult`` bool ``[M]`` (PASCAL VOC),
  optional ``image_id`` (ignored).

Either list entry may be empty (``N == 0`` or ``M == 0``).

Conventions common to both metrics
----------------------------------
* Box coordinates are continuous: ``area = (x2 - x1) * (y2 - y1)`` and IoU is
  computed **without** the "+1 pixel" convention of the original VOC devkit.
  (pycocotools also uses continuous coordinates.)
* A class that has no non-difficult ground truth in the evaluated set has AP
  ``nan`` and is excluded from the class mean (this is what pycocotools does,
  where such classes have precision ``-1``).  If no class has ground truth the
  mean is ``nan``.
* "difficult" ground truth (VOC) is ignored: a detection matched to it counts
  neither as true nor false positive and it does not count towards the number
  of positives (recall).
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["coco_map", "voc07_map", "voc_ap", "box_iou_xyxy", "MATCH_IOU", "greedy_match", "evaluate_predictions"]


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------
def _to_numpy(x: Any, dtype: Any) -> np.ndarray:
    if x is None:
        return np.zeros((0,), dtype=dtype)
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _prepare_predictions(
    predictions: Sequence[Mapping[str, Any]], num_classes: int
) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for i, p in enumerate(predictions):
        boxes = _to_numpy(p.get("boxes"), np.float64).reshape(-1, 4)
        scores = _to_numpy(p.get("scores"), np.float64).reshape(-1)
        labels = _to_numpy(p.get("labels"), np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(
                f"prediction {i}: boxes/scores/labels lengths differ "
                f"({len(boxes)}, {len(scores)}, {len(labels)})"
            )
        _check_labels(labels, num_classes, f"prediction {i}")
        out.append((boxes, scores, labels))
    return out


def _prepare_targets(
    targets: Sequence[Mapping[str, Any]], num_classes: int
) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for i, t in enumerate(targets):
        boxes = _to_numpy(t.get("boxes"), np.float64).reshape(-1, 4)
        labels = _to_numpy(t.get("labels"), np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise ValueError(
                f"target {i}: boxes/labels lengths differ ({len(boxes)}, {len(labels)})"
            )
        difficult = t.get("difficult")
        if difficult is None:
            difficult = np.zeros(len(labels), dtype=bool)
        else:
            difficult = _to_numpy(difficult, bool).reshape(-1)
            if len(difficult) != len(labels):
                raise ValueError(f"target {i}: difficult has wrong length")
        _check_labels(labels, num_classes, f"target {i}")
        out.append((boxes, labels, difficult))
    return out


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"{what}: labels must lie in 1..{num_classes}, got "
            f"[{labels.min()}, {labels.max()}]"
        )


def _check_lengths(predictions: Sequence[Any], targets: Sequence[Any], num_classes: int) -> None:
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions ({len(predictions)}) and targets ({len(targets)}) "
            "must have one entry per image"
        )
    if int(num_classes) < 1:
        raise ValueError("num_classes must be >= 1")


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


# --------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------
#: The IoU at or above which a detection matches a ground-truth box of its class (a true
#: positive): the PASCAL VOC criterion, COCO's AP@.5, and the match of the quality reports.
MATCH_IOU: float = 0.5


def box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[len(a), len(b)]`` of xyxy boxes, continuous coordinates.

    :func:`torchvision.ops.box_iou` in float64. No "+1" is added to widths/heights (unlike the
    original VOC devkit). An inverted box (``x2 < x1``) counts as zero-width, and a pair whose
    union is zero (two degenerate boxes) gets IoU 0, where torchvision would give a negative
    area or NaN.
    """
    # imported here: the quality reports (and the app's pages that show them) read this module
    # without loading torch
    import torch
    from torchvision.ops import box_iou

    a = torch.from_numpy(np.array(a, dtype=np.float64).reshape(-1, 4))
    b = torch.from_numpy(np.array(b, dtype=np.float64).reshape(-1, 4))
    a = torch.cat([a[:, :2], torch.maximum(a[:, 2:], a[:, :2])], dim=1)
    b = torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2])], dim=1)
    return torch.nan_to_num(box_iou(a, b), nan=0.0).numpy()


# --------------------------------------------------------------------------
# COCO (pycocotools)
# --------------------------------------------------------------------------
def _coco_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def _coco_ground_truth(gts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int) -> Dict[str, Any]:
    """The in-memory COCO dataset of the targets: image ids ``1..len(gts)``, categories
    ``1..num_classes``, xywh boxes, ``area = w * h``, difficult boxes as ``iscrowd = 1``."""
    images = []
    annotations = []
    ann_id = 1  # must start at 1: COCOeval uses id 0 to mean "unmatched"
    for img_idx, (boxes, labels, difficult) in enumerate(gts):
        image_id = img_idx + 1
        images.append({"id": image_id})
        if len(boxes) == 0:
            continue
        xywh = _coco_xywh(boxes)
        areas = (xywh[:, 2] * xywh[:, 3]).tolist()
        for box, area, label, diff in zip(xywh.tolist(), areas, labels.tolist(), difficult.tolist()):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "area": float(area),
                    "iscrowd": 1 if diff else 0,
                }
            )
            ann_id += 1
    categories = [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_results(preds: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> List[Dict[str, Any]]:
    """The detections in COCO's result format (xywh boxes, image ids ``1..len(preds)``)."""
    results = []
    for img_idx, (boxes, scores, labels) in enumerate(preds):
        if len(boxes) == 0:
            continue
        image_id = img_idx + 1
        for box, score, label in zip(_coco_xywh(boxes).tolist(), scores.tolist(), labels.tolist()):
            results.append({"image_id": image_id, "category_id": int(label), "bbox": box, "score": float(score)})
    return results


def _run_cocoeval(dataset: Dict[str, Any], results: List[Dict[str, Any]], num_classes: int, max_dets: int) -> Any:
    """pycocotools' ``COCOeval`` (bbox), evaluated and accumulated, its printing silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = [im["id"] for im in dataset["images"]]
        ev.params.catIds = list(range(1, num_classes + 1))
        ev.params.maxDets = sorted({1, 10, max_dets}) if max_dets >= 10 else sorted({1, max_dets})
        ev.evaluate()
        ev.accumulate()
    return ev


def _coco_summary(ev: Any, max_dets: int) -> Dict[str, Any]:
    """AP@[.5:.95], AP@.5, AP@.75 and per-class AP@.5 from ``ev.eval["precision"]``, the way
    ``COCOeval.summarize`` computes ``stats[0:3]`` (area "all", at ``max_dets``)."""
    nan = float("nan")
    p = ev.params
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    a_idx = list(p.areaRngLbl).index("all")
    m_idx = list(p.maxDets).index(max_dets)

    def _mean_valid(arr: np.ndarray) -> float:
        valid = arr[arr > -1]
        return float(np.mean(valid)) if valid.size else nan

    def _iou_index(thr: float) -> int:
        return int(np.where(np.isclose(p.iouThrs, thr))[0][0])

    i50, i75 = _iou_index(0.5), _iou_index(0.75)
    per_class: Dict[int, float] = {}
    for k, cat in enumerate(p.catIds):
        per_class[int(cat)] = _mean_valid(precision[i50, :, k, a_idx, m_idx])

    return {
        "map": _mean_valid(precision[:, :, :, a_idx, m_idx]),
        "map50": _mean_valid(precision[i50, :, :, a_idx, m_idx]),
        "map75": _mean_valid(precision[i75, :, :, a_idx, m_idx]),
        "per_class_ap50": per_class,
    }


def coco_map(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int,
    max_dets: int = 100,
) -> Dict[str, Any]:
    """COCO-style box mAP computed by pycocotools' ``COCOeval`` (``iouType="bbox"``).

    Convention: exactly pycocotools' — IoU thresholds 0.50:0.05:0.95,
    101-point interpolated precision (precision envelope sampled at recall
    0, 0.01, ..., 1), area range "all", continuous coordinates (no +1),
    IoU >= threshold counts as a match, each detection greedily matched (in
    descending score order) to the highest-IoU still-unmatched ground truth of
    its class in its image.

    * The ground-truth ``COCO`` object is built in memory: images get ids
      ``1..len(targets)`` in list order, categories ``1..num_classes``, boxes
      are converted to xywh, ``area = w * h``, ``iscrowd = 0``.
    * VOC "difficult" boxes are given ``iscrowd = 1`` so COCOeval ignores them:
      a detection matched to one is neither TP nor FP and a missed one does
      not lower recall.  Note that COCOeval computes the overlap with a crowd
      box as ``intersection / area(detection)`` and lets any number of
      detections match it, so this is slightly more lenient than VOC's
      handling of difficult boxes.
    * ``max_dets`` (default 100, the COCO standard) is used as the last
      ``maxDets`` entry, i.e. ``params.maxDets = [1, 10, max_dets]``, and the
      returned numbers are at ``max_dets``.  In pycocotools the limit is
      applied **per image and per category** (the top-``max_dets`` scoring
      detections of each class in each image are kept).  SSD keeps up to 200
      detections per image in total, so with 100 some low-scoring detections
      may be dropped; pass ``max_dets=200`` to evaluate all of them.
    * Classes with no (non-difficult) ground truth have precision ``-1`` in
      pycocotools; they are reported as ``nan`` in ``per_class_ap50`` and are
      excluded from every mean, exactly as ``COCOeval.summarize`` does.
    * Without any prediction at all pycocotools' ``loadRes`` would crash; the
      result is then 0 for every class with ground truth (``nan`` otherwise)
      without calling pycocotools.

    Returns ``{"map": AP@[.5:.95], "map50": AP@.5, "map75": AP@.75,
    "per_class_ap50": {label: AP@.5}}``; ``map``/``map50``/``map75`` equal
    ``COCOeval.stats[0:3]`` (computed from ``eval["precision"]`` the same way
    ``summarize`` does, so that a non-default ``max_dets`` is honoured).
    If no class has ground truth every value is ``nan``.
    """
    _check_lengths(predictions, targets, num_classes)
    num_classes = int(num_classes)
    max_dets = int(max_dets)
    if max_dets < 1:
        raise ValueError("max_dets must be >= 1")
    preds = _prepare_predictions(predictions, num_classes)
    gts = _prepare_targets(targets, num_classes)

    # which classes have at least one non-ignored GT box
    has_gt = np.zeros(num_classes + 1, dtype=bool)
    for _, labels, difficult in gts:
        has_gt[labels[~difficult]] = True

    results = _coco_results(preds)
    if not results:
        nan = float("nan")
        per_class = {c: (0.0 if has_gt[c] else nan) for c in range(1, num_classes + 1)}
        v = 0.0 if has_gt.any() else nan
        return {"map": v, "map50": v, "map75": v, "per_class_ap50": per_class}
    ev = _run_cocoeval(_coco_ground_truth(gts, num_classes), results, num_classes, max_dets)
    return _coco_summary(ev, max_dets)


# --------------------------------------------------------------------------
# PASCAL VOC
# --------------------------------------------------------------------------
def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a recall/precision curve (detections in descending score order).

    * ``use_07_metric=True`` — VOC2007 11-point interpolation: for each
      ``t`` in ``{0, 0.1, ..., 1.0}`` take the maximum precision over points
      with ``recall >= t`` (0 if there is none) and average the 11 values.
      The thresholds are computed as ``k / 10`` (the devkit's
      ``np.arange(0., 1.1, 0.1)`` yields e.g. ``0.30000000000000004`` which
      would reject a recall of exactly 0.3).
    * ``use_07_metric=False`` — VOC2010+ area under the monotone precision
      envelope: precision is replaced by its running maximum from the right
      and integrated over the recall steps (``mrec = [0, rec, 1]``,
      ``mpre = [0, prec, 0]`` as in the devkit).
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if use_07_metric:
        if rec.size == 0:
            return 0.0
        thresholds = np.arange(11) / 10.0
        mask = rec[None, :] >= thresholds[:, None]  # [11, D]
        p_at = np.where(mask, prec[None, :], -np.inf).max(axis=1)
        p_at = np.where(np.isfinite(p_at), p_at, 0.0)
        return float(p_at.sum() / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _flatten_ground_truth(gts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(offsets, difficult, npos)``: where each image's boxes start in the flat list of all
    ground truth, the flat difficult flags, and the non-difficult boxes per class."""
    gt_offsets = np.zeros(len(gts) + 1, dtype=np.int64)
    for i, (boxes, _, _) in enumerate(gts):
        gt_offsets[i + 1] = gt_offsets[i] + len(boxes)
    if gt_offsets[-1] > 0:
        gt_labels = np.concatenate([g[1] for g in gts])
        gt_difficult = np.concatenate([g[2] for g in gts])
    else:
        gt_labels = np.zeros(0, dtype=np.int64)
        gt_difficult = np.zeros(0, dtype=bool)
    npos = np.bincount(gt_labels[~gt_difficult], minlength=num_classes + 1)
    return gt_offsets, gt_difficult, npos


def _same_class_iou(dboxes: np.ndarray, dlabels: np.ndarray, gboxes: np.ndarray, glabels: np.ndarray) -> np.ndarray:
    """IoU of one image's detections with its ground truth, -1 for pairs of different classes."""
    if not len(gboxes):
        return np.full((len(dboxes), 0), -1.0)
    iou = box_iou_xyxy(dboxes, gboxes)
    return np.where(dlabels[:, None] == glabels[None, :], iou, -1.0)  # other classes never match


def _devkit_best(iou: np.ndarray, offset: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each detection's highest-IoU same-class box (flat index, -1 for none) and that IoU."""
    n = iou.shape[0]
    if not iou.shape[1]:
        return np.full(n, -1, dtype=np.int64), np.full(n, -1.0)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(n), best]
    return np.where(best_iou >= 0, best + offset, -1), best_iou


def _devkit_status(best_gt: np.ndarray, best_iou: np.ndarray, gt_difficult: np.ndarray, thr: float) -> np.ndarray:
    """Status (1 TP / 0 FP / -1 ignored) of the ranked detections under the devkit's matching:
    a hit on a difficult box is ignored, the first hit on a regular box is the TP, later hits
    are duplicates (FP)."""
    status = np.zeros(len(best_gt), dtype=np.int8)  # FP by default
    hit = (best_iou >= thr) & (best_gt >= 0)
    hit_diff = hit.copy()
    hit_diff[hit] = gt_difficult[best_gt[hit]]
    status[hit_diff] = -1
    cand = np.where(hit & ~hit_diff)[0]  # ranked positions hitting a regular GT
    if cand.size:
        # the first (highest-ranked) detection of each GT is the TP, later ones duplicates
        _, first = np.unique(best_gt[cand], return_index=True)
        status[cand[first]] = 1
    return status


def _class_aps(status: np.ndarray, labels: np.ndarray, npos: np.ndarray, num_classes: int, use_07_metric: bool) -> Dict[int, float]:
    """Per-class AP from the ranked detections' status: nan without positives, 0 without a
    detection that counts."""
    per_class: Dict[int, float] = {}
    for c in range(1, num_classes + 1):
        if npos[c] == 0:
            per_class[c] = float("nan")
            continue
        st = status[labels == c]
        st = st[st >= 0]
        if st.size == 0:
            per_class[c] = 0.0
            continue
        tp = np.cumsum(st == 1, dtype=np.float64)
        fp = np.cumsum(st == 0, dtype=np.float64)
        rec = tp / float(npos[c])
        prec = tp / (tp + fp)
        per_class[c] = voc_ap(rec, prec, use_07_metric=use_07_metric)
    return per_class


def voc07_map(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float = MATCH_IOU,
    use_07_metric: bool = True,
    matching: str = "devkit",
) -> Dict[str, Any]:
    """PASCAL VOC detection AP (by default the VOC2007 11-point metric).

    This is the metric behind the VOC numbers of SSD / the paper
    (``voc_eval.py`` of the VOC devkit as ported by py-faster-rcnn and
    ssd.pytorch), with these conventions:

    * Per class, all detections of that class over all images are sorted by
      score, descending (stable sort, so ties keep image/list order).
    * Matching (``matching="devkit"``, default, identical to the devkit): a
      detection is compared with the ground truth of its class in its image and
      takes the GT of **highest IoU among all of them** (matched or not).  If
      that IoU is ``>= iou_threshold``: a difficult GT makes the detection
      ignored (neither TP nor FP); an unmatched GT makes it a TP and marks the
      GT matched; an already matched GT makes it a FP (duplicate).  Otherwise
      it is a FP.
      ``matching="best_unmatched"`` instead takes the highest-IoU GT among the
      **still unmatched non-difficult** ones with IoU ``>= iou_threshold``
      (TP); failing that, the detection is ignored if it overlaps a difficult GT
      by ``>= iou_threshold`` and is a FP otherwise (COCO-like).  The two agree
      unless two GT boxes of one class both overlap a detection by at least the
      threshold.
    * IoU uses continuous coordinates, no "+1" (the old devkit adds 1 pixel to
      widths and heights), and a match needs ``IoU >= iou_threshold`` (the
      devkit uses ``>``; this only matters for exact ties).
    * Difficult GT boxes do not count as positives, so missing them does not
      lower recall.
    * ``recall = TP / #non-difficult GT``, ``precision = TP / (TP + FP)``
      along the ranked list (ignored detections removed); AP from
      :func:`voc_ap`: with ``use_07_metric=True`` (default) the VOC2007
      11-point interpolated AP, otherwise the VOC2010+ area under the
      interpolated PR curve.
    * A class without non-difficult GT gets AP ``nan`` and is excluded from
      the mean; a class with GT but no detection gets AP 0.

    Returns ``{"map": mean AP over classes with GT, "per_class_ap": {label: AP}}``.
    """
    _check_lengths(predictions, targets, num_classes)
    if matching not in ("devkit", "best_unmatched"):
        raise ValueError("matching must be 'devkit' or 'best_unmatched'")
    num_classes = int(num_classes)
    thr = float(iou_threshold)
    preds = _prepare_predictions(predictions, num_classes)
    gts = _prepare_targets(targets, num_classes)
    gt_offsets, gt_difficult, npos = _flatten_ground_truth(gts, num_classes)

    # ---- per detection: status (1 TP, 0 FP, -1 ignored), or the devkit's best box ----
    det_scores: List[np.ndarray] = []
    det_labels: List[np.ndarray] = []
    det_status: List[np.ndarray] = []
    det_best: List[Tuple[np.ndarray, np.ndarray]] = []  # devkit: (global GT index or -1, IoU)
    for img_idx, ((dboxes, dscores, dlabels), (gboxes, glabels, gdiff)) in enumerate(zip(preds, gts)):
        if len(dboxes) == 0:
            continue
        det_scores.append(dscores)
        det_labels.append(dlabels)
        iou = _same_class_iou(dboxes, dlabels, gboxes, glabels)
        if matching == "devkit":
            det_best.append(_devkit_best(iou, int(gt_offsets[img_idx])))
        else:
            det_status.append(_match_best_unmatched(dscores, dlabels, iou, gdiff, thr))

    if not det_scores:
        per_class = {c: 0.0 if npos[c] > 0 else float("nan") for c in range(1, num_classes + 1)}
        return {"map": _nanmean(list(per_class.values())), "per_class_ap": per_class}

    # global ranking: score desc, stable w.r.t. (image, position) order
    order = np.argsort(-np.concatenate(det_scores), kind="stable")
    if matching == "devkit":
        best_gt = np.concatenate([b[0] for b in det_best])[order]
        best_iou = np.concatenate([b[1] for b in det_best])[order]
        status = _devkit_status(best_gt, best_iou, gt_difficult, thr)
    else:
        status = np.concatenate(det_status)[order]
    per_class = _class_aps(status, np.concatenate(det_labels)[order], npos, num_classes, use_07_metric)
    return {"map": _nanmean(list(per_class.values())), "per_class_ap": per_class}


def _match_best_unmatched(
    scores: np.ndarray, labels: np.ndarray, iou: np.ndarray, difficult: np.ndarray, thr: float
) -> np.ndarray:
    """Status (1 TP / 0 FP / -1 ignored) of one image's detections, COCO-like greedy matching.

    ``iou`` already has -1 for pairs of different classes.  Detections are
    processed in descending score order (stable); returned in input order.
    """
    return _greedy_assign(scores, iou, difficult, thr)[0]


def _greedy_assign(scores: np.ndarray, iou: np.ndarray, difficult: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """``(status, matched_gt)``: status as :func:`_match_best_unmatched`, and the index of the
    ground-truth box each true positive took (-1 otherwise)."""
    n = len(scores)
    status = np.zeros(n, dtype=np.int8)
    taken = np.full(n, -1, dtype=np.int64)
    if iou.shape[1] == 0:
        return status, taken
    matched = np.zeros(iou.shape[1], dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        row = iou[d]
        ok = (row >= thr) & ~difficult & ~matched
        if ok.any():
            g = int(np.argmax(np.where(ok, row, -np.inf)))
            matched[g] = True
            status[d] = 1
            taken[d] = g
        elif ((row >= thr) & difficult).any():
            status[d] = -1
    return status, taken


def greedy_match(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, iou_threshold: float = MATCH_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """True/false positives of one image's detections, greedy by descending score.

    Each detection takes the unmatched ground-truth box of its own class with the highest IoU;
    IoU >= ``iou_threshold`` makes it a true positive (and uses the box up), otherwise it is a
    false positive. This is the matching of pycocotools and the VOC devkit.

    Returns:
        ``(is_tp, iou)`` in input order: bool ``(N,)``, and the IoU with the matched box (for a
        true positive) or with the best same-class box (0 when there is none).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    iou = box_iou_xyxy(boxes, gt_boxes)
    iou = np.where(np.asarray(labels).reshape(-1, 1) == np.asarray(gt_labels).reshape(1, -1), iou, -1.0)
    status, taken = _greedy_assign(np.asarray(scores, np.float64), iou, np.zeros(len(gt_boxes), dtype=bool), iou_threshold)
    best = iou.max(axis=1).clip(min=0.0) if len(gt_boxes) else np.zeros(len(boxes))
    is_tp = status == 1
    best[is_tp] = iou[is_tp.nonzero()[0], taken[is_tp]]
    return is_tp, best


# --------------------------------------------------------------------------
# combined entry point
# --------------------------------------------------------------------------
def evaluate_predictions(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int,
    max_dets: int = 100,
) -> Dict[str, Any]:
    """All detection metrics in one flat dict (used by training, evaluation and the CLI).

    Keys:

    * ``map``, ``map50``, ``map75`` — COCO AP@[.5:.95], AP@.5, AP@.75 from
      :func:`coco_map` (pycocotools, 101-point interpolation, ``max_dets`` per
      image and class).
    * ``voc07_map50`` — PASCAL VOC2007 11-point AP at IoU 0.5 from
      :func:`voc07_map` (devkit matching, continuous coordinates).
    * ``per_class_ap50`` — ``{label: COCO AP@.5}``;
      ``voc07_per_class_ap50`` — ``{label: VOC07 AP@.5}``.

    Classes without ground truth are ``nan`` per class and left out of means.
    """
    coco = coco_map(predictions, targets, num_classes, max_dets=max_dets)
    voc = voc07_map(predictions, targets, num_classes, iou_threshold=MATCH_IOU, use_07_metric=True)
    return {
        "map": coco["map"],
        "map50": coco["map50"],
        "map75": coco["map75"],
        "voc07_map50": voc["map"],
        "per_class_ap50": coco["per_class_ap50"],
        "voc07_per_class_ap50": voc["per_class_ap"],
    }
