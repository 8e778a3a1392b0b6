"""Does the model's uncertainty mean anything? Mixture collapse and uncertainty quality.

Two reports on a labelled split, from the detections that :func:`almdn.engine.inference.predict`
returns (each with its mixture weights and four uncertainties):

* :func:`mixture_collapse`: how many mixture components the model really uses. A mixture has
  collapsed where its largest weight exceeds ``collapse_threshold`` (0.99); its effective
  number of components is ``exp(H(pi))`` (1 when collapsed, K when uniform). A collapsed class
  mixture has a class epistemic uncertainty (Eq. 1) of ~0, so its z-score ranks noise.
* :func:`uncertainty_quality`: whether each uncertainty predicts the model's errors, with the
  definitions below. Detections above the scoring threshold are matched
  greedily by score to same-class ground truth (IoU >= 0.5 is a true positive). Class
  uncertainties, class entropy and ``1 - score`` get the ROC AUC of telling false from true
  positives (false positive = the positive class; 0.5 = no information). Box uncertainties
  get, among true positives, the Spearman correlation with ``1 - IoU`` and the ROC AUC of
  telling IoU < 0.75 from IoU >= 0.75. A reliability table bins detections by score and gives
  each bin's precision.

AUROC is scikit-learn's ``roc_auc_score`` and Spearman is SciPy's ``spearmanr``; a value that
is undefined (one class only, a constant input, too few detections) is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from almdn.engine.metrics import MATCH_IOU, greedy_match
from almdn.registry import DEFAULT_CONF_THRESHOLD

#: The class-side signals scored by their AUROC for false vs true positives.
CLASS_SIGNALS: tuple[str, ...] = ("cls_aleatoric", "cls_epistemic", "cls_entropy", "one_minus_score")
#: The box-side signals scored against the IoU of true positives.
BOX_SIGNALS: tuple[str, ...] = ("loc_aleatoric", "loc_epistemic")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _kept(prediction: Mapping[str, Any], conf_threshold: float) -> np.ndarray:
    return _numpy(prediction["scores"]) >= conf_threshold


def effective_components(weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(H(pi))`` of mixture weights along ``axis``: 1 for one component, K for uniform."""
    w = np.clip(weights, 1e-300, None)
    return np.exp(-(weights * np.log(w)).sum(axis=axis))


def mixture_collapse(
    predictions: Sequence[Mapping[str, Any] | None], conf_threshold: float = DEFAULT_CONF_THRESHOLD, collapse_threshold: float = 0.99
) -> dict[str, Any]:
    """Collapse statistics of the class and box mixtures of the kept detections.

    Returns:
        ``num_detections``, ``num_components`` (K), ``cls_collapsed_fraction`` (largest class
        weight above ``collapse_threshold``), ``cls_effective_components`` (mean exp(H(pi))),
        and the same two for the box mixtures (``box_*``, over every detection and
        coordinate, each coordinate having its own weights). None where nothing was kept.
    """
    cls_w, box_w = [], []
    for p in predictions:
        if p is None or "class_weights" not in p:
            continue
        keep = _kept(p, conf_threshold)
        cls_w.append(_numpy(p["class_weights"])[keep])
        weights = _numpy(p["component_weights"])[keep]  # (N, K, 4): each coordinate its own mixture
        box_w.append(np.moveaxis(weights, -1, -2).reshape(-1, weights.shape[-2]))
    cls = np.concatenate(cls_w) if cls_w else np.zeros((0, 1))
    box = np.concatenate(box_w) if box_w else np.zeros((0, 1))

    def stats(w: np.ndarray) -> tuple[float | None, float | None]:
        if len(w) == 0:
            return None, None
        return float((w.max(-1) > collapse_threshold).mean()), float(effective_components(w).mean())

    cls_collapsed, cls_eff = stats(cls)
    box_collapsed, box_eff = stats(box)
    return {
        "conf_threshold": conf_threshold,
        "collapse_threshold": collapse_threshold,
        "num_detections": int(len(cls)),
        "num_components": int(cls.shape[-1]),
        "cls_collapsed_fraction": cls_collapsed,
        "cls_effective_components": cls_eff,
        "box_collapsed_fraction": box_collapsed,
        "box_effective_components": box_eff,
    }


def auroc(positive: np.ndarray, signal: np.ndarray) -> float | None:
    """ROC AUC of ``signal`` for the bool labels ``positive`` (None if undefined)."""
    from sklearn.metrics import roc_auc_score

    positive, signal = np.asarray(positive, bool), np.asarray(signal, np.float64)
    finite = np.isfinite(signal)
    positive, signal = positive[finite], signal[finite]
    if len(positive) == 0 or positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, signal))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (None if undefined: fewer than 3 pairs or a constant input)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    value = float(spearmanr(x, y).statistic)
    return None if math.isnan(value) else value


def matched_detections(
    predictions: Sequence[Mapping[str, Any] | None],
    targets: Sequence[Mapping[str, Any]],
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    iou_threshold: float = MATCH_IOU,
) -> dict[str, np.ndarray]:
    """Every kept detection's signals with its match: columns ``is_tp``, ``iou``, ``score``,
    the four uncertainties, ``cls_entropy`` and ``one_minus_score``."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("is_tp", "iou", "score", *BOX_SIGNALS, *CLASS_SIGNALS)}
    for p, t in zip(predictions, targets):
        if p is None:
            continue
        keep = _kept(p, conf_threshold)
        scores = _numpy(p["scores"])[keep]
        is_tp, iou = greedy_match(
            _numpy(p["boxes"])[keep], scores, _numpy(p["labels"])[keep].astype(np.int64),
            _numpy(t["boxes"]), _numpy(t["labels"]).astype(np.int64), iou_threshold,
        )
        columns["is_tp"].append(is_tp)
        columns["iou"].append(iou)
        columns["score"].append(scores)
        columns["one_minus_score"].append(1.0 - scores)
        for name in (*BOX_SIGNALS, "cls_aleatoric", "cls_epistemic", "cls_entropy"):
            columns[name].append(_numpy(p[name])[keep])
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in columns.items()}


def reliability(scores: np.ndarray, is_tp: np.ndarray, bins: int = 10, low: float = 0.0) -> dict[str, list]:
    """Score bins from ``low`` to 1 with each bin's precision (None for an empty bin) and count."""
    edges = np.linspace(low, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    tp = np.bincount(which, weights=is_tp.astype(np.float64), minlength=bins)
    precision = [float(tp[i] / count[i]) if count[i] else None for i in range(bins)]
    return {"bin_edges": edges.round(6).tolist(), "precision": precision, "count": count.astype(int).tolist()}


def uncertainty_quality(
    predictions: Sequence[Mapping[str, Any] | None],
    targets: Sequence[Mapping[str, Any]],
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    iou_threshold: float = MATCH_IOU,
    tight_iou: float = 0.75,
    reliability_bins: int = 10,
) -> dict[str, Any]:
    """How well each uncertainty predicts the model's errors on a labelled split.

    Returns:
        ``num_kept``, ``num_tp``; ``auroc_fp``: {signal: AUROC for false vs true positives} for
        :data:`CLASS_SIGNALS`; ``box_spearman``: {signal: Spearman with 1 - IoU among true
        positives} and ``box_auroc_loose``: {signal: AUROC for IoU < ``tight_iou`` among true
        positives} for :data:`BOX_SIGNALS`; ``reliability``: :func:`reliability` over every
        detection above ``conf_threshold``.
    """
    m = matched_detections(predictions, targets, conf_threshold, iou_threshold)
    is_fp = ~m["is_tp"].astype(bool)
    tp = m["is_tp"].astype(bool)
    return {
        "conf_threshold": conf_threshold,
        "num_kept": int(len(is_fp)),
        "num_tp": int(tp.sum()),
        "auroc_fp": {name: auroc(is_fp, m[name]) for name in CLASS_SIGNALS},
        "box_spearman": {name: spearman(m[name][tp], 1.0 - m["iou"][tp]) for name in BOX_SIGNALS},
        "box_auroc_loose": {name: auroc(m["iou"][tp] < tight_iou, m[name][tp]) for name in BOX_SIGNALS},
        "reliability": reliability(m["score"], tp, reliability_bins, low=conf_threshold),
    }


def quality_report(
    predictions: Sequence[Mapping[str, Any] | None],
    targets: Sequence[Mapping[str, Any]],
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    collapse_threshold: float = 0.99,
) -> dict[str, Any]:
    """Both reports, ``{"mixture_collapse": ..., "uncertainty_quality": ...}`` (JSON-ready)."""
    return {
        "mixture_collapse": mixture_collapse(predictions, conf_threshold, collapse_threshold),
        "uncertainty_quality": uncertainty_quality(predictions, targets, conf_threshold),
    }


def headline(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The report's flat numbers for tables: collapse fractions, effective components, AUROCs
    and Spearman correlations, keyed e.g. ``auroc_cls_epistemic``, ``spearman_loc_aleatoric``."""
    collapse, quality = report["mixture_collapse"], report["uncertainty_quality"]
    out: dict[str, float | None] = {
        k: collapse[k] for k in ("cls_collapsed_fraction", "cls_effective_components", "box_collapsed_fraction", "box_effective_components")
    }
    out.update({f"auroc_{k}": v for k, v in quality["auroc_fp"].items()})
    out.update({f"spearman_{k}": v for k, v in quality["box_spearman"].items()})
    out.update({f"auroc_iou75_{k}": v for k, v in quality["box_auroc_loose"].items()})
    return out


def collapse_warning(collapse: Mapping[str, Any], limit: float = 0.5) -> str | None:
    """A plain-language warning when more than ``limit`` of the class mixtures collapsed."""
    fraction = collapse.get("cls_collapsed_fraction")
    if fraction is None or fraction <= limit:
        return None
    return (
        f"The class mixture has collapsed: in {fraction:.0%} of the detections one component holds more than "
        f"{collapse.get('collapse_threshold', 0.99):.0%} of the weight, so the class epistemic uncertainty is close to 0 "
        "and ranks noise. Train with the Type-2 classification loss (cls_loss: type2) to keep the components apart."
    )
