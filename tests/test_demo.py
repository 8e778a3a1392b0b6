"""Tests of the demo dataset generator (almdn.data.demo): determinism, exact boxes, realism knobs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from PIL import Image

from almdn.data import demo
from almdn.data.demo import render as demo_render
from almdn.data.demo import scene as demo_scene
from almdn.data.demo import sources as demo_sources
from almdn.data.demo import writing as demo_writing
from almdn.data.demo import (
    INK_THRESHOLD,
    DemoConfig,
    describe,
    generate_demo_dataset,
    render_demo_image,
    split_digit_indices,
)


def iter_demo_images(config: DemoConfig, split: str):
    """Every image of ``split`` in order, rendered without writing anything."""
    count = config.num_train if split == "train" else config.num_test
    for index in range(count):
        yield render_demo_image(config, split, index)


TINY = DemoConfig(
    image_size=64, num_train=40, num_test=10, min_size=8, max_size=28,
    near_duplicate_fraction=0.25, empty_fraction=0.2,
)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "tiny"
    info = generate_demo_dataset(root, TINY, progress=False)
    assert info["reused"] is False
    return root


SHAPES = DemoConfig(kind="shapes", image_size=64, num_train=30, num_test=10, near_duplicate_fraction=0.2)


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "tiny"
    generate_demo_dataset(root, SHAPES, progress=False)
    return root


def test_layout_and_coco_fields(tiny: Path) -> None:
    info = generate_demo_dataset(tiny, TINY, progress=False)
    assert info["num_train_images"] == 40 and info["num_test_images"] == 10
    for split, n in (("train", 40), ("test", 10)):
        coco = _load(tiny, split)
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
        assert [im["id"] for im in coco["images"]] == list(range(1, n + 1))
        for im in coco["images"]:
            assert im["file_name"] == f"{split}/{im['id']:06d}.png"
            assert (im["width"], im["height"]) == (64, 64)
            with Image.open(tiny / "images" / im["file_name"]) as png:
                assert png.size == (64, 64) and png.mode == "RGB"
        ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            assert all(isinstance(v, float) for v in a["bbox"])
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
            assert a["area"] == w * h and a["iscrowd"] == 0
            assert 1 <= a["category_id"] <= 10
            # Heavily hidden digits are dropped, so every label is at least 40% visible.
            assert a["visibility"] >= 1 - TINY.max_hidden
        assert info[f"num_{split}_objects"] == len(coco["annotations"])
    record = json.loads((tiny / "demo_config.json").read_text())
    assert record["config"] == TINY.to_dict()
    assert not list(tiny.parent.glob(".tiny.*")), "temporary folders must be gone"


@pytest.mark.parametrize("fixture,config", [("tiny", TINY), ("tiny_shapes", SHAPES)], ids=["digits", "shapes"])
def test_same_seed_is_byte_identical_other_seed_differs(fixture: str, config: DemoConfig, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    made = request.getfixturevalue(fixture)
    again = tmp_path / "again"
    generate_demo_dataset(again, config, progress=False)
    assert _all_files(again) == _all_files(made)

    other = tmp_path / "other"
    generate_demo_dataset(other, DemoConfig(**{**config.to_dict(), "seed": 1}), progress=False)
    a, b = _all_files(made), _all_files(other)
    assert a.keys() == b.keys()
    assert a["annotations/train.json"] != b["annotations/train.json"]
    differing = sum(a[k] != b[k] for k in a if k.endswith(".png"))
    assert differing == config.num_train + config.num_test


def test_written_boxes_match_the_renderer(tiny: Path) -> None:
    coco = _load(tiny, "train")
    for image_id in (1, 2, 3, 7, 20):
        res = render_demo_image(TINY, "train", image_id - 1)
        anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        assert np.array_equal(np.asarray(boxes).reshape(-1, 4), res.boxes)
        assert [a["category_id"] - 1 for a in anns] == res.labels.tolist()
        png = np.asarray(Image.open(tiny / "images" / "train" / f"{image_id:06d}.png"))
        assert np.array_equal(png, res.image)


@pytest.mark.parametrize("config", [TINY, DemoConfig(num_train=60, num_test=0),
                                    DemoConfig(num_train=60, num_test=0, kind="shapes")], ids=["tiny", "digits", "shapes"])
def test_boxes_are_the_exact_ink_extent(config: DemoConfig) -> None:
    checked = 0
    for index in range(60 if config.num_train >= 60 else config.num_train):
        res = render_demo_image(config, "train", index, return_masks=True)
        assert res.masks.shape == (len(res.boxes), config.image_size, config.image_size)
        for (x0, y0, x1, y1), mask in zip(res.boxes, res.masks):
            outside = mask.copy()
            outside[y0:y1, x0:x1] = 0
            assert outside.max() == 0, "ink of the digit outside its box"
            # Every edge of the box touches ink: the box is tight.
            for edge in (mask[y0, x0:x1], mask[y1 - 1, x0:x1], mask[y0:y1, x0], mask[y0:y1, x1 - 1]):
                assert edge.max() >= INK_THRESHOLD
            checked += 1
    assert checked > 30


@pytest.mark.parametrize("kind", ["digits", "shapes"])
def test_ink_is_really_drawn_inside_the_box(kind: str) -> None:
    """Pixels of a clearly visible object differ from the same scene rendered without it."""
    config = DemoConfig(num_train=30, num_test=0, low_contrast_fraction=0.0, noise_std=0.0,
                        occlusion_fraction=0.0, clutter_fraction=0.0, kind=kind)
    checked = 0
    for index in range(8):
        scene = demo_scene._sample_scene(config, "train", index)
        full = demo_render._render(scene, config, return_masks=True)
        digits = [layer for layer in scene.layers if isinstance(layer, demo_scene._Digit)]
        assert len(full["boxes"]) == len(digits)  # nothing occludes, so nothing is dropped
        if not digits:
            continue
        empty = demo_render._render(dataclasses.replace(scene, layers=()), config)
        diff = np.abs(full["image"].astype(int) - empty["image"].astype(int)).max(axis=-1)
        union = full["masks"].max(axis=0)
        assert diff[union == 0].max() == 0, "pixels changed where no digit was drawn"
        for mask in full["masks"]:
            strong = mask >= 0.8 * mask.max()
            assert diff[strong].mean() > 30, "opaque ink must change the pixels visibly"
            checked += 1
    assert checked >= 10


def test_class_frequencies_follow_the_configured_prior() -> None:
    config = DemoConfig(image_size=40, num_train=400, num_test=0, min_size=8, max_size=16,
                        near_duplicate_fraction=0.0, occlusion_fraction=0.0, truncation_fraction=0.0)
    counts = np.bincount(np.concatenate([im.labels for im in iter_demo_images(config, "train")]), minlength=10)
    prior = config.class_prior()
    assert prior[0] / prior[9] == pytest.approx(10.0)
    assert counts[0] > 6 * counts[9]
    assert counts[:3].sum() > 2 * counts[5:].sum()
    assert np.corrcoef(counts, prior)[0, 1] > 0.97

    balanced = DemoConfig(**{**config.to_dict(), "class_imbalance": 0.0})
    counts_b = np.bincount(np.concatenate([im.labels for im in iter_demo_images(balanced, "train")]), minlength=10)
    assert counts_b.max() < 1.8 * counts_b.min()


def test_test_digits_never_appear_in_train(tiny: Path) -> None:
    pools = split_digit_indices(TINY.seed, TINY.test_digit_fraction)
    train = np.concatenate(list(pools["train"].values()))
    test = np.concatenate(list(pools["test"].values()))
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 5000
    assert all(len(pools["test"][d]) == 100 for d in range(10))

    used = {split: {a["mnist_index"] for a in _load(tiny, split)["annotations"]} for split in ("train", "test")}
    assert used["train"] and used["test"]
    assert not used["train"] & used["test"]
    assert used["train"] <= set(train.tolist()) and used["test"] <= set(test.tolist())


def test_near_duplicates_are_recorded_and_close(tiny: Path) -> None:
    images = _load(tiny, "train")["images"]
    dups = {im["id"]: im["near_duplicate_of"] for im in images if "near_duplicate_of" in im}
    assert len(dups) == 10  # 25% of 40
    assert all(src < i and src not in dups for i, src in dups.items())
    assert not any("near_duplicate_of" in im for im in _load(tiny, "test")["images"])

    def pixels(image_id: int) -> np.ndarray:
        return np.asarray(Image.open(tiny / "images" / "train" / f"{image_id:06d}.png"), dtype=np.float64)

    dup_diff = np.mean([np.abs(pixels(i) - pixels(s)).mean() for i, s in dups.items()])
    originals = [im["id"] for im in images if im["id"] not in dups]
    random_diff = np.mean([np.abs(pixels(a) - pixels(b)).mean()
                           for a, b in zip(originals[:15], originals[15:30])])
    assert dup_diff < 0.5 * random_diff
    assert all(not np.array_equal(pixels(i), pixels(s)) for i, s in dups.items())


def test_some_images_are_empty(tiny: Path) -> None:
    coco = _load(tiny, "train")
    with_objects = {a["image_id"] for a in coco["annotations"]}
    empty = [im["id"] for im in coco["images"] if im["id"] not in with_objects]
    assert 2 <= len(empty) <= 20  # empty_fraction 0.2 of 40, plus rare all-hidden images
    config = DemoConfig(num_train=5, num_test=0, empty_fraction=1.0)
    assert all(len(im.boxes) == 0 for im in iter_demo_images(config, "train"))


def test_hard_cases_occur() -> None:
    config = DemoConfig(num_train=150, num_test=0)
    images = list(iter_demo_images(config, "train"))
    vis = np.concatenate([im.visibility for im in images])
    low = np.concatenate([im.low_contrast for im in images])
    sides = np.concatenate([np.maximum(im.boxes[:, 2] - im.boxes[:, 0], im.boxes[:, 3] - im.boxes[:, 1]) for im in images])
    assert (vis < 0.9).mean() > 0.05  # occlusion and truncation happen
    assert vis.min() >= 1 - config.max_hidden
    assert 0.07 < low.mean() < 0.25
    assert sides.min() <= 16 and sides.max() >= 48  # small and large objects
    assert max(len(im.boxes) for im in images) <= config.max_objects


def test_existing_dataset_is_reused(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("must not regenerate")

    monkeypatch.setattr(demo_writing, "_write_split", fail)
    info = generate_demo_dataset(tiny, TINY, progress=False)
    assert info["reused"] is True
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = demo_writing.render_demo_image

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_writing, "render_demo_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []

    # A run killed outright leaves its work folder behind; the next run clears it (dead pid).
    monkeypatch.setattr(demo_writing, "render_demo_image", real)
    stale = tmp_path / ".ds.tmp-999999999-abcd"
    (stale / "images").mkdir(parents=True)
    unrelated = tmp_path / ".ds.tmp-notes"
    unrelated.mkdir()
    generate_demo_dataset(tmp_path / "ds", DemoConfig(image_size=32, num_train=2, num_test=1), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp-notes", "ds"]


def test_other_config_replaces_and_foreign_folder_is_refused(tmp_path: Path) -> None:
    small = DemoConfig(image_size=32, num_train=4, num_test=2, min_size=6, max_size=16)
    root = tmp_path / "ds"
    generate_demo_dataset(root, small, progress=False)
    bigger = DemoConfig(**{**small.to_dict(), "num_train": 6})
    info = generate_demo_dataset(root, bigger, progress=False)
    assert info["reused"] is False and info["num_train_images"] == 6
    assert len(list((root / "images" / "train").glob("*.png"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_demo_dataset(foreign, small, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_describe_matches_files(tiny: Path) -> None:
    stats = describe(tiny)
    for split, n in (("train", 40), ("test", 10)):
        s = stats["splits"][split]
        coco = _load(tiny, split)
        assert s["images"] == n and s["objects"] == len(coco["annotations"])
        assert sum(s["class_counts"].values()) == s["objects"]
        assert sum(s["objects_per_image"].values()) == n
        assert sum(int(k) * v for k, v in s["objects_per_image"].items()) == s["objects"]
        assert s["box_size"]["min"] <= s["box_size"]["median"] <= s["box_size"]["max"] <= 64
    assert stats["splits"]["train"]["near_duplicates"] == 10


def test_object_sizes_scale_with_image_size() -> None:
    assert (DemoConfig().min_size, DemoConfig().max_size) == (12, 56)
    assert (DemoConfig(image_size=256).min_size, DemoConfig(image_size=256).max_size) == (24, 112)
    assert DemoConfig(image_size=64, min_size=10).min_size == 10
    assert DemoConfig(image_size=256) == DemoConfig(image_size=256, min_size=24, max_size=112)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_size"):
        DemoConfig(min_size=60, max_size=40)
    with pytest.raises(ValueError, match="empty_fraction"):
        DemoConfig(empty_fraction=1.5)
    with pytest.raises(IndexError):
        render_demo_image(TINY, "test", 10)


def test_demo_data_command_describes_what_it_wrote(tmp_path):
    from click.testing import CliRunner

    from almdn.cli import main

    result = CliRunner().invoke(main, ["demo-data", "--out", str(tmp_path / "d"), "--num-train", "6", "--num-test", "3", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    stats = describe(tmp_path / "d")["splits"]
    lines = result.output.strip().splitlines()
    assert lines[-3].endswith("6 train / 3 test images.")  # after the progress bar
    assert lines[-2].startswith(f"train: {stats['train']['objects']} digits") and lines[-1].startswith(f"test: {stats['test']['objects']} digits")


# --------------------------------------------------------------------------------------------
# The digits kind is unchanged by the kind option; the shapes kind


def _tree_hashes(root: Path) -> tuple[str, str]:
    """sha256 of the images and annotations (paths and bytes, in order), and of demo_config.json."""
    import hashlib

    data = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "demo_config.json":
            data.update(str(p.relative_to(root)).encode())
            data.update(p.read_bytes())
    return data.hexdigest(), hashlib.sha256((root / "demo_config.json").read_bytes()).hexdigest()


# Computed with the generator as it was before the kind option existed (commit 5fdbf1a).
_DIGITS_REFERENCE = [
    (dict(image_size=64, num_train=12, num_test=4, min_size=8, max_size=28, near_duplicate_fraction=0.25,
          empty_fraction=0.2, clutter_fraction=0.5, seed=3),
     "7f05f0a6eb356958d6b674ea9913d87d13f1037e8dbc738e2a2ff81c476d997a",
     "67187e6a315a2069ddd5929d06af279ac83eee1a95222b4296c59cf2cd50597d"),
    (dict(num_train=8, num_test=2, seed=5),
     "df14ed8af564de4ab027d03109f2f07cd4fc79122fd65766e18519ade257debc",
     "ba6bbbeac38801bc3f30b6cda789e8aefb84ff2ac17ed728b2d6ee31a2df1a34"),
]


@pytest.mark.parametrize("fields,data_hash,config_hash", _DIGITS_REFERENCE, ids=["tiny-hard", "defaults"])
def test_digits_are_byte_identical_to_before_the_kind_option(tmp_path: Path, fields, data_hash, config_hash) -> None:
    for config in (DemoConfig(**fields), DemoConfig(**fields, kind="digits")):
        root = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        generate_demo_dataset(root, config, progress=False)
        assert _tree_hashes(root) == (data_hash, config_hash)


def test_kind_resolves_its_own_defaults_and_round_trips() -> None:
    from almdn.data.shapes import SHAPE_NAMES

    digits, shapes = DemoConfig(), DemoConfig(kind="shapes")
    assert (digits.class_imbalance, digits.max_objects, digits.empty_fraction, digits.min_size, digits.max_size) == (1.0, 5, 0.05, 12, 56)
    assert (shapes.class_imbalance, shapes.max_objects, shapes.empty_fraction, shapes.min_size, shapes.max_size) == (1.5, 8, 0.15, 10, 48)
    assert "kind" not in digits.to_dict() and shapes.to_dict()["kind"] == "shapes"
    for config in (digits, shapes, SHAPES, DemoConfig(kind="shapes", max_objects=3, class_imbalance=0.0)):
        assert DemoConfig(**json.loads(json.dumps(config.to_dict()))) == config
    assert demo.class_names("shapes") == SHAPE_NAMES and len(set(SHAPE_NAMES)) == 10
    assert demo.class_names("digits") == demo.CLASS_NAMES
    with pytest.raises(ValueError, match="kind"):
        DemoConfig(kind="letters")


def test_shapes_layout_and_coco_fields(tiny_shapes: Path) -> None:
    from almdn.data.shapes import FILLS, SHAPE_NAMES

    record = json.loads((tiny_shapes / "demo_config.json").read_text())
    assert record["config"] == SHAPES.to_dict() and record["config"]["kind"] == "shapes"
    assert record["classes"] == list(SHAPE_NAMES)
    for split, n in (("train", 30), ("test", 10)):
        coco = _load(tiny_shapes, split)
        assert [c["name"] for c in coco["categories"]] == list(SHAPE_NAMES)
        assert {c["supercategory"] for c in coco["categories"]} == {"shape"}
        assert len(coco["images"]) == n and coco["annotations"]
        for a in coco["annotations"]:
            assert a["fill"] in FILLS and "mnist_index" not in a
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
    assert generate_demo_dataset(tiny_shapes, SHAPES, progress=False)["reused"] is True
    stats = describe(tiny_shapes)
    assert stats["kind"] == "shapes" and stats["splits"]["train"]["near_duplicates"] == 6
    assert set(stats["splits"]["train"]["class_counts"]) == set(SHAPE_NAMES)


def test_shapes_have_the_planted_long_tail_and_counts() -> None:
    config = DemoConfig(kind="shapes", image_size=64, num_train=400, num_test=0, min_size=10, max_size=24,
                        near_duplicate_fraction=0.0, occlusion_fraction=0.0, truncation_fraction=0.0)
    prior = config.class_prior()
    assert prior[0] == prior[1] == prior[2] and prior[:3].sum() == pytest.approx(0.764, abs=1e-3)
    assert np.all(np.diff(prior[2:]) < 0) and prior[0] / prior[9] == pytest.approx(8 ** 1.5)
    images = list(iter_demo_images(config, "train"))
    counts = np.bincount(np.concatenate([im.labels for im in images]), minlength=10)
    assert counts[:3].sum() > 0.7 * counts.sum()  # the head
    assert counts[:3].min() > 0.8 * counts[:3].max()  # flat: unlike the digits' Zipf head
    assert counts[:3].min() > 10 * counts[7:].mean()  # and a long, thin tail
    assert np.corrcoef(counts, prior)[0, 1] > 0.98
    per_image = np.array([len(im.boxes) for im in images])
    assert 0.1 < (per_image == 0).mean() < 0.22 and per_image.max() == 8
    assert 3.4 < per_image[per_image > 0].mean() < 5.0  # 1..8 uniform: 4.5 (digits: 1..5, 3)
    # A balanced variant is possible too.
    flat = DemoConfig(**{**config.to_dict(), "class_imbalance": 0.0, "num_train": 200})
    counts_b = np.bincount(np.concatenate([im.labels for im in iter_demo_images(flat, "train")]), minlength=10)
    assert counts_b.max() < 1.8 * counts_b.min()


def test_shapes_differ_from_digits() -> None:
    digits = DemoConfig(image_size=64, num_train=20, num_test=0, seed=4)
    shapes = DemoConfig(**{**digits.to_dict(), "kind": "shapes"})
    for index in range(20):
        a, b = render_demo_image(digits, "train", index), render_demo_image(shapes, "train", index)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 10
        assert (a.mnist_indices >= 0).all() and (b.mnist_indices == -1).all() and len(b.fills) == len(b.boxes)
    # No background of one kind is a background of the other.
    fingerprint = lambda photo: (photo.size, np.asarray(photo.resize((16, 16))).tobytes())  # noqa: E731
    assert not {fingerprint(p) for p in demo_sources._photos("digits")} & {fingerprint(p) for p in demo_sources._photos("shapes")}
    assert len(demo_sources._photos("shapes")) == 10


def test_shape_fills_and_rotation_limits() -> None:
    from almdn.data.shapes import FILLS, SHAPE_NAMES, draw_shape

    hollow = 0
    for label, name in enumerate(SHAPE_NAMES):
        solid = draw_shape(label, 30, 1.0, 0.0, "solid", np.random.default_rng(1))  # same geometry as the outline
        assert solid.max() == pytest.approx(1.0) and solid[0].max() == 0 and solid[:, -1].max() == 0
        ink = demo_scene._tight(solid)
        assert max(ink.shape) == pytest.approx(30, abs=2)
        outline = draw_shape(label, 30, 1.0, 0.0, "outline", np.random.default_rng(1))
        assert not ((outline >= INK_THRESHOLD) & (solid < INK_THRESHOLD)).any()  # the outline lies on the shape
        hollow += (outline >= INK_THRESHOLD).sum() < 0.9 * (solid >= INK_THRESHOLD).sum()  # thin shapes stay whole
        for fill in FILLS[2:]:  # textured fills: lows stay above the ink threshold
            textured = draw_shape(label, 30, 1.0, 0.0, fill, np.random.default_rng(2))
            inside = draw_shape(label, 30, 1.0, 0.0, "solid", np.random.default_rng(2)) > 0.99
            assert textured[inside].min() > INK_THRESHOLD and textured[inside].min() < 0.6
    assert hollow >= 6
    # The cross turns at most 25 degrees: 90 degrees is drawn as 25.
    cross = SHAPE_NAMES.index("cross")
    turned = [draw_shape(cross, 30, 1.0, a, "solid", np.random.default_rng(3)) for a in (25.0, 90.0)]
    assert np.array_equal(*turned)


def test_shapes_config_file_selects_the_kind(tmp_path: Path) -> None:
    import yaml

    from almdn.experiments.runner import ExperimentConfig, load_datasets

    root = Path(__file__).resolve().parents[1] / "configs"
    shapes_cfg = ExperimentConfig.from_yaml(root / "shapes.yaml")
    demo_cfg = ExperimentConfig.from_yaml(root / "demo.yaml")
    assert shapes_cfg.data["kind"] == "shapes" and shapes_cfg.data["root"] == "data/shapes-al-1000"
    protocol = {k: v for k, v in yaml.safe_load((root / "demo.yaml").read_text()).items() if k not in ("name", "data")}
    assert {k: v for k, v in yaml.safe_load((root / "shapes.yaml").read_text()).items() if k not in ("name", "data")} == protocol
    assert shapes_cfg.data["num_train"] == demo_cfg.data["num_train"]
    small = dataclasses.replace(shapes_cfg, data={**shapes_cfg.data, "root": str(tmp_path / "s"), "num_train": 4, "num_test": 2})
    train, test = load_datasets(small, progress=False)
    assert len(train) == 4 and len(test) == 2
    assert json.loads((tmp_path / "s" / "demo_config.json").read_text())["config"]["kind"] == "shapes"


def test_demo_data_command_makes_shapes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from almdn.cli import main
    from almdn.data.shapes import SHAPE_NAMES

    out = tmp_path / "s"
    result = CliRunner().invoke(main, ["demo-data", "--out", str(out), "--num-train", "6", "--num-test", "3", "--image-size", "64", "--kind", "shapes"])
    assert result.exit_code == 0, result.output
    stats = describe(out)
    assert stats["kind"] == "shapes"
    lines = result.output.strip().splitlines()
    assert "Demo dataset (shapes) in" in lines[-3] and lines[-3].endswith("6 train / 3 test images.")
    assert lines[-2].startswith(f"train: {stats['splits']['train']['objects']} shapes")
    assert [c["name"] for c in _load(out, "train")["categories"]] == list(SHAPE_NAMES)
    assert CliRunner().invoke(main, ["demo-data", "--out", str(tmp_path / "x"), "--kind", "letters"]).exit_code != 0


def test_the_package_keeps_every_public_name() -> None:
    """``almdn.data.demo`` is a package now; every name the single module offered is still there."""
    public = {"CLASS_NAMES", "INK_THRESHOLD", "KINDS", "KIND_DEFAULTS", "DemoConfig", "DemoImage", "class_names",
              "describe", "generate_demo_dataset", "render_demo_image", "split_digit_indices"}
    assert set(demo.__all__) == public
    for name in public | {"GENERATOR_VERSION", "SKIMAGE_PHOTOS"}:
        assert hasattr(demo, name), name
