"""YOLO reader on small YOLO folders written here."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from almdn.data.coco import DatasetError
from almdn.data.yolo import read_yolo, read_yolo_labels, read_yolo_names


def make_yolo(root: Path, items: dict[str, str | None], size=(200, 100), names_file: str = "classes.txt", names=("cat", "dog"), split: str | None = None) -> Path:
    images = root / "images" / (split or "")
    labels = root / "labels" / (split or "")
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for stem, text in items.items():
        Image.new("RGB", size).save(images / f"{stem}.jpg")
        if text is not None:
            (labels / f"{stem}.txt").write_text(text)
    if names_file == "classes.txt":
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    elif names_file == "data.yaml":
        (root / "data.yaml").write_text("names:\n" + "".join(f"  - {n}\n" for n in names))
    elif names_file == "data-dict.yaml":
        (root / "data.yaml").write_text("names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    return root


def test_normalized_boxes_become_pixels(tmp_path):
    root = make_yolo(tmp_path / "y", {"a": "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2\n", "b": "", "c": None})
    records = read_yolo(root)
    assert [r.source_id for r in records] == ["a.jpg", "b.jpg", "c.jpg"]
    a = records[0]
    assert (a.width, a.height) == (200, 100)
    assert [(b.class_name, b.x1, b.y1, b.x2, b.y2) for b in a.boxes] == [
        ("dog", 80.0, 30.0, 120.0, 70.0),
        ("cat", 0.0, 0.0, 40.0, 20.0),
    ]
    assert records[1].boxes == [] and records[2].boxes == []  # empty or missing file: background image


@pytest.mark.parametrize("names_file", ["classes.txt", "data.yaml", "data-dict.yaml"])
def test_class_names_from_every_usual_file(tmp_path, names_file):
    root = make_yolo(tmp_path / "y", {}, names_file=names_file, names=("person", "bus", "car"))
    assert read_yolo_names(root) == ["person", "bus", "car"]


def test_missing_names_is_a_clear_error(tmp_path):
    root = make_yolo(tmp_path / "y", {}, names_file="none")
    with pytest.raises(DatasetError, match="No class names found .*data.yaml"):
        read_yolo_names(root)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "has 4 fields, not 5"),
        ("x 0.5 0.5 0.2 0.2", "is not a class index followed by four numbers"),
        ("2 0.5 0.5 0.2 0.2", "has class 2, but there are 2 classes"),
        ("0 0.5 0.5 0 0.2", "zero or negative size"),
        ("0 50 50 20 20", "values outside 0..1"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        read_yolo_labels(path, 200, 100, ["cat", "dog"])
    assert f"Line 2 of YOLO label file '{path}'" in str(info.value)


def test_boxes_spilling_over_the_border_are_clipped(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.05 0.5 0.2 0.2\n")
    [box] = read_yolo_labels(path, 200, 100, ["cat"])
    assert (box.x1, box.x2) == (0.0, pytest.approx(30.0, abs=1e-9))


def test_split_folders(tmp_path):
    root = make_yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n"}, split="train")
    make_yolo(root, {"b": "1 0.5 0.5 0.5 0.5\n"}, split="val")
    assert [r.boxes[0].class_name for r in read_yolo(root, "val")] == ["dog"]
    with pytest.raises(DatasetError, match="No split 'test'"):
        read_yolo(root, "test")
    with pytest.raises(DatasetError, match="not a YOLO dataset folder"):
        read_yolo(tmp_path)


def alias_bomb(levels: int) -> str:
    """The YAML "billion laughs": each level a list of 9 aliases of the level below (9**levels strings once expanded)."""
    return "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, levels)
    ) + f"names: *a{levels - 1}\n"


@pytest.mark.parametrize(("levels", "message"), [(13, "uses more than 100 YAML aliases, which a names file never needs"), (9, "Class 0 of .* is a list, not a name")])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, levels, message):
    import time

    root = make_yolo(tmp_path / "y", {}, names_file="none")
    (root / "data.yaml").write_text(alias_bomb(levels))
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=message):
        read_yolo_names(root)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("names: &n [cat, dog]\nother: [*n, *n]\nnames2: *n\n", None),  # a few aliases are fine
        ("names:\n  - [cat, dog]\n  - bird\n", "Class 0 of .* is a list, not a name"),
        ("names:\n  0: {a: 1}\n", "Class 0 of .* is a dict, not a name"),
        ("names: [cat, '" + "x" * 300 + "']\n", "Class 1 of .* is not a usable name"),
        ('names: [cat, "red\\e[31m"]\n', r"Class 1 of .*'red\\x1b\[31m'.* with control characters"),
        ("names: [cat, cat]\n", r"Class names \['cat'\] appear twice"),
        ("names: [cat, true]\n", "Class 1 of .* is a bool, not a name"),
    ],
)
def test_names_must_be_short_strings(tmp_path, names, message):
    root = make_yolo(tmp_path / "y", {}, names_file="none")
    (root / "data.yaml").write_text(names)
    if message is None:
        assert read_yolo_names(root) == ["cat", "dog"]
        return
    with pytest.raises(DatasetError, match=message):
        read_yolo_names(root)


def test_crlf_and_a_byte_order_mark_are_read(tmp_path):
    root = make_yolo(tmp_path / "y", {"a": None}, names_file="none")
    (root / "data.yaml").write_bytes(b"\xef\xbb\xbfnames:\r\n  - cat\r\n  - dog\r\n")
    (root / "labels" / "a.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.2 0.4\r\n0 0.1 0.1 0.2 0.2\r\n\r\n")
    [record] = read_yolo(root)
    assert [(b.class_name, b.x1, b.y2) for b in record.boxes] == [("dog", 80.0, 70.0), ("cat", 0.0, 20.0)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 nan 0.5 0.2 0.2", "has a number that is not finite"),
        ("0 0.5 0.5 inf 0.2", "has a number that is not finite"),
        ("0 0.5 0.5 1e309 0.2", "has a number that is not finite"),
        ("\x00\x01garbage\xff", "has 1 fields, not 5|is not a class index"),
        ("0 0.5 0.5 0.2 0.2 0 0.5 0.5", "has 8 fields, not 5"),
    ],
)
def test_garbage_lines_are_one_sentence(tmp_path, line, message):
    path = tmp_path / "a.txt"
    path.write_bytes(("0 0.5 0.5 0.1 0.1\r\n" + line + "\r\n").encode("utf-8", "surrogateescape"))
    with pytest.raises(DatasetError, match=message) as info:
        read_yolo_labels(path, 200, 100, ["cat", "dog"])
    assert f"Line 2 of YOLO label file '{path}'" in str(info.value)


def test_binary_label_file_is_one_sentence(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match=r"Cannot read YOLO label file '.*a.txt' \(UnicodeDecodeError\)"):
        read_yolo_labels(path, 200, 100, ["cat"])


def test_a_label_file_without_an_image_is_refused(tmp_path):
    root = make_yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.2 0.2\n"})
    (root / "labels" / "lost.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "empty.txt").write_text("")  # nothing would be lost
    with pytest.raises(DatasetError, match=r"YOLO label file '.*lost.txt' has no image in '.*images'; add the image or remove the label file"):
        read_yolo(root)
    (root / "labels" / "lost.txt").unlink()
    assert len(read_yolo(root)) == 1
