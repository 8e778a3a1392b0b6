"""Pascal VOC reader on small VOC folders written here."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from almdn.data.coco import DatasetError
from almdn.data.voc import VOC_CLASSES, read_voc, read_voc_annotation, voc_class_names


def voc_xml(filename: str, objects: list[tuple], size: tuple[int, int] | None = (100, 80)) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{int(diff)}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2, diff in objects
    )
    return f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>{size_xml}<segmented>0</segmented>{objs}</annotation>"


def make_voc(root: Path, items: dict[str, list[tuple]], size=(100, 80), sets: dict[str, list[str]] | None = None) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem, objects in items.items():
        Image.new("RGB", size).save(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects, size))
    for name, ids in (sets or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_boxes_become_continuous_pixel_coordinates(tmp_path):
    root = make_voc(tmp_path / "VOC2007", {"000001": [("dog", 1, 1, 100, 80, 0), ("person", 11, 21, 40, 60, 1)]})
    [record] = read_voc(root)
    assert record.path == root / "JPEGImages" / "000001.jpg"
    assert (record.width, record.height, record.source_id) == (100, 80, "000001")
    # xmin = 1 is the first pixel: the whole-image box is (0, 0, W, H).
    assert [(b.class_name, b.x1, b.y1, b.x2, b.y2, b.difficult) for b in record.boxes] == [
        ("dog", 0.0, 0.0, 100.0, 80.0, False),
        ("person", 10.0, 20.0, 40.0, 60.0, True),
    ]


def test_image_set_selects_and_orders_images(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": [("cat", 1, 1, 5, 5, 0)], "b": [], "c": [("cow", 2, 2, 9, 9, 0)]}, sets={"train": ["c", "a"]})
    assert [r.source_id for r in read_voc(root, "train")] == ["c", "a"]
    assert [r.source_id for r in read_voc(root)] == ["a", "b", "c"]
    assert read_voc(root)[1].boxes == []  # labeled, no objects
    with pytest.raises(DatasetError, match="No image set 'val'"):
        read_voc(root, "val")


def test_missing_size_is_left_to_the_image_file(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(voc_xml("x.jpg", [("cat", 1, 1, 5, 5, 0)], size=None))
    record = read_voc_annotation(path, tmp_path)
    assert record.width is None and record.path == tmp_path / "x.jpg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object>", "not well-formed XML"),
        ("<foo/>", "root element is <foo>"),
        (voc_xml("x.jpg", [("cat", 1, 1, "a", 5, 0)]), r"object #1 \('cat'\) has <xmax>a</xmax>, not a number"),
        (voc_xml("x.jpg", [("cat", 6, 1, 5, 5, 0)]), "object #1 .* has an empty box"),
        (voc_xml("x.jpg", [("cat", 1, 1, 101, 5, 0)]), "lies outside the 100x80 image"),
        ("<annotation><object><name>cat</name></object></annotation>", "has no <bndbox>"),
    ],
)
def test_broken_annotation_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "Annotations" / "bad.xml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_voc_annotation(path)
    assert str(path) in str(info.value) and "fix or remove the file" in str(info.value)


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(DatasetError, match="is not a Pascal VOC folder"):
        read_voc(tmp_path)


def test_class_names_follow_voc_order_or_sorted(tmp_path):
    root = make_voc(tmp_path / "v", {"a": [("person", 1, 1, 5, 5, 0)], "b": [("aeroplane", 1, 1, 5, 5, 0)]})
    assert voc_class_names(read_voc(root)) == list(VOC_CLASSES)
    other = make_voc(tmp_path / "w", {"a": [("zebra", 1, 1, 5, 5, 0)], "b": [("apple", 1, 1, 5, 5, 0)]})
    assert voc_class_names(read_voc(other)) == ["apple", "zebra"]
