"""A demo project whose labels hold planted errors, reviewed, and its Review page photographed.

    .venv/bin/python scripts/review_demo.py --project /tmp/review-demo --out assets/screenshots

The demo project (:func:`almdn.projects.demo_project.create_demo_project`: its data, initial
set and round settings), except that its initial labeled set carries the planted-noise benchmark's
errors (``bench/label_noise.py``'s :func:`corrupt`: 5 % of the boxes deleted, 5 % given another
class, 5 % shifted or resized, 2 % spurious boxes added); the first round trains on them as a
user's would (:func:`almdn.workflow.run_round`), "Find label errors" runs in sample
(:func:`almdn.workflow.review.find_label_errors`), and the app's Review page is photographed in
a real headless Chromium (``scripts/app_screenshots.py``). Prints how many errors were planted
and how many items the queue holds. A rerun reuses the project (its model and queue) when it
is complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "scripts"))

from app_screenshots import PageShot, screenshots, streamlit_server  # noqa: E402
from label_noise import corrupt  # noqa: E402

from almdn.data.records import BoxRecord  # noqa: E402
from almdn.projects.demo_project import create_demo_project  # noqa: E402
from almdn.projects.store import Store  # noqa: E402
from almdn.review.scoring import labels_frame  # noqa: E402

PLANTED_META = "review_demo.planted"


def planted_records(records, classes: list[str], rng: np.random.Generator):
    """``records`` with the benchmark's errors planted; returns them and the planted frame."""
    targets = []
    for r in records:
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in r.boxes], dtype=np.float32).reshape(-1, 4)
        targets.append({"boxes": boxes, "labels": np.array([classes.index(b.class_name) + 1 for b in r.boxes], dtype=np.int64)})
    labels = labels_frame(targets, list(range(len(records))))
    corrupted, deleted = corrupt(labels, len(classes), (records[0].width, records[0].height), rng)
    by_image = dict(tuple(corrupted.groupby("image_id")))  # one pass; an image may have lost every box
    out = []
    for i, r in enumerate(records):
        rows = by_image.get(i, corrupted.iloc[:0])
        boxes = [BoxRecord(classes[int(row.label) - 1], float(row.x1), float(row.y1), float(row.x2), float(row.y2)) for row in rows.itertuples()]
        out.append(dataclasses.replace(r, boxes=boxes))
    return out, corrupted, deleted


def build(project: Path, seed: int) -> None:
    """The project with planted errors, its first model, and an in-sample review queue."""
    from almdn.workflow.review import find_label_errors

    def plant(store: Store, records, classes: list[str]):
        labeled, corrupted, deleted = planted_records(records, classes, np.random.default_rng(seed))
        store.set_meta(PLANTED_META, f"{len(deleted)} missing, " + ", ".join(
            f"{int((corrupted['planted'] == k).sum())} {k}" for k in ("class", "loose", "spurious")))
        return labeled

    print("creating the demo project with planted label errors, training its first model ...", flush=True)
    print(create_demo_project(project, name="demo with planted label errors", relabel=plant)["summary"], flush=True)
    with Store.open(project, create=False) as store:
        if store.latest_review_queue() is None:
            print("finding label errors (in sample) ...", flush=True)
            find_label_errors(store, 0)
        queue, _ = store.latest_review_queue()
        print(f"planted: {store.meta(PLANTED_META)}; queue: {len(queue)} items on {queue['image_id'].nunique()} images", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="The project folder (created, or reused when complete).")
    parser.add_argument("--out", default="assets/screenshots")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    project = Path(args.project).absolute()
    build(project, args.seed)
    with streamlit_server(project) as url:
        shots = screenshots(url, args.out, pages=[PageShot("review", "Send for review", "review")], height=2400, wait_s=60, trim=True)
    print(f"review drawn in {shots['review']['seconds']:.2f} s -> {shots['review']['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
