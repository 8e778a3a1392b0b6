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


def test_a_large_image_is_decoded_reduced_and_its_boxes_map_back(tmp_path):
    import torch

    from almdn.data.images import MAX_DECODE_SIDE, decode_image, reduced_size, restore_boxes

    big = tmp_path / "big.jpg"
    array = np.zeros((3000, 6000, 3), np.uint8)
    array[1500:, 3000:] = 255  # the bottom-right quarter is white
    Image.fromarray(array).save(big, quality=90)
    small = decode_image(big, max_side=1000)
    assert small.shape == (500, 1000, 3) and reduced_size(6000, 3000, 1000) == (1000, 500)
    assert small[100, 100].max() < 30 and small[400, 900].min() > 225  # the same picture, smaller
    ds = ImageFolderDataset([big], max_side=1000)
    assert ds[0][0].shape == (3, 500, 1000) and ds.box_scale(0) == (6.0, 6.0)
    assert ImageFolderDataset([big], sizes=[(6000, 3000)]).box_scale(0) == (6000 / MAX_DECODE_SIDE, 3000 / 1024)
    restored = restore_boxes({"boxes": torch.tensor([[500.0, 250.0, 1000.0, 500.0]]), "scores": torch.tensor([0.9])}, ds.box_scale(0))
    assert restored["boxes"].tolist() == [[3000.0, 1500.0, 6000.0, 3000.0]]
    # the mixture's pixel-valued keys (component boxes, their sigmas, the anchor) map back too
    mixture = {"boxes": torch.ones(1, 4), "component_boxes": torch.ones(1, 2, 4), "component_sigmas": torch.ones(1, 2, 4),
               "anchor_boxes": torch.ones(1, 4), "component_weights": torch.ones(1, 2, 4)}
    restored = restore_boxes(mixture, (6.0, 3.0))
    for key in ("boxes", "component_boxes", "component_sigmas", "anchor_boxes"):
        assert restored[key][..., 0].eq(6.0).all() and restored[key][..., 1].eq(3.0).all(), key
    assert restored["component_weights"].eq(1.0).all()  # not a pixel value
    small_file = tmp_path / "s.png"
    Image.new("RGB", (40, 30)).save(small_file)
    assert ImageFolderDataset([small_file]).box_scale(0) == (1.0, 1.0) and ImageFolderDataset([small_file])[0][0].shape == (3, 30, 40)
