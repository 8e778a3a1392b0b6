"""A real Label Studio server for the tests, a simulated annotator, and a proxy that cuts
connections, shared by the Label Studio test modules.

One server per test session: the set-up installs the server's virtual environment
(``scripts/setup_label_studio.sh``, stamped), migrates a template data folder once (cached in
``.cache/label-studio``), and starts a copy on a free port. Every test gets a fresh project.
The fixtures are imported by the test modules; the server itself is a module-level singleton
so that importing them into several modules still starts it once.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from almdn.projects.store import UNCERTAINTY_NAMES, Z_NAMES, Store
from label_studio.client import LabelStudioClient
from label_studio.server import LABEL_STUDIO_VERSION, LocalServer, free_port, prepare_template

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / ".cache" / "label-studio" / f"template-{LABEL_STUDIO_VERSION}"
CLASSES = ["cat", "dog", "bird"]
WIDTH, HEIGHT = 128, 96


@dataclass
class SessionServer:
    server: LocalServer
    root: Path  # the document root: every test's images live in a sub-folder
    template_seconds: float
    start_seconds: float
    restarts: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.credentials().token

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60)


_SESSION: dict[str, SessionServer] = {}


def _session_server(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SessionServer:
    if "server" in _SESSION:
        return _SESSION["server"]
    subprocess.run(["bash", str(REPO / "scripts" / "setup_label_studio.sh")], check=True, cwd=REPO)
    t0 = time.perf_counter()
    prepare_template(TEMPLATE)
    template_seconds = time.perf_counter() - t0
    root = tmp_path_factory.mktemp("ls-root")
    server = LocalServer(tmp_path_factory.mktemp("ls-home"), port=free_port(), document_root=root, template=TEMPLATE)
    start_seconds = server.start()
    config.add_cleanup(server.stop)
    _SESSION["server"] = SessionServer(server, root, template_seconds, start_seconds)
    return _SESSION["server"]


@pytest.fixture(scope="session")
def ls_server(request, tmp_path_factory) -> SessionServer:
    """The session's running Label Studio server."""
    return _session_server(request.config, tmp_path_factory)


_counter = itertools.count()


@dataclass
class LsProject:
    store: Store
    client: LabelStudioClient
    server: SessionServer
    image_ids: list[int]
    model_version: int
    folder: Path

    def ranked(self) -> list[int]:
        return self.store.pool_ranking()["image_id"].tolist()


def write_pool_images(folder: Path, n: int, size=(WIDTH, HEIGHT)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        path = folder / f"pool_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def synthetic_scores(store: Store, model_version: int, image_ids: list[int], seed: int = 0) -> None:
    """Scores and two detections per image (the last image: none) through the store's API."""
    rng = np.random.default_rng(seed)
    n = len(image_ids)
    raw = rng.uniform(0, 1, (n, 4))
    z = (raw - raw.mean(0)) / raw.std(0)
    score = z.max(1)
    num = np.full(n, 2)
    num[-1] = 0
    score[-1] = np.nan
    images = pd.DataFrame({"image_id": image_ids, "num_detections": num, **{c: raw[:, k] for k, c in enumerate(UNCERTAINTY_NAMES)}, **{c: z[:, k] for k, c in enumerate(Z_NAMES)}, "score": score})
    rows = []
    for j, image_id in enumerate(image_ids[:-1]):
        for d in range(2):
            x1, y1 = 4.0 + 30 * d + j % 7, 6.0 + 20 * d
            rows.append({"image_id": image_id, "detection": d, "label": 1 + (j + d) % 3, "score": 0.9 - 0.1 * d, "x1": x1, "y1": y1, "x2": x1 + 25.5, "y2": y1 + 30.25,
                         **{c: float(rng.uniform()) for c in UNCERTAINTY_NAMES}, "cls_entropy": 0.5})
    store.write_scores(model_version, images, pd.DataFrame(rows), conf_threshold=0.5)


@pytest.fixture
def ls_project(ls_server, tmp_path) -> LsProject:
    """A fresh project (store, images, one scored model version) and a client for it."""
    k = next(_counter)
    folder = ls_server.root / f"project{k}-{secrets.token_hex(3)}" / "images"
    paths = write_pool_images(folder, 8)
    store = Store.open(tmp_path / "project", name=f"test {k}")
    store.add_classes(CLASSES)
    ids = store.add_images(paths, split="pool")["added"]
    mv = store.record_model_version(tmp_path / "model.pt", {"map50": 0.25}, name="model-a")
    synthetic_scores(store, mv, ids)
    client = LabelStudioClient(ls_server.url, ls_server.token, document_root=ls_server.root)
    yield LsProject(store, client, ls_server, ids, mv, folder)
    client.close()
    store.close()


# --------------------------------------------------------------------------- the annotator


def region(label: str, box: tuple[float, float, float, float], width: int = WIDTH, height: int = HEIGHT) -> dict[str, Any]:
    """One rectangle exactly as the browser UI posts it: percent of the original size."""
    x1, y1, x2, y2 = box
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"x": x1 / width * 100, "y": y1 / height * 100, "width": (x2 - x1) / width * 100, "height": (y2 - y1) / height * 100, "rotation": 0, "rectanglelabels": [label]},
        "id": secrets.token_urlsafe(8)[:10],
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


class Annotator:
    """Posts annotations the way the Label Studio browser UI does (same endpoint, same body)."""

    def __init__(self, server: SessionServer) -> None:
        self.api = server.api()

    def submit(self, project_id: int, task_id: int, boxes: list[tuple[str, tuple[float, float, float, float]]], size: tuple[int, int] = (WIDTH, HEIGHT)) -> dict[str, Any]:
        body = {
            "lead_time": 7.5,
            "result": [region(label, box, *size) for label, box in boxes],
            "draft_id": 0,
            "parent_prediction": None,
            "parent_annotation": None,
            "started_at": "2026-01-01T10:00:00.000Z",
            "project": str(project_id),
        }
        response = self.api.post(f"/api/tasks/{task_id}/annotations/", params={"project": project_id}, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def skip(self, project_id: int, task_id: int) -> dict[str, Any]:
        body = {"result": [], "was_cancelled": True, "lead_time": 1.0, "draft_id": 0, "parent_prediction": None, "parent_annotation": None,
                "started_at": "2026-01-01T10:00:00.000Z", "project": str(project_id)}
        response = self.api.post(f"/api/tasks/{task_id}/annotations/", params={"project": project_id}, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def update(self, annotation_id: int, boxes: list[tuple[str, tuple[float, float, float, float]]]) -> dict[str, Any]:
        response = self.api.patch(f"/api/annotations/{annotation_id}/", json={"result": [region(label, box) for label, box in boxes], "lead_time": 3.0})
        assert response.status_code == 200, response.text
        return response.json()

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        response = self.api.get("/api/tasks", params={"project": project_id, "fields": "all", "page_size": 10000})
        response.raise_for_status()
        return response.json()["tasks"]

    def close(self) -> None:
        self.api.close()


@pytest.fixture
def annotator(ls_server):
    a = Annotator(ls_server)
    yield a
    a.close()


# --------------------------------------------------------------------------- a proxy that cuts


class CuttingProxy:
    """A TCP proxy in front of the server that can drop a connection the moment a request
    matching ``cut_on`` (bytes in its request line) has been answered by the server: the server
    did the work, the client never hears of it. Real sockets, real server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_on: bytes | None = None
        self.cuts = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"cut": False}
            threading.Thread(target=self._pump, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, state, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict, to_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_server and self.cut_on is not None and self.cut_on in data.split(b"\r\n", 1)[0]:
                    state["cut"] = True
                if not to_server and state["cut"]:
                    # The server answered the matching request: hang up on the client instead.
                    self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def proxy(ls_server):
    p = CuttingProxy(ls_server.server.port)
    yield p
    p.close()
