"""Creating projects from COCO, VOC, YOLO and image folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from almdn.data.coco import DatasetError, write_coco
from almdn.projects.sources import add_source
from almdn.workflow import create_project
from almdn.projects.store import Store
from tests.test_voc import make_voc
from tests.test_yolo import make_yolo


def make_coco_dataset(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    (root / "images").mkdir(parents=True)
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "bus"}]
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        images, annotations = [], []
        for i in range(n):
            name = f"{split}_{i}.png"
            Image.new("RGB", (50, 40), (offset + i, 0, 0)).save(root / "images" / name)  # distinct content
            images.append({"id": offset + i, "file_name": name, "width": 50, "height": 40})
            annotations.append({"id": offset + i, "image_id": offset + i, "category_id": 3 if i % 2 else 1, "bbox": [2, 3, 10, 20], "area": 200, "iscrowd": 0})
        write_coco(root / "annotations" / f"{split}.json", images, annotations, categories)
    return root


def test_project_from_a_coco_dataset_folder(tmp_path):
    data = make_coco_dataset(tmp_path / "coco")
    store, summaries = create_project(tmp_path / "p", [("coco", data, None)])
    assert [(s.split, s.added, s.labels) for s in summaries] == [("labeled", 3, 3), ("test", 2, 2)]
    assert store.classes() == ["bus", "car"]  # the COCO reader orders categories by id
    labels = store.labels(split="labeled")
    assert labels[["class_name", "x1", "y1", "x2", "y2"]].values.tolist()[:2] == [["bus", 2, 3, 12, 23], ["car", 2, 3, 12, 23]]
    assert labels["source"].iloc[0].endswith("train.json")
    assert store.images()["source_id"].tolist() == ["0", "1", "2", "100", "101"]
    # Adding the same dataset again changes nothing.
    again = add_source(store, "coco", data)
    assert [(s.added, s.existing) for s in again] == [(0, 3), (0, 2)]
    assert store.counts()["labels"] == 5
    store.close()


def test_labeled_source_into_the_pool_drops_its_boxes_and_says_so(tmp_path):
    data = make_coco_dataset(tmp_path / "coco", n_test=0)
    store, summaries = create_project(tmp_path / "p", [("coco", data / "annotations" / "train.json", "pool")])
    assert (summaries[0].split, summaries[0].dropped_labels) == ("pool", 3)
    assert "3 boxes left out" in str(summaries[0])
    assert store.counts()["labels"] == 0 and store.counts()["pool"] == 3
    store.close()


def test_project_from_voc_yolo_and_images_together(tmp_path):
    voc = make_voc(tmp_path / "VOC2007", {"000001": [("person", 1, 1, 20, 20, 0)]})
    yolo = make_yolo(tmp_path / "yolo", {"y0": "0 0.5 0.5 0.5 0.5\n"}, names=("person", "bus"))
    folder = tmp_path / "unlabeled" / "sub"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (30, 30), (40 * i, 0, 0)).save(folder / f"u{i}.jpg")
    store, summaries = create_project(tmp_path / "p", [("voc", voc, None), ("yolo", yolo, None), ("images", tmp_path / "unlabeled", None)], classes=["bus"])
    assert store.classes()[0] == "bus"  # given classes come first, in the given order
    assert "person" in store.classes()
    assert [s.split for s in summaries] == ["labeled", "labeled", "pool"]
    assert store.counts()["pool"] == 4 and store.counts()["labeled"] == 2
    assert sorted(store.labels()["class_name"]) == ["person", "person"]
    store.close()


def test_broken_image_in_a_source_adds_nothing_from_it(tmp_path):
    data = make_coco_dataset(tmp_path / "coco", n_test=0)
    (data / "images" / "train_1.png").write_bytes(b"broken")
    store = Store.open(tmp_path / "p")
    with pytest.raises(DatasetError, match="train_1.png"):
        add_source(store, "coco", data)
    assert store.counts()["images"] == 0 and store.classes() == []  # classes rolled back too
    store.close()


def test_files_are_read_and_decoded_before_the_write_transaction_begins(tmp_path, monkeypatch):
    """While an import decodes its files, another connection (the app, a retrain recording its
    model) can write: the store's write lock is taken only for the inserts."""
    import sqlite3

    import almdn.data.records as records

    data = make_coco_dataset(tmp_path / "coco", n_train=3, n_test=0)
    store = Store.open(tmp_path / "p")
    original = records.check_image
    writes = []

    def decode_and_write(path):
        other = sqlite3.connect(store.path, timeout=0)  # no waiting: a held write lock fails at once
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"probe-{len(writes)}", "x"))
            other.execute("COMMIT")
            writes.append(path)
        finally:
            other.close()
        return original(path)

    monkeypatch.setattr(records, "check_image", decode_and_write)
    [summary] = add_source(store, "coco", data / "annotations" / "train.json")
    assert summary.added == 3 and len(writes) == 3
    assert store.meta("probe-2") == "x"
    store.close()


def test_a_voc_image_named_by_two_annotation_files_with_different_labels_is_reported(tmp_path):
    voc = make_voc(tmp_path / "VOC", {"a": [("cat", 1, 1, 20, 20, 0)], "b": [("dog", 5, 5, 30, 30, 0)]})
    (voc / "Annotations" / "b.xml").write_text((voc / "Annotations" / "b.xml").read_text().replace("<filename>b.jpg", "<filename>a.jpg"))
    store = Store.open(tmp_path / "p")
    with pytest.raises(DatasetError, match=r"'.*a.jpg' is listed twice in .*VOC with different labels"):
        add_source(store, "voc", voc)
    assert store.counts()["images"] == 0 and store.classes() == []
    store.close()


def test_a_phone_portrait_is_stored_as_browsers_show_it(tmp_path):
    from tests.test_records import exif_jpeg

    folder = tmp_path / "photos"
    folder.mkdir()
    for orientation in (1, 3, 6, 8):
        exif_jpeg(folder / f"o{orientation}.jpg", size=(200, 100), orientation=orientation)
    exif_jpeg(folder / "square6.jpg", size=(120, 120), orientation=6)
    store, _ = create_project(tmp_path / "p", [("images", folder, None)])
    sizes = {Path(r.path).name: (r.width, r.height) for r in store.images().itertuples()}
    assert sizes == {"o1.jpg": (200, 100), "o3.jpg": (200, 100), "o6.jpg": (100, 200), "o8.jpg": (100, 200), "square6.jpg": (120, 120)}
    store.close()
