"""The almdn command line end to end on a tiny dataset, and its one-sentence errors."""

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from almdn.cli import main


def test_demo_data_train_evaluate_score(tiny_demo, tmp_path):
    runner = CliRunner()
    root = tiny_demo["root"]
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(run), "--iterations", "3", "--batch-size", "4", "--cls-loss", "eq5", "--no-hflip"])
    assert result.exit_code == 0, result.output
    from almdn.engine.checkpoint import read_checkpoint

    saved = read_checkpoint(run / "model.pt")
    assert saved["model_config"]["cls_loss"] == "eq5" and saved["train_config"]["hflip"] is False
    assert "mAP@0.5" in result.output and (run / "model.pt").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and "map50" in metrics

    assert metrics["mixture_collapse"]["num_components"] == 4 and "auroc_fp" in metrics["uncertainty_quality"]

    report = tmp_path / "eval.json"
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(root), "--conf-threshold", "0.01", "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "VOC07 mAP@0.5" in result.output and "AP@0.5" in result.output
    assert "Class mixture:" in result.output and "AUROC for false vs true positives:" in result.output
    written = json.loads(report.read_text())
    assert written["mixture_collapse"]["conf_threshold"] == 0.01
    assert written["uncertainty_quality"]["num_kept"] == written["mixture_collapse"]["num_detections"] > 0
    assert set(written["uncertainty_quality"]["auroc_fp"]) == {"cls_aleatoric", "cls_epistemic", "cls_entropy", "one_minus_score"}

    # A COCO json away from its images: --image-root says where they are.
    elsewhere = tmp_path / "elsewhere" / "test.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text((Path(root) / "annotations" / "test.json").read_text())
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(elsewhere), "--image-root", str(Path(root) / "images")])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["map50"] == pytest.approx(float(result.output.split("mAP@0.5 ")[1].split()[0]), abs=1e-3)

    out = tmp_path / "scores"
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(root), "--out", str(out), "--conf-threshold", "0.05"])
    assert result.exit_code == 0, result.output
    images = pd.read_csv(out / "images.csv")
    assert len(images) == 60 and images["rank"].tolist() == list(range(1, 61))
    for col in ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic", "z_loc_aleatoric", "score", "file_name"):
        assert col in images.columns
    scored = images["score"].dropna()
    assert scored.is_monotonic_decreasing
    detections = pd.read_csv(out / "detections.csv")
    assert (detections["score"] >= 0.05).all()
    payload = json.loads((out / "detections.json").read_text())
    assert len(payload["images"]) == 60 and payload["unreadable"] == []
    assert f"Scoring the 'train' split of {root}" in result.output and "--split" in result.output
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(root), "--split", "test", "--out", str(out / "test"), "--conf-threshold", "0.05"])
    assert result.exit_code == 0, result.output
    assert f"Scoring the 'test' split of {root}" in result.output and len(pd.read_csv(out / "test" / "images.csv")) == 20

    # Another aggregation of Tab. 2: the ranking follows that single z-scored uncertainty.
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(root), "--out", str(out / "alc"), "--conf-threshold", "0.05", "--aggregation", "alc"])
    assert result.exit_code == 0, result.output
    alc = pd.read_csv(out / "alc" / "images.csv")
    assert alc["score"].dropna().tolist() == alc["z_cls_aleatoric"].dropna().tolist()
    assert alc["score"].dropna().is_monotonic_decreasing
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(root), "--out", str(out / "x"), "--aggregation", "mean_all"])
    assert result.exit_code != 0 and "Unknown aggregation 'mean_all'" in result.output


@pytest.mark.parametrize("arch", ["ssd_small", "frcnn_mobilenet_v2"])
def test_score_writes_each_detection_s_mixture_to_detections_json(tiny_demo, tmp_path, arch):
    """detections.json carries the mixture of every detection: component boxes, weights, sigmas
    and variances, class weights and probabilities, as the model returns them (Eq. 2, Eq. 7)."""
    import numpy as np
    import torch

    from almdn.engine.checkpoint import save_checkpoint
    from almdn.models import build_model

    root = Path(tiny_demo["root"])
    classes = [c["name"] for c in json.loads((root / "annotations" / "test.json").read_text())["categories"]]
    torch.manual_seed(0)
    k = 3
    extra = {"pretrained": False, "image_size": 128} if arch.startswith("frcnn") else {}
    model = build_model(arch, len(classes), num_components=k, class_names=classes, **extra).eval()
    checkpoint = save_checkpoint(tmp_path / "model.pt", model)
    out = tmp_path / "scores"
    result = CliRunner().invoke(main, ["score", "--checkpoint", str(checkpoint), "--images", str(root), "--split", "test",
                                       "--out", str(out), "--conf-threshold", "0.05", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "component_boxes" not in pd.read_csv(out / "detections.csv").columns  # the CSV keeps its columns
    payload = json.loads((out / "detections.json").read_text())
    image = next(i for i in payload["images"] if i["detections"])
    path = root / "images" / image["file_name"]
    from almdn.data.coco import read_image

    pixels = torch.from_numpy(np.ascontiguousarray(read_image(path).transpose(2, 0, 1))).float().div_(255.0)
    with torch.no_grad():
        expected = model([pixels])[0]
    for d in image["detections"]:
        i = d["detection"]
        assert d["score"] == pytest.approx(float(expected["scores"][i]), rel=1e-5)
        assert np.array(d["component_boxes"]) == pytest.approx(expected["component_boxes"][i].numpy(), rel=1e-4, abs=1e-3)
        assert np.array(d["component_sigmas"]) == pytest.approx(expected["component_sigmas"][i].numpy(), rel=1e-4, abs=1e-5)
        assert np.array(d["component_variances"]) == pytest.approx(expected["component_variances"][i].numpy(), rel=1e-4)
        assert np.array(d["component_edge_weights"]) == pytest.approx(expected["component_weights"][i].numpy(), rel=1e-4)
        assert np.array(d["component_weights"]).shape == (k,) and sum(d["component_weights"]) == pytest.approx(1.0, abs=1e-5)
        assert sum(d["class_weights"]) == pytest.approx(1.0, abs=1e-5)
        assert np.array(d["class_probs"]).shape == (k, len(classes) + 1)
        assert d["mixture_probs"][d["label"]] == pytest.approx(d["score"], rel=1e-5)  # Eq. 7: the score is the mixture's

def test_score_lists_and_skips_broken_files_in_a_folder_and_a_dataset_alike(tiny_demo, tmp_path):
    import shutil

    from tests.test_records import truncated_jpeg

    runner = CliRunner()
    run = tmp_path / "run"
    assert runner.invoke(main, ["train", "--data", str(tiny_demo["root"]), "--out", str(run), "--iterations", "1", "--batch-size", "2"]).exit_code == 0
    folder = tmp_path / "pool"
    folder.mkdir()
    src = sorted((Path(tiny_demo["root"]) / "images" / "train").glob("*.png"))[:3]
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "zz_broken.png").write_bytes(b"\x89PNG truncated")
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(folder), "--out", str(tmp_path / "s")])
    assert result.exit_code == 3, result.output  # scored, but not everything
    assert "Skipped unreadable image: zz_broken.png" in result.output
    assert "1 unreadable images were skipped (listed above); the others were scored." in result.output
    assert len(pd.read_csv(tmp_path / "s" / "images.csv")) == 3
    # A COCO dataset folder with a truncated image: the same listing, not a stop at the first bad file.
    data = tmp_path / "data"
    shutil.copytree(tiny_demo["root"], data)
    coco = json.loads((data / "annotations" / "train.json").read_text())
    victim = data / "images" / coco["images"][1]["file_name"]
    truncated_jpeg(victim, size=(coco["images"][1]["width"], coco["images"][1]["height"]))
    result = runner.invoke(main, ["score", "--checkpoint", str(run / "model.pt"), "--images", str(data), "--out", str(tmp_path / "d")])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert f"Skipped unreadable image: {coco['images'][1]['file_name']}" in result.output
    assert len(pd.read_csv(tmp_path / "d" / "images.csv")) == len(coco["images"]) - 1
    assert json.loads((tmp_path / "d" / "detections.json").read_text())["unreadable"] == [coco["images"][1]["file_name"]]


def test_score_refuses_a_crafted_checkpoint_and_runs_nothing(tmp_path):
    from tests.test_checkpoint import crafted_checkpoint

    marker = tmp_path / "created-by-the-checkpoint"
    (tmp_path / "pool").mkdir()
    result = CliRunner().invoke(main, ["score", "--checkpoint", str(crafted_checkpoint(tmp_path / "evil.pt", marker)), "--images", str(tmp_path / "pool"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"Error: Checkpoint '{tmp_path / 'evil.pt'}' holds Python objects other than weights and plain values, which could run code when opened; almdn refuses to load it: use a model.pt written by almdn train."]
    assert not marker.exists() and not (tmp_path / "s").exists()


def test_user_errors_are_one_sentence_without_traceback(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "No checkpoint at" in result.output
    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "No 'train' annotations found" in result.output


def test_experiment_runs_resumes_and_reports(tiny_demo, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "name: cli\n"
        f"data: {{format: coco, train: '{tiny_demo['train_annotations']}', test: '{tiny_demo['test_annotations']}'}}\n"
        "model: {arch: ssd_small, num_components: 2}\n"
        "train: {preset: demo, iterations: 2, batch_size: 4}\n"
        "initial: 10\nbudget: 5\ncycles: 2\nseeds: [0, 1]\nmethods: [almdn, random]\nconf_threshold: 0.0\n"
    )
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["experiment", "--config", str(config), "--out", str(out), "--seeds", "0"])
    assert result.exit_code == 0, result.output
    assert "## mAP@0.5 (Tab. 4 layout)" in result.output and "| almdn |" in result.output
    assert {p.name for p in out.iterdir()} >= {"results.csv", "results.md", "results.html", "config.json", "runs", "models"}
    assert len(pd.read_csv(out / "results.csv")) == 4  # 2 methods x 1 seed x 2 cycles
    result = runner.invoke(main, ["experiment", "--config", str(config), "--out", str(out), "--seeds", "0"])
    assert result.exit_code == 0 and "cycle 1/2" not in result.output  # nothing recomputed


def test_experiment_errors_are_one_sentence(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbudgte: 3\n")
    result = runner.invoke(main, ["experiment", "--config", str(bad)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "Unknown setting(s) budgte" in result.output
    (tmp_path / "empty").mkdir()
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")
    result = runner.invoke(main, ["experiment", "--config", str(good), "--out", str(tmp_path / "empty"), "--report-only"])
    assert result.exit_code == 1 and result.exception.__class__.__name__ == "SystemExit"
    assert "No experiment in" in result.output and "run the experiment first" in result.output


def test_train_starts_from_a_torchvision_detector_file_and_names_the_mapped_classes(tiny_demo, tmp_path):
    import torch
    from torchvision.models.detection import ssd300_vgg16

    weights = tmp_path / "ssd300.pth"
    torch.save(ssd300_vgg16(weights=None, weights_backbone=None).state_dict(), weights)
    result = CliRunner().invoke(main, [
        "train", "--data", str(tiny_demo["root"]), "--out", str(tmp_path / "run"), "--arch", "ssd300_vgg16", "--init", str(weights),
        "--iterations", "1", "--batch-size", "2", "--test-data", str(tmp_path / "no-test.json"),
    ])
    assert result.exit_code == 0, result.output
    # the demo's classes are digits: none is a COCO category
    assert f"Started from {weights}: classes mapped to COCO categories: none; starting fresh: 0, 1, 2" in result.output
    from almdn.engine.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "run" / "model.pt")["model_config"]["hidden_channels"] == 0


def test_train_init_coco_without_the_file_offline_is_one_sentence(tiny_demo, tmp_path, monkeypatch):
    import torch
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(self, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(SSDLite320_MobileNet_V3_Large_Weights, "get_state_dict", offline)
    result = CliRunner().invoke(main, [
        "train", "--data", str(tiny_demo["root"]), "--out", str(tmp_path / "run"), "--arch", "ssdlite320_mobilenet_v3_large",
        "--head", "plain", "--init", "coco", "--iterations", "1",
    ])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: torchvision's COCO weights for ssdlite320_mobilenet_v3_large are not on this machine and cannot be downloaded: "
        f"copy ssdlite320_mobilenet_v3_large_coco-a79551df.pth (from "
        f"https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth) into {tmp_path / 'hub' / 'checkpoints'}."
    ]
