"""Mixed precision and channels_last: autocast ignored on the CPU with a note (channels_last
honoured there for the SSD models, an opt-in); where forced on the CPU
(bf16 autocast exists there too) the GPU code path runs with float32 post-processing."""

import copy

import pytest
import torch

from almdn.data.coco import CocoDetectionDataset
from almdn.engine import train as train_module
from almdn.engine.precision import Precision, apply_channels_last, mixed_precision, resolve_precision
from almdn.engine.train import TrainConfig, train
from almdn.models import build_model

BF16_CPU = Precision(torch.bfloat16, "cpu")


def _model(head="gmm"):
    torch.manual_seed(0)
    return build_model("ssd_small", 10, head=head).eval()


def test_the_cpu_ignores_amp_with_a_note_and_honours_channels_last_for_ssd():
    p = resolve_precision("bf16", True, torch.device("cpu"))
    assert p.autocast_dtype is None and p.channels_last and not p.grad_scaler
    assert p.note == "mixed precision bf16 ignored on cpu (CUDA only); running in float32."
    assert resolve_precision("off", True, torch.device("cpu"), _model()) == Precision(device_type="cpu", channels_last=True)
    p = resolve_precision("off", True, torch.device("cpu"), torch.nn.Conv2d(3, 3, 1))  # not an SSD
    assert not p.channels_last and p.note == "channels_last ignored on cpu (CUDA only); running in float32."
    assert resolve_precision("off", False, torch.device("cpu")) == Precision(device_type="cpu")
    with pytest.raises(ValueError, match="Unknown mixed-precision mode 'fp8'"):
        resolve_precision("fp8", False, torch.device("cpu"))


def test_autocast_runs_the_network_in_bf16_and_returns_float32_features_and_mixture_parameters():
    model = _model()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.head(model.backbone(x))
        with mixed_precision(model, BF16_CPU):
            features = model.backbone(x)
            out = model.head(features)
            detections = model(list(x))
    assert all(f.dtype == torch.float32 for f in features)
    for key, value in out.items():
        if value is None:
            continue
        assert value.dtype == torch.float32, key
        assert not torch.equal(value, ref[key]), key  # the network really ran in bf16 ...
        torch.testing.assert_close(value, ref[key], rtol=0.1, atol=0.1)  # ... and stayed close
    floats = {k: v.dtype for d in detections for k, v in d.items() if v.is_floating_point()}
    assert set(floats.values()) == {torch.float32} and "loc_aleatoric" in floats
    assert not model.backbone._forward_hooks and not model.head._forward_hooks  # hooks removed


def test_channels_last_weights_give_the_same_outputs():
    model = _model()
    fast = apply_channels_last(copy.deepcopy(model), Precision(channels_last=True))
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, out = model.head(model.backbone(x)), fast.head(fast.backbone(x))
        counts = [len(d["scores"]) for d in fast(list(x))]
    for key, value in ref.items():
        if value is not None:
            torch.testing.assert_close(out[key], value, rtol=1e-4, atol=1e-5)
    assert counts == [len(d["scores"]) for d in model(list(x))]


def test_training_under_autocast_with_a_grad_scaler_saves_and_resumes_the_scaler(tiny_demo, tmp_path, monkeypatch):
    # Force the CUDA fp16 recipe (autocast + loss scaling) onto the CPU, in bf16.
    monkeypatch.setattr(train_module, "resolve_precision", lambda *a, **k: Precision(torch.bfloat16, "cpu", grad_scaler=True))
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, milestones=(10,), checkpoint_every=2, log_every=1)
    result = train(model, ds, config, out_dir=tmp_path, progress=False)
    assert [h["iteration"] for h in result.history] == [1, 2] and all(h["loss"] > 0 for h in result.history)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert result.skipped_steps == 0  # bf16 has float32's range: no overflow to skip
    assert state["scaler"]["scale"] == 65536.0 and state["scaler"]["_growth_tracker"] == 2
    resumed = train(_model(), ds, TrainConfig(**{**config.__dict__, "iterations": 3}), out_dir=tmp_path, progress=False)
    assert resumed.iterations == 3 and resumed.skipped_steps == 0
    # 3 successful steps counted: the scaler's state came back from the checkpoint (a fresh one would say 1)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaler"]["_growth_tracker"] == 3
