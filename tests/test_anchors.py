"""Anchor coverage of the training boxes, the small-object warning and anchor fitting
(almdn.models.anchors), and the anchor options' way through build_model, the checkpoint, the
training run and the CLI."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from almdn.data.coco import CocoDetectionDataset
from almdn.engine.checkpoint import load_model, read_checkpoint, save_checkpoint
from almdn.models import build_model
from almdn.models.anchors import (
    AnchorCoverageWarning,
    BoxSet,
    anchor_coverage,
    apply_fitted_anchors,
    best_anchor_iou,
    check_anchor_coverage,
    feature_shapes,
    fit_anchors,
    grid_anchors,
    parse_anchor_ratios,
    parse_anchor_scales,
    training_boxes,
)
from almdn.models.anchors.fitting import _grid_best_iou


def planted_small_boxes(path, num_images=40, per_image=12, side=300, sizes=(14.0, 40.0), seed=0):
    """A COCO file like the aerial-tree dataset of issue 12: 300 px photos, one class, many
    small boxes (14-40 px, near square). No image files: coverage never decodes an image."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": side, "height": side})
        for _ in range(per_image):
            s = rng.uniform(*sizes)
            a = float(np.exp(rng.normal(0.0, 0.15)))
            w, h = s * np.sqrt(a), s / np.sqrt(a)
            x, y = rng.uniform(0, side - w), rng.uniform(0, side - h)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "tree"}]}))
    return CocoDetectionDataset(path)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return planted_small_boxes(tmp_path_factory.mktemp("trees") / "train.json")


# ------------------------------------------------------------------ the planted dataset

def test_coverage_warning_fires_on_small_boxes_and_fitted_anchors_raise_coverage(trees):
    model = build_model("ssd_mobilenet_v2", num_classes=1, pretrained=False)
    with pytest.warns(AnchorCoverageWarning) as caught:
        coverage = check_anchor_coverage(model, trees)
    # 480 boxes of 14-40 px in 300 px photos; at 320 px the smallest anchor side is 37 px.
    assert coverage.num_boxes == 480 and coverage.input_size == (320, 320)
    assert coverage.fraction == 0.0 and 0.15 < coverage.median_iou < 0.25
    assert coverage.smallest_anchor == pytest.approx(64 / 3 ** 0.5, abs=0.01)  # scale 0.2 x 320 at ratio 3
    message = str(caught[0].message)
    assert "Only 0% of 480 boxes have an anchor with IoU >= 0.5 (median best IoU 0.20)" in message
    assert "--fit-anchors" in message and "--anchor-scales" in message and "--image-size" in message

    fit = fit_anchors(model, trees)
    assert fit.improved and fit.before.fraction == 0.0
    assert fit.after.fraction > 0.7 and fit.after.median_iou > 0.55  # measured: 74%, 0.57
    assert fit.anchor_scales == sorted(fit.anchor_scales) and len(fit.anchor_scales) == 7
    assert [len(r) for r in fit.anchor_ratios] == [2] * 6  # the head keeps its shape
    # The fitted options build a model with exactly that coverage, and no warning any more.
    fitted = build_model("ssd_mobilenet_v2", num_classes=1, pretrained=False, **fit.build_options())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnchorCoverageWarning)
        assert check_anchor_coverage(fitted, trees).fraction == pytest.approx(fit.after.fraction)
    assert "coverage 0% -> 74%" in fit.summary()

    # A finer grid (640 px) lets the fit cover every box; the default anchors stay at 0%.
    large = build_model("ssd_mobilenet_v2", num_classes=1, pretrained=False, image_size=640)
    fit_large = fit_anchors(large, trees)
    assert fit_large.before.fraction == 0.0 and fit_large.after.fraction > 0.95


def test_fit_keeps_the_models_anchors_when_they_already_cover_the_boxes(tmp_path):
    big = planted_small_boxes(tmp_path / "big.json", num_images=10, per_image=4, side=128, sizes=(40.0, 60.0))
    model = build_model("ssd_small", num_classes=1, pretrained=False)
    before = anchor_coverage(model, big)
    fit = fit_anchors(model, big, generations=50)
    assert fit.after.fraction >= before.fraction
    if not fit.improved:
        assert fit.build_options() == {} and fit.anchor_scales == list(model.anchor_generator.scales)


# ------------------------------------------------------------------ the measurement

def test_boxes_are_resized_like_the_model_input_and_iou_is_exact(trees):
    model = build_model("ssd_small", num_classes=1, pretrained=False)  # 128 px, fixed square resize
    boxes = training_boxes(trees)
    assert len(boxes) == 480 and torch.all(boxes.image_hw == 300)
    one = BoxSet(torch.tensor([[0.0, 0.0, 150.0, 300.0]]), torch.tensor([[300.0, 600.0]]))  # (h, w) = 300 x 600
    cov = anchor_coverage(model, one)
    assert cov.median_box == pytest.approx((32 * 128) ** 0.5)  # 150/600 x 128 = 32 wide, 300/300 x 128 = 128 high
    # The nearest-centre shortcut the fit uses equals box_iou against every anchor.
    for arch in ("ssd_small", "ssd300_vgg16"):
        m = build_model(arch, num_classes=1, pretrained=False)
        h, w = m.size
        shapes = feature_shapes(m, (h, w))
        scaled = boxes.boxes * torch.tensor([w / 300, h / 300, w / 300, h / 300])
        full = best_anchor_iou(scaled, grid_anchors(m.anchor_generator, shapes, (h, w)))
        assert torch.allclose(_grid_best_iou(scaled, m.anchor_generator, shapes, (h, w)), full, atol=1e-5)


def test_the_check_leaves_the_model_and_the_random_stream_as_they_were(trees):
    model = build_model("ssd_small", num_classes=1, pretrained=False).train()
    model.backbone.trunk.stages[0].eval()  # a part deliberately kept in eval mode
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.warns(AnchorCoverageWarning):
        check_anchor_coverage(model, trees, min_coverage=1.0)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BatchNorm statistics untouched
    assert torch.equal(torch.get_rng_state(), rng)


def test_faster_rcnn_coverage_follows_its_resize_and_pixel_anchors(trees):
    model = build_model("frcnn_mobilenet_v2", num_classes=1, pretrained=False)  # shorter side 320, anchors 32..256 px
    cov = anchor_coverage(model, trees)
    assert cov.family == "frcnn" and cov.input_size == (320, 320) and cov.smallest_anchor == pytest.approx(22.0, abs=0.5)
    # Anchor sizes are in pixels, so a larger input (or smaller --anchor-scales) covers more.
    larger = anchor_coverage(build_model("frcnn_mobilenet_v2", num_classes=1, pretrained=False, image_size=640), trees)
    smaller = build_model("frcnn_mobilenet_v2", num_classes=1, pretrained=False, anchor_scales=[0.05, 0.1, 0.2, 0.4])
    assert smaller.config["anchor_sizes"] == ((16,), (32,), (64,), (128,))
    assert larger.fraction > cov.fraction and anchor_coverage(smaller, trees).fraction > cov.fraction
    with pytest.raises(ValueError, match="SSD"):
        fit_anchors(model, trees)


# ------------------------------------------------------------------ options, checkpoints, defaults

def _anchors(model):
    h, w = model.size
    return grid_anchors(model.anchor_generator, feature_shapes(model, (h, w)), (h, w))


def test_unset_options_keep_every_default_model_exactly():
    from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    expected = {
        "ssd_small": DefaultBoxGenerator([[2], [2], [2]], scales=[0.08, 0.18, 0.38, 0.7]),
        "ssd_mobilenet_v2": DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95),
        "ssd_mobilenet_v2_small": DefaultBoxGenerator([[2]] * 4, scales=[0.1, 0.2, 0.4, 0.65, 0.9]),
        "ssd300_vgg16": ssd300_vgg16(weights=None, weights_backbone=None).anchor_generator,
        "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).anchor_generator,
    }
    for arch, generator in expected.items():
        model = build_model(arch, num_classes=2, pretrained=False)
        assert "anchor_scales" not in model.config and "anchor_ratios" not in model.config
        h, w = model.size
        shapes = feature_shapes(model, (h, w))
        assert torch.equal(_anchors(model), grid_anchors(generator, shapes, (h, w))), arch
        # Passing the architecture's own values explicitly builds the same anchors too.
        same = build_model(arch, num_classes=2, pretrained=False, anchor_scales=list(generator.scales), anchor_ratios=generator.aspect_ratios)
        assert torch.equal(_anchors(same), _anchors(model)), arch


def test_options_round_trip_through_the_checkpoint(tmp_path):
    model = build_model("ssd_small", num_classes=3, pretrained=False, image_size=192, anchor_scales=[0.04, 0.1, 0.3, 0.6], anchor_ratios=[[1.5], [2], [3]])
    assert model.size == (192, 192) and model.anchor_generator.scales == [0.04, 0.1, 0.3, 0.6]
    save_checkpoint(tmp_path / "model.pt", model)
    config = read_checkpoint(tmp_path / "model.pt")["model_config"]
    assert config["image_size"] == 192 and config["anchor_scales"] == [0.04, 0.1, 0.3, 0.6] and config["anchor_ratios"] == [[1.5], [2.0], [3.0]]
    loaded = load_model(tmp_path / "model.pt")
    assert torch.equal(_anchors(loaded), _anchors(model))
    assert not torch.equal(_anchors(loaded), _anchors(build_model("ssd_small", num_classes=3, pretrained=False, image_size=192)))

    # Fitted anchors given to a built model in place round-trip the same way.
    boxes = BoxSet(torch.tensor([[10.0, 10.0, 16.0, 18.0], [50.0, 60.0, 58.0, 66.0]] * 20), torch.full((40, 2), 128.0))
    base = build_model("ssd_small", num_classes=3, pretrained=False)
    fit = fit_anchors(base, boxes, generations=100)
    assert fit.improved
    apply_fitted_anchors(base, fit)
    save_checkpoint(tmp_path / "fitted.pt", base)
    assert torch.equal(_anchors(load_model(tmp_path / "fitted.pt")), _anchors(base))
    assert anchor_coverage(load_model(tmp_path / "fitted.pt"), boxes).fraction == pytest.approx(fit.after.fraction)

    frcnn = build_model("frcnn_mobilenet_v2", num_classes=1, pretrained=False, anchor_scales=[0.05, 0.1, 0.2, 0.4], anchor_ratios=[2, 3])
    save_checkpoint(tmp_path / "frcnn.pt", frcnn)
    again = load_model(tmp_path / "frcnn.pt").rpn.anchor_generator
    assert again.sizes == ((16,), (32,), (64,), (128,)) and again.aspect_ratios[0] == pytest.approx((1 / 3, 0.5, 1.0, 2.0, 3.0))


def test_option_parsing_and_one_sentence_errors():
    assert parse_anchor_scales("0.05, 0.1,0.2") == [0.05, 0.1, 0.2] and parse_anchor_scales(None) is None
    assert parse_anchor_ratios("2,3") == [2.0, 3.0] and parse_anchor_ratios("2;2,3;2") == [[2.0], [2.0, 3.0], [2.0]]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_anchor_scales("small")
    with pytest.raises(ValueError, match="ssd_small has 3 feature levels: give 4 anchor scales"):
        build_model("ssd_small", num_classes=1, pretrained=False, anchor_scales=[0.1, 0.2, 0.4])
    with pytest.raises(ValueError, match="increasing"):
        build_model("ssd_small", num_classes=1, pretrained=False, anchor_scales=[0.4, 0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="one per level"):
        build_model("ssd_small", num_classes=1, pretrained=False, anchor_ratios=[[2], [2]])


# ------------------------------------------------------------------ training runs

@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    """Demo images whose digits are 4-8 px in 128 px images: a real small-object dataset."""
    from almdn.data.demo import DemoConfig, generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("tiny_digits") / "d", DemoConfig(num_train=8, num_test=4, seed=5, min_size=4, max_size=8), progress=False)


def test_training_run_warns_and_the_cli_fits_and_stores_the_anchors(tiny_digits, tmp_path):
    from almdn.cli import main
    from almdn.engine.train import TrainConfig, train

    root = tiny_digits["root"]
    dataset = CocoDetectionDataset(tiny_digits["train_annotations"])
    model = build_model("ssd_small", num_classes=dataset.num_classes, pretrained=False)
    with pytest.warns(AnchorCoverageWarning, match="--fit-anchors"):
        train(model, dataset, dataclasses.replace(TrainConfig.demo(1), batch_size=2), progress=False)

    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(run), "--iterations", "1", "--batch-size", "2", "--fit-anchors", "--image-size", "256"])
    assert result.exit_code == 0, result.output
    assert "Anchors fitted to" in result.output and "coverage" in result.output
    assert "train with --fit-anchors" not in result.output  # fitted already: only the input size is left to advise
    config = read_checkpoint(run / "model.pt")["model_config"]
    assert config["image_size"] == 256 and len(config["anchor_scales"]) == 4 and len(config["anchor_ratios"]) == 3

    run2 = tmp_path / "run2"
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(run2), "--iterations", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "Warning: Only" in result.output and "--fit-anchors" in result.output and "Traceback" not in result.output

    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(tmp_path / "run3"), "--anchor-scales", "0.1,0.2"])
    assert result.exit_code != 0 and "give 4 anchor scales" in result.output and "Traceback" not in result.output
