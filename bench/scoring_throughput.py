"""Pool-scoring throughput of SSD300-VGG16 with the gmm head: images per second, end to end.

"End to end" is what ``almdn score`` does for a pool: read and decode the image files
(DataLoader worker processes, pinned memory on CUDA), resize and normalise, the network, Eq. 7
decoding, one batched NMS, the four uncertainties (Eq. 1, 8) for the surviving detections, the
kept detections copied back, then the z-scored image scores (Sec. 3.3) and the top-B ranking.
A second row times the network + post-processing alone on batches already on the device, to
show what the data path costs.

The pool is the demo generator's photographs with digits at 300 px, saved as JPEG (quality
90) like a real pool; with ``--images`` above the number of distinct files the files are read
again in turn (every item is still read and decoded). Random weights (``pretrained=False``):
throughput does not depend on training, except that random class scores pass the 0.01
candidate threshold everywhere, so NMS and the uncertainties run at their maximum load (200
detections per image), and ``--conf-threshold`` 0.01 keeps them all for the score table: a
worst case for everything after the network.

Usage:
    python bench/scoring_throughput.py                       # CPU, 160 images, batch 8
    python bench/scoring_throughput.py --device cuda --amp bf16 --channels-last \\
        --images 20000 --batch-size 256 --workers 12
    torchrun --nproc_per_node 8 bench/scoring_throughput.py --device cuda --amp bf16 ...

Writes bench/results/scoring-throughput-<cpu|cuda>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from almdn.acquisition.scoring import image_scores, kept_pool_detections  # noqa: E402
from almdn.acquisition.selection import select_batch  # noqa: E402
from almdn.data.demo import DemoConfig, generate_demo_dataset  # noqa: E402
from almdn.data.images import ImageFolderDataset  # noqa: E402
from almdn.engine import distributed  # noqa: E402
from almdn.engine.precision import mixed_precision, resolve_precision, apply_channels_last  # noqa: E402
from almdn.models import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 20  # VOC's


class CycledPool(Dataset):
    """``size`` pool items that read the files of ``base`` in turn."""

    def __init__(self, base: ImageFolderDataset, size: int):
        self.base, self.size = base, size
        self.image_ids = list(range(size))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        image, _ = self.base[index % len(self.base)]
        return image, {"image_id": index}


def make_pool(folder: Path, distinct: int, image_size: int) -> ImageFolderDataset:
    """``distinct`` demo photographs at ``image_size`` px as JPEG files in ``folder``."""
    demo = generate_demo_dataset(folder / "demo", DemoConfig(num_train=distinct, num_test=1, image_size=image_size, seed=0), progress=False)
    jpegs = folder / "pool"
    jpegs.mkdir(exist_ok=True)
    for png in sorted((Path(demo["image_root"]) / "train").glob("*.png")):
        Image.open(png).convert("RGB").save(jpegs / (png.stem + ".jpg"), quality=90)
    return ImageFolderDataset.from_folder(jpegs)


def machine(device: torch.device) -> dict:
    """The CPU as lscpu names it, its cores, and the GPU if one is used."""
    info = {"cpu": platform.processor() or "unknown CPU", "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cpu_count"] = int(fields.get("CPU(s)", info["cpu_count"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = distributed.world_size()
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_only(model, device, precision, batch_size: int, image_size: int, batches: int) -> float:
    """Images/s of the model call (network, Eq. 7, NMS, uncertainties) on device-resident batches."""
    images = [torch.rand(3, image_size, image_size, device=device) for _ in range(batch_size)]
    with torch.inference_mode(), mixed_precision(model, precision):
        model(images)  # warm-up (cuDNN algorithm choice, allocator)
        _sync(device)
        t = time.perf_counter()
        for _ in range(batches):
            model(images)
        _sync(device)
    return batches * batch_size / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--images", type=int, default=160, help="pool size scored end to end")
    parser.add_argument("--distinct", type=int, default=160, help="distinct image files (read in turn)")
    parser.add_argument("--image-size", type=int, default=300, help="side of the pool's images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 1 on cpu, 8 on cuda)")
    parser.add_argument("--conf-threshold", type=float, default=0.01)
    parser.add_argument("--network-batches", type=int, default=None, help="batches for the network-only row (default: 2 cpu, 50 cuda)")
    parser.add_argument("--budget", type=int, default=100, help="B of the top-B selection")
    parser.add_argument("--note", default="", help="conditions of this run, recorded in the result file")
    args = parser.parse_args()

    ctx = distributed.init_from_env(args.device)
    device = ctx.device
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 1)
    torch.manual_seed(0)
    model = build_model("ssd300_vgg16", NUM_CLASSES, head="gmm", pretrained=False).to(device).eval()
    precision = resolve_precision(args.amp, args.channels_last, device, model)
    apply_channels_last(model, precision)

    folder = Path(tempfile.gettempdir()) / f"almdn-bench-pool-{args.distinct}-{args.image_size}"
    if ctx.is_main:
        make_pool(folder, args.distinct, args.image_size)
    distributed.barrier()
    pool = CycledPool(ImageFolderDataset.from_folder(folder / "pool"), args.images)

    # Warm-up (worker start-up, weights in cache, cuDNN algorithm choice), not timed.
    warm = CycledPool(pool.base, min(len(pool), (2 if device.type == "cuda" else 1) * args.batch_size * ctx.world_size))
    kept_pool_detections(model, warm, args.conf_threshold, args.batch_size, device, workers, args.amp, args.channels_last)

    distributed.barrier()
    t0 = time.perf_counter()
    detections, readable = kept_pool_detections(model, pool, args.conf_threshold, args.batch_size, device, workers, args.amp, args.channels_last, progress=True)
    table = image_scores(detections, pool.image_ids)
    chosen = select_batch(table.set_index("image_id")["score"], args.budget).image_ids
    end_to_end = time.perf_counter() - t0
    assert readable.all() and len(chosen) == min(args.budget, len(pool))

    batches = args.network_batches or (50 if device.type == "cuda" else 2)
    net = network_only(model, device, precision, args.batch_size, args.image_size, batches)
    if not ctx.is_main:
        distributed.shutdown()
        return

    precision_name = "float32" if precision.autocast_dtype is None else str(precision.autocast_dtype).removeprefix("torch.")
    info = machine(device)
    rows = [
        {"measure": "end to end: files -> top-B", "images": len(pool), "seconds": round(end_to_end, 2), "images_per_s": round(len(pool) / end_to_end, 2)},
        {"measure": "network + NMS + uncertainties only", "images": batches * args.batch_size, "seconds": round(batches * args.batch_size / net, 2), "images_per_s": round(net * ctx.world_size, 2)},
    ]
    result = {
        "model": "ssd300_vgg16, gmm head, K=4, 20 classes, random init",
        "device": device.type,
        "processes": ctx.world_size,
        "precision": precision_name,
        "channels_last": precision.channels_last,
        "precision_note": precision.note,
        "batch_size_per_process": args.batch_size,
        "workers_per_process": workers,
        "image_size": args.image_size,
        "distinct_files": args.distinct,
        "conf_threshold": args.conf_threshold,
        "kept_detections": len(detections),
        "machine": info,
        "note": args.note,
        "rows": rows,
    }
    where = f"{info['cpu']}, {info['cpu_count']} cores" + (f"; {info['gpu_count']} x {info['gpu']}" if "gpu" in info else "")
    lines = [
        f"# Pool-scoring throughput: SSD300-VGG16 + gmm head ({device.type})",
        "",
        f"Machine: {where}; torch {info['torch']}, {info['torch_threads']} threads; 1-min load average at start {info['load_average_1min']}.",
        f"Setting: {ctx.world_size} process(es), batch {args.batch_size} per process, {workers} loader worker(s) per process, "
        f"{precision_name}{', channels_last' if precision.channels_last else ''}, {args.image_size} px JPEG pool "
        f"({args.distinct} distinct files), conf threshold {args.conf_threshold} ({len(detections)} kept detections).",
    ]
    if precision.note:
        lines.append(f"Note: {precision.note}")
    if args.note:
        lines.append(f"Conditions: {args.note}")
    lines += ["", "| measure | images | seconds | images / s |", "|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.2f} |" for r in rows]
    if device.type == "cpu":
        lines += [
            "",
            "GPU figure: not measured yet (no GPU was lent to the session that wrote this). On a GPU run",
            "`python bench/scoring_throughput.py --device cuda --amp bf16 --channels-last --images 20000 --batch-size 256 --workers 12`",
            "(goal on one H100: >= 2,000 images/s); it writes scoring-throughput-cuda.md/json beside this file.",
        ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scoring-throughput-{device.type}.md").write_text(text)
    (RESULTS / f"scoring-throughput-{device.type}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    distributed.shutdown()


if __name__ == "__main__":
    main()
