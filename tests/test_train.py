"""Training engine: schedule, exact resume after an interruption, NaN / explosion guard."""

import dataclasses

import pytest
import torch

from almdn.data.coco import CocoDetectionDataset
from almdn.engine.train import TrainConfig, TrainingDiverged, train
from almdn.models import build_model


def test_warmup_and_step_decay_follow_the_paper_schedule():
    cfg = TrainConfig.paper()
    assert cfg.lr_factor(0) == pytest.approx(1e-3)
    assert cfg.lr_factor(500) == pytest.approx(1e-3 * 0.5 + 0.5)
    assert cfg.lr_factor(1_000) == 1.0
    assert cfg.lr_factor(79_999) == 1.0
    assert cfg.lr_factor(80_000) == pytest.approx(0.1)
    assert cfg.lr_factor(100_000) == pytest.approx(0.01)
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (120_000, 32, 1e-3, 0.9, 5e-4)


def _config(**kw):
    base = TrainConfig(iterations=6, batch_size=4, lr=0.01, warmup_iters=2, milestones=(4,), checkpoint_every=3, log_every=1)
    return dataclasses.replace(base, **kw)


def _model(ds, seed=0):
    torch.manual_seed(seed)
    return build_model("ssd_small", len(ds.classes), head="gmm", class_names=ds.classes)


@pytest.mark.parametrize("augment", ["ssd", "none"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny_demo, tmp_path, augment):
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    straight = _model(ds)
    train(straight, ds, _config(augment=augment), out_dir=tmp_path / "a", progress=False)

    interrupted = _model(ds)
    result = train(interrupted, ds, _config(augment=augment), out_dir=tmp_path / "b", progress=False, callback=lambda i, n, e: i < 3)
    assert result.stopped_early and result.iterations == 3
    resumed = _model(ds, seed=123)  # fresh weights: everything must come from the checkpoint
    result = train(resumed, ds, _config(augment=augment), out_dir=tmp_path / "b", progress=False)
    assert result.iterations == 6
    assert [h["iteration"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert (tmp_path / "b" / "history.csv").read_text().count("\n") == 7


def test_bad_loss_steps_are_skipped_and_a_streak_aborts_with_one_sentence(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    model = _model(ds)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"Training diverged: .* lower the learning rate"):
        train(model, ds, _config(max_loss=1e-6, max_bad_steps=3), progress=False)
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked") and "running" not in k:
            assert torch.equal(v, before[k]), k  # no step was taken


def test_exploding_learning_rate_is_caught_not_propagated(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    model = _model(ds)
    try:
        result = train(model, ds, _config(lr=1e6, warmup_iters=0, grad_clip_norm=0.0, max_bad_steps=4, iterations=12), progress=False)
    except TrainingDiverged:
        return
    # If it survived, every weight must still be finite.
    assert all(torch.isfinite(p).all() for p in model.parameters()), result


def test_empty_training_set_is_a_clear_error(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["train_annotations"]).subset([])
    with pytest.raises(ValueError, match="empty"):
        train(_model(CocoDetectionDataset(tiny_demo["train_annotations"])), ds, _config(), progress=False)


def test_augmented_training_sees_different_images_than_plain_training_and_adamw_trains(tiny_demo):
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    plain, augmented = _model(ds), _model(ds)
    train(plain, ds, _config(augment="none", iterations=2), progress=False)
    train(augmented, ds, _config(augment="ssd", iterations=2), progress=False)
    differs = [not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), augmented.state_dict().values())]
    assert any(differs)
    adamw = _model(ds)
    result = train(adamw, ds, _config(optimizer="adamw", lr=1e-3), progress=False)
    assert result.iterations == 6 and result.skipped_steps == 0
    with pytest.raises(ValueError, match="sgd"):
        train(_model(ds), ds, _config(optimizer="lbfgs"), progress=False)


def test_data_loading_workers_train_exactly_the_model_of_the_main_process(tiny_demo):
    """Workers only move the loading and the augmentation (seeded per sample by seed and stream
    position) off the training process: the weights after a run are bit-for-bit those without."""
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    models = []
    for workers in (0, 2):
        model = _model(ds)
        train(model, ds, _config(augment="ssd", iterations=3, num_workers=workers, optimizer="adamw"), progress=False)
        models.append(model.state_dict())
    for (name, a), b in zip(models[0].items(), models[1].values()):
        assert torch.equal(a, b), name


def test_channels_last_on_the_cpu_is_an_opt_in_that_trains_the_same_model_up_to_rounding(tiny_demo):
    assert TrainConfig().channels_last is False  # the default float32 path keeps every result as measured
    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    plain, fast = _model(ds), _model(ds)
    a = train(plain, ds, _config(iterations=2, augment="none"), progress=False)
    b = train(fast, ds, _config(iterations=2, augment="none", channels_last=True), progress=False)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert a.history[0]["loss"] == pytest.approx(b.history[0]["loss"], rel=1e-4)
    for (name, x), y in zip(plain.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4, msg=name)
