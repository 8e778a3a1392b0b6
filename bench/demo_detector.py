"""The demo detector: `make demo`'s first model, set up from nothing, timed end to end.

Runs exactly what the app's first start runs (:func:`almdn.projects.demo_project.create_demo_project`
with its defaults: the demo data, the 500-image initial labeled set, the first model trained,
evaluated on the test split and the pool scored) in a fresh folder, and records the test-split
mAP, the time of each part, the mixture-collapse and uncertainty-quality numbers, the machine
and its load.

Usage: python bench/demo_detector.py [--out bench/results/demo-detector.json] [--note TEXT]
Prints a table and writes the JSON and a .md beside it. Goals (issue 11): mAP@0.5 >= 0.50 with
the whole set-up within 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from almdn.projects.demo_project import DemoProjectConfig, create_demo_project  # noqa: E402
from almdn.engine.quality import headline  # noqa: E402
from almdn.projects.store import Store  # noqa: E402


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/demo-detector.json")
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    config = DemoProjectConfig()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = create_demo_project(Path(tmp) / "demo", config)
        setup_seconds = time.perf_counter() - t0
        with Store.open(Path(tmp) / "demo", create=False) as store:
            metrics = store.model_version(store.latest_model_version())["metrics"]
    settings = config.settings
    result = {
        "arch": settings.arch,
        "head": settings.head,
        "num_components": settings.num_components,
        "cls_loss": settings.cls_loss,
        "schedule": {"iterations": settings.iterations, "batch_size": settings.batch_size, "optimizer": settings.optimizer, "lr": settings.lr,
                     "augment": settings.augment, "hflip": settings.hflip, "zoom_out_max": settings.zoom_out_max},
        "labeled_images": summary["counts"]["labeled"],
        "test_images": summary["counts"]["test"],
        "map50": round(float(metrics["map50"]), 4),
        "map75": round(float(metrics["map75"]), 4),
        "map": round(float(metrics["map"]), 4),
        "voc07_map50": round(float(metrics["voc07_map50"]), 4),
        "train_seconds": round(float(metrics["train_seconds"]), 1),
        "setup_seconds": round(setup_seconds, 1),
        **{k: (None if v is None else round(float(v), 4)) for k, v in headline(metrics).items()},
        "machine": machine(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "note": args.note,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# The demo detector (`make demo`'s first model)",
        "",
        f"Machine: {result['machine']}; 1-minute load average {result['load_average_1min']['before']} before, "
        f"{result['load_average_1min']['after']} after. {args.note}",
        "",
        "| | |",
        "|---|---|",
        f"| detector | {settings.arch}, {settings.head} head, K = {settings.num_components}, {settings.cls_loss} class loss |",
        f"| schedule | {settings.iterations} {settings.optimizer} iterations at batch {settings.batch_size}, lr {settings.lr}, augmentation {settings.augment} (hflip {settings.hflip}, zoom-out up to {settings.zoom_out_max}x) |",
        f"| trained on / tested on | {result['labeled_images']} / {result['test_images']} images |",
        f"| mAP@0.5 / mAP@0.75 | {result['map50']:.3f} / {result['map75']:.3f} |",
        f"| training | {result['train_seconds']:.0f} s |",
        f"| whole set-up (data, store, training, evaluation, pool scoring) | {result['setup_seconds']:.0f} s |",
        f"| class mixture collapsed / effective K | {result['cls_collapsed_fraction']} / {result['cls_effective_components']} |",
        f"| AUROC false vs true positives: cls aleatoric, cls epistemic, entropy, 1 - score | "
        f"{result['auroc_cls_aleatoric']}, {result['auroc_cls_epistemic']}, {result['auroc_cls_entropy']}, {result['auroc_one_minus_score']} |",
    ]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
