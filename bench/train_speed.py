"""Where a training step of the demo detector goes, on this CPU (issue 19, item 1).

The demo protocol's detector and schedule exactly as ``configs/demo.yaml`` builds them
(:class:`almdn.experiments.runner.ExperimentConfig`: ``ssd_mobilenet_v2_small``, gmm head, K = 4, Type-2
loss, AdamW, batch 32, SSD augmentation without flip, zoom-out up to 2x) on a small generated
demo pool (320 images, in a temporary folder unless ``--data``), measured in five parts:

1. data: one batch of 32 through the training dataset (decode from disk, decoded images from
   the in-memory cache, + SSD augmentation, + collate), and the augmentation alone;
2. compute: one step on a fixed augmented batch, split into forward (resize, backbone, head,
   anchors), loss (matching, Eq. 3/6 with hard negative mining), backward, optimizer (gradient
   clipping + AdamW), for variants of the step (torch threads 1, channels_last, bfloat16
   autocast, more frozen blocks);
3. trainer: :func:`almdn.engine.train.train` itself (loader, augmentation, step), seconds per
   step from its history, for DataLoader workers 0/1/2, augmentation off, torch threads 1;
4. OMP_WAIT_POLICY PASSIVE against unset (subprocesses running the trainer);
5. torch.compile of backbone + head (a subprocess with a time limit).

The machine is shared, so variants are interleaved (compute and data: round-robin per step;
trainer and OMP: round-robin per block of steps), each reports the median and its ratio to the
baseline of its part, and the 1-minute load average is recorded during each variant.

Usage: python bench/train_speed.py [--rounds 3] [--block 6] [--compute-steps 8] [--data DIR] [--note TEXT]
Writes bench/results/train-speed-cpu.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


# ----------------------------------------------------------------------------- set-up
def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}"


def demo_dataset(data_dir: Path, num_train: int):
    """The demo generator with configs/demo.yaml's knobs, ``num_train`` images."""
    import yaml

    from almdn.data.coco import CocoDetectionDataset
    from almdn.data.demo import DemoConfig, generate_demo_dataset

    knobs = dict(yaml.safe_load(CONFIG.read_text())["data"])
    for key in ("format", "root"):
        knobs.pop(key, None)
    knobs.update(num_train=num_train, num_test=1)
    info = generate_demo_dataset(data_dir, DemoConfig(**knobs, seed=0), progress=False)
    return CocoDetectionDataset(info["train_annotations"])


def demo_protocol(num_labeled: int = 200):
    """(build_model keywords, TrainConfig) of the demo protocol's first cycle, seed 0."""
    from almdn.experiments.runner import ExperimentConfig

    config = ExperimentConfig.from_yaml(CONFIG)
    return dict(config.model), config.train_config(seed=0, num_labeled=num_labeled)


def build(dataset, model_kw, frozen_blocks: int = 4):
    from almdn.models import build_model

    torch.manual_seed(0)
    model = build_model(num_classes=len(dataset.classes), class_names=dataset.classes, **model_kw)
    if frozen_blocks > 4:  # the trunk's blocks in order (features[0..16] of MobileNetV2)
        blocks = [b for stage in model.backbone.trunk.stages for b in stage]
        for block in blocks[:frozen_blocks]:
            block.requires_grad_(False)
    return model.train()


def load() -> float:
    return os.getloadavg()[0]


def summary(times: list[float], loads: list[float]) -> dict:
    return {"median_s": statistics.median(times), "n": len(times), "load": statistics.median(loads) if loads else None}


# ----------------------------------------------------------------------------- 1. data
def bench_data(dataset, config, steps: int) -> dict[str, dict]:
    from almdn.data.augment import AugmentedDataset, augment, build_transform
    from almdn.data.coco import collate_detection
    from almdn.engine.train import augment_config

    transform = build_transform(augment_config(config))
    n, bs = len(dataset), config.batch_size
    cold = copy.copy(dataset)
    cold.cache_images, cold._cache = False, {}
    warm = dataset
    for i in range(n):
        warm[i]  # fill the cache, as the trainer's first epoch does
    aug = AugmentedDataset(warm, transform, config.seed)
    from torchvision.transforms import v2

    import almdn.data.augment as augment_module

    reference = v2.Compose([v2.RandomIoUCrop() if isinstance(t, augment_module.FastIoUCrop) else t for t in transform.transforms])
    times: dict[str, list[float]] = {k: [] for k in ("decode from disk", "cached images", "cached + augment", "augment alone", "augment alone, torchvision's RandomIoUCrop", "collate")}
    loads: dict[str, list[float]] = {k: [] for k in times}
    for step in range(steps):
        idx = [(step * bs + j) % n for j in range(bs)]
        t0 = time.perf_counter(); [cold[i] for i in idx]; times["decode from disk"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); samples = [warm[i] for i in idx]; times["cached images"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step)
            [augment(img, tgt, transform) for img, tgt in samples]
        times["augment alone"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step)
            [augment(img, tgt, reference) for img, tgt in samples]
        times["augment alone, torchvision's RandomIoUCrop"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); batch = [aug[(i, step * bs + j)] for j, i in enumerate(idx)]; times["cached + augment"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); collate_detection(batch); times["collate"].append(time.perf_counter() - t0)
        for k in loads:
            loads[k].append(load())
    return {k: summary(v, loads[k]) for k, v in times.items()}


# ----------------------------------------------------------------------------- 2. compute
class Stepper:
    """One training step as the trainer takes it, timed in four parts."""

    def __init__(self, model, config, threads: int = 2, channels_last: bool = False, bf16: bool = False):
        from almdn.engine.train import make_optimizer

        self.model, self.config, self.threads, self.channels_last, self.bf16 = model, config, threads, channels_last, bf16
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, config)

    def step(self, images, targets) -> dict[str, float]:
        m, saved = self.model, torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                image_list, tgts, _ = m.preprocess(images, targets)
                x = image_list.tensors
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                features = m.backbone(x)
                head_outputs = m.head(features)
            head_outputs = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in head_outputs.items()} if isinstance(head_outputs, dict) else head_outputs
            anchors = m.anchor_generator(image_list, features)
            t1 = time.perf_counter()
            losses = m.compute_loss(tgts, head_outputs, anchors)
            loss = sum(losses.values())
            value = float(loss.detach())
            t2 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm or float("inf"))
            self.optimizer.step()
            t4 = time.perf_counter()
        finally:
            torch.set_num_threads(saved)
        return {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3, "step": t4 - t0, "value": value}


def bench_compute(dataset, model_kw, config, steps: int) -> dict[str, dict]:
    from almdn.data.augment import AugmentedDataset, build_transform
    from almdn.data.coco import collate_detection
    from almdn.engine.train import augment_config

    aug = AugmentedDataset(dataset, build_transform(augment_config(config)), config.seed)
    images, targets = collate_detection([aug[(i, i)] for i in range(config.batch_size)])
    base = build(dataset, model_kw)
    variants = {
        "baseline (2 threads, fp32, 4 frozen blocks)": Stepper(copy.deepcopy(base), config),
        "torch threads 1": Stepper(copy.deepcopy(base), config, threads=1),
        "channels_last": Stepper(copy.deepcopy(base), config, channels_last=True),
        "bfloat16 autocast": Stepper(copy.deepcopy(base), config, bf16=True),
        "7 frozen blocks (stride-8 stage)": Stepper(build(dataset, model_kw, 7), config),
        "14 frozen blocks (+ stride-16 stage)": Stepper(build(dataset, model_kw, 14), config),
    }
    times = {k: [] for k in variants}
    parts = {k: {p: [] for p in ("forward", "loss", "backward", "optimizer")} for k in variants}
    loads = {k: [] for k in variants}
    for step in range(steps + 1):  # one warm-up round
        for name, stepper in variants.items():
            r = stepper.step(images, targets)
            if step == 0:
                continue
            times[name].append(r["step"])
            loads[name].append(load())
            for p in parts[name]:
                parts[name][p].append(r[p])
    out = {k: {**summary(times[k], loads[k]), **{p: statistics.median(v) for p, v in parts[k].items()}} for k in variants}
    return out


# ----------------------------------------------------------------------------- 3. trainer
def trainer_steps(model, dataset, config, torchvision_crop: bool = False) -> list[float]:
    """Seconds of each step of one :func:`train` call (its history, logged every step),
    the first step (worker start-up, first batch) left out. ``torchvision_crop``: with
    ``v2.RandomIoUCrop`` in place of almdn's (equal) FastIoUCrop, as before it."""
    from torchvision.transforms import v2

    import almdn.data.augment as augment_module
    from almdn.engine.train import train

    fast = augment_module.FastIoUCrop
    if torchvision_crop:
        augment_module.FastIoUCrop = v2.RandomIoUCrop
    try:
        result = train(model, dataset, config, out_dir=None, progress=False, min_anchor_coverage=None)
    finally:
        augment_module.FastIoUCrop = fast
    seconds = [h["seconds"] for h in result.history]
    return [b - a for a, b in zip(seconds, seconds[1:])]


def bench_trainer(dataset, model_kw, config, rounds: int, block: int) -> dict[str, dict]:
    base = build(dataset, model_kw)
    short = dataclasses.replace(config, iterations=block + 1, log_every=1, checkpoint_every=10**9)
    variants = {  # (config, torch threads, torchvision's IoU crop, channels_last weights)
        "baseline (workers 0, augment ssd, 2 threads)": (short, 2, False, False),
        "torchvision's RandomIoUCrop (before this bench)": (short, 2, True, False),
        "num_workers 1": (dataclasses.replace(short, num_workers=1), 2, False, False),
        "num_workers 2": (dataclasses.replace(short, num_workers=2), 2, False, False),
        "augment none": (dataclasses.replace(short, augment="none"), 2, False, False),
        "torch threads 1": (short, 1, False, False),
        "torch threads 1 + num_workers 1": (dataclasses.replace(short, num_workers=1), 1, False, False),
        "channels_last weights": (short, 2, False, True),
    }
    times = {k: [] for k in variants}
    loads = {k: [] for k in variants}
    for r in range(rounds):
        for name, (cfg, threads, torchvision_crop, channels_last) in variants.items():
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                cfg = dataclasses.replace(cfg, seed=r)  # other batches each round, the same for every variant
                model = copy.deepcopy(base)
                if channels_last:
                    model.to(memory_format=torch.channels_last)
                times[name] += trainer_steps(model, dataset, cfg, torchvision_crop)
            finally:
                torch.set_num_threads(saved)
            loads[name].append(load())
    return {k: summary(times[k], loads[k]) for k in variants}


# ----------------------------------------------------------------------------- 4./5. subprocesses
def child(args) -> None:
    """Run in a subprocess: ``--child trainer`` prints the trainer's step times; ``--child
    compile`` prints compile time and eager / compiled step times, interleaved."""
    dataset = demo_dataset(Path(args.data), args.num_train)
    model_kw, config = demo_protocol()
    if args.child == "trainer":
        base = build(dataset, model_kw)
        cfg = dataclasses.replace(config, iterations=args.block + 1, log_every=1, checkpoint_every=10**9, seed=args.seed)
        print("RESULT " + json.dumps({"steps": trainer_steps(base, dataset, cfg), "load": load()}))
        return
    from almdn.data.augment import AugmentedDataset, build_transform
    from almdn.data.coco import collate_detection
    from almdn.engine.train import augment_config

    aug = AugmentedDataset(dataset, build_transform(augment_config(config)), config.seed)
    images, targets = collate_detection([aug[(i, i)] for i in range(config.batch_size)])
    eager = Stepper(build(dataset, model_kw), config)
    compiled_model = build(dataset, model_kw)
    compiled_model.backbone = torch.compile(compiled_model.backbone)
    compiled_model.head = torch.compile(compiled_model.head)
    compiled = Stepper(compiled_model, config)
    t0 = time.perf_counter()
    compiled.step(images, targets)
    compiled.step(images, targets)
    compile_s = time.perf_counter() - t0
    eager.step(images, targets)
    te, tc = [], []
    for _ in range(args.compute_steps):
        te.append(eager.step(images, targets)["step"])
        tc.append(compiled.step(images, targets)["step"])
    print("RESULT " + json.dumps({"compile_s": compile_s, "eager": te, "compiled": tc, "load": load()}))


def run_child(args, kind: str, env_update: dict, timeout: float, seed: int = 0) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({k: v for k, v in env_update.items() if v is not None})
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(args.data), "--num-train", str(args.num_train),
           "--block", str(args.block), "--compute-steps", str(args.compute_steps), "--seed", str(seed)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(out.stderr[-2000:], file=sys.stderr)
    return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}


def bench_omp(args) -> dict[str, dict]:
    variants = {"OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY unset (default)": {}}
    times = {k: [] for k in variants}
    loads = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, env in variants.items():
            res = run_child(args, "trainer", env, timeout=300, seed=r)
            if res and "steps" in res:
                times[name] += res["steps"]
                loads[name].append(res["load"])
    return {k: summary(times[k], loads[k]) for k in variants if times[k]}


# ----------------------------------------------------------------------------- report
def table(title: str, rows: dict[str, dict], base_key: str, cols: list[str] = ()) -> list[str]:
    base = rows[base_key]["median_s"]
    head = "| variant | s | ratio to baseline | n | load (1 min) |" + "".join(f" {c} (s) |" for c in cols)
    lines = [f"### {title}", "", head, "|---" * (5 + len(cols)) + "|"]
    for name, r in rows.items():
        load_s = "" if r.get("load") is None else f"{r['load']:.2f}"
        extra = "".join(f" {r[c]:.3f} |" for c in cols)
        lines.append(f"| {name} | {r['median_s']:.3f} | {r['median_s'] / base:.2f}x | {r['n']} | {load_s} |{extra}")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of trainer / OMP blocks")
    parser.add_argument("--block", type=int, default=6, help="timed steps per trainer block")
    parser.add_argument("--compute-steps", type=int, default=8)
    parser.add_argument("--data-steps", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--data", default=None, help="demo data folder (generated there if missing; default: a temporary one)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: data,compute,trainer,omp,compile")
    parser.add_argument("--compile-timeout", type=float, default=300)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(REPO / "bench/results/train-speed-cpu"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        args.data = Path(args.data or Path(tmp) / "demo")
        dataset = demo_dataset(args.data, args.num_train)
        model_kw, config = demo_protocol()
        result: dict = {"machine": machine(), "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                        "model": model_kw, "train": {k: v for k, v in dataclasses.asdict(config).items() if k in ("batch_size", "optimizer", "lr", "augment", "zoom_out_max", "hflip", "grad_clip_norm", "num_workers")},
                        "note": args.note, "load_start": load()}
        t_start = time.perf_counter()
        if "data" not in skip:
            result["data"] = bench_data(dataset, config, args.data_steps); print("data", json.dumps(result["data"]), flush=True)
        if "compute" not in skip:
            result["compute"] = bench_compute(dataset, model_kw, config, args.compute_steps); print("compute", json.dumps(result["compute"]), flush=True)
        if "trainer" not in skip:
            result["trainer"] = bench_trainer(dataset, model_kw, config, args.rounds, args.block); print("trainer", json.dumps(result["trainer"]), flush=True)
        if "omp" not in skip:
            result["omp"] = bench_omp(args); print("omp", json.dumps(result["omp"]), flush=True)
        if "compile" not in skip:
            res = run_child(args, "compile", {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}, timeout=args.compile_timeout)
            result["compile"] = res if res is not None else {"error": f"did not finish within {args.compile_timeout:.0f} s"}
            print("compile", json.dumps(result["compile"]), flush=True)
        result["bench_seconds"] = round(time.perf_counter() - t_start)
        result["load_end"] = load()
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    lines = [
        "# Seconds per training step of the demo detector (CPU)",
        "",
        f"Machine: {result['machine']}; torch threads {result['threads']}, OMP_WAIT_POLICY {result['omp_wait_policy']}. "
        f"Demo protocol (configs/demo.yaml): {result['model']}, {result['train']}. 1-minute load average {result['load_start']:.2f} at the start, "
        f"{result['load_end']:.2f} at the end; the bench took {result['bench_seconds']} s. Medians; variants interleaved. {result['note']}",
        "",
    ]
    if "data" in result:
        lines += table("Data, per batch of 32 (main process; ratio to the augmentation as it was, with torchvision's IoU crop)", result["data"], "augment alone, torchvision's RandomIoUCrop")
    if "compute" in result:
        base = next(iter(result["compute"]))
        lines += table("Compute, one step on a fixed augmented batch", result["compute"], base, ["forward", "loss", "backward", "optimizer"])
    for key, title in (("trainer", "The trainer (almdn.engine.train.train), per step"), ("trainer_2", "The trainer, a second pass (another run of this script's trainer part)")):
        if key in result:
            lines += table(title, result[key], next(iter(result[key])))
    if "omp" in result and result["omp"]:
        lines += table("OMP_WAIT_POLICY (trainer in subprocesses)", result["omp"], next(iter(result["omp"])))
    if "compile" in result:
        c = result["compile"]
        if "compiled" in c:
            e, k = statistics.median(c["eager"]), statistics.median(c["compiled"])
            lines += ["### torch.compile (backbone + head)", "", f"Compile (first two steps): {c['compile_s']:.0f} s; step eager {e:.3f} s, compiled {k:.3f} s ({k / e:.2f}x), load {c['load']:.2f}.", ""]
        else:
            lines += ["### torch.compile (backbone + head)", "", f"Not measured: {c.get('error')}.", ""]
    if result.get("findings"):
        lines += ["## Findings", "", *result["findings"], ""]
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
