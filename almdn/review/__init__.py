"""Finding the labels that are wrong: label-quality scores of labeled images (issue 22).

:mod:`almdn.review.scoring` scores every labeled box and every confident detection of the
labeled images for four kinds of label error (missing box, wrong class, loose box, spurious
label), from the detections of the current model; :mod:`almdn.review.folds` says which
out-of-fold model scores each image, so that no model scores an image it was trained on.
Both are torch-free: they take the detection frames that the inference path produces.
"""

from almdn.review.folds import Fold, fold_of, out_of_fold, out_of_fold_detections
from almdn.review.scoring import KINDS, SCORINGS, label_quality, labels_frame, pairwise_iou

__all__ = [
    "KINDS", "SCORINGS", "Fold", "fold_of", "label_quality", "labels_frame", "out_of_fold", "out_of_fold_detections", "pairwise_iou",
]
