"""Format-neutral image and box records: what the VOC, YOLO and COCO readers produce and
what the project store takes in.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the image, continuous coordinates with the origin
at the top-left corner of the top-left pixel (so a box covering the whole W x H image is
``(0, 0, W, H)``), the convention of torchvision and of COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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


def _identify(path: Path) -> Image.Image:
    """``Image.open`` without Pillow's process-wide ``MAX_IMAGE_PIXELS`` check (the caller
    checks the header size against its own limit): the same plugin search as
    ``Image.open``, so nothing global is changed and threads never race on the limit."""
    with open(path, "rb") as fp:
        prefix = fp.read(16)
    Image.preinit()
    tried: set[str] = set()
    for loader in (None, Image.init):
        if loader is not None:
            loader()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            result = not accept or accept(prefix)
            if not result or isinstance(result, str):
                continue
            try:
                return factory(os.fspath(path))  # a path: the image owns (and closes) its file
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def open_image(path: str | Path, limit: int | None = None) -> Image.Image:
    """Open an image (header only) and check it against the pixel limit (``limit``, default
    :func:`max_image_pixels`); one :class:`DatasetError` sentence for any problem. The caller
    closes it. The image is in the file's stored orientation: :func:`oriented_size` gives the
    size a browser shows, :func:`decode` the pixels."""
    path = Path(path)
    limit = max_image_pixels() if limit is None else int(limit)
    try:
        im = _identify(path)
    except FileNotFoundError:
        raise DatasetError(f"Cannot read image '{path}' (file not found); put the file back or leave it out, then try again.") from None
    except UnidentifiedImageError:
        raise DatasetError(f"Cannot read image '{path}' (not an image file); remove or replace it, then try again.") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
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


#: EXIF orientations (tag 0x0112) that swap width and height: the photo is shown turned by 90 degrees.
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened image, 1..8 (1 when it has none or a bad one)."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: shown as stored, like browsers do
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as browsers (and Label Studio) show it: its EXIF
    orientation applied."""
    width, height = int(im.width), int(im.height)
    return (height, width) if exif_orientation(im) in _SWAPPING_ORIENTATIONS else (width, height)


def check_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image that decodes completely (a truncated or damaged file
    raises :class:`DatasetError`), EXIF orientation applied. JPEGs are decoded at 1/8 scale,
    which reads every byte of the file at a fraction of the cost."""
    path = Path(path)
    im = open_image(path)
    try:
        size = oriented_size(im)
        if im.format == "JPEG":
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise DatasetError(f"Cannot read image '{path}' ({reason}: the file is truncated or damaged); remove or replace it, then try again.") from None
    finally:
        im.close()
    return size


def reduced_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size an image of ``width x height`` is decoded at: unchanged up to ``max_side``,
    else scaled so that its longer side is ``max_side``."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    f = max_side / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


def decode(path: str | Path, max_side: int | None = None, limit: int | None = None, array: bool = False) -> Image.Image | np.ndarray:
    """The one way almdn decodes an image: an RGB :class:`PIL.Image.Image` in the orientation
    browsers show (EXIF orientation applied with :func:`PIL.ImageOps.exif_transpose`), at
    :func:`reduced_size` of its :func:`oriented_size` (JPEGs decoded reduced inside the DCT with
    ``draft``), checked against the pixel limit from the header before any pixel is decoded.

    Grey, palette, RGBA (alpha dropped) and 16-bit images (scaled by the file's own range) are
    converted. With ``array`` the result is a uint8 array (H, W, 3) instead. Any failure is one
    :class:`DatasetError` sentence naming the file. Imports,
    training, scoring, thumbnails and the app all decode through here, so the store's
    width/height, the boxes and what Label Studio shows are in the same frame.
    """
    from PIL import ImageOps

    path = Path(path)
    im = open_image(path, limit)
    try:
        orientation = exif_orientation(im)
        width, height = oriented_size(im)
        target = reduced_size(width, height, max_side)
        swap = orientation in _SWAPPING_ORIENTATIONS
        if target != (width, height) and im.format == "JPEG":
            im.draft("RGB", (target[1], target[0]) if swap else target)  # the smallest DCT scale still >= target
        im.load()
        out: Image.Image = ImageOps.exif_transpose(im) if orientation != 1 else im  # once, here, for everyone
        if out.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(out, dtype=np.float64)  # 16-bit / float grey: scale to 8 bits by the file's own range
            top = arr.max() if arr.size else 0.0
            arr = np.zeros_like(arr) if top <= 0 else arr * (255.0 / top)
            out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
        if out.mode != "RGB":
            out = out.convert("RGB")
        if out.size != target:
            factor = min(out.width // target[0], out.height // target[1])
            if factor > 1:
                out = out.reduce(factor)  # cheap integer box filter before the exact resize
            out = out.resize(target, Image.Resampling.BILINEAR)
        if array:
            return np.array(out, dtype=np.uint8)  # a writeable copy: the caller owns it
        return im.copy() if out is im else out
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise DatasetError(f"Cannot read image '{path}' ({reason}); remove it or replace it, then try again.") from None
    finally:
        im.close()


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
    """``(width, height)`` from the file's header, without decoding the pixels; EXIF
    orientation applied (the size browsers show)."""
    with open_image(path) as im:
        return oriented_size(im)
