"""From scratch to a detector that works: a short demo training passes a measured mAP floor.

The floor was measured on the 2-core CI machine (see MEASURED below) and set with a margin for
run-to-run variation; an untrained model scores ~0.
"""

import dataclasses

import pytest
import torch

from almdn.data.coco import CocoDetectionDataset
from almdn.data.demo import DemoConfig, generate_demo_dataset
from almdn.engine.inference import evaluate
from almdn.engine.train import TrainConfig, train
from almdn.models import build_model

ITERATIONS = 300
MEASURED_MAP50 = 0.149  # 2-core CPU, 300 iterations, 90 s (2026-11-24)
FLOOR_MAP50 = 0.10  # about 2/3 of the measurement: margin for run-to-run variation


@pytest.mark.slow
@pytest.mark.parametrize("head", ["gmm"])
def test_short_training_from_scratch_passes_the_map_floor(tmp_path, head):
    # The demo generator with its difficulty knobs off, so 90 s of CPU training shows learning.
    easy = DemoConfig(
        num_train=800, num_test=200, seed=11, class_imbalance=0.0, low_contrast_fraction=0.0,
        occlusion_fraction=0.0, truncation_fraction=0.0, clutter_fraction=0.0, min_size=20,
    )
    info = generate_demo_dataset(tmp_path / "demo", easy, progress=False)
    train_set = CocoDetectionDataset(info["train_annotations"])
    test_set = CocoDetectionDataset(info["test_annotations"], class_names=train_set.classes)
    torch.manual_seed(0)
    model = build_model("ssd_small", len(train_set.classes), head=head, class_names=train_set.classes)
    before = evaluate(model, test_set)["map50"]
    # Without augmentation: SSD's zoom-out (to 4x) and IoU crop make 300 iterations from scratch far
    # too few (mAP@0.5 0.000 with them, 0.122 without, same seed, 2026-11-25); the augmented
    # default is measured on the demo detector (bench/demo_detector.py).
    config = dataclasses.replace(TrainConfig.demo(ITERATIONS), checkpoint_every=10_000, augment="none")
    result = train(model, train_set, config, progress=False)
    assert result.skipped_steps == 0
    after = evaluate(model, test_set)
    print(f"mAP@0.5 {before:.3f} -> {after['map50']:.3f}, mAP@0.75 {after['map75']:.3f} in {result.seconds:.0f} s")
    assert after["map50"] >= FLOOR_MAP50
    assert after["map50"] > before + 0.05
