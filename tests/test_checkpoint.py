"""Checkpoints rebuild the same model; damaged or foreign files give one clear sentence."""

import pytest
import torch

from almdn.engine.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from almdn.models import build_model


def test_round_trip_gives_identical_detections(tmp_path):
    torch.manual_seed(0)
    model = build_model("ssd_small", 4, head="eff", num_components=3, class_names=list("abcd"), loc_density="reference").eval()
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"map50": 0.5})
    loaded = load_model(path)
    assert loaded.class_names == list("abcd") and loaded.num_components == 3 and loaded.loc_density == "reference"
    assert read_checkpoint(path)["metrics"] == {"map50": 0.5}
    images = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        a, b = model(images)[0], loaded(images)[0]
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True)
    assert not (tmp_path / "m.pt.tmp").exists()


def test_missing_damaged_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at .*almdn train"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an almdn checkpoint"):
        load_model(foreign)
