"""What the Review page shows of the label-error queue (issue 22): why each item was flagged, in
one sentence, the queue folded to one row per image, and what to draw on an image. The queue
itself is computed by :func:`almdn.workflow.review.find_label_errors` and kept in the store."""

from __future__ import annotations

from typing import Any

import pandas as pd

from almdn.review.scoring import BOX_COLUMNS, KIND_NAMES, KINDS

#: The columns of :func:`review_images`.
IMAGE_COLUMNS: tuple[str, ...] = ("rank", "image_id", "file_name", "kinds", "items", "review_score", "reason", "relabeled")


def _number(value: Any, fmt: str = ".2f") -> str:
    return "–" if value is None or pd.isna(value) else format(float(value), fmt)


def item_reason(item: Any) -> str:
    """Why one queue item (a row of the queue) was flagged, in one sentence."""
    get = item.get if isinstance(item, dict) else (lambda k, default=None: getattr(item, k, default))
    kind, name = get("kind"), get("class_name")
    if kind == "missing":
        return f"missing box: the model finds a '{name}' ({_number(get('score'))}) that no label covers."
    if kind == "class":
        return f"wrong class: labelled '{name}', the model sees '{get('other_class_name')}' ({_number(get('score'))})."
    if kind == "loose":
        return f"loose or shifted box: the '{name}' label overlaps the model's confident box by IoU {_number(get('iou'))} only."
    if kind == "spurious":
        return f"spurious label: no detection, at any confidence, covers the '{name}' label."
    return f"{KIND_NAMES.get(kind, kind)}."


def filter_kind(queue: pd.DataFrame, kind: str | None) -> pd.DataFrame:
    """The queue's items of ``kind`` (None: every kind)."""
    if kind is None or queue.empty:
        return queue
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return queue[queue["kind"] == kind]


def review_images(queue: pd.DataFrame, kind: str | None = None) -> pd.DataFrame:
    """One row per flagged image (:data:`IMAGE_COLUMNS`), highest review score first: the kinds
    found there, how many items, the highest item's score and its reason, and whether the
    image was relabeled since the queue was computed (its items may be out of date)."""
    items = filter_kind(queue, kind)
    if items.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in IMAGE_COLUMNS})
    items = items.sort_values(["review_score", "image_id"], ascending=[False, True], kind="mergesort")
    top = items.drop_duplicates("image_id").set_index("image_id")
    grouped = items.groupby("image_id")
    order = {k: i for i, k in enumerate(KINDS)}
    out = pd.DataFrame({
        "image_id": top.index.astype("int64"),
        "file_name": top["file_name"].to_numpy(),
        "kinds": [", ".join(KIND_NAMES[k] for k in sorted(set(grouped.get_group(i)["kind"]), key=order.get)) for i in top.index],
        "items": grouped.size().reindex(top.index).to_numpy(),
        "review_score": top["review_score"].astype(float).to_numpy(),
        "reason": [item_reason(r) for r in top.reset_index().itertuples(index=False)],
        "relabeled": top["relabeled"].astype(bool).to_numpy() if "relabeled" in top.columns else False,
    })
    out.insert(0, "rank", range(1, len(out) + 1))
    return out[list(IMAGE_COLUMNS)]


def review_reasons(queue: pd.DataFrame, image_ids: list[int]) -> dict[int, str]:
    """Per image, the reason of its highest item: what a review task says in its data."""
    table = review_images(queue).set_index("image_id")
    return {int(i): str(table.at[int(i), "reason"]) for i in image_ids if int(i) in table.index}


def image_overlay(queue: pd.DataFrame, labels: pd.DataFrame, detections: pd.DataFrame | None, image_id: int) -> dict[str, list[dict[str, Any]]]:
    """What to draw on one image: ``labels`` (its current labels, each ``flagged`` with the kind
    of an item on it), ``detections`` (the model's, ``flagged`` when it is a missing box's or
    disagrees with a label's class), and ``items`` (the flagged boxes with their reasons)."""
    items = queue[queue["image_id"] == int(image_id)]
    flagged_boxes = {(round(float(r.x1), 1), round(float(r.y1), 1), round(float(r.x2), 1), round(float(r.y2), 1)): r.kind
                     for r in items.itertuples(index=False) if r.kind != "missing"}
    drawn_labels = []
    for r in labels[labels["image_id"] == int(image_id)].itertuples(index=False):
        key = (round(float(r.x1), 1), round(float(r.y1), 1), round(float(r.x2), 1), round(float(r.y2), 1))
        drawn_labels.append({"box": [float(getattr(r, c)) for c in BOX_COLUMNS], "class_name": r.class_name, "flagged": flagged_boxes.get(key)})
    missing = [[float(getattr(r, c)) for c in BOX_COLUMNS] for r in items.itertuples(index=False) if r.kind == "missing"]
    drawn = []
    for r in (detections[detections["image_id"] == int(image_id)] if detections is not None else pd.DataFrame()).itertuples(index=False):
        box = [float(getattr(r, c)) for c in BOX_COLUMNS]
        is_missing = any(all(abs(u - v) < 0.5 for u, v in zip(box, m)) for m in missing)
        drawn.append({"box": box, "class_name": r.class_name, "score": float(r.score), "flagged": "missing" if is_missing else None})
    reasons = [{"box": [float(getattr(r, c)) for c in BOX_COLUMNS], "kind": r.kind, "reason": item_reason(r)} for r in items.itertuples(index=False)]
    return {"labels": drawn_labels, "detections": drawn, "items": reasons}


def queue_caption(queue: pd.DataFrame) -> str:
    """When and how the kept queue was computed, in one sentence."""
    attrs = queue.attrs
    how = (f"{attrs.get('folds')} out-of-fold models (no model scored an image it was trained on)" if attrs.get("folds")
           else f"model version {attrs.get('model_version')} in sample (it was trained on these labels, so it may agree with errors it learnt)")
    stale = int(queue["relabeled"].sum()) if "relabeled" in queue.columns and len(queue) else 0
    text = f"Computed {str(attrs.get('created_at', ''))[:16].replace('T', ' ')} UTC over {attrs.get('num_labeled')} labeled images by {how}, ranked by the {attrs.get('scoring')} scoring."
    if stale:
        text += f" {stale} {'item is' if stale == 1 else 'items are'} on images relabeled since: find label errors again to refresh them."
    return text
