"""The almdn command line end to end on a tiny dataset, and its one-sentence errors."""

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from almdn.cli import main


def test_demo_data_train_evaluate_score(tiny_demo, tmp_path):
    runner = CliRunner()
    root = tiny_demo["root"]
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(run), "--iterations", "3", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "mAP@0.5" in result.output and (run / "model.pt").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and "map50" in metrics

    result = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert "VOC07 mAP@0.5" in result.output and "AP@0.5" in result.output

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


def test_score_a_folder_lists_broken_files_and_goes_on(tiny_demo, tmp_path):
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
    assert result.exit_code == 0, result.output
    assert "Skipped unreadable image: zz_broken.png" in result.output
    assert len(pd.read_csv(tmp_path / "s" / "images.csv")) == 3


def test_user_errors_are_one_sentence_without_traceback(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "No checkpoint at" in result.output
    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "No 'train' annotations found" in result.output
