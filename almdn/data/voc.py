"""Reading Pascal VOC detection datasets (one XML file per image).

Layout of a VOC year folder (``VOC2007``, ``VOC2012``)::

    Annotations/<id>.xml         <size>, one <object> per box
    JPEGImages/<id>.jpg
    ImageSets/Main/<set>.txt     image ids of a set (train, val, trainval, test)

An object's ``<bndbox>`` holds 1-based pixel indices: ``xmin = 1`` is the first pixel column
and ``xmax`` the last column the box covers. In the continuous coordinates of the rest of
almdn (:mod:`almdn.data.records`) that box is ``(xmin - 1, ymin - 1, xmax, ymax)``, the
conversion detectron2 makes; a box of the whole image becomes ``(0, 0, W, H)``.
``<difficult>1</difficult>`` is kept as :attr:`BoxRecord.difficult`.

Every problem surfaces as a :class:`~almdn.data.coco.DatasetError` naming the file.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from almdn.data.coco import DatasetError
from almdn.data.records import BoxRecord, ImageRecord

#: The 20 classes of PASCAL VOC 2007/2012, in the usual order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _error(path: Path, reason: str) -> DatasetError:
    return DatasetError(f"Cannot read VOC annotation '{path}' ({reason}); fix or remove the file, then try again.")


def _number(node: ET.Element, tag: str, path: Path, what: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise _error(path, f"{what} has no <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise _error(path, f"{what} has <{tag}>{child.text.strip()}</{tag}>, not a number") from None


def read_voc_annotation(xml_path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None) -> ImageRecord:
    """One VOC XML file as an :class:`ImageRecord` (image path from ``<filename>`` inside
    ``image_dir``, default ``../JPEGImages`` next to the ``Annotations`` folder)."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise _error(xml_path, "file not found") from None
    except ET.ParseError as exc:
        raise _error(xml_path, f"not well-formed XML: {exc}") from None
    except OSError as exc:
        raise _error(xml_path, exc.strerror or type(exc).__name__) from None
    if root.tag != "annotation":
        raise _error(xml_path, f"the root element is <{root.tag}>, not <annotation>")
    filename = (root.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    image_dir = Path(image_dir) if image_dir is not None else xml_path.parent.parent / "JPEGImages"
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size, "width", xml_path, "<size>"))
        height = int(_number(size, "height", xml_path, "<size>"))
        if width <= 0 or height <= 0:
            width = height = None  # some VOC files say 0 x 0: read the size from the image instead
    boxes = []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _error(xml_path, f"object #{k} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise _error(xml_path, f"object #{k} ('{name}') has no <bndbox>")
        what = f"object #{k} ('{name}')"
        xmin, ymin, xmax, ymax = (_number(bndbox, t, xml_path, what) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, y1, x2, y2 = xmin - 1.0, ymin - 1.0, xmax, ymax
        if x2 <= x1 or y2 <= y1:
            raise _error(xml_path, f"{what} has an empty box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        boxes.append(BoxRecord(name, x1, y1, x2, y2, difficult))
    if width is not None:
        for b in boxes:
            if b.x1 < 0 or b.y1 < 0 or b.x2 > width or b.y2 > height:
                raise _error(xml_path, f"a '{b.class_name}' box ({b.x1 + 1:g}, {b.y1 + 1:g}, {b.x2:g}, {b.y2:g}) lies outside the {width}x{height} image")
    return ImageRecord(image_dir / filename, width, height, boxes, source_id=xml_path.stem)


def read_voc(root: str | os.PathLike[str], image_set: str | None = None) -> list[ImageRecord]:
    """All images of a VOC folder (or of one ``ImageSets/Main/<image_set>.txt``), sorted by id."""
    root = Path(root)
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DatasetError(f"'{root}' is not a Pascal VOC folder (it has no 'Annotations' folder); point at the VOC year folder, e.g. VOCdevkit/VOC2007.")
    if image_set is not None:
        listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
        try:
            ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise DatasetError(f"No image set '{image_set}' in '{root}' ('{listing}' is missing); choose an existing set.") from None
        files = [annotations / f"{i}.xml" for i in ids]
    else:
        files = sorted(annotations.glob("*.xml"))
    return [read_voc_annotation(f, root / "JPEGImages") for f in files]


def voc_class_names(records: list[ImageRecord]) -> list[str]:
    """The classes of ``records``: VOC's 20 in VOC order if they are all among them, otherwise
    every name found, sorted."""
    names = {b.class_name for r in records for b in (r.boxes or [])}
    if names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)
