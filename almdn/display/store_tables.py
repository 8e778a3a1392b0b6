"""What the app shows, computed from the project store: the pool table, an image's mixture
and why it ranks where it does, the active-learning history.

The app (``app/``) only draws these; every number on its pages comes from here, so it is
tested without a browser and the same views could serve another front end. Which images to
label next is :mod:`almdn.acquisition.stored`'s; paging and thumbnails are the app's
(``app/presentation.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from almdn.errors import InvalidChoice
from almdn.registry import DEFAULT_AGGREGATION, UNCERTAINTY_NAMES
from almdn.projects.store import Z_NAMES, Store, StoreError

#: The four uncertainties in words (Sec. 3.3: box / class x aleatoric / epistemic).
UNCERTAINTY_LABELS = {
    "loc_aleatoric": "box aleatoric",
    "loc_epistemic": "box epistemic",
    "cls_aleatoric": "class aleatoric",
    "cls_epistemic": "class epistemic",
}
#: Sort keys of the pool: the final score or one of the four uncertainties.
SORT_KEYS = ("score", *UNCERTAINTY_NAMES)


def store_revision(store: Store) -> tuple:
    """A cheap fingerprint of everything the pages read: it changes when labels, splits,
    model versions, scores or tasks change (a cache key for the app)."""
    with store.snapshot() as conn:
        return tuple(
            conn.execute(sql).fetchone()[0]
            for sql in (
                "SELECT MAX(id) FROM annotations",
                "SELECT COUNT(*) FROM images WHERE split = 'pool'",
                "SELECT COUNT(*) FROM images",
                "SELECT MAX(id) FROM model_versions",
                "SELECT MAX(scored_at) FROM scorings",
                "SELECT MAX(updated_at) FROM tasks",
                "SELECT MAX(updated_at) FROM batches",
                "SELECT COUNT(*) FROM batches",
            )
        )


# --------------------------------------------------------------------------- the pool


def unreadable_images(store: Store, model_version: int | None = None) -> list[dict[str, Any]]:
    """Pool files the scoring of ``model_version`` (default: latest scored) could not read."""
    mv = store.latest_model_version(scored=True) if model_version is None else model_version
    if mv is None:
        return []
    from almdn.projects.rounds import unreadable_key

    raw = store.meta(unreadable_key(int(mv)))
    return list(json.loads(raw)) if raw else []


def pool_table(store: Store, model_version: int | None = None) -> pd.DataFrame:
    """The pool ranked by the final score, with the predicted classes and a status per image.

    Columns: rank, image_id, path, file, score, num_detections, the four raw uncertainties and
    their ``z_`` values, task_status, classes (predicted class names, comma-separated),
    status: ``scored``, ``no detection`` (nothing above the confidence threshold),
    ``unreadable`` (listed and skipped), ``not scored`` (added after the scoring).
    Raises :class:`StoreError` when no model version has scored the pool.
    """
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    ranking = store.pool_ranking(mv)
    detections = store.detections(mv, None)
    pool_ids = set(ranking["image_id"].tolist())
    detections = detections[detections["image_id"].isin(pool_ids)]
    classes = detections.groupby("image_id")["class_name"].agg(lambda names: ", ".join(sorted(set(names), key=_natural)))
    names = classes.to_dict()
    ranking["classes"] = [names.get(i, "") for i in ranking["image_id"]]
    scored_ids = set(store.image_scores(mv)["image_id"].tolist())
    bad = {int(u["image_id"]) for u in unreadable_images(store, mv)}
    status = np.where(ranking["image_id"].isin(bad), "unreadable", np.where(ranking["image_id"].isin(scored_ids), "scored", "not scored"))
    status = np.where((status == "scored") & (ranking["num_detections"].fillna(0) == 0), "no detection", status)
    ranking["status"] = status
    for column in ("score", *UNCERTAINTY_NAMES, *Z_NAMES):
        ranking[column] = pd.to_numeric(ranking[column], errors="coerce").astype(np.float64)  # SQL NULL -> NaN
    ranking["file"] = [Path(p).name for p in ranking["path"]]
    ranking["num_detections"] = ranking["num_detections"].fillna(0).astype(int)
    aggregation = str(store.model_version(mv).get("aggregation") or DEFAULT_AGGREGATION) if mv is not None else DEFAULT_AGGREGATION
    ranking[["driver", "driver_detection", "driven_by"]] = score_drivers(ranking, detections, aggregation)
    return ranking


def score_drivers(ranking: pd.DataFrame, detections: pd.DataFrame, aggregation: str = DEFAULT_AGGREGATION) -> pd.DataFrame:
    """Which uncertainty and which detection give each image its final score.

    The final score is a z-score (standard deviations above the pool's mean detection), so a
    score of 16 next to raw uncertainties of 0.01 is no contradiction; this names its source:
    under a "max" aggregation (Tab. 2) the uncertainty whose z-value is the score, under a
    "sum" the largest term; and the detection with that uncertainty's largest value in the
    image (the image's value is the maximum over its detections, Sec. 3.3).

    Returns columns ``driver`` (e.g. "cls_epistemic", None without a score),
    ``driver_detection`` (the detection's index, nullable) and ``driven_by`` (in words).
    """
    from almdn.acquisition.aggregation import score_driver

    driver, _ = score_driver(ranking, aggregation)
    has = pd.notna(driver)
    # per image and uncertainty, the detection with the largest value (first on ties)
    source: dict[str, dict[int, tuple[int, str]]] = {}
    if len(detections):
        for name in set(driver[has]):
            idx = detections.groupby("image_id")[name].idxmax().dropna()
            rows = detections.loc[idx.astype(int), ["image_id", "detection", "class_name"]]
            source[name] = {int(i): (int(d), str(c)) for i, d, c in zip(rows["image_id"], rows["detection"], rows["class_name"])}
    det_ids, words = [], []
    for image_id, name in zip(ranking["image_id"], driver):
        hit = source.get(name, {}).get(int(image_id)) if name is not None else None
        det_ids.append(hit[0] if hit else None)
        words.append(f"{UNCERTAINTY_LABELS[name]} of #{hit[0]} '{hit[1]}'" if hit else "")
    return pd.DataFrame({"driver": driver, "driver_detection": pd.array(det_ids, dtype="Int64"), "driven_by": words}, index=ranking.index)


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def pool_classes(table: pd.DataFrame) -> list[str]:
    """Every predicted class in the pool table, in natural order."""
    names = {n.strip() for cell in table["classes"] for n in cell.split(",") if n.strip()}
    return sorted(names, key=_natural)


def sort_pool(table: pd.DataFrame, by: str = "score", z_scored: bool = False, descending: bool = True) -> pd.DataFrame:
    """The table sorted by the final score or one uncertainty (raw, or z-scored with ``z_scored``);
    images without a value come last; ties keep the ranking's order."""
    if by not in SORT_KEYS:
        raise InvalidChoice(f"Unknown sort key '{by}'; choose one of {', '.join(SORT_KEYS)}.")
    column = f"z_{by}" if z_scored and by != "score" else by
    return table.sort_values(column, ascending=not descending, na_position="last", kind="stable")


def filter_pool(table: pd.DataFrame, classes: Sequence[str] | None = None, min_detections: int | None = None, max_detections: int | None = None, status: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows with any of the predicted ``classes`` and a detection count in the range."""
    keep = np.ones(len(table), dtype=bool)
    if classes:
        wanted = set(classes)
        keep &= np.array([bool(wanted & {n.strip() for n in cell.split(",")}) for cell in table["classes"]], dtype=bool)
    if min_detections is not None:
        keep &= table["num_detections"].to_numpy() >= int(min_detections)
    if max_detections is not None:
        keep &= table["num_detections"].to_numpy() <= int(max_detections)
    if status:
        keep &= table["status"].isin(list(status)).to_numpy()
    return table[keep]


# --------------------------------------------------------------------------- one image


def percentile_of(values: np.ndarray, value: float) -> float:
    """Percent of ``values`` at or below ``value`` (NaN values ignored)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0 or value is None or (isinstance(value, float) and math.isnan(value)):
        return float("nan")
    return float(100.0 * np.count_nonzero(values <= value) / values.size)


@dataclass
class ImageExplanation:
    """Why an image ranks where it does under a model version.

    Attributes:
        rank, pool_size: its place in the pool ranking (1 = most informative).
        score: its final score (NaN without a kept detection).
        uncertainties: one row per uncertainty: raw value, z-score, percentile of the raw value
            among the pool's images, and which detection gave the image its value.
        detections: the kept detections with their four uncertainties and, per uncertainty,
            the percentile among all kept detections of the pool.
        sentence: the reason in words.
    """

    image_id: int
    model_version: int
    rank: int | None
    pool_size: int
    score: float
    aggregation: str
    uncertainties: pd.DataFrame
    detections: pd.DataFrame
    sentence: str


def explain_image(store: Store, image_id: int, model_version: int | None = None, table: pd.DataFrame | None = None, pool_detections: pd.DataFrame | None = None) -> ImageExplanation:
    """The four uncertainty values of an image with their percentiles in the pool, and the
    sentence that says why it ranks where it does (``table``/``pool_detections`` may be given
    when the caller has them cached)."""
    from almdn.acquisition.aggregation import AGGREGATIONS, SHORT_NAMES

    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    if mv is None:
        raise StoreError("No model has scored the pool yet; train one on the Train page.")
    table = pool_table(store, mv) if table is None else table
    if pool_detections is None:
        pool_detections = store.detections(mv)
        pool_detections = pool_detections[pool_detections["image_id"].isin(set(table["image_id"]))]
    info = store.model_version(mv)
    aggregation = str(info.get("aggregation") or DEFAULT_AGGREGATION)
    row = table[table["image_id"] == int(image_id)]
    own = pool_detections[pool_detections["image_id"] == int(image_id)].reset_index(drop=True)
    det_rows = own[["detection", "class_name", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES]].copy()
    for name in UNCERTAINTY_NAMES:
        det_rows[f"pct_{name}"] = [percentile_of(pool_detections[name].to_numpy(), v) for v in own[name]]
    if row.empty:
        split = store.image(int(image_id))["split"]
        sentence = f"Image {image_id} is in the {split} split, not in the pool: it is not ranked."
        return ImageExplanation(int(image_id), mv, None, len(table), float("nan"), aggregation, pd.DataFrame(), det_rows, sentence)
    r = row.iloc[0]
    scored = table[table["status"] == "scored"]
    unc = []
    for name in UNCERTAINTY_NAMES:
        raw, z = r[name], r[f"z_{name}"]
        source = None
        if len(own) and not pd.isna(raw):
            source = int(own.loc[own[name].idxmax(), "detection"])
        unc.append({"uncertainty": name, "label": UNCERTAINTY_LABELS[name], "value": raw, "z": z,
                    "percentile": percentile_of(scored[name].to_numpy(), raw), "detection": source})
    uncertainties = pd.DataFrame(unc)
    rank = int(r["rank"])
    status = r["status"]
    if status == "unreadable":
        sentence = f"Image {image_id} could not be read when the pool was scored, so it was skipped and ranks last; fix or remove the file."
    elif status == "not scored":
        sentence = f"Image {image_id} was added after model version {mv} scored the pool; retrain or rescore to rank it."
    elif status == "no detection":
        sentence = (f"Image {image_id} ranks {rank} of {len(table)} (among the last): model version {mv} finds no object above the "
                    "confidence threshold in it, so it has no uncertainty to rank by.")
    else:
        op, members = AGGREGATIONS.get(aggregation, ("max", tuple(SHORT_NAMES)))
        names = [SHORT_NAMES[m] for m in members]
        top = max(names, key=lambda n: -math.inf if pd.isna(r[f"z_{n}"]) else r[f"z_{n}"])
        top_row = uncertainties.set_index("uncertainty").loc[top]
        det = own[own["detection"] == top_row["detection"]]
        what = f"detection {int(top_row['detection'])} ('{det.iloc[0]['class_name']}', score {det.iloc[0]['score']:.2f})" if len(det) else "one detection"
        combine = "the largest" if op == "max" else "the sum"
        sentence = (
            f"Image {image_id} ranks {rank} of {len(table)} pool images with score {r['score']:.2f}, {combine} of its z-scored "
            f"{', '.join(UNCERTAINTY_LABELS[n] for n in names)} uncertainties ({aggregation}). Its strongest is the "
            f"{UNCERTAINTY_LABELS[top]} uncertainty of {what}: z = {r[f'z_{top}']:.2f}, at or above that of "
            f"{top_row['percentile']:.0f} % of the pool's images."
        )
    return ImageExplanation(int(image_id), mv, rank, len(table), float(r["score"]) if not pd.isna(r["score"]) else float("nan"), aggregation, uncertainties, det_rows, sentence)


def detection_uncertainties(values: dict[str, float], reference: pd.DataFrame) -> pd.DataFrame:
    """One detection's four uncertainties with their z-scores and percentiles among
    ``reference`` (the kept detections of the model version's pool scoring).

    The z-scores use the reference's mean and population standard deviation, as the scoring
    does (:func:`almdn.acquisition.scoring.image_scores`), so the detection that gives an image
    its value has that image's z-value.
    """
    rows = []
    for name in UNCERTAINTY_NAMES:
        value = values.get(name)
        value = float("nan") if value is None else float(value)
        column = reference[name].to_numpy(dtype=np.float64) if name in reference and len(reference) else np.array([])
        column = column[~np.isnan(column)]
        if column.size:
            std = float(column.std()) or 1.0  # a constant uncertainty carries no ranking signal
            z = (value - float(column.mean())) / std
        else:
            z = float("nan")
        rows.append({"uncertainty": name, "label": UNCERTAINTY_LABELS[name], "value": value, "z": z, "percentile": percentile_of(column, value)})
    return pd.DataFrame(rows)


def load_detector(checkpoint: str | os.PathLike[str]):
    """The model of a model version, on the CPU, in eval mode."""
    from almdn.engine.checkpoint import load_model

    return load_model(checkpoint, device="cpu")


def mixture_detections(model, image_path: str | os.PathLike[str], detections: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Each detection of ``model`` (any :class:`~almdn.models.Detector`) on the image with its
    mixture, for drawing.

    Per detection: ``detection`` (index, as in the store), ``box``, ``label``, ``class_name``,
    ``score``, the four uncertainties, and the mixture of
    :func:`almdn.models.postprocess.mixture_records` (per component k: mean box, weight pi,
    one standard deviation of each box edge in pixels; the class weights and probabilities
    and the mixture's class probabilities of Eq. 7). Everything comes from the detections
    the model returns: no model internals are read.
    """
    import torch

    from almdn.data.coco import MAX_DECODE_SIDE, decode_image
    from almdn.data.images import restore_boxes
    from almdn.data.records import image_size
    from almdn.models.postprocess import MIXTURE_KEYS, mixture_records

    # Decoded as scoring decodes it (EXIF orientation applied, reduced to MAX_DECODE_SIDE), so
    # the detections are the stored ones and a 179-megapixel photo is never decoded whole.
    array = decode_image(image_path, MAX_DECODE_SIDE)
    width, height = image_size(image_path)
    image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)
    with torch.no_grad():
        det = restore_boxes(model([image])[0], (width / array.shape[1], height / array.shape[0]))
    wanted = torch.arange(len(det["scores"]))
    if detections is not None:
        wanted = wanted[torch.isin(wanted, torch.as_tensor(sorted({int(d) for d in detections}), dtype=torch.long))]
    names = list(model.class_names)
    labels = det["labels"][wanted].tolist()
    uncertainties = {name: det[name][wanted].tolist() for name in UNCERTAINTY_NAMES}
    mixtures = mixture_records({key: det[key][wanted] for key in MIXTURE_KEYS})
    return [
        {
            "detection": i,
            "box": box,
            "label": label,
            "class_name": names[label - 1] if 0 < label <= len(names) else str(label),
            "score": score,
            **{name: uncertainties[name][j] for name in UNCERTAINTY_NAMES},
            **mixture,
        }
        for j, (i, box, label, score, mixture) in enumerate(
            zip(wanted.tolist(), det["boxes"][wanted].tolist(), labels, det["scores"][wanted].tolist(), mixtures)
        )
    ]


def align_to_stored(drawn: list[dict[str, Any]], stored: pd.DataFrame, tolerance: float = 0.5) -> list[dict[str, Any]]:
    """Give each freshly computed detection the store's index of the same detection.

    The store numbers an image's detections in the model's output order; a fresh run numbers
    them the same way, except where two scores tie to the last bit and floating-point
    differences (another thread count) swap them. So detections are matched by label and box
    (every coordinate within ``tolerance`` px), highest score first. Matched ones get the
    store's ``detection`` and ``stored=True``; the others (e.g. below the scoring threshold)
    get fresh numbers after the store's and ``stored=False``.
    """
    rows = [(int(r.detection), int(r.label), np.array([r.x1, r.y1, r.x2, r.y2], dtype=np.float64)) for r in stored.itertuples(index=False)]
    used: set[int] = set()
    next_free = (max(r[0] for r in rows) + 1) if rows else 0
    out = []
    for d in sorted(drawn, key=lambda d: -d["score"]):
        box = np.asarray(d["box"], dtype=np.float64)
        candidates = [(float(np.abs(b - box).max()), idx) for idx, label, b in rows if label == d["label"] and idx not in used]
        best = min(candidates, default=None)
        d = dict(d)
        if best is not None and best[0] <= tolerance:
            d["detection"], d["stored"] = best[1], True
            used.add(best[1])
        else:
            d["detection"], d["stored"] = next_free, False
            next_free += 1
        out.append(d)
    return sorted(out, key=lambda d: d["detection"])


# --------------------------------------------------------------------------- history


def learning_curve(store: Store) -> pd.DataFrame:
    """One row per model version: round, labeled-set size, mAP@0.5, mAP@0.75, mAP, VOC07."""
    versions = store.model_versions()
    rows = []
    for r in versions.itertuples(index=False):
        m = r.metrics or {}
        rows.append({"model_version": int(r.model_version_id), "name": r.name, "round": r.round_id, "num_labeled": int(r.num_labeled),
                     "map50": m.get("map50"), "map75": m.get("map75"), "map": m.get("map"), "voc07_map50": m.get("voc07_map50"),
                     "created_at": r.created_at})
    return pd.DataFrame(rows, columns=["model_version", "name", "round", "num_labeled", "map50", "map75", "map", "voc07_map50", "created_at"])


#: The per-version uncertainty-quality columns of :func:`model_quality`, with their labels.
QUALITY_COLUMNS = {
    "cls_collapsed_fraction": "class mixture collapsed",
    "cls_effective_components": "class effective K",
    "box_effective_components": "box effective K",
    "auroc_cls_aleatoric": "AUROC cls aleatoric",
    "auroc_cls_epistemic": "AUROC cls epistemic",
    "auroc_cls_entropy": "AUROC class entropy",
    "auroc_one_minus_score": "AUROC 1 - score",
    "spearman_loc_aleatoric": "Spearman box aleatoric",
    "spearman_loc_epistemic": "Spearman box epistemic",
}


def model_quality(store: Store) -> pd.DataFrame:
    """One row per evaluated model version: how collapsed its mixtures are and how well each
    uncertainty predicts its mistakes on the test split (:mod:`almdn.engine.quality`)."""
    from almdn.engine.quality import headline

    rows = []
    for r in store.model_versions().itertuples(index=False):
        m = r.metrics or {}
        if "mixture_collapse" not in m or "uncertainty_quality" not in m:
            continue
        flat = headline(m)
        rows.append({"model_version": int(r.model_version_id), "num_labeled": int(r.num_labeled), **{k: flat.get(k) for k in QUALITY_COLUMNS}})
    return pd.DataFrame(rows, columns=["model_version", "num_labeled", *QUALITY_COLUMNS])


def quality_warning(store: Store, model_version: int | None = None) -> str | None:
    """The plain-language collapse warning of a model version (the latest by default), if any."""
    from almdn.engine.quality import collapse_warning

    mv = store.latest_model_version() if model_version is None else model_version
    if mv is None:
        return None
    collapse = (store.model_version(int(mv))["metrics"] or {}).get("mixture_collapse")
    return collapse_warning(collapse) if collapse else None


def reliability(store: Store, model_version: int | None = None) -> dict[str, Any] | None:
    """The reliability table (score bins, precision, count) of a model version's test-split
    detections, or None when it was not evaluated."""
    mv = store.latest_model_version() if model_version is None else model_version
    if mv is None:
        return None
    quality = (store.model_version(int(mv))["metrics"] or {}).get("uncertainty_quality")
    return quality.get("reliability") if quality else None


def labels_per_class(store: Store) -> pd.DataFrame:
    """Boxes per class in the labeled split (every class listed, zero included)."""
    labels = store.labels(split="labeled")
    counts = labels.groupby("class_name").size() if not labels.empty else pd.Series(dtype=int)
    classes = store.classes()
    return pd.DataFrame({"class_name": classes, "boxes": [int(counts.get(c, 0)) for c in classes]})


def stored_detections(store: Store, model_version: int | None = None) -> pd.DataFrame:
    """The kept detections of the pool images under a model version (uncertainty plots)."""
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    if mv is None:
        return pd.DataFrame(columns=["image_id", "detection", "class_name", "score", *UNCERTAINTY_NAMES])
    detections = store.detections(mv)
    return detections[detections["image_id"].isin(set(store.image_ids("pool")))].reset_index(drop=True)


__all__ = [
    "SORT_KEYS", "UNCERTAINTY_LABELS", "Z_NAMES", "ImageExplanation", "align_to_stored", "detection_uncertainties", "explain_image",
    "filter_pool", "labels_per_class", "learning_curve", "mixture_detections", "pool_classes", "stored_detections", "pool_table",
    "score_drivers", "sort_pool", "store_revision", "unreadable_images",
]
