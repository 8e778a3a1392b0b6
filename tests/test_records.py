"""Image records: header reads with a pixel limit, and a full check that finds truncated files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from almdn.data.coco import DatasetError
from almdn.data.records import DEFAULT_MAX_IMAGE_PIXELS, check_image, image_size


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels, with no pixel data: what a
    decompression bomb looks like to a header reader (a few dozen bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def truncated_jpeg(path: Path, size=(256, 192)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_decompression_bomb_header_is_one_sentence_with_the_limit(tmp_path, monkeypatch):
    bomb = png_header(tmp_path / "bomb.png", 60000, 60000)
    for read in (image_size, check_image):
        with pytest.raises(DatasetError) as info:
            read(bomb)
        message = str(info.value)
        assert message == (
            f"Image '{bomb}' is 60000x60000 pixels (3600 megapixels), above the limit of {DEFAULT_MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
            "shrink it, or raise the limit with ALMDN_MAX_IMAGE_PIXELS, then try again."
        )
    # The limit is configurable, both ways.
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    monkeypatch.setenv("ALMDN_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(DatasetError, match=r"is 100x100 pixels \(10000 pixels\), above the limit of 5000 pixels"):
        check_image(small)
    monkeypatch.setenv("ALMDN_MAX_IMAGE_PIXELS", str(4_000_000_000))
    assert image_size(bomb) == (60000, 60000)


def test_a_truncated_jpeg_is_found_by_the_check_but_not_by_the_header(tmp_path):
    path = truncated_jpeg(tmp_path / "half.jpg")
    assert image_size(path) == (256, 192)  # the header alone looks fine
    with pytest.raises(DatasetError, match=r"Cannot read image '.*half.jpg' \(.*the file is truncated or damaged\); remove or replace it"):
        check_image(path)
    whole = tmp_path / "whole.jpg"
    Image.new("RGB", (64, 32), (10, 20, 30)).save(whole)
    assert check_image(whole) == (64, 32)


def exif_jpeg(path: Path, size=(200, 100), orientation: int = 6) -> Path:
    """A JPEG stored ``size`` (width, height) with EXIF orientation ``orientation`` (6: how
    phones save portrait photos), with a red block in the stored top-left corner."""
    im = Image.new("RGB", size, (40, 90, 160))
    im.paste((250, 10, 10), (0, 0, size[0] // 4, size[1] // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, quality=95, exif=exif)
    return path


@pytest.mark.parametrize("orientation, shown", [(1, (200, 100)), (3, (200, 100)), (6, (100, 200)), (8, (100, 200))])
def test_exif_orientation_is_applied_to_the_size_and_to_every_decode(tmp_path, orientation, shown):
    from PIL import ImageOps

    from almdn.data.coco import decode_image, read_image
    from almdn.data.records import decode

    path = exif_jpeg(tmp_path / f"o{orientation}.jpg", orientation=orientation)
    assert image_size(path) == shown  # what a browser (and so Label Studio) shows
    assert check_image(path) == shown
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    full = read_image(path)
    assert full.shape == (shown[1], shown[0], 3)
    assert np.array_equal(full, expected)
    small = decode_image(path, max_side=50)
    assert small.shape[:2] == ((50, 25) if shown[1] > shown[0] else (25, 50))
    thumb = decode(path, max_side=40)
    assert thumb.size == ((20, 40) if shown[1] > shown[0] else (40, 20))
    # The red block stays in the same displayed corner at every size.
    red = np.argwhere((full[..., 0] > 200) & (full[..., 2] < 60))
    y, x = red.mean(axis=0) / full.shape[:2]
    ys, xs = np.argwhere((small[..., 0] > 200) & (small[..., 2] < 60)).mean(axis=0) / small.shape[:2]
    assert abs(y - ys) < 0.1 and abs(x - xs) < 0.1


def test_opening_never_changes_pillows_process_wide_pixel_limit(tmp_path, monkeypatch):
    """Pillow's ``MAX_IMAGE_PIXELS`` is a module global shared by every thread of the app's
    server: toggling it for a moment lets another thread decode a bomb unchecked."""
    from PIL import PngImagePlugin

    seen = []
    original = PngImagePlugin.PngImageFile._open

    def spy(self):
        seen.append(Image.MAX_IMAGE_PIXELS)
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", spy)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    path = tmp_path / "a.png"
    Image.new("RGB", (30, 20)).save(path)
    assert image_size(path) == (30, 20)
    assert check_image(path) == (30, 20)
    assert seen and set(seen) == {1_000_000}
    # Our own limit is a parameter, checked from the header: a 30x20 image is over a 500-pixel limit.
    from almdn.data.records import open_image

    with pytest.raises(DatasetError, match="above the limit of 500 pixels"):
        open_image(path, limit=500)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
