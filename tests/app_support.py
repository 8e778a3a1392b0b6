"""A tiny real project for the app's tests: the demo project at test size (30 pool-side
images, 8 test images, a 3-iteration model), built once per session and copied per test.

The copy holds only the store (``almdn.sqlite``); images, data and the checkpoint of the
first model version stay in the session's folder and are only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import pytest

from almdn.projects import jobs
from almdn.projects.demo_project import DemoProjectConfig, create_demo_project
from almdn.projects.rounds import RoundSettings
from almdn.projects.store import STORE_FILE, Store

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"
# A 3-iteration model scores every box about 1/11: threshold 0 keeps detections to rank by.
TINY_SETTINGS = RoundSettings(iterations=3, batch_size=4, conf_threshold=0.0, score_batch_size=16, lr=0.001)
#: The same sizes for the app's demo set-up (``$ALMDN_DEMO_SIZES``).
TINY_DEMO_SIZES = "num_train=24,num_test=6,initial=6,iterations=2,batch_size=4"


def tiny_config() -> DemoProjectConfig:
    config = DemoProjectConfig()
    config.data = dataclasses.replace(config.data, num_train=30, num_test=8, seed=5)
    config.initial = 8
    config.settings = TINY_SETTINGS
    return config


_BUILT: dict[str, Path] = {}


def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny demo project (built on first use)."""
    if "tiny" not in _BUILT:
        folder = tmp_path_factory.mktemp("tiny-app-project") / "demo"
        create_demo_project(folder, tiny_config())
        _BUILT["tiny"] = folder
    return _BUILT["tiny"]


def copy_project(source: Path, target: Path) -> Path:
    """A new project folder with a copy of ``source``'s store (closed, so the WAL is merged)."""
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        path = source / (STORE_FILE + suffix)
        if path.exists():
            shutil.copy2(path, target / path.name)
    return target


def stop_jobs(project_dir: Path) -> None:
    """End a job the test left running: cancel it, and kill its process group if it does not stop."""
    job = jobs.active_job(project_dir)
    if job is None:
        return
    job.cancel()
    try:
        job.wait(timeout=60)
    except TimeoutError:
        pid = job.read().get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


@pytest.fixture
def project(tmp_path_factory, tmp_path) -> Path:
    """A fresh copy of the tiny scored project, free to change (jobs left running are ended)."""
    folder = copy_project(built_project(tmp_path_factory), tmp_path / "project")
    yield folder
    stop_jobs(folder)


@pytest.fixture
def store(project):
    """The open store of :func:`project`, for tests that only read and write it."""
    with Store.open(project, create=False) as s:
        yield s


def write_small_box_dataset(root: Path, num_images: int = 20, sizes: tuple[float, float] = (8.0, 24.0)) -> Path:
    """A COCO dataset folder (annotations/train.json, images/) of issue 12's kind: 300 px
    photos, one class, 12 small boxes each (:func:`tests.test_anchors.planted_small_boxes`),
    with plain image files so that a project can import it. At 8-24 px only 6% of its 240 boxes
    have an anchor of the rounds' default model (128 px input) with IoU >= 0.5."""
    from PIL import Image

    from tests.test_anchors import planted_small_boxes

    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    dataset = planted_small_boxes(root / "annotations" / "train.json", num_images=num_images, sizes=sizes)
    for i, path in enumerate(dataset.file_paths):
        Image.new("RGB", (300, 300), (10 * i, 90, 60)).save(root / "images" / Path(path).name)  # distinct content
    return root


def write_corrupt_png(path: Path, width: int = 128, height: int = 128) -> Path:
    """A PNG whose header is valid (so its size can be read) but whose pixel data is cut off:
    a real-world half-copied file. Decoding it fails."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)  # noqa: E731
    pixels = zlib.compress(b"\x00" + b"\x80" * (width * 3))[:10]  # a truncated stream of one row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels))
    return path


def add_corrupt_pool_image(project_dir: Path) -> int:
    """A pool image whose file was damaged after it was added (the store refuses a corrupt
    file at import); returns its image id."""
    from PIL import Image

    images = Path(project_dir) / "incoming"
    images.mkdir(exist_ok=True)
    path = images / "broken.png"
    Image.new("RGB", (128, 128), (1, 2, 3)).save(path)
    with Store.open(project_dir, create=False) as store:
        image_id = store.add_images([path], split="pool", source="test")["added"][0]
    write_corrupt_png(path)
    return image_id


def rerun_fragments(at):
    """Re-run only the page's fragments, as the browser's timer does every second for a
    fragment with ``run_every`` (AppTest itself only re-runs whole pages). Elements drawn once
    with the page are not redrawn, so what such a run shows is exactly what stays live."""
    from streamlit.testing.v1 import local_script_runner

    ids = list(at._fragment_storage._fragments)
    original = local_script_runner.RerunData
    local_script_runner.RerunData = functools.partial(original, fragment_id_queue=ids, is_auto_rerun=True)
    try:
        at.run()
    finally:
        local_script_runner.RerunData = original
    return at
