"""Label-quality scores: which labels of the labeled images look wrong, and how (issue 22).

Input: the labeled images' boxes (:func:`labels_frame`) and the model's detections on the same
images, one row per detection with the columns of
:data:`almdn.acquisition.scoring.DETECTION_COLUMNS` (``label``, ``score``, the box ``x1..y2``,
the four uncertainties ``loc_aleatoric``, ``loc_epistemic``, ``cls_aleatoric``,
``cls_epistemic`` and ``cls_entropy``) and ``image_id`` (and ``detection``, the index within
the image's detections). That is ``detections_frame(predict(model, data), ids, conf_threshold=0.0)``
or ``kept_pool_detections(model, data, conf_threshold=0.0).detections``: at threshold 0, so that
the frame holds everything the detector keeps (its own floor, 0.01), because a spurious label
is one that no detection covers *at any confidence*. The per-class probabilities of a
detection are not among those columns (``kept_pool_detections(..., mixture=True)`` adds each
detection's class mixture); none of the scores below needs them.

Four kinds of error, each with a rule that flags it and a value ``v`` that grades it (every
threshold is a parameter; "confident" is ``score >= conf_threshold``):

- ``missing`` (missing box), per confident detection: it matches no label of any class
  (best IoU with the image's labels < ``match_iou``); ``v = score * (1 - best IoU)``.
- ``class`` (wrong class), per label: the confident detection that matches it
  (IoU >= ``match_iou``) with the highest score is of another class; ``v`` = its score.
- ``loose`` (loose or shifted box), per label: its best confident same-class detection has an
  IoU in ``[min_loose_iou, loose_iou)``; ``v = 1 - IoU``.
- ``spurious`` (spurious label), per label: no detection of any class and any score
  (>= ``cover_score``) covers it at IoU >= ``cover_iou``; ``v = 1 - e``, with ``e`` the
  evidence of an object there, the highest score of a covering detection (0 with none).

Three scorings rank each kind (higher: more likely an error):

- ``plain``: ``v`` itself, confidence and IoU only, in the manner of FiftyOne's
  mistakenness (a confident unmatched prediction, a confident prediction of another class,
  ``1 - IoU`` for localisation, an annotation no prediction matches);
- ``entropy``: ``v`` times the detection's certainty by its class entropy,
  ``1 - q(cls_entropy)``: what a model without mixtures could do;
- ``mixture``: ``v`` times the certainty of the mixture the kind is about: for ``class``
  the class mixture (``cls_aleatoric``, ``cls_epistemic``: the class is "not uncertain"),
  for ``loose`` the box mixture (``loc_aleatoric``, ``loc_epistemic``: "the box mixture is
  confident"), for ``missing`` all four. For ``spurious`` the covering detections' scores are
  discounted by their certainty before taking the evidence (a detection the model is unsure
  of is weak evidence that the label is real).

``q(u)`` is the quantile of an uncertainty among the confident detections of the same model
(the fraction of them with a smaller value, ties counted half; scale-free, as the pool's
z-scores of Sec. 3.3 are, and robust to their heavy tails); a certainty of several uncertainties is
``1 - max`` of their quantiles (``combine="max"``, as the paper's best image score takes the
maximum) or ``1 - mean``. When the frame has a ``model`` column (out-of-fold detections,
:func:`almdn.review.folds.out_of_fold_detections`), quantiles are taken within each model.
A head without box variances (NaN box uncertainties) leaves out what it lacks.

Everything is vectorised over all label-detection pairs of many images at once (a merge on
``image_id``, :func:`overlapping_pairs`); there is no loop over boxes, and images are taken
in runs only to bound the memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from almdn.registry import DEFAULT_CONF_THRESHOLD, UNCERTAINTY_NAMES

#: The kinds of label error, as ``almdn project review --kind`` names them.
KINDS: tuple[str, ...] = ("missing", "class", "loose", "spurious")
#: Each kind in words.
KIND_NAMES: dict[str, str] = {
    "missing": "missing box", "class": "wrong class", "loose": "loose or shifted box", "spurious": "spurious label",
}
#: The scorings every kind gets (each a column of :func:`label_quality`'s frame).
SCORINGS: tuple[str, ...] = ("mixture", "entropy", "plain")
#: The scoring that ranks the queue unless asked otherwise: ``plain`` (score and IoU), chosen by the
#: planted-noise benchmark (``bench/label_noise.py``, bench/results/label-noise.md): out of fold, over 5
#: seeds, it matches or beats the mixture-based and entropy scorings on every kind (AUROC 1.00 against
#: 0.88 for missing boxes, 0.99 against 0.97 for spurious labels, level on wrong class and loose boxes).
DEFAULT_SCORING: str = "plain"
#: A detection matches a label at this IoU (VOC's and COCO's 0.5).
MATCH_IOU: float = 0.5
#: A label whose best same-class confident detection overlaps it less than this is loose...
LOOSE_IOU: float = 0.75
#: ... and at least this much (less: it is not the same object).
MIN_LOOSE_IOU: float = 0.3
#: A detection covers a label at this IoU (the spurious-label rule).
COVER_IOU: float = 0.5
#: How the quantiles of several uncertainties make one certainty: ``1 - max`` or ``1 - mean``.
COMBINES: tuple[str, ...] = ("max", "mean")
#: The uncertainties whose certainty the mixture scoring of each kind uses.
KIND_UNCERTAINTIES: dict[str, tuple[str, ...]] = {
    "missing": tuple(UNCERTAINTY_NAMES),
    "class": ("cls_aleatoric", "cls_epistemic"),
    "loose": ("loc_aleatoric", "loc_epistemic"),
    "spurious": tuple(UNCERTAINTY_NAMES),
}

BOX_COLUMNS: tuple[str, ...] = ("x1", "y1", "x2", "y2")
#: The columns of :func:`label_quality`'s frame (with ``flagged`` before the scorings when
#: ``all_items``). ``label_index`` is the label's index within its image (missing: none),
#: ``detection`` the detection's (none where no detection is involved), ``class`` the label's
#: class (missing: the detection's), ``other_class`` the detected class of a wrong-class
#: label, the box is the label's (missing: the detection's), ``iou`` and ``score`` those of
#: the detection involved.
RESULT_COLUMNS: tuple[str, ...] = (
    "image_id", "kind", "label_index", "detection", "class", "other_class", *BOX_COLUMNS, "iou", "score",
)
_DETECTION_NEEDED = ("image_id", "label", "score", *BOX_COLUMNS, *UNCERTAINTY_NAMES, "cls_entropy")
_LABEL_NEEDED = ("image_id", "label", *BOX_COLUMNS)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)`` (xyxy): ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return _iou(a[:, None, :], b[None, :, :])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` and ``b`` (xyxy in the last dimension), broadcast."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def labels_frame(targets: Sequence[Mapping[str, Any]], image_ids: Sequence[int]) -> pd.DataFrame:
    """One row per labeled box: ``image_id``, ``label_index`` (its index within the image),
    ``label`` (class, 1..C) and ``x1..y2``, from one target per image (``boxes`` ``(n, 4)``
    xyxy and ``labels`` ``(n,)``, numpy arrays or CPU tensors, as a detection dataset's
    ``targets()`` gives them)."""
    if len(targets) != len(image_ids):
        raise ValueError("one target per image id is required")
    boxes = [np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4) for t in targets]
    labels = [np.asarray(t["labels"], dtype=np.int64).reshape(-1) for t in targets]
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    if np.any(counts != np.array([len(lab) for lab in labels], dtype=np.int64)):
        raise ValueError("each target needs as many labels as boxes")
    cat = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return pd.DataFrame({
        "image_id": np.repeat(np.asarray(image_ids, dtype=np.int64), counts),
        "label_index": np.arange(int(counts.sum())) - starts,
        "label": np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        **{name: cat[:, j] for j, name in enumerate(BOX_COLUMNS)},
    })


def _optional(values: np.ndarray) -> pd.Series:
    """Non-negative integers as a nullable column, -1 as missing."""
    values = np.asarray(values, dtype=np.int64)
    return pd.Series(values).where(values >= 0).astype("Int64")


def _missing(frame: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise ValueError(f"the {what} frame lacks the column(s) {', '.join(absent)}")


def _within_image_index(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column in frame.columns:
        return frame[column].to_numpy(dtype=np.int64)
    return frame.groupby("image_id", sort=False).cumcount().to_numpy(dtype=np.int64)


def uncertainty_quantiles(
    detections: pd.DataFrame, conf_threshold: float = DEFAULT_CONF_THRESHOLD, model_column: str | None = "model",
) -> pd.DataFrame:
    """Per detection and per uncertainty (the four and ``cls_entropy``), its quantile among
    the confident detections of the same model: the fraction of them with a smaller value,
    ties counted half (the mid-rank), in [0, 1]; NaN where the value is NaN. With no
    confident detection (of that model), all its detections are the reference."""
    names = (*UNCERTAINTY_NAMES, "cls_entropy")
    out = np.full((len(detections), len(names)), np.nan)
    if len(detections) == 0:
        return pd.DataFrame(out, columns=list(names), index=detections.index)
    groups = detections[model_column].to_numpy() if model_column and model_column in detections.columns else np.zeros(len(detections))
    scores = detections["score"].to_numpy(dtype=np.float64)
    for group in pd.unique(groups):  # one pass per model (one, or the k out-of-fold models)
        rows = groups == group
        reference = rows & (scores >= conf_threshold)
        if not reference.any():
            reference = rows
        for j, name in enumerate(names):
            values = detections[name].to_numpy(dtype=np.float64)
            ref = np.sort(values[reference][np.isfinite(values[reference])])
            if len(ref) == 0:
                continue
            mine = values[rows]
            # the mid-rank: ties count half, so equal values sit at 0.5, not at the top
            q = (np.searchsorted(ref, mine, side="left") + np.searchsorted(ref, mine, side="right")) / (2.0 * len(ref))
            out[rows, j] = np.where(np.isnan(mine), np.nan, q)
    return pd.DataFrame(out, columns=list(names), index=detections.index)


def _certainty(quantiles: pd.DataFrame, names: Sequence[str], combine: str) -> np.ndarray:
    """``1 - max`` (or ``1 - mean``) of the quantiles of ``names``, NaNs left out (none: 1)."""
    q = quantiles[list(names)]
    pooled = q.max(axis=1, skipna=True) if combine == "max" else q.mean(axis=1, skipna=True)
    return 1.0 - pooled.fillna(0.0).to_numpy(dtype=np.float64)


#: Label-detection pairs compared at once (memory: about 100 bytes a pair).
PAIRS_PER_CHUNK: int = 2_000_000


def overlapping_pairs(labels: pd.DataFrame, detections: pd.DataFrame, chunk: int = PAIRS_PER_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (label, detection) pair of the same image whose boxes overlap (IoU > 0), as
    ``(label rows, detection rows, IoU)`` (row positions). All pairs of a run of images are
    compared at once, in runs of about ``chunk`` pairs, so memory stays bounded however many
    images there are."""
    lab_image = labels["image_id"].to_numpy(dtype=np.int64)
    det_image = detections["image_id"].to_numpy(dtype=np.int64)
    lab_boxes = labels[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    det_boxes = detections[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    images, lab_count = np.unique(lab_image, return_counts=True)
    det_count = pd.Series(det_image).value_counts().reindex(images, fill_value=0).to_numpy()
    cost = np.cumsum(lab_count * det_count)
    run = cost // max(int(chunk), 1)  # the run of images each image falls in
    out_l, out_d, out_iou = [], [], []
    for r in np.unique(run):  # one run in all unless there are millions of pairs
        mine = images[run == r]
        left = pd.DataFrame({"image_id": lab_image, "l": np.arange(len(lab_image))})[np.isin(lab_image, mine)]
        right = pd.DataFrame({"image_id": det_image, "d": np.arange(len(det_image))})[np.isin(det_image, mine)]
        pairs = left.merge(right, on="image_id")
        li, di = pairs["l"].to_numpy(dtype=np.int64), pairs["d"].to_numpy(dtype=np.int64)
        iou = _iou(lab_boxes[li], det_boxes[di])
        keep = iou > 0
        out_l.append(li[keep])
        out_d.append(di[keep])
        out_iou.append(iou[keep])
    if not out_l:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(out_l), np.concatenate(out_d), np.concatenate(out_iou)


def label_quality(
    detections: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    match_iou: float = MATCH_IOU,
    loose_iou: float = LOOSE_IOU,
    min_loose_iou: float = MIN_LOOSE_IOU,
    cover_iou: float = COVER_IOU,
    cover_score: float = 0.0,
    combine: str = "max",
    kinds: Sequence[str] = KINDS,
    model_column: str | None = "model",
    all_items: bool = False,
) -> pd.DataFrame:
    """The label-quality review queue of the labeled images: one row per flagged item.

    Args:
        detections: the model's detections on the labeled images (see the module's
            docstring: at threshold 0, with the four uncertainties and the class entropy).
        labels: the labeled boxes, :func:`labels_frame`'s columns (``label_index`` optional:
            else the order within each image).
        conf_threshold: a detection is confident at this score (the missing, class and loose
            rules, and the reference of the uncertainties' quantiles).
        match_iou, loose_iou, min_loose_iou, cover_iou, cover_score: the rules' IoUs and the
            least score of a covering detection (module docstring).
        combine: "max" or "mean": how the quantiles of several uncertainties make a certainty.
        kinds: which of :data:`KINDS` to score.
        model_column: the detections' column telling models apart (out-of-fold frames), if present.
        all_items: every item of each kind's population (every confident detection for
            ``missing``, every label for the others) with a ``flagged`` column, instead of
            only the flagged ones; what a benchmark needs for AUROC.

    Returns:
        :data:`RESULT_COLUMNS` and one column per :data:`SCORINGS` (higher: more likely an
        error), sorted by kind (in :data:`KINDS` order), then by the mixture scoring, highest
        first.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind(s) {', '.join(map(str, unknown))}; the kinds are {', '.join(KINDS)}")
    if combine not in COMBINES:
        raise ValueError(f"combine '{combine}' is not one of {', '.join(COMBINES)}")
    _missing(detections, _DETECTION_NEEDED, "detections")
    _missing(labels, _LABEL_NEEDED, "labels")
    pairs = _Pairs(detections, labels, conf_threshold, combine, model_column)
    parts = []
    if "missing" in kinds:
        parts.append(pairs.missing_rows(match_iou))
    if "class" in kinds:
        parts.append(pairs.class_rows(match_iou))
    if "loose" in kinds:
        parts.append(pairs.loose_rows(loose_iou, min_loose_iou))
    if "spurious" in kinds:
        parts.append(pairs.spurious_rows(cover_iou, cover_score))
    columns = [*RESULT_COLUMNS, "flagged", *SCORINGS]
    frame = pd.concat([p[columns] for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=columns)
    frame["kind_order"] = frame["kind"].map({k: i for i, k in enumerate(KINDS)})
    frame = frame.sort_values(["kind_order", "mixture", "image_id", "label_index", "detection"],
                              ascending=[True, False, True, True, True], kind="mergesort", na_position="first")
    frame = frame.drop(columns="kind_order").reset_index(drop=True)
    if not all_items:
        frame = frame[frame["flagged"].astype(bool)].drop(columns="flagged").reset_index(drop=True)
    return frame


class _Pairs:
    """The labels and detections of the labeled images, their overlapping pairs and the
    detections' certainties: what each kind's rule reads."""

    def __init__(self, detections: pd.DataFrame, labels: pd.DataFrame, conf_threshold: float, combine: str, model_column: str | None):
        det = self.det = detections.reset_index(drop=True)
        lab = self.lab = labels.reset_index(drop=True)
        self.conf_threshold = conf_threshold
        self.det_index = _within_image_index(det, "detection")
        lab_index = _within_image_index(lab, "label_index")
        quantiles = uncertainty_quantiles(det, conf_threshold, model_column)
        self.certainty = {kind: _certainty(quantiles, KIND_UNCERTAINTIES[kind], combine) for kind in KINDS}
        self.certainty["entropy"] = _certainty(quantiles, ("cls_entropy",), combine)
        self.det_score = det["score"].to_numpy(dtype=np.float64)
        self.det_label = det["label"].to_numpy(dtype=np.int64)
        lab_label = lab["label"].to_numpy(dtype=np.int64)
        self.li, self.di, self.iou = overlapping_pairs(lab, det)
        self.p_score, self.same_class = self.det_score[self.di], self.det_label[self.di] == lab_label[self.li]
        self.label_rows = {
            "image_id": lab["image_id"].to_numpy(dtype=np.int64), "label_index": _optional(lab_index), "class": lab_label,
            **{c: lab[c].to_numpy(dtype=np.float64) for c in BOX_COLUMNS},
        }

    def best(self, mask: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per label, the pair among ``mask`` ranking first by ``keys`` (each descending):
        ``(labels that have one, their pair positions)``."""
        li, di = self.li, self.di
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64), rows
        # by label, then each key descending, then the first detection
        order = np.lexsort([di[rows]] + [-k[rows] for k in reversed(keys)] + [li[rows]])
        rows = rows[order]
        first = np.r_[True, li[rows][1:] != li[rows][:-1]]
        return li[rows][first], rows[first]

    def missing_rows(self, match_iou: float) -> pd.DataFrame:
        """Every confident detection; flagged where it matches no label of any class."""
        det, det_score, certainty = self.det, self.det_score, self.certainty
        best_iou = np.zeros(len(det))
        np.maximum.at(best_iou, self.di, self.iou)
        conf = np.flatnonzero(det_score >= self.conf_threshold)
        value = det_score[conf] * (1.0 - best_iou[conf])
        return pd.DataFrame({
            "image_id": det["image_id"].to_numpy(dtype=np.int64)[conf], "kind": "missing",
            "label_index": _optional(np.full(len(conf), -1)), "detection": _optional(self.det_index[conf]),
            "class": self.det_label[conf], "other_class": _optional(np.full(len(conf), -1)),
            **{c: det[c].to_numpy(dtype=np.float64)[conf] for c in BOX_COLUMNS},
            "iou": best_iou[conf], "score": det_score[conf], "flagged": best_iou[conf] < match_iou,
            "mixture": value * certainty["missing"][conf], "entropy": value * certainty["entropy"][conf], "plain": value,
        })

    def label_part(self, kind: str, has: np.ndarray, pair: np.ndarray, value: np.ndarray, flagged: np.ndarray,
                   cert: np.ndarray, other: np.ndarray | None = None) -> pd.DataFrame:
        """The rows of a label kind: every label, with the detection of its pair where it has one."""
        di = self.di
        n = len(self.lab)
        detection, other_class = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        iou_col, score_col = np.full(n, np.nan), np.full(n, np.nan)
        v, f, c, ce = np.zeros(n), np.zeros(n, dtype=bool), np.ones(n), np.ones(n)
        if len(has):
            detection[has] = self.det_index[di[pair]]
            iou_col[has], score_col[has] = self.iou[pair], self.p_score[pair]
            v[has], f[has], c[has], ce[has] = value, flagged, cert[di[pair]], self.certainty["entropy"][di[pair]]
            if other is not None:
                other_class[has] = np.where(other, self.det_label[di[pair]], -1)
        return pd.DataFrame({
            **self.label_rows, "kind": kind, "detection": _optional(detection), "other_class": _optional(other_class),
            "iou": iou_col, "score": score_col, "flagged": f, "mixture": v * c, "entropy": v * ce, "plain": v,
        })

    def class_rows(self, match_iou: float) -> pd.DataFrame:
        """Every label; flagged where its confident match with the highest score (the greedy
        matching by descending score) is of another class."""
        p_score, iou = self.p_score, self.iou
        has, pair = self.best((p_score >= self.conf_threshold) & (iou >= match_iou), p_score, iou)
        other = ~self.same_class[pair]
        return self.label_part("class", has, pair, np.where(other, p_score[pair], 0.0), other, self.certainty["class"], other=other)

    def loose_rows(self, loose_iou: float, min_loose_iou: float) -> pd.DataFrame:
        """Every label; flagged where its best same-class confident match overlaps it loosely."""
        p_score, iou = self.p_score, self.iou
        has, pair = self.best((p_score >= self.conf_threshold) & self.same_class & (iou >= min_loose_iou), iou, p_score)
        return self.label_part("loose", has, pair, 1.0 - iou[pair], iou[pair] < loose_iou, self.certainty["loose"])

    def spurious_rows(self, cover_iou: float, cover_score: float) -> pd.DataFrame:
        """Every label; flagged where no detection covers it at any confidence."""
        li, di, p_score, certainty = self.li, self.di, self.p_score, self.certainty
        cover = (self.iou >= cover_iou) & (p_score >= cover_score)
        n = len(self.lab)
        evidence = {name: np.zeros(n) for name in SCORINGS}
        np.maximum.at(evidence["plain"], li[cover], p_score[cover])
        np.maximum.at(evidence["mixture"], li[cover], p_score[cover] * certainty["spurious"][di[cover]])
        np.maximum.at(evidence["entropy"], li[cover], p_score[cover] * certainty["entropy"][di[cover]])
        has, pair = self.best(cover, p_score, self.iou)  # the strongest covering detection, to show
        rows = self.label_part("spurious", has, pair, np.zeros(len(has)), np.zeros(len(has), dtype=bool), certainty["spurious"])
        rows["flagged"] = ~np.isin(np.arange(n), li[cover])
        for name in SCORINGS:
            rows[name] = 1.0 - evidence[name]
        return rows
