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


class _CreatesAFile:
    """What a hostile checkpoint carries: unpickling it would call ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path, marker):
    """A file that looks like an almdn checkpoint but creates ``marker`` when unpickled."""
    model = build_model("ssd_small", 2, class_names=["a", "b"])
    payload = {"format": "almdn-checkpoint", "version": 1, "model_config": model.config,
               "state_dict": model.state_dict(), "metrics": {"note": _CreatesAFile(marker)}}
    torch.save(payload, path)
    return path


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="could run code when opened; almdn refuses to load it"):
        load_model(path)
    assert not marker.exists()


def test_numpy_metrics_are_saved_as_plain_values_and_old_numpy_files_still_load(tmp_path):
    import numpy as np

    model = build_model("ssd_small", 2, class_names=["a", "b"])
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"map50": np.float64(0.25), "per_class": np.array([0.5, 0.0])})
    metrics = read_checkpoint(path)["metrics"]
    assert metrics == {"map50": 0.25, "per_class": [0.5, 0.0]} and type(metrics["map50"]) is float
    old = tmp_path / "old.pt"  # written as earlier versions did: numpy scalars pickled as such
    torch.save({"format": "almdn-checkpoint", "version": 1, "model_config": model.config, "state_dict": model.state_dict(), "metrics": {"map50": np.float64(0.25)}}, old)
    assert float(read_checkpoint(old)["metrics"]["map50"]) == 0.25


def test_a_bad_model_config_is_one_sentence(tmp_path):
    """A checkpoint whose model_config builds no model, or whose weights do not fit it, is one
    CheckpointError naming the file (issue 20), read with weights_only as always."""
    model = build_model("ssd_small", 2, class_names=["a", "b"], pretrained=False)
    good = model.config
    cases = {
        "none": None,
        "list": [1, 2],
        "unknown arch": {**good, "arch": "no_such_arch"},
        "wrong type": {**good, "num_classes": "two"},
        "unknown setting": {**good, "bogus": 1},
        "other shapes": {**good, "num_classes": 5, "class_names": list("abcde")},
    }
    for name, config in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save({"format": "almdn-checkpoint", "version": 1, "model_config": config, "state_dict": model.state_dict()}, path)
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        message = str(info.value)
        assert message.startswith(f"Checkpoint '{path}'") and "\n" not in message, (name, message)
    missing = tmp_path / "no_weights.pt"
    torch.save({"format": "almdn-checkpoint", "version": 1, "model_config": good}, missing)
    with pytest.raises(CheckpointError, match="weights that do not fit"):
        load_model(missing)
