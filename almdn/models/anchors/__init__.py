"""Anchor coverage of a dataset's boxes, the small-object warning, and anchor fitting.

A detector can only learn a box that some anchor (SSD's default box, Faster R-CNN's RPN
anchor) overlaps well: SSD matches an anchor to a ground-truth box at IoU >= 0.5 (plus each
box's best anchor). When the dataset's objects are much smaller than the smallest anchor
(300 px aerial photos of trees in a 320 px MobileNetV2 SSD, whose smallest anchor side is about
37 px), most boxes have no such anchor and training quietly learns little about them.

* :func:`anchor_coverage` measures it: every training box is resized the way the model's
  transform resizes its image (SSD: a fixed square resize; Faster R-CNN: shorter side to
  ``min_size``, capped by ``max_size``, padded to a multiple of 32), compared with every anchor
  the model generates at that input size (one ``box_iou`` per chunk of boxes, no loop over
  anchors), and summarised as the fraction of boxes whose best anchor IoU reaches a threshold
  and the median best IoU.
* :func:`check_anchor_coverage` warns (:class:`AnchorCoverageWarning`, with the numbers and
  the options to use) below a coverage threshold; training calls it when a run starts.
  :func:`coverage_warning` returns that sentence instead, and never raises, for callers that
  show it their own way (a project's import and rounds: :mod:`almdn.workflow`, the app).
* :func:`fit_anchors` fits an SSD's anchor scales (one per feature level, plus the last
  level's upper scale, kept increasing) and aspect ratios (as many per level as the model has,
  so the head keeps its shape) to the boxes, as YOLO's autoanchor does: a data-driven start
  (quantiles of the boxes' sizes and elongations) refined by a seeded mutation search whose
  fitness is the coverage itself, measured with the real anchor grid. The result is kept only
  if it covers more boxes than the model's own anchors.

The options reach :func:`almdn.models.build_model` as ``anchor_scales`` (fractions of the input
side) and ``anchor_ratios`` (per level, or one list for every level) and are stored in the
model's config, so a checkpoint rebuilds the same anchors.

The code: :mod:`~almdn.models.anchors.generation` (the options and the anchor generators they
give), :mod:`~almdn.models.anchors.coverage` (the boxes, the model's anchors, the coverage and
its warning) and :mod:`~almdn.models.anchors.fitting` (:func:`fit_anchors`,
:func:`apply_fitted_anchors`); every name is importable from here.
"""

from __future__ import annotations

from almdn.models.anchors.coverage import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MIN_COVERAGE,
    MAX_BOXES,
    MAX_IMAGES,
    AnchorCoverage,
    AnchorCoverageWarning,
    BoxSet,
    anchor_coverage,
    best_anchor_iou,
    check_anchor_coverage,
    coverage_message,
    coverage_warning,
    feature_shapes,
    grid_anchors,
    is_faster_rcnn,
    is_ssd,
    model_input,
    not_checked,
    training_boxes,
)
from almdn.models.anchors.fitting import (
    AnchorFit,
    apply_fitted_anchors,
    fit_anchors,
)
from almdn.models.anchors.generation import (
    frcnn_anchor_options,
    normalized_ratios,
    parse_anchor_ratios,
    parse_anchor_scales,
    ssd_anchor_generator,
)

__all__ = [
    "AnchorCoverage",
    "AnchorCoverageWarning",
    "AnchorFit",
    "BoxSet",
    "DEFAULT_IOU_THRESHOLD",
    "DEFAULT_MIN_COVERAGE",
    "MAX_BOXES",
    "MAX_IMAGES",
    "anchor_coverage",
    "apply_fitted_anchors",
    "best_anchor_iou",
    "check_anchor_coverage",
    "coverage_message",
    "coverage_warning",
    "feature_shapes",
    "fit_anchors",
    "frcnn_anchor_options",
    "grid_anchors",
    "is_faster_rcnn",
    "is_ssd",
    "model_input",
    "normalized_ratios",
    "not_checked",
    "parse_anchor_ratios",
    "parse_anchor_scales",
    "ssd_anchor_generator",
    "training_boxes",
]
