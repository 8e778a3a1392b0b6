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
