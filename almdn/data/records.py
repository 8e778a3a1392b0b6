"""Format-neutral image and box records: what the VOC, YOLO and COCO readers produce and
what the project store takes in.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the image, continuous coordinates with the origin
at the top-left corner of the top-left pixel (so a box covering the whole W x H image is
``(0, 0, W, H)``), the convention of torchvision and of COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from almdn.data.coco import DatasetError


@dataclass(frozen=True)
class BoxRecord:
    """One labeled object: class name and pixel box; ``difficult`` as Pascal VOC marks it."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False


@dataclass
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: the image file.
        width, height: pixels (None: read from the file's header when needed).
        boxes: the image's objects; ``None`` means unlabeled, ``[]`` means labeled as empty.
        source_id: the image's id or name in the source dataset, for provenance.
    """

    path: Path
    width: int | None = None
    height: int | None = None
    boxes: list[BoxRecord] | None = field(default=None)
    source_id: str | None = None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except FileNotFoundError:
        raise DatasetError(f"Cannot read image '{path}' (file not found); put the file back or leave it out, then try again.") from None
    except UnidentifiedImageError:
        raise DatasetError(f"Cannot read image '{path}' (not an image file); remove or replace it, then try again.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read image '{path}' ({exc.strerror or type(exc).__name__}); remove or replace it, then try again.") from None
