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
Checked on the way in:

- ``data.yaml`` is read with PyYAML's safe loader, and only when it is at most
  :data:`MAX_YAML_BYTES` with at most :data:`MAX_YAML_ALIASES` aliases (counted by the scanner,
  before anything is built), so an alias bomb is refused at once; ``names`` must be a list (or
  ``{index: name}`` mapping) of at most :data:`MAX_CLASSES` short strings (up to
  :data:`MAX_NAME_LENGTH` characters, no control characters, no repeats);
- label files may be UTF-8 with a byte-order mark and CRLF line ends (Windows editors);
  every number must be finite;
- a non-empty label file without an image is refused (its boxes would be dropped unseen).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from almdn.data.coco import DatasetError
from almdn.data.images import IMAGE_SUFFIXES
from almdn.data.records import BoxRecord, ImageRecord, image_size

#: A ``data.yaml`` holds paths and class names: a few kilobytes (LVIS's 1203 names: 30 KB).
MAX_YAML_BYTES = 1024 * 1024
#: Aliases (``*name``) allowed in a ``data.yaml``; nested aliases are how a YAML bomb grows.
MAX_YAML_ALIASES = 100
#: Most classes and longest class name accepted.
MAX_CLASSES = 10_000
MAX_NAME_LENGTH = 200


def _read_text(path: Path, limit: int) -> str:
    try:
        if path.stat().st_size > limit:
            raise DatasetError(f"'{path}' is {path.stat().st_size / 2**20:.1f} MB, too large for a YOLO names file ({limit // 2**20} MB at most); fix it, then try again.")
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read '{path}' ({type(exc).__name__}); fix it, then try again.") from None


def _load_yaml(path: Path):
    """``data.yaml`` through the safe loader, after counting its aliases with the scanner
    (linear in the text, nothing built): an alias bomb is refused before it is loaded."""
    import yaml

    text = _read_text(path, MAX_YAML_BYTES)
    try:
        aliases = 0
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.AliasToken):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise DatasetError(f"'{path}' uses more than {MAX_YAML_ALIASES} YAML aliases, which a names file never needs; write the names out, then try again.")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"Cannot read '{path}' (not valid YAML: {str(exc).splitlines()[0]}); fix it, then try again.") from None


def _checked_names(values: list, path: Path) -> list[str]:
    """The class names as strings: each a short string (or a number) without control characters, no repeats."""
    if len(values) > MAX_CLASSES:
        raise DatasetError(f"'{path}' lists {len(values)} class names, more than {MAX_CLASSES}; fix it, then try again.")
    names = []
    for k, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DatasetError(f"Class {k} of '{path}' is a {type(value).__name__}, not a name; give each class a short text name, then try again.")
        name = str(value).strip()
        if not name or len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
            shown = name[:40].encode("unicode_escape").decode("ascii")
            raise DatasetError(
                f"Class {k} of '{path}' ('{shown}') is not a usable name (empty, over {MAX_NAME_LENGTH} characters, or with control characters); fix it, then try again."
            )
        names.append(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"Class names {repeated[:5]} appear twice in '{path}'; give each class one name, then try again.")
    return names


def read_yolo_names(root: str | os.PathLike[str]) -> list[str]:
    """Class names from ``data.yaml`` / ``dataset.yaml`` (``names``) or ``classes.txt``."""
    root = Path(root)
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            doc = _load_yaml(path)
            names = doc.get("names") if isinstance(doc, dict) else None
            if isinstance(names, dict):
                if len(names) > MAX_CLASSES:
                    return _checked_names(list(names.values()), path)
                try:
                    keys = sorted(int(k) for k in names if not isinstance(k, bool))
                except (TypeError, ValueError):
                    keys = []
                if keys != list(range(len(names))):
                    raise DatasetError(f"The 'names' of '{path}' must be numbered 0..{len(names) - 1}; fix the numbering, then try again.")
                return _checked_names([names[k] if k in names else names[str(k)] for k in keys], path)
            if isinstance(names, list) and names:
                return _checked_names(names, path)
            raise DatasetError(f"'{path}' has no 'names' list of classes; add one, then try again.")
    path = root / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in _read_text(path, MAX_YAML_BYTES).splitlines() if line.strip()]
        if names:
            return _checked_names(names, path)
    raise DatasetError(f"No class names found in '{root}'; add a data.yaml with 'names' or a classes.txt with one name a line.")


def _label_path(image: Path, images_dir: Path, labels_dir: Path) -> Path:
    return (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")


def read_yolo_labels(label_path: str | os.PathLike[str], width: int, height: int, names: list[str]) -> list[BoxRecord]:
    """The boxes of one label file for a ``width`` x ``height`` image (no file: no boxes)."""
    label_path = Path(label_path)
    try:
        text = label_path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first line
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
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise bad("has a number that is not finite (nan or inf)")
        if w <= 0 or h <= 0:
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
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    _check_orphan_labels(images, images_dir, labels_dir)
    records = []
    for image in images:
        width, height = image_size(image)
        boxes = read_yolo_labels(_label_path(image, images_dir, labels_dir), width, height, names)
        records.append(ImageRecord(image, width, height, boxes, source_id=str(image.relative_to(images_dir))))
    return records


def _check_orphan_labels(images: list[Path], images_dir: Path, labels_dir: Path) -> None:
    """Refuse non-empty label files that no image has: their boxes would be dropped unseen."""
    if not labels_dir.is_dir():
        return
    expected = {_label_path(p, images_dir, labels_dir) for p in images}
    orphans = sorted(
        p for p in labels_dir.rglob("*.txt")
        if p not in expected and p.name != "classes.txt" and p.is_file() and p.stat().st_size > 0
    )
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DatasetError(
            f"YOLO label file '{orphans[0]}'{more} has no image in '{images_dir}'; add the image or remove the label file, then try again."
        )
