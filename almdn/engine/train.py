"""Training: SGD with linear warm-up and step decay (Sec. 4), resumable, guarded against NaN.

Iteration-based like the paper (120k iterations, lr 1e-3, warm-up 1k, /10 at 80k and 100k).
The data order is a pure function of (seed, iteration), so a run resumed from a checkpoint
sees exactly the batches it would have seen without the interruption.

Under ``torchrun`` (a process group of N > 1, see :mod:`almdn.engine.distributed`) the same
function trains with DistributedDataParallel: ``batch_size`` stays the GLOBAL batch, each rank
takes its ``batch_size / N`` slice of the same seeded index stream, gradients are averaged over
the ranks, rank 0 alone writes checkpoints (with every rank's random state) and a resumed run
sees exactly the batches it would have seen. On CUDA, ``amp`` and ``channels_last`` select
mixed precision (see :mod:`almdn.engine.precision`); on the CPU ``channels_last`` (off by default)
speeds up the MobileNetV2 SSDs at a float32 rounding difference, and ``num_workers`` moves the
loading and augmentation to worker processes with bit-identical results
(``bench/results/train-speed-cpu.md``).
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from almdn.data.augment import AugmentConfig, AugmentedDataset, build_transform
from almdn.data.coco import collate_detection
from almdn.engine import distributed
from almdn.engine.checkpoint import read_checkpoint, resolve_device, save_checkpoint
from almdn.errors import UserError
from almdn.engine.precision import apply_channels_last, mixed_precision, resolve_precision
from almdn.models import MixtureFasterRCNN, MixtureSSD
from almdn.models.anchors import DEFAULT_MIN_COVERAGE, AnchorCoverageWarning, coverage_warning


@dataclass
class TrainConfig:
    """Every number of the training schedule.

    Attributes:
        iterations: total SGD steps.
        batch_size: images per step (the global batch: under torchrun each of N processes
            takes batch_size / N of them).
        lr, momentum, weight_decay: SGD (paper: 1e-3, 0.9, 5e-4).
        warmup_iters: linear warm-up from ``lr * warmup_factor`` to ``lr``.
        milestones: iterations at which lr is multiplied by ``gamma``.
        grad_clip_norm: clip the gradient norm (0 = off; the paper does not clip).
        max_loss: a step whose loss is NaN, inf or above this, or whose gradient is not finite,
            is skipped (the reference code's guard uses 100).
        max_bad_steps: that many skipped steps in a row abort training with a clear error.
        checkpoint_every: iterations between checkpoints (and at the end).
        log_every: iterations between entries of the loss history.
        num_workers: data-loading worker processes (the results are identical for any number:
            each sample's augmentation is seeded by its stream position).
        seed: data order and initial noise.
        amp: "off", "bf16" or "fp16" (with a GradScaler) autocast of the network on CUDA.
        channels_last: channels_last weights and activations (CUDA; on the CPU for the SSD
            models too, where it is faster for MobileNetV2 but rounds differently: off by default).
        optimizer: "sgd" (the paper's, with ``momentum``) or "adamw" (``weight_decay`` then
            is AdamW's decoupled decay).
        augment: training augmentation (:mod:`almdn.data.augment`): "auto" (SSD's recipe for
            SSD models, horizontal flip for Faster R-CNN), "ssd", "flip" or "none".
        zoom_out_max: the zoom-out's largest canvas, in image sides (SSD: 4).
        hflip: whether the augmentation flips horizontally (off for mirror-sensitive classes).
    """

    iterations: int = 120_000
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 1_000
    warmup_factor: float = 1e-3
    milestones: tuple[int, ...] = (80_000, 100_000)
    gamma: float = 0.1
    grad_clip_norm: float = 0.0
    max_loss: float = 100.0
    max_bad_steps: int = 20
    checkpoint_every: int = 1_000
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    amp: str = "off"
    channels_last: bool = False
    optimizer: str = "sgd"
    augment: str = "auto"
    zoom_out_max: float = 4.0
    hflip: bool = True

    @classmethod
    def paper(cls) -> TrainConfig:
        """The paper's SSD300 schedule (Sec. 4, experimental settings)."""
        return cls()

    @classmethod
    def demo(cls, iterations: int = 900) -> TrainConfig:
        """A schedule for the demo model on a 2-core CPU (minutes), same shape as the paper's."""
        return cls(
            iterations=iterations,
            batch_size=32,
            lr=0.01,
            warmup_iters=max(1, iterations // 15),
            milestones=(int(iterations * 0.67), int(iterations * 0.85)),
            grad_clip_norm=10.0,
            checkpoint_every=250,
        )

    def lr_factor(self, iteration: int) -> float:
        """Multiplier of ``lr`` at ``iteration``: linear warm-up times step decay."""
        warm = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warm = self.warmup_factor * (1 - alpha) + alpha
        return warm * self.gamma ** sum(iteration >= m for m in self.milestones)


class TrainingDiverged(UserError, RuntimeError):
    """The loss stayed NaN, infinite or above ``max_loss`` for too many steps."""


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
    stopped_early: bool = False


class _ResumableSampler(Sampler[int]):
    """An endless stream of indices, a fresh seeded permutation per epoch, from ``start``.

    With ``keyed`` it yields ``(index, position)`` pairs, ``position`` being the place in the
    stream: the seed of that sample's augmentation (:class:`~almdn.data.augment.AugmentedDataset`).
    """

    def __init__(self, size: int, seed: int, start: int = 0, keyed: bool = False):
        self.size, self.seed, self.start, self.keyed = size, seed, start, keyed

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.size)
        position = self.start
        while True:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            indices = torch.randperm(self.size, generator=g)[offset:].tolist()
            if self.keyed:
                yield from zip(indices, range(position, position + len(indices)))
            else:
                yield from indices
            position += len(indices)
            epoch, offset = epoch + 1, 0


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def train(
    model: MixtureSSD,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, int, dict[str, float]], bool | None] | None = None,
    min_anchor_coverage: float | None = DEFAULT_MIN_COVERAGE,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``config``.

    Args:
        out_dir: where ``checkpoint.pt`` (resumable state) and ``history.csv`` go; None keeps
            nothing on disk.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        callback: called every ``log_every`` iterations with (iteration, total, losses);
            returning False stops training after saving a checkpoint (used to cancel).
        min_anchor_coverage: warn (:class:`~almdn.models.anchors.AnchorCoverageWarning`) when
            fewer of the training boxes have an anchor with IoU >= 0.5 (small objects; see
            :func:`almdn.models.anchors.check_anchor_coverage`); None skips the check.

    Returns:
        A :class:`TrainResult`; the model is left trained, in eval mode.

    Inside a process group of N > 1 (torchrun) every rank calls this with the same arguments;
    ``device`` "cuda" then means this rank's GPU, and the returned history holds the losses
    averaged over the ranks.
    """
    if len(dataset) == 0:
        raise ValueError("The training set is empty: label some images first.")
    ddp = distributed.context(device) if distributed.is_active() else None
    device = ddp.device if ddp else resolve_device(device)
    if min_anchor_coverage is not None and distributed.is_main_process():
        _warn_anchor_coverage(model, dataset, min_anchor_coverage)
    torch.manual_seed(config.seed)
    precision, params, optimizer, scaler = _prepare(model, config, device)
    if ddp and ddp.rank > 0:
        # Each rank draws its own mixture noise; rank 0 keeps the single-process stream.
        torch.manual_seed(config.seed + 1_000_003 * ddp.rank)

    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    start, history, skipped = _resume(ckpt_path if resume else None, model, optimizer, scaler, ddp, config.seed)

    def checkpoint(iteration: int) -> None:
        _save_state(ckpt_path, model, optimizer, scaler, ddp, iteration, history, skipped, config)

    loader, net = _training_loader(model, dataset, config, start, ddp, device)
    t0 = time.perf_counter()
    bar = tqdm(total=config.iterations, initial=start, disable=not progress or not distributed.is_main_process(), desc="train", unit="it")
    iteration, bad_streak, stopped = start, 0, False
    running: dict[str, float] = {}
    batches = iter(loader)
    while iteration < config.iterations:
        for group in optimizer.param_groups:  # warm-up and step decay (Sec. 4)
            group["lr"] = config.lr * config.lr_factor(iteration)
        images, targets = _to_device(*next(batches), device)
        with mixed_precision(model, precision):
            losses = net(images, targets)
        loss = sum(losses.values())
        value, loss_values = _loss_values(loss, losses, ddp is not None)
        outcome = _optimizer_step(loss, value, params, optimizer, scaler, config)
        if outcome == "overflow":  # fp16 overflow: the scaler lowered its scale; not divergence
            skipped += 1
        elif outcome == "bad":
            # The reference restarts training on such a loss; skipping the step keeps the good
            # weights, and a long streak means the schedule itself is wrong.
            skipped += 1
            bad_streak += 1
            if bad_streak >= config.max_bad_steps:
                checkpoint(iteration)
                raise TrainingDiverged(
                    f"Training diverged: the loss was {value:.3g} (NaN, infinite or above {config.max_loss}) for "
                    f"{bad_streak} steps in a row at iteration {iteration}; lower the learning rate and train again."
                )
        else:
            bad_streak = 0
            for k, v in [*loss_values.items(), ("loss", value), ("n", 1.0)]:  # summed until the next history row
                running[k] = running.get(k, 0.0) + v
        iteration += 1
        bar.update(1)
        if iteration % config.log_every == 0 or iteration == config.iterations:
            entry = _history_entry(iteration, optimizer, time.perf_counter() - t0, running)
            running = {}
            history.append(entry)
            bar.set_postfix(loss=f"{entry.get('loss', float('nan')):.3f}", lr=f"{entry['lr']:.2g}")
            if callback is not None and callback(iteration, config.iterations, entry) is False:
                stopped = True
            if ddp:  # one rank cancelling stops them all, at the same iteration
                stopped = distributed.all_reduce_any(stopped)
        if iteration % config.checkpoint_every == 0 or iteration == config.iterations or stopped:
            checkpoint(iteration)
        if stopped:
            break
    bar.close()
    model.eval()
    return TrainResult(iteration, time.perf_counter() - t0, history, skipped, stopped)


def _prepare(model, config: TrainConfig, device: torch.device):
    """The model on ``device`` in training mode with its precision, and the trainable
    parameters, optimizer and loss scaler: (precision, params, optimizer, scaler)."""
    model.to(device).train()
    precision = resolve_precision(config.amp, config.channels_last, device, model)
    if precision.note and distributed.is_main_process():
        warnings.warn(precision.note, stacklevel=3)
    apply_channels_last(model, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    # Disabled (every call a pass-through) unless fp16 autocast needs loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    return precision, params, optimizer, scaler


def _history_entry(iteration: int, optimizer, seconds: float, running: dict[str, float]) -> dict[str, float]:
    """One row of the loss history: the mean of each loss term over the steps taken since the
    last row, with the learning rate and the elapsed seconds."""
    n = max(running.get("n", 0.0), 1.0)
    entry = {"iteration": iteration, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}
    entry.update({k: v / n for k, v in running.items() if k != "n"})
    return entry


def _optimizer_step(loss: torch.Tensor, value: float, params, optimizer, scaler, config: TrainConfig) -> str:
    """One guarded step: "ok" (taken), "overflow" (fp16 loss scaling skipped it) or "bad" (the
    loss is NaN, infinite or above ``max_loss``, or a gradient is not finite: skipped)."""
    finite_grads = True
    good_loss = math.isfinite(value) and value <= config.max_loss
    if good_loss:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # under DDP this also averages the gradients
        scaler.unscale_(optimizer)
        max_norm = config.grad_clip_norm if config.grad_clip_norm > 0 else float("inf")
        finite_grads = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, max_norm)))
    if not finite_grads and scaler.is_enabled() and good_loss:
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return "overflow"
    if not finite_grads or not good_loss:
        optimizer.zero_grad(set_to_none=True)
        return "bad"
    scaler.step(optimizer)
    scaler.update()
    return "ok"


def _resume(ckpt_path: Path | None, model, optimizer, scaler, ddp, seed: int) -> tuple[int, list, int]:
    """Load the resumable state of ``ckpt_path`` (when it exists) into the model, optimizer,
    scaler and random streams; returns (iteration, history, skipped steps), (0, [], 0) for a
    fresh start."""
    if ckpt_path is None or not ckpt_path.exists():
        return 0, [], 0
    state = read_checkpoint(ckpt_path)
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_state"])
    if ddp:
        _restore_rank_rng(state, ddp, seed, state["iteration"])
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    return state["iteration"], state["history"], state.get("skipped_steps", 0)


def _save_state(ckpt_path: Path | None, model, optimizer, scaler, ddp, iteration: int, history: list, skipped: int, config: TrainConfig) -> None:
    """Write the resumable state (rank 0; every rank's random state under DDP) and history.csv."""
    if ckpt_path is None:
        return
    extra: dict[str, Any] = {}
    if ddp:  # a collective: every rank reaches each checkpoint at the same iteration
        extra.update(world_size=ddp.world_size, rank_rng_states=distributed.all_gather_objects(torch.get_rng_state()))
    if scaler.is_enabled():
        extra["scaler"] = scaler.state_dict()
    if ddp is None or ddp.is_main:
        save_checkpoint(
            ckpt_path,
            model,
            optimizer=optimizer.state_dict(),
            rng_state=torch.get_rng_state(),
            iteration=iteration,
            history=history,
            skipped_steps=skipped,
            train_config=asdict(config),
            **extra,
        )
        _write_history(ckpt_path.parent / "history.csv", history)
    distributed.barrier()  # nobody reads or resumes before the file is complete


def _training_loader(model, dataset: Dataset, config: TrainConfig, start: int, ddp, device: torch.device) -> tuple[DataLoader, torch.nn.Module]:
    """The augmented, resumable data stream from iteration ``start`` (a rank's slice under
    DDP) and the module to step (the DDP wrapper, or the model)."""
    transform = build_transform(augment_config(config), two_stage=isinstance(model, MixtureFasterRCNN))
    if transform is not None:
        dataset = AugmentedDataset(dataset, transform, config.seed)
    sampler: Sampler[int] = _ResumableSampler(len(dataset), config.seed, start * config.batch_size, keyed=transform is not None)
    net: torch.nn.Module = model
    if ddp:
        sampler = distributed.RankSliceSampler(sampler, config.batch_size, ddp.rank, ddp.world_size)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size // (ddp.world_size if ddp else 1),
        sampler=sampler,
        collate_fn=collate_detection,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
        # its own generator: drawing the workers' base seed must not consume the global RNG
        # that the mixture noise uses, or a resumed run would diverge from an uninterrupted one
        generator=torch.Generator().manual_seed(config.seed),
    )
    return loader, net


def _warn_anchor_coverage(model: torch.nn.Module, dataset: Dataset, min_coverage: float) -> None:
    """The small-object check at the start of a run: a warning with the numbers and the options
    when the anchors cover too few training boxes. A diagnostic, so a failure to measure is
    reported as such and never stops the training."""
    message = coverage_warning(model, dataset, min_coverage=min_coverage)
    if message:
        warnings.warn(AnchorCoverageWarning(message), stacklevel=3)


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, as ``config.optimizer`` says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'sgd' or 'adamw'.")


def augment_config(config: TrainConfig) -> AugmentConfig:
    """The augmentation that ``config`` asks for."""
    return AugmentConfig(policy=config.augment, zoom_out_max=config.zoom_out_max, hflip=config.hflip)  # type: ignore[arg-type]


def _loss_values(loss: torch.Tensor, losses: dict[str, torch.Tensor], reduce: bool) -> tuple[float, dict[str, float]]:
    """The step's total loss and its terms as floats; with ``reduce`` averaged over the ranks,
    so every rank takes the same skip decision (a rank skipping alone would hang DDP)."""
    if not reduce:
        return float(loss.detach()), {k: float(v.detach()) for k, v in losses.items()}
    values = distributed.all_reduce_mean(torch.stack([loss.detach(), *(v.detach() for v in losses.values())]).float()).tolist()
    return values[0], dict(zip(losses, values[1:]))


def _restore_rank_rng(state: dict[str, Any], ddp: distributed.DistributedContext, seed: int, iteration: int) -> None:
    """Give this rank its own random state back from a DDP checkpoint; a checkpoint from another
    world size cannot provide it, so such ranks get a fresh stream seeded by rank and iteration."""
    states = state.get("rank_rng_states")
    if states is not None and len(states) == ddp.world_size:
        torch.set_rng_state(states[ddp.rank])
    elif ddp.rank > 0:
        torch.manual_seed(seed + 1_000_003 * ddp.rank + iteration)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "iteration", k))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)
