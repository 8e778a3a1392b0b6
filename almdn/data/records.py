"""Format-neutral image and box records: what the VOC, YOLO and COCO readers produce and
what the project store takes in.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the image, continuous coordinates with the origin
at the top-left corner of the top-left pixel (so a box covering the whole W x H image is
``(0, 0, W, H)``), the convention of torchvision and of COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from almdn.errors import DatasetError

#: Default limit on an image's pixel count (Pillow's own "decompression bomb" threshold):
#: a 60000 x 60000 header would otherwise ask for 10 GB. ``$ALMDN_MAX_IMAGE_PIXELS`` overrides.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970


def max_image_pixels() -> int:
    """The pixel limit: ``$ALMDN_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    raw = os.environ.get("ALMDN_MAX_IMAGE_PIXELS")
    try:
        return int(float(raw)) if raw else DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        return DEFAULT_MAX_IMAGE_PIXELS


def open_image(path: str | Path) -> Image.Image:
    """Open an image (header only) and check it against the pixel limit; one
    :class:`DatasetError` sentence for any problem. The caller closes it."""
    path = Path(path)
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            # Pillow's own limit is replaced by ours (checked next, with a sentence).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except FileNotFoundError:
        raise DatasetError(f"Cannot read image '{path}' (file not found); put the file back or leave it out, then try again.") from None
    except UnidentifiedImageError:
        raise DatasetError(f"Cannot read image '{path}' (not an image file); remove or replace it, then try again.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DatasetError(f"Cannot read image '{path}' ({reason}); remove or replace it, then try again.") from None
    if im.width * im.height > limit:
        im.close()
        raise DatasetError(
            f"Image '{path}' is {im.width}x{im.height} pixels ({_pixels(im.width * im.height)}), above the limit of "
            f"{_pixels(limit)}; shrink it, or raise the limit with ALMDN_MAX_IMAGE_PIXELS, then try again."
        )
    return im


def _pixels(n: int) -> str:
    return f"{n / 1e6:.0f} megapixels" if n >= 10**6 else f"{n} pixels"


def check_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image that decodes completely (a truncated or damaged file
    raises :class:`DatasetError`). JPEGs are decoded at 1/8 scale, which reads every byte of
    the file at a fraction of the cost."""
    path = Path(path)
    im = open_image(path)
    try:
        size = (int(im.width), int(im.height))
        if im.format == "JPEG":
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise DatasetError(f"Cannot read image '{path}' ({reason}: the file is truncated or damaged); remove or replace it, then try again.") from None
    finally:
        im.close()
    return size


@dataclass(frozen=True)
class BoxRecord:
    """One labeled object: class name and pixel box; ``difficult`` as Pascal VOC marks it;
    ``region_id``: the Label Studio region it was drawn as (pulled annotations)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False
    region_id: str | None = None


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
    with open_image(path) as im:
        return int(im.width), int(im.height)
