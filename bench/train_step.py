"""Cost of one training step per head: does the mixture loss slow training down?

One run, the same batch of real demo images for every head, steps interleaved round-robin so
drift in machine load hits every head alike. A step is the whole SGD step as
:func:`almdn.engine.train.train` takes it: forward through backbone and head, anchor matching,
the loss (Eq. 3/5/6 with hard negative mining, or SSD's smooth-L1 + cross-entropy for the plain
head), backward and the optimizer update. Augmentation is off here (it is the same for every
head); the batch is the default 32.

Usage: python bench/train_step.py [--archs ssd_small,ssd_mobilenet_v2_small] [--steps 15] [--note TEXT]
Writes bench/results/train-step-cpu.md and .json (the goal: gmm <= 1.2x the plain head's step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from almdn.data.coco import CocoDetectionDataset, collate_detection  # noqa: E402
from almdn.data.demo import DemoConfig, generate_demo_dataset  # noqa: E402
from almdn.models import build_model  # noqa: E402
from almdn.registry import DEFAULT_CLS_LOSS  # noqa: E402

HEADS = ("plain", "eff", "gmm")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="ssd_small,ssd_mobilenet_v2_small")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cls-loss", default=DEFAULT_CLS_LOSS)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default="bench/results/train-step-cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        info = generate_demo_dataset(Path(tmp) / "demo", DemoConfig(num_train=args.batch_size, num_test=1, seed=0), progress=False)
        data = CocoDetectionDataset(info["train_annotations"])
        images, targets = collate_detection([data[i] for i in range(args.batch_size)])

    rows = []
    for arch in args.archs.split(","):
        models = {}
        for head in HEADS:
            torch.manual_seed(0)
            model = build_model(arch, len(data.classes), head=head, class_names=data.classes, cls_loss=args.cls_loss).train()
            params = [p for p in model.parameters() if p.requires_grad]
            models[head] = (model, torch.optim.SGD(params, lr=1e-4, momentum=0.9))
        times: dict[str, list[float]] = {h: [] for h in HEADS}
        for step in range(args.steps + 2):  # two warm-up rounds
            for head, (model, optimizer) in models.items():
                t0 = time.perf_counter()
                losses = model(images, targets)
                optimizer.zero_grad(set_to_none=True)
                sum(losses.values()).backward()
                optimizer.step()
                if step >= 2:
                    times[head].append(time.perf_counter() - t0)
        base = statistics.median(times["plain"])
        for head in HEADS:
            median = statistics.median(times[head])
            rows.append({"arch": arch, "head": head, "median_step_s": round(median, 4), "ratio_to_plain": round(median / base, 3), "steps": len(times[head])})

    lines = [
        "# Training step per head (CPU)",
        "",
        f"Machine: {machine()}. Batch {args.batch_size} demo images (128 px), {args.steps} timed steps per head, interleaved; "
        f"classification loss {args.cls_loss}; median seconds per step (forward, matching, loss, backward, SGD update). {args.note}",
        "",
        "| architecture | head | step (s) | ratio to plain |",
        "|---|---|---|---|",
        *[f"| {r['arch']} | {r['head']} | {r['median_step_s']:.3f} | {r['ratio_to_plain']:.2f}x |" for r in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "note": args.note, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
