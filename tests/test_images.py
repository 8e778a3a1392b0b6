"""Unlabeled image folders: stable order, broken files reported instead of raised."""

import numpy as np
import pytest
from PIL import Image

from almdn.data.coco import DatasetError
from almdn.data.images import ImageFolderDataset, list_images


def test_folder_lists_images_and_skips_broken_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "c.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("x")
    ds = ImageFolderDataset.from_folder(tmp_path)
    assert [ds.file_name(i) for i in range(len(ds))] == ["b.png", "c.png", "sub/a.jpg"]
    image, meta = ds[0]
    assert image.shape == (3, 20, 30) and abs(float(image.max()) - 200 / 255) < 1e-6
    image, meta = ds[1]
    assert image is None and "c.png" in meta["error"] and meta["error"].count("\n") == 0
    assert ds[2][0].shape == (3, 10, 10)  # grey converted to RGB
    strict = ImageFolderDataset(list_images(tmp_path), skip_broken=False)
    with pytest.raises(DatasetError, match="c.png"):
        strict[1]


def test_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        list_images(tmp_path / "missing")
