"""Benchmark: push 1,000 tasks to a local Label Studio and pull 1,000 annotations back.

Starts a real server (the repo's .venv-label-studio, a copy of the migrated template) on a
free loopback port, creates a project store with N images scored by a (synthetic) model
version with two detections each, and times:

- ``push``: the top-N of the ranking as tasks with pre-annotations (one batch);
- the annotator: N annotations posted the way the browser UI posts them (not part of the goal,
  4 concurrent clients);
- ``pull``: every annotation into the store;
- the same push and pull again (nothing new: what the idempotence checks cost).

Prints a table and writes bench/results/label-studio-roundtrip.{md,json}. Goal: push and pull
of 1,000 each <= 60 s.

    .venv/bin/python bench/label_studio_roundtrip.py [--n 1000]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from almdn.projects.store import UNCERTAINTY_NAMES, Z_NAMES, Store  # noqa: E402
from almdn.workflow import pull as workflow_pull, push as workflow_push  # noqa: E402
from label_studio.client import LabelStudioClient  # noqa: E402
from label_studio.server import LABEL_STUDIO_VERSION, LocalServer, free_port, prepare_template  # noqa: E402

CLASSES = ["cat", "dog", "bird"]
W, H = 128, 96
TEMPLATE = REPO / ".cache" / "label-studio" / f"template-{LABEL_STUDIO_VERSION}"


def make_project(root: Path, store_dir: Path, n: int, seed: int = 0) -> Store:
    folder = root / "bench" / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    store = Store.open(store_dir, name="bench")
    store.add_classes(CLASSES)
    ids = store.add_images(paths, split="pool")["added"]
    mv = store.record_model_version(store_dir / "model.pt", name="bench-model")
    raw = rng.uniform(0, 1, (n, 4))
    z = (raw - raw.mean(0)) / raw.std(0)
    images = pd.DataFrame({"image_id": ids, "num_detections": 2, **{c: raw[:, k] for k, c in enumerate(UNCERTAINTY_NAMES)},
                           **{c: z[:, k] for k, c in enumerate(Z_NAMES)}, "score": z.max(1)})
    rows = [{"image_id": i, "detection": d, "label": 1 + (j + d) % 3, "score": 0.9, "x1": 5.0 + 40 * d, "y1": 8.0, "x2": 40.0 + 40 * d, "y2": 60.0,
             **{c: 0.5 for c in UNCERTAINTY_NAMES}, "cls_entropy": 0.3} for j, i in enumerate(ids) for d in range(2)]
    store.write_scores(mv, images, pd.DataFrame(rows))
    return store


def annotate_all(url: str, token: str, project_id: int, workers: int = 4) -> float:
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        tasks = api.get("/api/tasks", params={"project": project_id, "fields": "task_only", "page_size": 100000}).json()["tasks"]

    def post_all(chunk: list[dict]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:  # one connection per annotator
            for task in chunk:
                box = {"x": 10.0, "y": 12.5, "width": 25.0, "height": 50.0, "rotation": 0, "rectanglelabels": ["dog"]}
                body = {"lead_time": 3.0, "result": [{"original_width": W, "original_height": H, "image_rotation": 0, "value": box, "id": f"r{task['id']}",
                                                      "from_name": "label", "to_name": "image", "type": "rectanglelabels", "origin": "manual"}],
                        "draft_id": 0, "parent_prediction": None, "parent_annotation": None, "project": str(project_id)}
                api.post(f"/api/tasks/{task['id']}/annotations/", params={"project": project_id}, json=body).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post_all, [tasks[k::workers] for k in range(workers)]))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="tasks to push and annotations to pull")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "label-studio-roundtrip"))
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "scripts" / "setup_label_studio.sh")], check=True)
    t0 = time.perf_counter()
    prepare_template(TEMPLATE)
    template_s = time.perf_counter() - t0
    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = LocalServer(tmp / "home", port=free_port(), document_root=tmp / "root", template=TEMPLATE)
        (tmp / "root").mkdir()
        start_s = server.start()
        try:
            t0 = time.perf_counter()
            store = make_project(tmp / "root", tmp / "project", args.n)
            setup_s = time.perf_counter() - t0
            client = LabelStudioClient(server.url, server.credentials().token, document_root=tmp / "root")
            push = workflow_push(store, client, args.n)
            assert len(push.created) == args.n, push
            rows.append(("push (new tasks with 2 pre-annotated boxes each)", len(push.created), push.seconds))
            again = workflow_push(store, client, args.n)
            assert again.created == [] and len(again.already) == args.n
            rows.append(("push again (the same top-N: no new task)", len(again.already), again.seconds))
            annotate_s = annotate_all(server.url, server.credentials().token, push.project_id)
            rows.append(("annotator: post annotations (4 clients; not part of the goal)", args.n, annotate_s))
            pull = workflow_pull(store, client)
            assert pull.new_annotations == args.n and not pull.problems, pull
            rows.append(("pull (new annotations into the store)", pull.new_annotations, pull.seconds))
            repull = workflow_pull(store, client)
            assert repull.new_annotations == 0 and repull.duplicates == args.n
            rows.append(("pull again (all already pulled)", repull.duplicates, repull.seconds))
            assert len(store.labels()) == args.n and store.check_integrity() == []
            client.close()
            store.close()
            stop_t0 = time.perf_counter()
            server.stop()
            restart_s = server.start()
            stop_restart_s = time.perf_counter() - stop_t0
        finally:
            server.stop()
    pull_row = next(r for r in rows if r[0].startswith("pull ("))
    goal = {"push": rows[0][2] <= 60.0, "pull": pull_row[2] <= 60.0}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, Label Studio {LABEL_STUDIO_VERSION} (Django runserver, SQLite), loopback"
    lines = [
        f"# Label Studio round trip: {args.n} tasks",
        "",
        f"Machine: {machine}.",
        "",
        "| step | items | seconds | items/s |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {n} | {s:.2f} | {n / s:.0f} |" if n else f"| {name} | {n} | {s:.2f} | - |" for name, n, s in rows],
        "",
        f"Goal (push and pull of {args.n} each <= 60 s): push {'met' if goal['push'] else 'MISSED'} ({rows[0][2]:.1f} s), "
        f"pull {'met' if goal['pull'] else 'MISSED'} ({pull_row[2]:.1f} s).",
        "",
        f"Server: template ready in {template_s:.1f} s (0 when cached; about 60 s to migrate a new one), start from a template copy "
        f"{start_s:.1f} s, restart on the same data folder {restart_s:.1f} s (stop + start {stop_restart_s:.1f} s). "
        f"Project set-up ({args.n} PNGs written, hashed, scored in the store): {setup_s:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({
        "n": args.n, "machine": machine,
        "steps": [{"step": name, "items": n, "seconds": round(s, 3), "items_per_second": round(n / s, 1) if n else None} for name, n, s in rows],
        "goal_met": goal, "template_seconds": round(template_s, 2), "start_seconds": round(start_s, 2),
        "restart_seconds": round(restart_s, 2), "setup_seconds": round(setup_s, 2),
    }, indent=2) + "\n")
    print(f"Wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}.")
    return 0 if all(goal.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
