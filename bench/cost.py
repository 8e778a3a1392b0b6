"""Cost of uncertainty estimation: parameters and forward time per image (Tab. 4 / 5 columns).

One run, the same input images for every method, timings interleaved round-robin so drift in
machine load hits every method alike. Methods, all on the same detector:

* plain: torchvision's SSD head (the baseline every ratio is relative to)
* gmm / eff: the mixture heads (this project's shared-tower design)
* gmm-direct: the mixture outputs from one 3x3 conv per map (the reference's cost profile)
* mc-dropout: gmm with dropout p=0.1 on the extra layers, 25 passes; the trunk's features are
  computed once and only the extra layers and head are repeated
* ensemble: 3 independently initialised gmm models, each run in full

Faster R-CNN models (``frcnn_*``, Tab. 6) get plain (torchvision's predictor) / gmm / eff, and
gmm with class-specific box mixtures, on one 375 x 500 image (a typical VOC image, which the
transform resizes to 800 x 1067 as in the paper's setting).

"Forward time" is the whole inference call: preprocessing, network, Eq. 7 decoding, NMS and
the four uncertainties. Random weights are used (the cost does not depend on training, except
through the number of NMS candidates, which random weights make maximal for every method).

Usage: python bench/cost.py [--models ssd300_vgg16,ssd_small] [--device cpu] [--repeats 5] [--note TEXT]
Writes bench/results/cost-<device>.md and .json; rows of models not measured in this run are kept
from the existing files, so one model can be re-measured alone (--note records why and when).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from almdn.models import build_model  # noqa: E402

NUM_CLASSES = {"ssd300_vgg16": 20, "ssd_small": 10, "ssd_mobilenet_v2": 20, "ssdlite320_mobilenet_v3_large": 20, "frcnn_resnet50_fpn": 20, "frcnn_mobilenet_v2": 20}
FRCNN_INPUT = (375, 500)  # (H, W) of a typical VOC image; Faster R-CNN resizes it itself


def _frcnn_methods(arch: str):
    """Faster R-CNN: the mixture predictor replaces the box predictor after RoI pooling (Tab. 6)."""
    c = NUM_CLASSES[arch]
    mk = lambda **kw: build_model(arch, c, pretrained=False, **kw).eval()  # noqa: E731
    torch.manual_seed(0)
    plain, gmm, eff = mk(head="plain"), mk(head="gmm"), mk(head="eff")
    specific = mk(head="gmm", class_agnostic_boxes=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    models = {"plain": plain, "gmm": gmm, "eff": eff, "gmm, class-specific boxes": specific}
    return {name: (count(m), m) for name, m in models.items()}, list(models.values())


def _methods(arch: str):
    if arch.startswith("frcnn"):
        return _frcnn_methods(arch)
    c = NUM_CLASSES[arch]
    mk = lambda **kw: build_model(arch, c, pretrained=False, **kw).eval()  # noqa: E731
    torch.manual_seed(0)
    plain, gmm, eff = mk(head="plain"), mk(head="gmm"), mk(head="eff")
    direct = mk(head="gmm", hidden_channels=0)
    mc = mk(head="gmm", extras_dropout=0.1)
    ensemble = [mk(head="gmm") for _ in range(3)]
    count = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    methods = {
        "plain": (count(plain), lambda x: plain(x)),
        "gmm": (count(gmm), lambda x: gmm(x)),
        "eff": (count(eff), lambda x: eff(x)),
        "gmm-direct": (count(direct), lambda x: direct(x)),
        "mc-dropout (25)": (count(mc), lambda x: mc.forward_mc_dropout(x, passes=25)),
        "ensemble (3)": (count(*ensemble), lambda x: [m(x) for m in ensemble]),
    }
    return methods, [plain, gmm, eff, direct, mc, *ensemble]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(arch: str, device: torch.device, batch_sizes: tuple[int, ...], repeats: int) -> list[dict]:
    methods, models = _methods(arch)
    size = getattr(models[0], "size", FRCNN_INPUT)
    for model in models:
        model.to(device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for bs in batch_sizes:
        images = [torch.rand(3, *size, generator=g).to(device) for _ in range(bs)]
        times: dict[str, list[float]] = {name: [] for name in methods}
        with torch.inference_mode():
            for name, (_, fn) in methods.items():  # warm-up
                fn(images)
            _sync(device)
            for _ in range(repeats):
                for name, (_, fn) in methods.items():
                    t = time.perf_counter()
                    fn(images)
                    _sync(device)
                    times[name].append((time.perf_counter() - t) / bs)
        base = statistics.median(times["plain"])
        for name, (params, _) in methods.items():
            t = statistics.median(times[name])
            rows.append(
                {
                    "model": arch,
                    "method": name,
                    "batch": bs,
                    "params_M": params / 1e6,
                    "params_ratio": params / methods["plain"][0],
                    "ms_per_image": t * 1e3,
                    "time_ratio": t / base,
                }
            )
        print(f"  {arch} batch {bs}: done", flush=True)
    return rows


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| model | method | batch | params (M) | params / plain | ms / image | time / plain |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['batch']} | {r['params_M']:.2f} | {r['params_ratio']:.2f}x | {r['ms_per_image']:.1f} | {r['time_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ssd300_vgg16,ssd_small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--note", default=None, help="A remark on this run, shown under the table for its models.")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for arch in args.models.split(","):
        rows += measure(arch, device, tuple(int(b) for b in args.batch_sizes.split(",")), args.repeats)
    where = machine(device)
    header = (
        f"Forward cost per image, median of {args.repeats} interleaved runs, random weights, "
        f"one run on the same inputs. Machine: {where}."
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cost-{device.type}"
    measured = {r["model"] for r in rows}
    notes = {m: args.note for m in measured if args.note}
    previous = out / f"{stem}.json"
    if previous.exists():  # keep the other models' rows and notes from their own run
        old = json.loads(previous.read_text())
        rows = [r for r in old["rows"] if r["model"] not in measured] + rows
        notes = {**{m: n for m, n in old.get("notes", {}).items() if m not in measured}, **notes}
    table = to_markdown(rows, header)
    if notes:
        table += "\n\n" + "\n".join(f"- {m}: {n}" for m, n in notes.items())
    print(table)
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"machine": where, "rows": rows, "notes": notes}, indent=2))
    print(f"written to {out / stem}.md")


if __name__ == "__main__":
    main()
