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

Checked, each refused with one :class:`~almdn.data.coco.DatasetError` sentence naming the file:

- the XML is parsed with :mod:`defusedxml` and no DTD is allowed, so external entities, the
  "billion laughs" and quadratic blow-up (entities expanded over and over) never expand, and
  a file above :data:`MAX_XML_BYTES` is not read at all;
- every number is finite (``nan``, ``inf``, ``1e309`` are refused);
- every box lies inside the image, checked against ``<size>`` or, when ``<size>`` is missing or
  says 0 x 0, against the size of the image file (its header, EXIF orientation applied). VOC
  boxes outside their image are refused, not clipped: a VOC box is drawn in whole pixels of
  the image, so one past the border is a mistake in the file (the COCO reader, whose
  boxes are continuous, clips a box spilling over the border instead);
- ``<filename>`` is a path inside the image folder: absolute paths and ``..`` are refused.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath, PureWindowsPath

import defusedxml
import defusedxml.ElementTree as DefusedET

from almdn.data.coco import DatasetError
from almdn.data.records import BoxRecord, ImageRecord, image_size

#: A VOC annotation is a few kilobytes; a larger file is refused before it is parsed.
MAX_XML_BYTES = 4 * 1024 * 1024

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
    text = child.text.strip()
    try:
        value = float(text)
    except ValueError:
        raise _error(path, f"{what} has <{tag}>{text[:40]}</{tag}>, not a number") from None
    if not math.isfinite(value):
        raise _error(path, f"{what} has <{tag}>{text[:40]}</{tag}>, not a finite number")
    return value


def _image_name(text: str | None, xml_path: Path) -> str:
    """``<filename>`` as a relative path inside the image folder (absolute paths and ``..`` refused)."""
    name = (text or "").strip() or f"{xml_path.stem}.jpg"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts or "\x00" in name:
        raise _error(xml_path, f"<filename>{name[:80]}</filename> points outside the image folder; give the image's file name only")
    return name


def read_voc_annotation(xml_path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None) -> ImageRecord:
    """One VOC XML file as an :class:`ImageRecord` (image path from ``<filename>`` inside
    ``image_dir``, default ``../JPEGImages`` next to the ``Annotations`` folder)."""
    xml_path = Path(xml_path)
    try:
        if xml_path.stat().st_size > MAX_XML_BYTES:
            raise _error(xml_path, f"{xml_path.stat().st_size / 2**20:.0f} MB, larger than any VOC annotation ({MAX_XML_BYTES // 2**20} MB at most)")
        root = DefusedET.parse(xml_path, forbid_dtd=True).getroot()
    except FileNotFoundError:
        raise _error(xml_path, "file not found") from None
    except ET.ParseError as exc:
        raise _error(xml_path, f"not well-formed XML: {exc}") from None
    except defusedxml.DefusedXmlException:
        raise _error(xml_path, "it declares a DTD or entities, which VOC annotations never need and which are not expanded") from None
    except OSError as exc:
        raise _error(xml_path, exc.strerror or type(exc).__name__) from None
    if root.tag != "annotation":
        raise _error(xml_path, f"the root element is <{root.tag}>, not <annotation>")
    filename = _image_name(root.findtext("filename"), xml_path)
    image_dir = Path(image_dir) if image_dir is not None else xml_path.parent.parent / "JPEGImages"
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        w, h = _number(size, "width", xml_path, "<size>"), _number(size, "height", xml_path, "<size>")
        if w != int(w) or h != int(h) or w < 0 or h < 0:
            raise _error(xml_path, f"<size> says {w:g} x {h:g}, not a size in whole pixels")
        width, height = int(w), int(h)
        if width == 0 or height == 0:
            width = height = None  # some VOC files say 0 x 0: the image's own size is used instead
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
    image_path = image_dir / filename
    if width is None and boxes:
        width, height = image_size(image_path)  # no <size> (or 0 x 0): the boxes are checked against the image itself
        where = f"image '{image_path}'"
    else:
        where = "image"
    if width is not None:
        for b in boxes:
            if b.x1 < 0 or b.y1 < 0 or b.x2 > width or b.y2 > height:
                raise _error(xml_path, f"a '{b.class_name}' box ({b.x1 + 1:g}, {b.y1 + 1:g}, {b.x2:g}, {b.y2:g}) lies outside the {width}x{height} {where}")
    return ImageRecord(image_path, width, height, boxes, source_id=xml_path.stem)


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
