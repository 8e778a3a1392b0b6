"""Mixture collapse and uncertainty quality on hand-built detections."""

import math

import numpy as np
import pytest
import torch

from almdn.engine.quality import (
    auroc,
    collapse_warning,
    effective_components,
    headline,
    mixture_collapse,
    quality_report,
    reliability,
    spearman,
    uncertainty_quality,
)


def _prediction(class_weights, component_weights, scores=None):
    n = len(class_weights)
    return {
        "scores": torch.tensor(scores if scores is not None else [0.9] * n),
        "class_weights": torch.tensor(class_weights, dtype=torch.float32),
        "component_weights": torch.tensor(component_weights, dtype=torch.float32),
    }


def test_collapse_statistics_of_a_planted_collapsed_and_a_planted_spread_mixture():
    k = 4
    collapsed = [[0.997, 0.001, 0.001, 0.001]] * 6
    spread = [[0.25] * k] * 6
    box_spread = np.full((6, k, 4), 0.25).tolist()
    box_collapsed = np.tile(np.array([1.0, 0, 0, 0])[:, None], (6, 1, 4)).tolist()

    c = mixture_collapse([_prediction(collapsed, box_collapsed)])
    assert c["num_detections"] == 6 and c["num_components"] == 4
    assert c["cls_collapsed_fraction"] == 1.0 and c["box_collapsed_fraction"] == 1.0
    assert c["cls_effective_components"] == pytest.approx(math.exp(-(0.997 * math.log(0.997) + 3 * 0.001 * math.log(0.001))), rel=1e-4)
    assert c["box_effective_components"] == pytest.approx(1.0)
    assert "collapsed" in collapse_warning(c)

    s = mixture_collapse([_prediction(spread, box_spread)])
    assert s["cls_collapsed_fraction"] == 0.0 and s["box_collapsed_fraction"] == 0.0
    assert s["cls_effective_components"] == pytest.approx(4.0) and s["box_effective_components"] == pytest.approx(4.0)
    assert collapse_warning(s) is None

    half = mixture_collapse([_prediction(collapsed[:3] + spread[:3], box_spread)])
    assert half["cls_collapsed_fraction"] == 0.5


def test_only_detections_above_the_threshold_count_and_nothing_kept_is_none():
    p = _prediction([[1.0, 0.0]] * 2 + [[0.5, 0.5]] * 2, np.full((4, 2, 4), 0.5).tolist(), scores=[0.9, 0.8, 0.2, 0.1])
    assert mixture_collapse([p], conf_threshold=0.5)["cls_collapsed_fraction"] == 1.0
    empty = mixture_collapse([p, None], conf_threshold=0.95)
    assert empty["num_detections"] == 0 and empty["cls_collapsed_fraction"] is None


def test_effective_components_is_one_for_one_component_and_k_for_uniform():
    assert effective_components(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_components(np.full(5, 0.2)) == pytest.approx(5.0)


def test_auroc_and_spearman_on_hand_built_cases():
    assert auroc(np.array([0, 0, 1, 1], bool), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(np.array([0, 0, 1, 1], bool), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(np.array([0, 1, 0, 1], bool), np.array([0.1, 0.2, 0.3, 0.4])) == 0.75
    assert auroc(np.array([1, 1], bool), np.array([0.1, 0.2])) is None  # one class only
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 2.0]), np.array([1, 2.0])) is None
    assert spearman(np.array([1, 1, 1.0]), np.array([1, 2, 3.0])) is None


def _det(boxes, scores, labels, **signals):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}
    out.update({k: torch.tensor(v) for k, v in signals.items()})
    return out


def test_uncertainty_quality_on_planted_true_and_false_positives():
    gt = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60.0]]), "labels": torch.tensor([1, 1, 2])}
    pred = _det(
        [[0, 0, 10, 10], [20, 20, 38, 40], [50, 50, 58, 60], [70, 70, 80, 80], [0, 0, 10, 10]],
        [0.95, 0.9, 0.85, 0.8, 0.7],
        [1, 1, 2, 1, 2],  # the last two are false positives: no box there, and the wrong class
        cls_aleatoric=[0.1, 0.2, 0.3, 0.8, 0.9],  # perfectly separates FP from TP
        cls_epistemic=[0.9, 0.8, 0.7, 0.1, 0.2],  # perfectly backwards
        cls_entropy=[0.5, 0.5, 0.5, 0.5, 0.5],  # no information
        loc_aleatoric=[0.1, 0.2, 0.3, 0.0, 0.0],  # rises as the IoU falls (1, 0.9, 0.8)
        loc_epistemic=[0.3, 0.2, 0.1, 0.0, 0.0],
    )
    q = uncertainty_quality([pred], [gt])
    assert q["num_kept"] == 5 and q["num_tp"] == 3
    assert q["auroc_fp"]["cls_aleatoric"] == 1.0
    assert q["auroc_fp"]["cls_epistemic"] == 0.0
    assert q["auroc_fp"]["cls_entropy"] == 0.5
    assert q["auroc_fp"]["one_minus_score"] == 1.0  # the false positives score lowest
    assert q["box_spearman"]["loc_aleatoric"] == pytest.approx(1.0)
    assert q["box_spearman"]["loc_epistemic"] == pytest.approx(-1.0)
    # IoU >= 0.75 for all three true positives: no loose box, so that AUROC is undefined
    assert q["box_auroc_loose"]["loc_aleatoric"] is None
    rel = q["reliability"]
    assert sum(rel["count"]) == 5 and rel["bin_edges"][0] == 0.5


def test_reliability_bins_precision_by_score():
    r = reliability(np.array([0.55, 0.56, 0.95, 0.96]), np.array([0, 1, 1, 1], bool), bins=5, low=0.5)
    assert r["count"] == [2, 0, 0, 0, 2]
    assert r["precision"] == [0.5, None, None, None, 1.0]


def test_report_headline_flattens_both_reports():
    gt = {"boxes": torch.tensor([[0, 0, 10, 10.0]]), "labels": torch.tensor([1])}
    pred = _det([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.6], [1, 1], cls_aleatoric=[0.1, 0.5], cls_epistemic=[0.1, 0.5],
                cls_entropy=[0.1, 0.5], loc_aleatoric=[0.1, 0.1], loc_epistemic=[0.1, 0.1])
    pred["class_weights"] = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    pred["component_weights"] = torch.full((2, 2, 4), 0.5)
    flat = headline(quality_report([pred], [gt]))
    assert flat["cls_collapsed_fraction"] == 0.5
    assert flat["auroc_cls_epistemic"] == 1.0
    assert flat["spearman_loc_aleatoric"] is None  # one true positive only
