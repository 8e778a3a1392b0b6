"""Planted label noise on the demo data: does the review queue find the wrong labels? (issue 22)

Per seed:

1. the demo data (:mod:`almdn.data.demo` with the demo project's easier settings,
   ``--num-images`` train images, all of them labeled);
2. a known share of the labeled boxes corrupted (:func:`corrupt`): 5 % deleted (a missing
   box), 5 % given another class (wrong class), 5 % shifted or resized to an IoU of 0.4-0.65
   with the true box (loose), and 2 % spurious boxes added where no object is;
3. trained as a round would (the demo project's round settings: ``ssd_mobilenet_v2_small``,
   128 px, K = 4, Type-2, AdamW, SSD's augmentation without flips, ``--iterations``), through
   :func:`almdn.engine.fit.train_evaluate_save`: one in-sample model on every labeled image,
   and ``--folds`` out-of-fold models (:func:`almdn.review.folds.out_of_fold`), each scoring
   only the images it did not train on;
4. the detections of each source (in-sample, out-of-fold) scored by
   :func:`almdn.review.scoring.label_quality` (mixture, entropy, plain) and, when it is
   installed, by cleanlab's ``object_detection`` box scores (overlooked, swap, badloc;
   AGPL-3.0, a dev-only dependency, imported here only and never by the library);
5. per kind and scoring: AUROC of the planted errors against the clean items of the kind's
   population (every label; every confident detection for missing boxes; the planted errors
   of the other kinds are left out: flagging them is no false alarm), the
   precision at k (k = the number of planted errors of the kind), and the precision and
   recall of the planted errors among the top ``--top-fraction`` (5 %) of the ranked items,
   counted in labeled boxes (a review budget of 5 % of the labels, the same for every kind:
   with 2 % spurious boxes planted, the precision there cannot exceed 0.4).
   Ties are broken at random (seeded), never in favour of the planted errors.

Each seed's record goes to ``--out``/seed-<s>.json (its models and planted labels under
``--out``/models/seed-<s>/, the demo data under ``--out``/data/: both git-ignored);
a rerun skips the seeds that have a record and resumes a seed's trainings from the models
already saved. The table (mean and standard deviation over the seeds in ``--out``) is printed
and written to ``--result``. Goals (issue 22): AUROC >= 0.85 and precision at the top 5 %
>= 0.5 for each kind, on out-of-fold scores.

Usage:
    python bench/label_noise.py                                  # 5 seeds, the demo schedule
    python bench/label_noise.py --seeds 1 --iterations 5 --num-images 60 --out /tmp/ln --result /tmp/ln/label-noise.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from almdn.registry import DEFAULT_CONF_THRESHOLD  # noqa: E402
from almdn.review.folds import DEFAULT_FOLDS, out_of_fold, out_of_fold_detections  # noqa: E402
from almdn.review.scoring import BOX_COLUMNS, KIND_NAMES, KINDS, MATCH_IOU, SCORINGS, label_quality, labels_frame, pairwise_iou  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: The planted shares of the labeled boxes: deleted, class flipped, shifted or resized, and
#: spurious boxes added (as a share of the clean boxes).
RATES = {"missing": 0.05, "class": 0.05, "loose": 0.05, "spurious": 0.02}
#: The IoU of a shifted or resized box with its true box.
SHIFT_IOU = (0.4, 0.65)
SOURCES = ("out_of_fold", "in_sample")
GOAL_AUROC, GOAL_PRECISION = 0.85, 0.5
VERSION = 1  # of the records; a record of another version is not mixed in


# ---------------------------------------------------------------- planting the noise (numpy only)


def _candidate_boxes(boxes: np.ndarray, rng: np.random.Generator, size: tuple[int, int], tries: int) -> np.ndarray:
    """``tries`` shifted or resized versions of each box ``(N, 4)``: ``(N, tries, 4)``, clipped
    to the image (``size`` = (width, height))."""
    n = len(boxes)
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
    mode = rng.integers(0, 3, (n, tries))  # 0: shift, 1: resize, 2: both
    shift = mode != 1
    resize = mode != 0
    dx = np.where(shift, rng.uniform(-0.45, 0.45, (n, tries)), 0.0) * w
    dy = np.where(shift, rng.uniform(-0.45, 0.45, (n, tries)), 0.0) * h
    sw = np.where(resize, np.exp(rng.uniform(-0.7, 0.7, (n, tries))), 1.0)
    sh = np.where(resize, np.exp(rng.uniform(-0.7, 0.7, (n, tries))), 1.0)
    out = np.stack([cx + dx - w * sw / 2, cy + dy - h * sh / 2, cx + dx + w * sw / 2, cy + dy + h * sh / 2], -1)
    out[..., [0, 2]] = out[..., [0, 2]].clip(0, size[0])
    out[..., [1, 3]] = out[..., [1, 3]].clip(0, size[1])
    return out


def corrupt(
    labels: pd.DataFrame, num_classes: int, image_size: tuple[int, int], rng: np.random.Generator,
    rates: Mapping[str, float] = RATES, shift_iou: tuple[float, float] = SHIFT_IOU, tries: int = 64,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plant label errors into a labels frame (:func:`almdn.review.scoring.labels_frame`).

    Disjoint shares of the boxes are deleted (``rates["missing"]``), given another class
    (``"class"``, uniformly among the others) or shifted/resized to an IoU in ``shift_iou``
    with the true box (``"loose"``); ``rates["spurious"]`` x the boxes are added on random
    images, with a size and aspect of a random true box, a random class, and no overlap with
    any true box (deleted ones included). ``image_size`` is (width, height).

    Returns ``(labels, deleted)``: the corrupted labels, renumbered within each image, with a
    ``planted`` column (the kind of the planted error, "" for a clean label) and, for a
    shifted box, its true box (``true_x1`` .. ``true_y2``, NaN for the others), and the
    deleted boxes (``image_id``, ``label``, the box).
    """
    n = len(labels)
    counts = {kind: int(round(rates.get(kind, 0.0) * n)) for kind in KINDS}
    order = rng.permutation(n)
    cut = np.cumsum([0, counts["missing"], counts["class"], counts["loose"]])
    deleted_rows, flipped_rows, shifted_rows = (order[cut[i]:cut[i + 1]] for i in range(3))
    out = labels.copy().reset_index(drop=True)
    out["planted"] = ""
    # wrong class
    classes = out["label"].to_numpy(dtype=np.int64, copy=True)
    if num_classes > 1:
        offset = rng.integers(1, num_classes, len(flipped_rows))
        classes[flipped_rows] = (classes[flipped_rows] - 1 + offset) % num_classes + 1
    out["label"] = classes
    out.loc[flipped_rows, "planted"] = "class"
    # loose: the first candidate with an IoU in the range, else the one nearest its middle
    boxes = out[list(BOX_COLUMNS)].to_numpy(dtype=np.float64, copy=True)
    if len(shifted_rows):
        original = boxes[shifted_rows]
        candidates = _candidate_boxes(original, rng, image_size, tries)
        ious = np.stack([pairwise_iou(original[i:i + 1], candidates[i])[0] for i in range(len(original))])
        inside = (ious >= shift_iou[0]) & (ious < shift_iou[1])
        nearest = np.abs(ious - sum(shift_iou) / 2).argmin(1)
        pick = np.where(inside.any(1), inside.argmax(1), nearest)
        boxes[shifted_rows] = candidates[np.arange(len(shifted_rows)), pick]
        for j, c in enumerate(BOX_COLUMNS):
            out[f"true_{c}"] = np.nan
            out.loc[shifted_rows, f"true_{c}"] = original[:, j]
        out[list(BOX_COLUMNS)] = boxes
        out.loc[shifted_rows, "planted"] = "loose"
    deleted = labels.iloc[np.sort(deleted_rows)][["image_id", "label", *BOX_COLUMNS]].reset_index(drop=True)
    out = out.drop(index=deleted_rows)
    # spurious boxes, each on a random image, away from every true box of it
    truth = {image_id: group[list(BOX_COLUMNS)].to_numpy(dtype=np.float64) for image_id, group in labels.groupby("image_id")}
    image_ids = np.unique(labels["image_id"].to_numpy())
    sizes = np.stack([(labels["x2"] - labels["x1"]).to_numpy(dtype=np.float64), (labels["y2"] - labels["y1"]).to_numpy(dtype=np.float64)], 1)
    added = []
    for _ in range(counts["spurious"]):  # a few dozen boxes: a loop is fine
        image_id = int(rng.choice(image_ids))
        w, h = sizes[rng.integers(len(sizes))]
        x1 = rng.uniform(0, max(image_size[0] - w, 1), tries)
        y1 = rng.uniform(0, max(image_size[1] - h, 1), tries)
        candidates = np.stack([x1, y1, np.minimum(x1 + w, image_size[0]), np.minimum(y1 + h, image_size[1])], 1)
        others = np.concatenate([truth.get(image_id, np.zeros((0, 4)))] + [np.array([a[2:6]]) for a in added if a[0] == image_id])
        overlap = pairwise_iou(candidates, others).max(1) if len(others) else np.zeros(tries)
        best = int(overlap.argmin())
        added.append((image_id, int(rng.integers(1, num_classes + 1)), *candidates[best].tolist()))
    if added:
        extra = pd.DataFrame(added, columns=["image_id", "label", *BOX_COLUMNS])
        extra["planted"] = "spurious"
        out = pd.concat([out, extra], ignore_index=True)
    out = out.sort_values("image_id", kind="mergesort").reset_index(drop=True)
    out["label_index"] = out.groupby("image_id").cumcount()
    for c in BOX_COLUMNS:
        if f"true_{c}" not in out.columns:
            out[f"true_{c}"] = np.nan
    return out[["image_id", "label_index", "label", *BOX_COLUMNS, "planted", *(f"true_{c}" for c in BOX_COLUMNS)]], deleted


# ---------------------------------------------------------------- measuring (numpy only)


def _ranking(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Item positions, highest value first, ties in a random order."""
    shuffled = rng.permutation(len(values))
    return shuffled[np.argsort(-values[shuffled], kind="mergesort")]


def auroc(values: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``values`` for ``positive`` (ties counted half); None without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(values).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def kind_metrics(values: np.ndarray, positive: np.ndarray, target: np.ndarray, num_planted: int,
                 top: int, rng: np.random.Generator) -> dict[str, float | None]:
    """AUROC, precision at k (k = ``num_planted``), and precision and recall among the
    ``top`` highest items (and the precision's ceiling there, ``num_planted / top`` at most
    1). ``target``: which planted error each positive item finds (recall counts each planted
    error once, whatever number of items find it)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
    order = _ranking(values, rng)

    def found(n: int) -> tuple[float | None, float | None]:
        n = min(n, len(values))
        if n == 0:
            return None, None
        chosen = order[:n]
        precision = float(positive[chosen].mean())
        recall = len(set(target[chosen][positive[chosen]].tolist())) / num_planted if num_planted else None
        return precision, recall

    p_at_k, _ = found(num_planted)
    p_top, r_top = found(top)
    return {"auroc": auroc(values, positive), "precision_at_k": p_at_k, "precision_top": p_top, "recall_top": r_top,
            "precision_top_ceiling": min(1.0, num_planted / top) if top else None,
            "items": int(len(values)), "planted": int(num_planted), "top": int(top)}


def _match(items: pd.DataFrame, rows: np.ndarray, boxes: pd.DataFrame, match_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """The item rows (of ``rows``) whose box matches one of ``boxes`` (``image_id``, x1..y2) of
    the same image at ``match_iou``, and the matched box of each (its best)."""
    if not len(rows) or not len(boxes):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = pd.DataFrame({"image_id": items["image_id"].to_numpy(dtype=np.int64)[rows], "m": rows}).merge(
        pd.DataFrame({"image_id": boxes["image_id"].to_numpy(dtype=np.int64), "t": np.arange(len(boxes))}), on="image_id")
    if not len(pairs):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = items[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)[pairs["m"].to_numpy()]
    b = boxes[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)[pairs["t"].to_numpy()]
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    pairs["iou"] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    hits = pairs[pairs["iou"] >= match_iou].sort_values(["iou", "t"], ascending=[False, True], kind="mergesort").drop_duplicates("m")
    return hits["m"].to_numpy(dtype=np.int64), hits["t"].to_numpy(dtype=np.int64)


def truth_of_items(items: pd.DataFrame, labels: pd.DataFrame, deleted: pd.DataFrame, match_iou: float = MATCH_IOU) -> pd.DataFrame:
    """``positive``, ``target`` and ``other`` for each item of :func:`label_quality` (``all_items``).

    A label item is positive when its label was planted as that kind (target: the label); a
    missing-box item when its detection matches a deleted box at ``match_iou`` (target: that
    deleted box). ``other``: the item is a planted error of another kind (a label planted as
    another kind; for missing boxes, the detection of a shifted box's true object, which a
    shift below IoU 0.5 leaves unmatched): neither a find of this kind nor a false alarm, it
    is left out of this kind's measures.
    """
    items = items.copy().reset_index(drop=True)
    planted = labels.set_index(["image_id", "label_index"])["planted"]
    keys = pd.MultiIndex.from_arrays([items["image_id"].astype("int64"), items["label_index"].fillna(-1).astype("int64")])
    of_label = planted.reindex(keys).fillna("").to_numpy()
    kind = items["kind"].to_numpy()
    label_kind = kind != "missing"
    items["positive"] = label_kind & (of_label == kind)
    items["other"] = label_kind & (of_label != "") & (of_label != kind)
    items["target"] = np.arange(len(items))
    missing = np.flatnonzero(~label_kind)
    found, box = _match(items, missing, deleted, match_iou)
    items.loc[found, "positive"] = True
    items.loc[found, "target"] = len(items) + box
    shifted = labels[labels["planted"] == "loose"]
    true_boxes = pd.DataFrame({"image_id": shifted["image_id"].to_numpy(), **{c: shifted[f"true_{c}"].to_numpy() for c in BOX_COLUMNS}})
    near, _ = _match(items, np.setdiff1d(missing, found), true_boxes, match_iou)
    items.loc[near, "other"] = True
    return items


def measure(items: pd.DataFrame, labels: pd.DataFrame, deleted: pd.DataFrame, scorings: Sequence[str],
            top_fraction: float, seed: int) -> dict[str, Any]:
    """Per kind and scoring, :func:`kind_metrics` with the top ``top_fraction`` counted in
    labeled boxes (the same review budget for every kind: 5 % of the labels); per kind, what
    the kind's rule flags."""
    items = truth_of_items(items, labels, deleted)
    top = max(1, math.ceil(top_fraction * len(labels)))
    planted = {"missing": len(deleted), **{k: int((labels["planted"] == k).sum()) for k in ("class", "loose", "spurious")}}
    out: dict[str, Any] = {}
    for kind in KINDS:
        rows = items[(items["kind"] == kind) & ~items["other"]]
        positive, target = rows["positive"].to_numpy(dtype=bool), rows["target"].to_numpy()
        flagged = rows["flagged"].to_numpy(dtype=bool)
        entry: dict[str, Any] = {
            "rule": {"flagged": int(flagged.sum()), "precision": float(positive[flagged].mean()) if flagged.any() else None,
                     "recall": len(set(target[flagged & positive].tolist())) / planted[kind] if planted[kind] else None},
        }
        for j, scoring in enumerate(scorings):
            if scoring in rows.columns:
                entry[scoring] = kind_metrics(rows[scoring].to_numpy(), positive, target, planted[kind], top,
                                              np.random.default_rng([seed, j, KINDS.index(kind)]))
        out[kind] = entry
    return out


# ---------------------------------------------------------------- cleanlab (benchmark only, AGPL-3.0)


def cleanlab_available() -> bool:
    try:
        import cleanlab.object_detection.rank  # noqa: F401
    except ImportError:
        return False
    return True


def cleanlab_inputs(detections: pd.DataFrame, labels: pd.DataFrame, image_ids: Sequence[int], num_classes: int):
    """cleanlab's ``labels`` (per image ``{"bboxes": (L, 4), "labels": (L,)}``, xyxy, classes
    0..C-1) and ``predictions`` (per image one ``(M_k, 5)`` array ``[x1, y1, x2, y2, prob]`` per
    class), and the (image_id, detection) of every predicted box in cleanlab's order (class
    by class). Degenerate boxes, which cleanlab refuses, are left out. Float64 throughout: in
    float32 a score of 0.95 is 0.9499999, below a threshold of 0.95."""
    det = detections[(detections["x2"] > detections["x1"]) & (detections["y2"] > detections["y1"])]
    det = det.sort_values(["image_id", "label", "detection"], kind="mergesort")
    det_groups = dict(tuple(det.groupby("image_id")))
    lab_groups = dict(tuple(labels.sort_values(["image_id", "label_index"]).groupby("image_id")))
    cl_labels, cl_predictions, order = [], [], []
    for image_id in image_ids:  # a loop over images
        lab = lab_groups.get(image_id)
        if lab is None:
            cl_labels.append({"bboxes": np.zeros((0, 4), dtype=np.float64), "labels": np.zeros(0, dtype=np.int64)})
        else:
            cl_labels.append({"bboxes": lab[list(BOX_COLUMNS)].to_numpy(dtype=np.float64), "labels": lab["label"].to_numpy(dtype=np.int64) - 1})
        d = det_groups.get(image_id)
        per_class = np.empty(num_classes, dtype=object)
        for k in range(num_classes):
            rows = d[d["label"] == k + 1] if d is not None else None
            per_class[k] = (rows[[*BOX_COLUMNS, "score"]].to_numpy(dtype=np.float64) if rows is not None and len(rows)
                            else np.zeros((0, 5), dtype=np.float64))
            if rows is not None:
                order.extend(zip([image_id] * len(rows), rows["detection"].tolist()))
        cl_predictions.append(per_class)
    return cl_labels, cl_predictions, order


def cleanlab_error(quality: np.ndarray) -> np.ndarray:
    """An error score in [0, 1] (higher: more likely an error) from cleanlab box qualities
    (higher: better). NaN, cleanlab's "this box was not considered" (an overlooked score of a
    prediction below its probability threshold or overlapping a label; an item cleanlab got no
    box for), is no evidence of an error: quality 1. cleanlab's similarity
    ``alpha IoU + (1 - alpha) exp(-distance)`` of two equal boxes can exceed 1 by a rounding
    error; qualities are clipped to [0, 1], cleanlab's documented range."""
    quality = np.asarray(quality, dtype=np.float64)
    return 1.0 - np.clip(np.nan_to_num(quality, nan=1.0), 0.0, 1.0)


def add_cleanlab(items: pd.DataFrame, detections: pd.DataFrame, labels: pd.DataFrame, num_classes: int,
                 conf_threshold: float = DEFAULT_CONF_THRESHOLD) -> pd.DataFrame:
    """A ``cleanlab`` column: :func:`cleanlab_error` of cleanlab's box quality of the item's
    kind (overlooked for a missing box, swap for a class, badloc for a loose box; cleanlab has
    no spurious-label score, badloc is the nearest, and it rates a label no prediction of its
    class reaches as good, so it cannot find spurious labels).

    cleanlab's probability thresholds (which predictions count for overlooked, swap and badloc;
    by default 0.95, 0.95 and 0.5) are set to ``conf_threshold``, the "confident" of
    :func:`almdn.review.scoring.label_quality`, so that both see the same detections."""
    from cleanlab.object_detection.rank import (
        _get_valid_inputs_for_compute_scores,
        compute_badloc_box_scores,
        compute_overlooked_box_scores,
        compute_swap_box_scores,
    )
    from cleanlab.internal.constants import ALPHA

    image_ids = sorted(set(labels["image_id"].tolist()) | set(detections["image_id"].tolist()))
    cl_labels, cl_predictions, order = cleanlab_inputs(detections, labels, image_ids, num_classes)
    # the label-prediction similarities once, for the three scores (cleanlab's own shortcut)
    auxiliary = _get_valid_inputs_for_compute_scores(ALPHA, cl_labels, cl_predictions)
    # cleanlab's swap and badloc count predictions strictly above their threshold, overlooked
    # at or above it: the next float below conf_threshold makes all three ">= conf_threshold"
    below = float(np.nextafter(conf_threshold, -np.inf))
    overlooked = compute_overlooked_box_scores(auxiliary_inputs=auxiliary, high_probability_threshold=conf_threshold)
    swap = compute_swap_box_scores(auxiliary_inputs=auxiliary, high_probability_threshold=below)
    badloc = compute_badloc_box_scores(auxiliary_inputs=auxiliary, low_probability_threshold=below)

    def flat(scores: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores] or [np.zeros(0)])

    by_detection = pd.Series(cleanlab_error(flat(overlooked)),
                             index=pd.MultiIndex.from_tuples(order, names=["image_id", "detection"]) if order else None, dtype=np.float64)
    sorted_labels = labels.sort_values(["image_id", "label_index"])
    keys = pd.MultiIndex.from_frame(sorted_labels[["image_id", "label_index"]].astype("int64"))
    by_label = {name: pd.Series(cleanlab_error(flat(scores)), index=keys) for name, scores in (("swap", swap), ("badloc", badloc))}
    items = items.copy()
    values = np.full(len(items), np.nan)
    missing = (items["kind"] == "missing").to_numpy()
    if missing.any() and order:
        key = pd.MultiIndex.from_arrays([items.loc[missing, "image_id"].astype("int64"), items.loc[missing, "detection"].astype("int64")])
        values[missing] = by_detection.reindex(key).to_numpy()
    for kind, name in (("class", "swap"), ("loose", "badloc"), ("spurious", "badloc")):
        rows = (items["kind"] == kind).to_numpy()
        if rows.any():
            key = pd.MultiIndex.from_arrays([items.loc[rows, "image_id"].astype("int64"), items.loc[rows, "label_index"].astype("int64")])
            values[rows] = by_label[name].reindex(key).to_numpy()
    items["cleanlab"] = np.nan_to_num(values, nan=0.0)  # an item cleanlab has no box for (a degenerate one): no evidence
    return items


# ---------------------------------------------------------------- training and scoring (torch)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = dict(line.split(":", 1) for line in text.splitlines() if ":" in line).get("Model name", cpu).strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def round_settings(args: argparse.Namespace, seed: int):
    """The demo project's round settings (:class:`almdn.projects.demo_project.DemoProjectConfig`),
    with this run's iterations, seed and device."""
    from almdn.projects.demo_project import DemoProjectConfig

    return DemoProjectConfig().settings.replace(iterations=args.iterations, seed=seed, device=args.device, conf_threshold=args.conf_threshold)


def train_model(train_set, settings, classes: list[str], folder: Path, progress: bool):
    """A round's model (the seed's initial weights, ImageNet backbone) trained on
    ``train_set`` by :func:`almdn.engine.fit.train_evaluate_save`, or the one already saved
    in ``folder``."""
    import torch

    from almdn.engine.checkpoint import checkpoint_model, read_checkpoint
    from almdn.engine.fit import train_evaluate_save
    from almdn.models import build_model
    from almdn.models.pretrained import apply_init, init_build_options

    path = folder / "model.pt"
    if path.exists():
        return checkpoint_model(read_checkpoint(path), path)
    torch.manual_seed(int(settings.seed))
    model = build_model(num_classes=len(classes), class_names=classes, **settings.model_options(),
                        **init_build_options(settings.arch, settings.head, settings.init))
    apply_init(model, settings.init, settings.arch)
    train_evaluate_save(model, train_set, settings.train_config(), folder, test_set=None, device=settings.device, resume=True,
                        progress=progress, conf_threshold=settings.conf_threshold, min_anchor_coverage=None)
    return model


def detections_of(model, data, batch_size: int, device: str) -> pd.DataFrame:
    """Every detection the detector keeps (threshold 0) on ``data``, as the scoring path
    frames them (:func:`almdn.acquisition.scoring.detections_frame`)."""
    from almdn.acquisition.scoring import detections_frame
    from almdn.engine.inference import predict

    predictions = predict(model, data, batch_size=batch_size, device=device)
    return detections_frame(predictions, list(data.image_ids), conf_threshold=0.0)


def run_seed(args: argparse.Namespace, seed: int, classes: list[str], clean, use_cleanlab: bool) -> dict[str, Any]:
    """One seed: plant, train in sample and out of fold, score, measure."""
    from almdn.data.coco import CocoDetectionDataset, write_coco

    t0 = time.perf_counter()
    folder = Path(args.out) / "models" / f"seed-{seed}"  # under .gitignore's bench/runs/*/models/
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image_ids = list(clean.image_ids)
    labels0 = labels_frame(clean.targets(), image_ids)
    h, w = clean.image_sizes[0] or (128, 128)
    labels, deleted = corrupt(labels0, len(classes), (w, h), rng, rates=args.rates)
    # the corrupted labels as a COCO file over the demo images
    images = [{"id": int(i), "file_name": str(Path(p).relative_to(clean.image_root)), "width": int(s[1]), "height": int(s[0])}
              for i, p, s in zip(image_ids, clean.file_paths, clean.image_sizes)]
    annotations = [{"id": k + 1, "image_id": int(r.image_id), "category_id": int(r.label),
                    "bbox": [r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1], "area": (r.x2 - r.x1) * (r.y2 - r.y1), "iscrowd": 0}
                   for k, r in enumerate(labels.itertuples())]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    path = write_coco(folder / "labels.json", images, annotations, categories)
    data = CocoDetectionDataset(path, image_root=clean.image_root, class_names=classes)
    # the file's order of labels within an image is the frame's (label_index)
    settings = round_settings(args, seed)
    print(f"seed {seed}: {len(labels0)} boxes, planted {len(deleted)} missing, {int((labels['planted'] == 'class').sum())} class, "
          f"{int((labels['planted'] == 'loose').sum())} loose, {int((labels['planted'] == 'spurious').sum())} spurious", flush=True)
    frames: dict[str, pd.DataFrame] = {}
    print(f"seed {seed}: training the in-sample model ({settings.iterations} iterations)", flush=True)
    model = train_model(data, settings, classes, folder / "in-sample", args.progress)
    frames["in_sample"] = detections_of(model, data, args.batch_size, args.device)
    folds = out_of_fold(image_ids, args.folds, seed)
    per_fold = []
    for fold in folds:
        print(f"seed {seed}: training out-of-fold model {fold.index + 1}/{len(folds)} on {len(fold.train_ids)} images", flush=True)
        positions = [data.index_of(i) for i in fold.train_ids]
        model = train_model(data.subset(positions), settings, classes, folder / f"fold-{fold.index}", args.progress)
        scored = data.subset([data.index_of(i) for i in fold.score_ids])
        per_fold.append(detections_of(model, scored, args.batch_size, args.device))
    frames["out_of_fold"] = out_of_fold_detections(per_fold, folds)
    results = {}
    scorings = [*SCORINGS, *(["cleanlab"] if use_cleanlab else [])]
    for source, detections in frames.items():
        items = label_quality(detections, labels, conf_threshold=args.conf_threshold, all_items=True)
        if use_cleanlab:
            items = add_cleanlab(items, detections, labels, len(classes), args.conf_threshold)
        results[source] = measure(items, labels, deleted, scorings, args.top_fraction, seed)
    return {
        "version": VERSION, "seed": seed, "settings": settings_key(args), "scorings": scorings,
        "boxes": int(len(labels0)), "images": len(image_ids),
        "planted": {"missing": int(len(deleted)), **{k: int((labels["planted"] == k).sum()) for k in ("class", "loose", "spurious")}},
        "results": results, "seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def settings_key(args: argparse.Namespace) -> dict[str, Any]:
    """What a record must share with the run to be reported with it."""
    return {"iterations": args.iterations, "num_images": args.num_images, "folds": args.folds, "conf_threshold": args.conf_threshold,
            "top_fraction": args.top_fraction, "rates": dict(args.rates)}


# ---------------------------------------------------------------- the report


def _mean_std(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _number(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "–"


def _mean(values: list[float | None]) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("-inf")


def report(records: list[dict[str, Any]], args: argparse.Namespace, note: str) -> str:
    scorings = [s for s in (*SCORINGS, "cleanlab") if all(s in r["scorings"] for r in records)]
    seeds = [r["seed"] for r in records]
    lines = [
        "# Planted label noise: does the review queue find the wrong labels? (issue 22)",
        "",
        f"Machine: {records[-1]['machine']}. Seeds {', '.join(map(str, seeds))} ({len(seeds)}); "
        f"{records[-1]['images']} demo images with {records[-1]['boxes']} boxes per seed; planted "
        + ", ".join(f"{args.rates[k]:.0%} {KIND_NAMES[k]}" for k in KINDS)
        + f". Detector: the demo round's (ssd_mobilenet_v2_small, 128 px, K = 4, Type-2, AdamW), {args.iterations} iterations; "
        f"in sample (one model on every image) and out of fold ({args.folds} folds, each image scored by the model that did not train on it). "
        f"Confident: score >= {args.conf_threshold}. Time per seed: {_mean_std([r['seconds'] for r in records], 0)} s. "
        f"Made by `python bench/label_noise.py` ({' '.join(sys.argv[1:]) or 'defaults'}). {note}".rstrip(),
        "",
        f"AUROC: planted errors against the clean items of the kind (every label; every confident detection for missing boxes; "
        f"planted errors of the other kinds left out). "
        f"P@k: precision among the k highest, k = the planted errors of the kind. P@{args.top_fraction:.0%} and R@{args.top_fraction:.0%}: "
        f"precision and recall of the planted errors among the top N items, N = {args.top_fraction:.0%} of the labeled boxes "
        f"(the same review budget for every kind; the precision there cannot exceed planted / N: 0.4 for 2 % spurious boxes). "
        "Mean ± standard deviation over the seeds.",
        "",
        "Scorings: mixture (the four uncertainties), entropy (class entropy only), plain (score and IoU, in the manner of FiftyOne's mistakenness), "
        + ("cleanlab (its object-detection box scores: overlooked, swap, badloc; badloc stands in for spurious labels, which cleanlab does not score)."
           if "cleanlab" in scorings else "cleanlab: not installed in this environment, not measured."),
    ]
    for source in SOURCES:
        lines += ["", f"## {'Out of fold' if source == 'out_of_fold' else 'In sample'}", "",
                  f"| kind | scoring | AUROC | P@k | P@{args.top_fraction:.0%} | R@{args.top_fraction:.0%} |", "|---|---|---|---|---|---|"]
        for kind in KINDS:
            for scoring in scorings:
                m = [r["results"][source][kind][scoring] for r in records]
                lines.append(f"| {KIND_NAMES[kind]} | {scoring} | {_mean_std([x['auroc'] for x in m])} | {_mean_std([x['precision_at_k'] for x in m])} | "
                             f"{_mean_std([x['precision_top'] for x in m])} | {_mean_std([x['recall_top'] for x in m])} |")
        lines += ["", "What each kind's rule flags (the queue before ranking): flagged items, their precision, and the recall of the planted errors.", "",
                  "| kind | flagged | precision | recall |", "|---|---|---|---|"]
        for kind in KINDS:
            rule = [r["results"][source][kind]["rule"] for r in records]
            lines.append(f"| {KIND_NAMES[kind]} | {_mean_std([x['flagged'] for x in rule], 0)} | {_mean_std([x['precision'] for x in rule])} | "
                         f"{_mean_std([x['recall'] for x in rule])} |")
    lines += ["", f"## Goals (out of fold, mixture scoring): AUROC >= {GOAL_AUROC} and P@{args.top_fraction:.0%} >= {GOAL_PRECISION} per kind", ""]
    for kind in KINDS:
        m = [r["results"]["out_of_fold"][kind]["mixture"] for r in records]
        au_m, pt_m = _mean([x["auroc"] for x in m]), _mean([x["precision_top"] for x in m])
        ceiling = _mean([x["precision_top_ceiling"] for x in m])
        by_scoring = {s: _mean([r["results"]["out_of_fold"][kind][s]["auroc"] for r in records]) for s in scorings}
        best = max(by_scoring, key=by_scoring.get) if np.isfinite(max(by_scoring.values())) else "–"
        met = au_m >= GOAL_AUROC and pt_m >= GOAL_PRECISION
        lines.append(f"- {KIND_NAMES[kind]}: AUROC {_number(au_m)}, P@{args.top_fraction:.0%} {_number(pt_m)} (at most {_number(ceiling)} here): "
                     f"{'met' if met else 'missed'}; best AUROC by {best}.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_rates(text: str) -> dict[str, float]:
    """``missing=0.05,class=0.05,loose=0.05,spurious=0.02`` (any subset; the rest as :data:`RATES`)."""
    rates = dict(RATES)
    for part in filter(None, text.split(",")):
        kind, _, value = part.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind '{kind}' (one of {', '.join(KINDS)})")
        rates[kind] = float(value)
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    from almdn.projects.demo_project import DemoProjectConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    parser.add_argument("--iterations", type=int, default=DemoProjectConfig().settings.iterations, help="training iterations per model (the demo's)")
    parser.add_argument("--num-images", type=int, default=DemoProjectConfig().initial, help="labeled demo images (the demo's initial set)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--conf-threshold", type=float, default=DEFAULT_CONF_THRESHOLD)
    parser.add_argument("--top-fraction", type=float, default=0.05)
    parser.add_argument("--rates", type=parse_rates, default=dict(RATES), help="planted shares, e.g. missing=0.05,class=0.05,loose=0.05,spurious=0.02")
    parser.add_argument("--batch-size", type=int, default=32, help="images per inference batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(REPO / "bench" / "runs" / "label-noise"), help="per-seed records and models (resumable)")
    parser.add_argument("--data", default=None, help="the demo data folder (default: <out>/data)")
    parser.add_argument("--result", default=str(REPO / "bench" / "results" / "label-noise.md"))
    parser.add_argument("--no-cleanlab", action="store_true", help="leave cleanlab out even when it is installed")
    parser.add_argument("--progress", action="store_true", help="training progress bars")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)

    from almdn.data.coco import CocoDetectionDataset
    from almdn.data.demo import generate_demo_dataset

    use_cleanlab = not args.no_cleanlab and cleanlab_available()
    if not args.no_cleanlab and not use_cleanlab:
        print("cleanlab is not installed (a dev-only dependency, AGPL-3.0): its column is skipped.", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(DemoProjectConfig().data, num_train=args.num_images, num_test=0)
    info = generate_demo_dataset(Path(args.data) if args.data else out / "data", config, progress=False)
    clean = CocoDetectionDataset(info["train_annotations"])
    classes = list(clean.classes)
    key = settings_key(args)
    for seed in range(args.seeds):
        record_path = out / f"seed-{seed}.json"
        if record_path.exists():
            record = json.loads(record_path.read_text())
            if record.get("version") == VERSION and record.get("settings") == key:
                print(f"seed {seed}: done before ({record_path})", flush=True)
                continue
            raise SystemExit(f"{record_path} was made with other settings ({record.get('settings')}); use another --out or delete it.")
        record = run_seed(args, seed, classes, clean, use_cleanlab)
        tmp = record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(record_path)
        print(f"seed {seed}: done in {record['seconds']:.0f} s", flush=True)
    records = [json.loads((out / f"seed-{s}.json").read_text()) for s in range(args.seeds)]
    text = report(records, args, args.note)
    result = Path(args.result)
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
