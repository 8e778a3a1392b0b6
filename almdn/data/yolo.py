"""Reading YOLO-format detection datasets (one text file of normalized boxes per image).

Layout (Ultralytics / Darknet)::

    images/[<split>/]<name>.jpg
    labels/[<split>/]<name>.txt    one line per object: class cx cy w h
    data.yaml (names: list or {index: name}) or classes.txt (one name a line)

``cx cy w h`` are the box center and size as fractions of the image width and height; the
class is a 0-based index into the names. An image without a label file, or with an empty one,
has no objects (YOLO's convention for background images). Pixel boxes (see
:mod:`almdn.data.records`) are ``x1 = (cx - w/2) * W`` and so on.

Every problem surfaces as a :class:`~almdn.data.coco.DatasetError` naming the file and line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from almdn.data.coco import DatasetError
from almdn.data.images import IMAGE_SUFFIXES
from almdn.data.records import BoxRecord, ImageRecord, image_size


def read_yolo_names(root: str | os.PathLike[str]) -> list[str]:
    """Class names from ``data.yaml`` / ``dataset.yaml`` (``names``) or ``classes.txt``."""
    import yaml

    root = Path(root)
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise DatasetError(f"Cannot read '{path}' (not valid YAML: {str(exc).splitlines()[0]}); fix it, then try again.") from None
            names = doc.get("names") if isinstance(doc, dict) else None
            if isinstance(names, dict):
                try:
                    keys = sorted(int(k) for k in names)
                except (TypeError, ValueError):
                    keys = []
                if keys != list(range(len(names))):
                    raise DatasetError(f"The 'names' of '{path}' must be numbered 0..{len(names) - 1}; fix the numbering, then try again.")
                return [str(names[k] if k in names else names[str(k)]) for k in keys]
            if isinstance(names, list) and names:
                return [str(n) for n in names]
            raise DatasetError(f"'{path}' has no 'names' list of classes; add one, then try again.")
    path = root / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if names:
            return names
    raise DatasetError(f"No class names found in '{root}'; add a data.yaml with 'names' or a classes.txt with one name a line.")


def _label_path(image: Path, images_dir: Path, labels_dir: Path) -> Path:
    return (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")


def read_yolo_labels(label_path: str | os.PathLike[str], width: int, height: int, names: list[str]) -> list[BoxRecord]:
    """The boxes of one label file for a ``width`` x ``height`` image (no file: no boxes)."""
    label_path = Path(label_path)
    try:
        text = label_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read YOLO label file '{label_path}' ({type(exc).__name__}); fix or remove it, then try again.") from None
    boxes = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue

        def bad(reason: str) -> DatasetError:
            return DatasetError(f"Line {lineno} of YOLO label file '{label_path}' {reason}; fix the line, then try again.")

        if len(fields) != 5:
            raise bad(f"has {len(fields)} fields, not 5 (class cx cy w h)")
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise bad("is not a class index followed by four numbers") from None
        if not 0 <= cls < len(names):
            raise bad(f"has class {cls}, but there are {len(names)} classes (0..{len(names) - 1})")
        if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise bad("has a box with zero or negative size")
        if not (0 <= cx <= 1 and 0 <= cy <= 1 and w <= 1.0 + 1e-6 and h <= 1.0 + 1e-6):
            raise bad("has values outside 0..1 (YOLO boxes are fractions of the image size)")
        x1, x2 = max((cx - w / 2) * width, 0.0), min((cx + w / 2) * width, float(width))
        y1, y2 = max((cy - h / 2) * height, 0.0), min((cy + h / 2) * height, float(height))
        if x2 <= x1 or y2 <= y1:
            raise bad("has a box that lies outside the image")
        boxes.append(BoxRecord(names[cls], x1, y1, x2, y2))
    return boxes


def read_yolo(root: str | os.PathLike[str], split: str | None = None, names: list[str] | None = None) -> list[ImageRecord]:
    """All images under ``root/images[/split]`` with their boxes from ``root/labels[/split]``.

    ``names`` defaults to :func:`read_yolo_names` of ``root``. Sorted by path.
    """
    root = Path(root)
    images_dir = root / "images"
    labels_dir = root / "labels"
    if not images_dir.is_dir():
        raise DatasetError(f"'{root}' is not a YOLO dataset folder (it has no 'images' folder); point at the folder holding images/ and labels/.")
    if split is not None:
        images_dir, labels_dir = images_dir / split, labels_dir / split
        if not images_dir.is_dir():
            raise DatasetError(f"No split '{split}' in '{root}' ('{images_dir}' is missing); choose an existing split.")
    names = names if names is not None else read_yolo_names(root)
    records = []
    for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        width, height = image_size(image)
        boxes = read_yolo_labels(_label_path(image, images_dir, labels_dir), width, height, names)
        records.append(ImageRecord(image, width, height, boxes, source_id=str(image.relative_to(images_dir))))
    return records
