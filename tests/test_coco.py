"""Tests of the COCO reader/writer (almdn.data.coco) on small files written here."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch
from PIL import Image

from almdn.data.coco import BoxesAdjusted, CocoDetectionDataset, DatasetError, collate_detection, write_coco

torch.set_num_threads(1)

# Non-contiguous category ids, listed out of id order: labels must follow the sorted ids.
CATEGORIES = [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray], list[dict]]:
    """root/images/train/*.png and root/annotations/train.json with 4 images, one without boxes."""
    rng = np.random.default_rng(0)
    (tmp_path / "images" / "train").mkdir(parents=True)
    pixels: dict[int, np.ndarray] = {}
    images = []
    shapes = {1: (40, 50, "RGB"), 2: (30, 30, "L"), 3: (24, 36, "RGBA"), 4: (20, 20, "RGB")}
    for image_id, (h, w, mode) in shapes.items():
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        name = f"train/{image_id:06d}.png"
        Image.fromarray(arr[..., 0] if mode == "L" else arr).save(tmp_path / "images" / name)
        rgb = np.repeat(arr, 3, axis=-1) if mode == "L" else arr[..., :3]
        pixels[image_id] = rgb
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 12, "bbox": [20.5, 5.25, 15.0, 7.5], "area": 112.5, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 30, 30], "area": 900.0, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 12, "bbox": [1.0, 1.0, 5.0, 6.0], "area": 30.0, "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [0.0, 0.0, 36.0, 24.0], "area": 864.0, "iscrowd": 1},
    ]
    write_coco(tmp_path / "annotations" / "train.json", images, annotations, CATEGORIES)
    return tmp_path, pixels, annotations


def test_round_trip_equals_what_was_written(dataset_dir) -> None:
    root, pixels, annotations = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json")  # image_root defaults to ../images
    assert len(ds) == 4
    assert ds.image_ids == [1, 2, 3, 4]
    assert ds.file_paths[0] == root / "images" / "train" / "000001.png"
    assert ds.classes == ["cat", "dog", "bird"]  # ids 3, 7, 12 -> labels 1, 2, 3
    assert ds.num_classes == 3
    label_of = {3: 1, 7: 2, 12: 3}
    for i, image_id in enumerate(ds.image_ids):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert torch.equal(image, torch.from_numpy(pixels[image_id]).permute(2, 0, 1).float() / 255)
        assert target["image_id"] == image_id
        anns = [a for a in annotations if a["image_id"] == image_id and not a["iscrowd"]]
        expected = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert torch.equal(target["boxes"], torch.tensor(expected, dtype=torch.float32).reshape(-1, 4))
        assert target["labels"].tolist() == [label_of[a["category_id"]] for a in anns]


def test_image_without_boxes_and_crowd_skipped(dataset_dir) -> None:
    root, _, _ = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json")
    _, target = ds[3]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    _, target3 = ds[2]  # the crowd annotation of image 3 is skipped
    assert target3["labels"].tolist() == [3]


def test_targets_need_no_images(dataset_dir) -> None:
    root, _, _ = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json", cache_images=False)
    for p in (root / "images" / "train").iterdir():
        p.unlink()
    targets = ds.targets()
    assert [t["image_id"] for t in targets] == [1, 2, 3, 4]
    assert [len(t["boxes"]) for t in targets] == [2, 1, 1, 0]


def test_cache_and_subset(dataset_dir) -> None:
    root, pixels, _ = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json", cache_images=True)
    first, _ = ds[0]
    (root / "images" / "train" / "000001.png").unlink()
    again, _ = ds[0]  # served from the cache
    assert torch.equal(first, again)
    sub = ds.subset([3, 0])
    assert sub.image_ids == [4, 1] and len(sub) == 2 and sub.classes == ds.classes
    image, target = sub[1]
    assert torch.equal(image, first) and target["image_id"] == 1
    assert len(ds) == 4


def test_class_names_fix_the_label_order(dataset_dir) -> None:
    root, _, _ = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json", class_names=["dog", "bird", "cat", "cow"])
    assert ds.classes == ["dog", "bird", "cat", "cow"]
    assert ds.category_ids == [7, 12, 3, None]
    assert ds.target(0)["labels"].tolist() == [3, 2]  # cat, bird
    assert ds.target(1)["labels"].tolist() == [1]  # dog


def test_class_names_mismatch_raises(dataset_dir) -> None:
    root, _, _ = dataset_dir
    with pytest.raises(DatasetError) as err:
        CocoDetectionDataset(root / "annotations" / "train.json", class_names=["cat", "dog"])
    assert "bird" in str(err.value) and "train.json" in str(err.value)


def _assert_one_clear_sentence(err: DatasetError, name: str) -> None:
    message = str(err)
    assert name in message
    assert "Traceback" not in message and "\n" not in message
    assert message.endswith(".") and message.count(". ") == 0
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_corrupt_image_raises_dataset_error(dataset_dir) -> None:
    root, _, _ = dataset_dir
    bad = root / "images" / "train" / "000002.png"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    ds = CocoDetectionDataset(root / "annotations" / "train.json")
    ds[0]  # the others still load
    with pytest.raises(DatasetError) as err:
        ds[1]
    _assert_one_clear_sentence(err.value, "000002.png")
    assert "not an image file" in str(err.value)


def test_truncated_image_raises_dataset_error(dataset_dir) -> None:
    root, _, _ = dataset_dir
    path = root / "images" / "train" / "000001.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError) as err:
        CocoDetectionDataset(root / "annotations" / "train.json")[0]
    _assert_one_clear_sentence(err.value, "000001.png")


def test_missing_image_raises_dataset_error(dataset_dir) -> None:
    root, _, _ = dataset_dir
    (root / "images" / "train" / "000003.png").unlink()
    ds = CocoDetectionDataset(root / "annotations" / "train.json")
    with pytest.raises(DatasetError) as err:
        ds[2]
    _assert_one_clear_sentence(err.value, "000003.png")
    assert "not found" in str(err.value)


def test_size_mismatch_raises_dataset_error(dataset_dir) -> None:
    root, _, _ = dataset_dir
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "images" / "train" / "000004.png")
    with pytest.raises(DatasetError, match="000004.png"):
        CocoDetectionDataset(root / "annotations" / "train.json")[3]


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"annotations": [], "categories": []}', "'images'"),
        ('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "x"}],'
         ' "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]}]}', "image id 9"),
        ('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "x"}],'
         ' "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}]}', "category id 5"),
        ('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "x"}],'
         ' "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]}', "bbox"),
    ],
)
def test_malformed_annotation_file_raises_dataset_error(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        CocoDetectionDataset(path)
    message = str(err.value)
    assert "broken.json" in message and reason in message
    assert "\n" not in message and "Traceback" not in message


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nothing.json.*file not found"):
        CocoDetectionDataset(tmp_path / "nothing.json")


def test_degenerate_boxes_dropped_with_warning(tmp_path: Path) -> None:
    images = [{"id": 5, "file_name": "x/five.png", "width": 10, "height": 10}]
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 1, "bbox": [1, 1, 0, 4], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 1, "bbox": [1, 1, 4, -2], "iscrowd": 0},
        {"id": 3, "image_id": 5, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0},
    ]
    path = write_coco(tmp_path / "a.json", images, annotations, [{"id": 1, "name": "thing"}])
    with pytest.warns(BoxesAdjusted, match=r"2 empty boxes .* dropped, in 1 images \(five\.png\)"):
        ds = CocoDetectionDataset(path)
    assert ds.target(0)["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]]


def test_clipped_and_dropped_boxes_are_one_summary_per_dataset(tmp_path: Path) -> None:
    images = [{"id": i, "file_name": f"im{i}.png", "width": 10, "height": 10} for i in range(5)]
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [-2, 1, 5, 4]},  # clipped
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 8, 5, 5]},  # clipped
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},  # inside: untouched
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [20, 20, 3, 3]},  # outside: dropped
        {"id": 5, "image_id": 3, "category_id": 1, "bbox": [1, 1, 0, 3]},  # empty: dropped
        {"id": 6, "image_id": 3, "category_id": 1, "bbox": [0, 9, 10, 4]},  # clipped
    ]
    path = write_coco(tmp_path / "a.json", images, annotations, [{"id": 1, "name": "thing"}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetectionDataset(path)
    assert [str(w.message) for w in caught] == [ds.box_summary] == [
        f"In '{path}': 3 boxes clipped to their image and 2 empty boxes (zero width or height, or outside the image) dropped, "
        "in 4 images (im0.png, im1.png, im2.png, ...)."
    ]
    assert ds.target(0)["boxes"].tolist() == [[0.0, 1.0, 3.0, 5.0]] and len(ds.target(2)["boxes"]) == 0


def test_collate_detection_with_dataloader(dataset_dir) -> None:
    root, _, _ = dataset_dir
    ds = CocoDetectionDataset(root / "annotations" / "train.json")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate_detection)
    batches = list(loader)
    assert [len(images) for images, _ in batches] == [3, 1]
    images, targets = batches[0]
    assert [tuple(im.shape) for im in images] == [(3, 40, 50), (3, 30, 30), (3, 24, 36)]
    assert [t["image_id"] for t in targets] == [1, 2, 3]
    assert collate_detection([]) == ([], [])


def test_write_coco_is_deterministic_and_accepts_numpy(tmp_path: Path) -> None:
    images = [{"id": np.int64(1), "file_name": "a.png", "width": 4, "height": 4}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1,
                    "bbox": np.array([0.0, 1.0, 2.0, 3.0]), "area": np.float32(6.0), "iscrowd": 0}]
    categories = [{"id": 1, "name": "x"}]
    a = write_coco(tmp_path / "a.json", images, annotations, categories).read_bytes()
    b = write_coco(tmp_path / "b.json", images, annotations, categories).read_bytes()
    assert a == b
    doc = json.loads(a)
    assert list(doc) == ["images", "annotations", "categories"]
    assert doc["annotations"][0]["bbox"] == [0.0, 1.0, 2.0, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temp files left


def test_a_large_image_is_decoded_reduced_for_training_with_its_boxes_scaled(tmp_path):
    from PIL import Image

    from almdn.data.coco import CocoDetectionDataset, write_coco

    (tmp_path / "images").mkdir()
    Image.new("RGB", (3000, 1500), (200, 10, 10)).save(tmp_path / "images" / "big.jpg", quality=90)
    Image.new("RGB", (60, 40), (10, 200, 10)).save(tmp_path / "images" / "small.png")
    images = [{"id": 1, "file_name": "big.jpg", "width": 3000, "height": 1500}, {"id": 2, "file_name": "small.png"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [300, 150, 600, 300], "area": 180000, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [6, 4, 12, 8], "area": 96, "iscrowd": 0},
    ]
    write_coco(tmp_path / "annotations" / "train.json", images, annotations, [{"id": 1, "name": "a"}])
    data = CocoDetectionDataset(tmp_path / "annotations" / "train.json", max_side=1000)
    image, target = data[0]
    assert tuple(image.shape) == (3, 500, 1000)  # 3000 x 1500 decoded at 1000 x 500
    torch.testing.assert_close(target["boxes"], torch.tensor([[100.0, 50.0, 300.0, 150.0]]))
    torch.testing.assert_close(data.targets()[0]["boxes"], target["boxes"])  # evaluation sees the same pixels
    small, small_target = data[1]
    assert tuple(small.shape) == (3, 40, 60)
    torch.testing.assert_close(small_target["boxes"], torch.tensor([[6.0, 4.0, 18.0, 12.0]]))
    full = CocoDetectionDataset(tmp_path / "annotations" / "train.json", max_side=None)
    assert tuple(full[0][0].shape) == (3, 1500, 3000)


def test_images_beside_the_annotation_file_are_found_as_well(dataset_dir) -> None:
    root, pixels, _ = dataset_dir
    # the other common layout: export/instances.json with export/images/...
    export = root / "export"
    export.mkdir()
    (root / "images").rename(export / "images")
    (root / "annotations" / "train.json").rename(export / "instances.json")
    ds = CocoDetectionDataset(export / "instances.json")
    assert ds.image_root == export / "images"
    image, _ = ds[0]
    assert torch.equal(image, torch.from_numpy(pixels[1]).permute(2, 0, 1).float() / 255)
    # an explicit root is kept as given
    assert CocoDetectionDataset(export / "instances.json", image_root=root).image_root == root


def _one_image_file(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None, size=(40, 30)) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", size).save(tmp_path / "images" / "a.png")
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}]
    return write_coco(tmp_path / "annotations" / "a.json", images, annotations, [{"id": 1, "name": "cat"}])


@pytest.mark.parametrize("value", [[1], True, 1.0, "1", None])
@pytest.mark.parametrize("key", ["image_id", "category_id"])
def test_annotation_ids_must_be_integers(tmp_path: Path, key, value) -> None:
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, key: value}
    path = _one_image_file(tmp_path, [ann])
    with pytest.raises(DatasetError) as err:
        CocoDetectionDataset(path)
    assert str(err.value) == (
        f"Cannot read annotation file '{path}' (annotation #0 needs an integer '{key}', not {json.dumps(value)}); fix or regenerate it, then try again."
    )


@pytest.mark.parametrize("crowd, kept", [(0, 1), ("0", 1), (False, 1), (1, 0), ("1", 0), (True, 0)])
def test_iscrowd_written_as_a_string_or_boolean(tmp_path: Path, crowd, kept) -> None:
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": crowd}
    assert len(CocoDetectionDataset(_one_image_file(tmp_path, [ann])).target(0)["boxes"]) == kept


@pytest.mark.parametrize("crowd", ["yes", 2, 0.5, [0]])
def test_any_other_iscrowd_is_refused(tmp_path: Path, crowd) -> None:
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": crowd}
    with pytest.raises(DatasetError, match=r"annotation #0 has 'iscrowd' .*; use 0 or 1"):
        CocoDetectionDataset(_one_image_file(tmp_path, [ann]))


def test_a_file_name_under_two_ids_is_refused(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}, {"id": 2, "file_name": "./a.png", "width": 40, "height": 30}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}, {"id": 2, "image_id": 2, "category_id": 1, "bbox": [9, 9, 5, 5]}]
    with pytest.raises(DatasetError, match=r"file_name './a.png' is listed under image ids 1 and 2; list each image once, with all its annotations"):
        CocoDetectionDataset(_one_image_file(tmp_path, anns, images))


def test_images_without_sizes_have_their_boxes_checked_against_the_image(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]},  # spills over: clipped to (30, 20, 40, 30)
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]},  # outside: dropped
    ]
    path = _one_image_file(tmp_path, anns, images, size=(40, 30))
    with pytest.warns(BoxesAdjusted, match=r"1 boxes clipped to their image and 1 empty boxes"):
        ds = CocoDetectionDataset(path, cache_images=False)
    assert ds.image_sizes == [(30, 40)]
    assert ds.target(0)["boxes"].tolist() == [[30.0, 20.0, 40.0, 30.0]]


def test_sizes_must_be_positive_integers_or_absent(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    ok = [{"id": 1, "file_name": "a.png", "width": 40.0, "height": 30.0}]  # some tools write floats
    assert CocoDetectionDataset(_one_image_file(tmp_path, anns, ok)).image_sizes == [(30, 40)]
    for bad in ({"width": "40", "height": 30}, {"width": 40}, {"width": float("nan"), "height": 30}, {"width": 0, "height": 30}):
        with pytest.raises(DatasetError, match=r"image #0 has 'width' .* give both as positive integers, or neither"):
            CocoDetectionDataset(_one_image_file(tmp_path, anns, [{"id": 1, "file_name": "a.png", **bad}]))
