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


def test_missing_size_is_read_from_the_image_file(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(voc_xml("x.jpg", [("cat", 1, 1, 5, 5, 0)], size=None))
    Image.new("RGB", (30, 20)).save(tmp_path / "x.jpg")
    record = read_voc_annotation(path, tmp_path)
    assert (record.width, record.height) == (30, 20) and record.path == tmp_path / "x.jpg"
    # Without boxes there is nothing to check: the size is left to the import.
    path.write_text(voc_xml("x.jpg", [], size=None))
    assert read_voc_annotation(path, tmp_path).width is None


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


BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e309"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("size", [(100, 80), None, (0, 0)])
def test_numbers_must_be_finite(tmp_path, value, size):
    path = tmp_path / "Annotations" / "a.xml"
    path.parent.mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "a.jpg")
    path.write_text(voc_xml("a.jpg", [("cat", value, 1, 5, 5, 0)], size=size))
    with pytest.raises(DatasetError, match=rf"object #1 \('cat'\) has <xmin>{value}</xmin>, not a finite number") as info:
        read_voc_annotation(path, tmp_path)
    assert str(path) in str(info.value)
    path.write_text(voc_xml("a.jpg", [], size=(value, 80)).replace("<height>80", "<height>80"))
    with pytest.raises(DatasetError, match="not a finite number"):
        read_voc_annotation(path, tmp_path)


@pytest.mark.parametrize("size", [None, (0, 0)])
def test_boxes_are_checked_against_the_image_when_the_xml_gives_no_size(tmp_path, size):
    path = tmp_path / "a.xml"
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    path.write_text(voc_xml("a.jpg", [("cat", 1, 1, 41, 10, 0)], size=size))
    with pytest.raises(DatasetError, match=r"box \(1, 1, 41, 10\) lies outside the 40x30 image '.*a.jpg'"):
        read_voc_annotation(path, tmp_path)
    path.write_text(voc_xml("a.jpg", [("cat", 1, 1, 40, 30, 0)], size=size))
    assert (read_voc_annotation(path, tmp_path).width, read_voc_annotation(path, tmp_path).height) == (40, 30)


def test_boxes_are_checked_against_the_image_as_shown_with_its_exif_orientation(tmp_path):
    from tests.test_records import exif_jpeg

    exif_jpeg(tmp_path / "a.jpg", size=(200, 100), orientation=6)  # shown 100 wide, 200 high
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", [("cat", 1, 1, 100, 200, 0)], size=None))
    assert read_voc_annotation(path, tmp_path).width == 100
    path.write_text(voc_xml("a.jpg", [("cat", 1, 1, 200, 100, 0)], size=None))
    with pytest.raises(DatasetError, match="outside the 100x200 image"):
        read_voc_annotation(path, tmp_path)


EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<annotation><filename>a.jpg</filename><object><name>&secret;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE annotation [
 <!ENTITY lol "lol">
""" + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)) + """]>
<annotation><filename>a.jpg</filename><object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""

QUADRATIC = ('<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY a "' + "x" * 50_000 + '">]>\n'
             "<annotation><filename>a.jpg</filename><folder>" + "&a;" * 50_000 + "</folder></annotation>")


@pytest.mark.parametrize("text", [EXTERNAL_ENTITY, BILLION_LAUGHS, QUADRATIC], ids=["external-entity", "billion-laughs", "quadratic-blowup"])
def test_entities_are_refused_without_being_expanded(tmp_path, text):
    import time

    path = tmp_path / "a.xml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="declares a DTD or entities") as info:
        read_voc_annotation(path, tmp_path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value) and "fix or remove the file" in str(info.value)


def test_a_huge_xml_file_is_not_parsed(tmp_path, monkeypatch):
    import almdn.data.voc as voc

    monkeypatch.setattr(voc, "MAX_XML_BYTES", 100)
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", [("cat", 1, 1, 5, 5, 0)] * 5))
    with pytest.raises(DatasetError, match="larger than any VOC annotation"):
        read_voc_annotation(path, tmp_path)


@pytest.mark.parametrize("name", ["../x.jpg", "../../etc/passwd", "/etc/passwd", "sub/../../x.jpg", "..\\x.jpg", "C:\\x.jpg"])
def test_a_filename_outside_the_image_folder_is_refused(tmp_path, name):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml(name, [("cat", 1, 1, 5, 5, 0)]))
    with pytest.raises(DatasetError, match="points outside the image folder; give the image's file name only"):
        read_voc_annotation(path, tmp_path)


def test_a_filename_in_a_subfolder_is_fine(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("sub/x.jpg", [("cat", 1, 1, 5, 5, 0)]))
    assert read_voc_annotation(path, tmp_path).path == tmp_path / "sub" / "x.jpg"
