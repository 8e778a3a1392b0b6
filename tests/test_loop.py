"""The experiment runner: the protocol's invariants, shared cycle-0 models, resuming."""

import json

import pandas as pd
import pytest

from almdn.experiments.runner import Experiment, ExperimentConfig, initial_labeled_set, read_records


def _config(tiny_demo, **overrides):
    settings = dict(
        name="t",
        data={"format": "coco", "train": str(tiny_demo["train_annotations"]), "test": str(tiny_demo["test_annotations"])},
        model={"arch": "ssd_small", "num_components": 2},
        train={"preset": "demo", "iterations": 2, "batch_size": 4, "checkpoint_every": 1},
        initial=10,
        budget=5,
        cycles=3,
        seeds=[0],
        methods=["almdn", "random"],
        conf_threshold=0.0,
        batch_size=16,
    )
    settings.update(overrides)
    return ExperimentConfig(**settings)


def test_initial_set_is_seeded_and_the_same_for_every_method():
    ids = list(range(100, 160))
    assert initial_labeled_set(ids, 10, 0) == initial_labeled_set(ids, 10, 0)
    assert initial_labeled_set(ids, 10, 0) != initial_labeled_set(ids, 10, 1)
    with pytest.raises(ValueError, match="larger than the pool"):
        initial_labeled_set(ids, 61, 0)


def test_protocol_invariants_shared_models_and_resume(tiny_demo, tmp_path):
    logs = []
    exp = Experiment(_config(tiny_demo), tmp_path / "exp", progress=False, log=logs.append)
    exp.run()
    records = read_records(tmp_path / "exp")
    all_ids = set(exp.all_ids)
    assert len(records) == 6
    for method in ("almdn", "random"):
        rows = records[records["method"] == method].sort_values("cycle").to_dict("records")
        assert [r["num_labeled"] for r in rows] == [10, 15, 20]
        for before, after in zip(rows, rows[1:]):
            selected = set(before["selected_ids"])
            assert len(selected) == 5 and not selected & set(before["labeled_ids"])  # never relabels
            assert set(after["labeled_ids"]) == set(before["labeled_ids"]) | selected
            assert set(after["labeled_ids"]) <= all_ids  # labeled + pool stays the dataset
        last = json.loads((tmp_path / f"exp/runs/{method}/seed-0/cycle-2.json").read_text())
        assert "selected_ids" not in last  # the last cycle only trains and evaluates
    first = records[records["cycle"] == 0].set_index("method")
    assert first.loc["almdn", "model_keys"] == first.loc["random", "model_keys"]  # one cycle-0 model
    assert first.loc["almdn", "map50"] == first.loc["random", "map50"]
    assert sum("training" in line for line in logs) == 5  # 1 shared + 2 per method
    assert (tmp_path / "exp/runs/almdn/seed-0/cycle-0.scores.csv").exists()

    # Resuming does nothing that is done; a lost record is recomputed from the cached model.
    logs.clear()
    Experiment(_config(tiny_demo), tmp_path / "exp", progress=False, log=logs.append).run()
    assert logs == []
    lost = tmp_path / "exp/runs/random/seed-0/cycle-2.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    Experiment(_config(tiny_demo), tmp_path / "exp", progress=False, log=logs.append).run()
    assert not any("training" in line for line in logs) and any("cycle 3/3" in line for line in logs)
    assert json.loads(lost.read_text())["labeled_ids"] == before["labeled_ids"]

    # More methods or seeds may join the folder; another protocol may not.
    Experiment(_config(tiny_demo, methods=["entropy"], seeds=[0]), tmp_path / "exp", progress=False, log=logs.append)
    with pytest.raises(ValueError, match="different budget"):
        Experiment(_config(tiny_demo, budget=7), tmp_path / "exp", progress=False, log=logs.append)


def test_a_budget_larger_than_the_pool_takes_what_is_left_and_says_so(tiny_demo, tmp_path):
    logs = []
    n = 60  # tiny_demo's train images
    config = _config(tiny_demo, initial=n - 3, budget=10, cycles=2, methods=["almdn"])
    Experiment(config, tmp_path / "exp", progress=False, log=logs.append).run()
    record = json.loads((tmp_path / "exp/runs/almdn/seed-0/cycle-0.json").read_text())
    assert len(record["selected_ids"]) == 3
    assert any("Only 3 unlabeled images are left" in line for line in logs)
    assert json.loads((tmp_path / "exp/runs/almdn/seed-0/cycle-1.json").read_text())["num_labeled"] == n


def test_config_files_are_read_and_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninitial: 5\nbudget: 2\ntrain: {preset: demo, iterations: 50, lr: 0.02}\n")
    config = ExperimentConfig.from_yaml(path)
    tc = config.train_config(seed=3)
    assert (config.initial, tc.iterations, tc.lr, tc.seed) == (5, 50, 0.02, 3)
    path.write_text("name: x\nbudgte: 2\n")
    with pytest.raises(ValueError, match="budgte"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize("name", ["demo", "voc07", "coco", "smoke"])
def test_shipped_configs_load(name):
    from pathlib import Path

    config = ExperimentConfig.from_yaml(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert config.initial > 0 and config.budget > 0 and len(config.seeds) >= 2
    assert config.train_config(0).iterations > 0


def test_transfer_trains_another_model_on_each_acquired_set(tiny_demo, tmp_path):
    from almdn.experiments.report import write_report

    config = _config(tiny_demo, cycles=2, methods=["almdn"], transfer=["ssd_small"], transfer_head="eff")
    exp = Experiment(config, tmp_path / "exp", progress=False, log=lambda line: None)
    exp.run()
    exp.run_transfer("ssd_small")
    transfer = read_records(tmp_path / "exp", ".transfer-ssd_small")
    main_records = read_records(tmp_path / "exp").set_index("cycle")
    assert sorted(transfer["cycle"]) == [0, 1]
    assert transfer.set_index("cycle")["num_labeled"].to_dict() == main_records["num_labeled"].to_dict()
    # a different model (eff head) than the acquiring one
    specs = [json.loads(p.read_text()) for p in (tmp_path / "exp/models").glob("*/spec.json")]
    assert {s["build"]["head"] for s in specs} == {"gmm", "eff"}
    assert "Transfer: ssd_small" in write_report(tmp_path / "exp")["md"].read_text()


@pytest.mark.slow
def test_the_runner_works_with_faster_rcnn_unchanged(tiny_demo, tmp_path):
    config = _config(
        tiny_demo, initial=6, budget=3, cycles=2, methods=["almdn", "entropy"],
        model={"arch": "frcnn_mobilenet_v2", "num_components": 2, "image_size": 128, "pretrained": False},
        train={"preset": "demo", "iterations": 2, "batch_size": 2},
    )
    Experiment(config, tmp_path / "exp", progress=False, log=lambda line: None).run()
    records = read_records(tmp_path / "exp").set_index(["method", "cycle"])
    assert records.loc[("almdn", 1), "num_labeled"] == 9
    assert len(records.loc[("entropy", 0), "selected_ids"]) == 3
    scores = pd.read_csv(tmp_path / "exp/runs/almdn/seed-0/cycle-0.scores.csv")
    assert {"z_loc_aleatoric", "z_cls_epistemic"} <= set(scores.columns) and len(scores) == 60 - 6


def test_ensemble_members_are_trained_only_where_they_score(tiny_demo, tmp_path):
    logs = []
    config = _config(tiny_demo, cycles=2, methods=["almdn", "ensemble"], ensemble_size=2)
    Experiment(config, tmp_path / "exp", progress=False, log=logs.append).run()
    records = read_records(tmp_path / "exp").set_index(["method", "cycle"])
    # cycle 0: the shared model (member 0) + member 1; cycle 1: almdn's and the ensemble's first members
    assert sum("training" in line for line in logs) == 4
    assert len(records.loc[("ensemble", 0), "model_keys"]) == 2 and len(records.loc[("ensemble", 1), "model_keys"]) == 1
    assert records.loc[("ensemble", 0), "model_keys"][0] == records.loc[("almdn", 0), "model_keys"][0]
    assert records.loc[("ensemble", 1), "parameters"] == 2 * records.loc[("almdn", 1), "parameters"]


def _voc_folder(root, tiny_demo):
    """A small Pascal VOC folder made from the tiny demo images (VOC07 layout)."""
    import shutil

    from almdn.data.coco import CocoDetectionDataset

    data = CocoDetectionDataset(tiny_demo["train_annotations"])
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(8):
        name = f"{i:06d}"
        names.append(name)
        shutil.copy(data.file_paths[i], root / "JPEGImages" / f"{name}.png")
        target = data.target(i)
        objects = "".join(
            f"<object><name>{data.classes[int(label) - 1]}</name><difficult>{int(j == 0 and i == 0)}</difficult>"
            f"<bndbox><xmin>{b[0] + 1:.0f}</xmin><ymin>{b[1] + 1:.0f}</ymin><xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax></bndbox></object>"
            for j, (b, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist()))
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><size><width>128</width><height>128</height><depth>3</depth></size>{objects}</annotation>"
        )
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(names[:6]) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(names[6:]) + "\n")
    return data


def test_voc_folders_are_read_once_into_coco(tiny_demo, tmp_path):
    from almdn.experiments.runner import load_datasets

    source = _voc_folder(tmp_path / "VOC2007", tiny_demo)
    config = ExperimentConfig(data={"format": "voc", "root": str(tmp_path / "VOC2007"), "train_split": "trainval", "test_split": "test"})
    train_set, test_set = load_datasets(config, progress=False, cache_dir=tmp_path / "out")
    assert (len(train_set), len(test_set)) == (6, 2)
    assert (tmp_path / "out/data/train.json").exists()
    boxes = sum(len(train_set.target(i)["boxes"]) for i in range(6))
    assert boxes == sum(len(source.target(i)["boxes"]) for i in range(6)) - 1  # one marked difficult
    image, target = train_set[1]
    assert image.shape[1:] == (128, 128)
    assert set(train_set.classes) >= {source.classes[int(label) - 1] for label in source.target(1)["labels"].tolist()}


@pytest.mark.slow
def test_model_init_starts_from_a_torchvision_detector_file(tiny_demo, tmp_path):
    import torch
    from torchvision.models.detection import ssd300_vgg16

    weights = tmp_path / "ssd300.pth"
    torch.save(ssd300_vgg16(weights=None, weights_backbone=None).state_dict(), weights)
    config = _config(tiny_demo, cycles=1, methods=["random"], model={"arch": "ssd300_vgg16", "num_components": 2, "init": str(weights)},
                     train={"preset": "demo", "iterations": 1, "batch_size": 2})
    lines = []
    Experiment(config, tmp_path / "exp", progress=False, log=lines.append).run()
    assert any(f"Started from {weights}: classes mapped to COCO categories: none" in line for line in lines)
    (spec,) = [json.loads(p.read_text()) for p in (tmp_path / "exp/models").glob("*/spec.json")]
    assert spec["build"]["init"] == str(weights)
    from almdn.engine.checkpoint import read_checkpoint

    (model_file,) = (tmp_path / "exp/models").glob("*/model.pt")
    assert read_checkpoint(model_file)["model_config"]["hidden_channels"] == 0  # the one-conv head the predictor maps into


def test_second_stage_methods_run_in_the_protocol_and_say_why(tiny_demo, tmp_path):
    """Issue 19: the two-stage methods share the almdn model, pick distinct unlabeled images and
    record why each was chosen; the PPAL-style stage reads detection features."""
    methods = ["almdn", "almdn+kcenter_balanced", "almdn+kmedoids", "almdn+power", "typiclust"]
    exp = Experiment(_config(tiny_demo, methods=methods, cycles=2), tmp_path / "exp", progress=False, log=lambda s: None)
    exp.run()
    records = read_records(tmp_path / "exp").set_index(["method", "cycle"])
    for method in methods:
        first = records.loc[(method, 0)]
        assert first["model_keys"] == records.loc[("almdn", 0), "model_keys"]  # one shared cycle-0 model
        selected, reasons = first["selected_ids"], first.get("selected_reasons")
        assert len(set(selected)) == 5 and not set(selected) & set(first["labeled_ids"])
        if method != "almdn":
            assert len(reasons) == 5 and all(isinstance(r, str) and r for r in reasons)
    assert any("covers a region" in r or "no detection" in r for r in records.loc[("almdn+kcenter_balanced", 0), "selected_reasons"])
    assert all("typical" in r for r in records.loc[("typiclust", 0), "selected_reasons"])


def test_a_score_weighted_first_stage_balances_by_the_faint_detections_it_read(tiny_demo, tmp_path):
    """The class-balance stage reads the detections its stage-1 score read: for entropy_weighted,
    every detection down to the low threshold, so the images without a sure detection (here
    all of them: nothing reaches 0.99) still carry the classes they may hold."""
    config = _config(tiny_demo, methods=["entropy_weighted+balance", "entropy+balance"], cycles=2, conf_threshold=0.99, low_threshold=0.0)
    Experiment(config, tmp_path / "exp", progress=False, log=lambda s: None).run()
    records = read_records(tmp_path / "exp").set_index(["method", "cycle"])
    weighted = records.loc[("entropy_weighted+balance", 0), "selected_reasons"]
    thresholded = records.loc[("entropy+balance", 0), "selected_reasons"]
    assert len(weighted) == 5 and any("adds class" in r for r in weighted)
    assert all("adds class" not in r for r in thresholded)  # no kept detection: no class mass
