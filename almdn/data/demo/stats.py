"""Summary statistics of a written demo dataset (:func:`describe`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from almdn.data.demo.writing import _existing_record  # the demo package's own record reader



def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"min": round(float(q[0]), 2), "p25": round(float(q[1]), 2), "median": round(float(q[2]), 2),
            "p75": round(float(q[3]), 2), "max": round(float(q[4]), 2), "mean": round(float(values.mean()), 2)}


def describe(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary statistics of a dataset written by :func:`generate_demo_dataset`.

    Per split: image and object counts, objects per class (and the most/least frequent ratio),
    a histogram of objects per image, empty images, near-duplicates, box size statistics
    (``sqrt(w * h)`` in pixels), and counts of low-contrast objects, partly hidden ones
    (visibility < 0.95: occluded or cut by the border) and boxes touching the image border.
    ``kind`` is the dataset kind (from ``demo_config.json``; "digits" when it is missing).
    """
    out_dir = Path(out_dir)
    record = _existing_record(out_dir) or {}
    kind = (record.get("config") or {}).get("kind", "digits")
    summary: dict[str, Any] = {"root": str(out_dir), "kind": kind, "splits": {}}
    for split in ("train", "test"):
        path = out_dir / "annotations" / f"{split}.json"
        if not path.is_file():
            continue
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in coco["categories"]}
        image_sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        anns = coco["annotations"]
        class_counts = {name: 0 for name in names.values()}
        per_image = {image_id: 0 for image_id in image_sizes}
        for ann in anns:
            class_counts[names[ann["category_id"]]] += 1
            per_image[ann["image_id"]] += 1
        hist = np.bincount(np.fromiter(per_image.values(), dtype=np.int64, count=len(per_image)))
        boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        truncated = sum(
            1 for a in anns
            if a["bbox"][0] <= 0 or a["bbox"][1] <= 0
            or a["bbox"][0] + a["bbox"][2] >= image_sizes[a["image_id"]][0]
            or a["bbox"][1] + a["bbox"][3] >= image_sizes[a["image_id"]][1]
        )
        nonzero = [c for c in class_counts.values() if c > 0]
        summary["splits"][split] = {
            "images": len(coco["images"]),
            "objects": len(anns),
            "class_counts": class_counts,
            "imbalance_ratio": round(max(nonzero) / min(nonzero), 2) if nonzero else None,
            "objects_per_image": {str(k): int(v) for k, v in enumerate(hist)},
            "empty_images": int(hist[0]) if hist.size else 0,
            "near_duplicates": sum(1 for im in coco["images"] if "near_duplicate_of" in im),
            "box_size": _stats(np.sqrt(boxes[:, 2] * boxes[:, 3])),
            "low_contrast": sum(1 for a in anns if a.get("low_contrast")),
            "partly_hidden": sum(1 for a in anns if a.get("visibility", 1.0) < 0.95),
            "touching_border": truncated,
        }
    return summary
