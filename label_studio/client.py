"""The round trip with a Label Studio server: push the most informative pool images as tasks
(with the model's detections as pre-annotations), pull the finished annotations into the store.

Guarantees, whatever the server does between two calls:

- **No duplicate tasks.** Every task carries our project's id and the image's store id in its
  data. Before importing, :meth:`LabelStudioClient.push` lists the project's tasks and adopts
  those an interrupted push had created, so pushing the same images twice (or retrying after a
  crash between the server's answer and the store's commit) creates nothing new.
- **No duplicate or lost annotations.** An annotation is stored once per (project, annotation
  id, version); an annotation edited after a pull is stored again as the image's new current
  labels, the earlier version kept as history. Cancelled (skipped) annotations are not labels.
- **Nothing half-written.** The server is read completely first; the store is written in one
  transaction at the end. A server that goes away in the middle leaves the store as it was,
  and the next call picks up where this one would have.
- **Clear refusals.** A label outside the class list, a box on an image of another size, a
  missing server: one sentence naming the task or server and what to do; the other
  annotations of the same pull are still stored.

Boxes travel in percent of ``original_width`` / ``original_height`` (Label Studio's
rectangle results); :func:`percent_to_pixels` converts exactly (to 1e-6 px).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from almdn.store import Store
from label_studio.config import FROM_NAME, IMAGE_FIELD, TO_NAME, build_label_config, config_labels
from label_studio.server import read_secret_json, write_secret_json

#: Task data keys that tie a task to our project and image.
PROJECT_KEY = "almdn_project"
IMAGE_KEY = "almdn_image_id"
IMPORT_CHUNK = 1000  # tasks per import request: one request for a usual batch


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not do something; the message says what to do."""


class LabelStudioUnavailable(LabelStudioError):
    """The server cannot be reached (down, wrong URL) or stopped answering mid-way."""


# --------------------------------------------------------------------------- geometry


def percent_to_pixels(value: dict[str, Any], width: int, height: int) -> tuple[float, float, float, float]:
    """A rectangle result's ``value`` (percent of the original size) as pixel ``(x1, y1, x2, y2)``.

    A rotated rectangle (rotation in degrees, clockwise about its top-left corner, as Label
    Studio draws it) becomes its axis-aligned bounding box. Rounded to 1e-6 px so that a box
    drawn on whole pixels comes back as whole pixels despite the percent's float error.
    """
    x = float(value["x"]) * width / 100.0
    y = float(value["y"]) * height / 100.0
    w = float(value["width"]) * width / 100.0
    h = float(value["height"]) * height / 100.0
    rotation = float(value.get("rotation") or 0.0)
    if rotation % 360.0:
        a = math.radians(rotation)
        corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
        xs = [x + cx * math.cos(a) - cy * math.sin(a) for cx, cy in corners]
        ys = [y + cx * math.sin(a) + cy * math.cos(a) for cx, cy in corners]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        x1, y1, x2, y2 = x, y, x + w, y + h
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    return tuple(round(v, 6) + 0.0 for v in (x1, y1, x2, y2))  # type: ignore[return-value]


def pixels_to_percent(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    """Pixel ``(x1, y1, x2, y2)`` as a rectangle ``value`` in percent (no rotation)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    return {
        "x": x1 / width * 100.0,
        "y": y1 / height * 100.0,
        "width": (x2 - x1) / width * 100.0,
        "height": (y2 - y1) / height * 100.0,
        "rotation": 0,
    }


# --------------------------------------------------------------------------- reports


@dataclass
class PushReport:
    """What a push did."""

    project_id: int
    batch_id: int | None
    requested: int
    created: list[tuple[int, int]] = field(default_factory=list)  # (task id, image id)
    adopted: list[tuple[int, int]] = field(default_factory=list)
    already: list[int] = field(default_factory=list)  # image ids that already had a task
    seconds: float = 0.0

    def __str__(self) -> str:
        parts = [f"Pushed {_plural(len(self.created), 'new task')} to Label Studio project {self.project_id}"]
        if self.batch_id is not None:
            parts[0] += f" (batch {self.batch_id})"
        if self.already:
            parts.append(f"{len(self.already)} of the top {self.requested} images already {'has' if len(self.already) == 1 else 'have'} a task")
        if self.adopted:
            parts.append(f"{_plural(len(self.adopted), 'task')} left by an interrupted push {'was' if len(self.adopted) == 1 else 'were'} recorded")
        return "; ".join(parts) + f" ({self.seconds:.1f} s)."


@dataclass
class PullReport:
    """What a pull did; ``problems`` are sentences for the user (rejected annotations...)."""

    project_id: int
    new_annotations: int = 0
    updated_annotations: int = 0
    labeled_images: list[int] = field(default_factory=list)
    skipped_tasks: list[int] = field(default_factory=list)
    deleted_tasks: list[int] = field(default_factory=list)
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return len(self.problems)

    def __str__(self) -> str:
        text = (
            f"Pulled {self.new_annotations} new and {_plural(self.updated_annotations, 'updated annotation')} from Label Studio project "
            f"{self.project_id}: {_plural(len(self.labeled_images), 'image')} labeled"
        )
        if self.skipped_tasks:
            text += f", {_plural(len(self.skipped_tasks), 'task')} skipped by the annotator"
        if self.deleted_tasks:
            text += f", {_plural(len(self.deleted_tasks), 'task')} deleted on the server"
        if self.duplicates:
            text += f", {self.duplicates} already pulled"
        if self.problems:
            text += f", {_plural(len(self.problems), 'annotation')} rejected"
        return text + f" ({self.seconds:.1f} s)."


# --------------------------------------------------------------------------- connection settings


def save_connection(project_dir: str | os.PathLike[str], url: str, token: str | None = None, local: bool = False, document_root: str | None = None) -> Path:
    """Remember how the project reaches its server (``label-studio/connection.json``, mode
    0600). A local server's token stays in its own credentials file."""
    data: dict[str, Any] = {"url": url.rstrip("/"), "local": local, "document_root": document_root}
    if token is not None:
        data["token"] = token
    return write_secret_json(Path(project_dir) / "label-studio" / "connection.json", data)


def load_connection(project_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"url", "token", "document_root"}`` of the project's server."""
    project_dir = Path(project_dir)
    path = project_dir / "label-studio" / "connection.json"
    if not path.exists():
        raise LabelStudioError(
            f"Project '{project_dir}' is not connected to Label Studio; start a local server (almdn ls start) "
            "or connect to one (almdn ls connect URL)."
        )
    try:
        data = read_secret_json(path)
    except Exception as exc:  # ServerError: a damaged file
        raise LabelStudioError(str(exc)) from None
    if data.get("local"):
        from label_studio.server import Credentials

        try:
            data["token"] = Credentials.load(project_dir / "label-studio" / "credentials.json").token
        except Exception as exc:
            raise LabelStudioError(str(exc)) from None
    if not data.get("token"):
        raise LabelStudioError(f"No API token stored for {data.get('url')}; connect again (almdn ls connect URL).")
    return data


# --------------------------------------------------------------------------- the client


class LabelStudioClient:
    """A Label Studio server reached by URL and API token.

    Args:
        url: e.g. ``http://127.0.0.1:8080``.
        token: the API token (never logged or shown; ``repr`` hides it).
        document_root: the folder the server serves local files from (a server started by
            :class:`label_studio.server.LocalServer`); images are then referenced in place.
            None (a remote server): images are uploaded with their tasks.
        timeout: seconds per request.
        page_size: tasks per listing request.
    """

    def __init__(self, url: str, token: str, *, document_root: str | os.PathLike[str] | None = None, timeout: float = 60.0, page_size: int = 500) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.document_root = Path(document_root).resolve() if document_root else None
        self.page_size = int(page_size)
        # Reads may be retried; every write passes max_retries=0, because a retried POST whose
        # first attempt reached the server would create its tasks twice.
        self._sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout, max_retries=2)
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=timeout)
        self._users: dict[int, str] | None = None

    @classmethod
    def for_project(cls, project_dir: str | os.PathLike[str], **kwargs: Any) -> LabelStudioClient:
        """The client for the connection saved in ``project_dir``."""
        conn = load_connection(project_dir)
        return cls(conn["url"], conn["token"], document_root=conn.get("document_root"), **kwargs)

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r}, token=***)"

    def close(self) -> None:
        self._http.close()
        with contextlib.suppress(Exception):
            self._sdk._client_wrapper.httpx_client.httpx_client.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _talking(self, doing: str, nothing_written: bool = True):
        """Turn transport and HTTP failures into one clear sentence."""
        from label_studio_sdk.core.api_error import ApiError

        after = " Nothing was written to the project store; run the command again when the server is back." if nothing_written else ""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise LabelStudioUnavailable(f"Cannot reach Label Studio at {self.url} while {doing} ({_reason(exc)}); start it (almdn ls start) or check the URL.{after}") from None
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.NetworkError) as exc:
            raise LabelStudioUnavailable(f"Label Studio at {self.url} stopped answering while {doing} ({_reason(exc)}); check the server.{after}") from None
        except ApiError as exc:
            raise self._api_error(exc.status_code, exc.body, doing, after) from None
        except httpx.HTTPStatusError as exc:
            raise self._api_error(exc.response.status_code, exc.response.text, doing, after) from None

    def _api_error(self, status: int | None, body: Any, doing: str, after: str) -> LabelStudioError:
        if status in (401, 403):
            return LabelStudioError(f"Label Studio at {self.url} rejects the API token (HTTP {status}) while {doing}; connect again with a valid token (almdn ls connect).{after}")
        detail = body.get("detail") if isinstance(body, dict) else None
        detail = detail or (json.dumps(body)[:200] if not isinstance(body, str) else body[:200])
        return LabelStudioError(f"Label Studio at {self.url} answered HTTP {status} while {doing} ({detail}).{after}")

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()

    # ------------------------------------------------------------------ server and project

    def version(self) -> str:
        """The server's Label Studio version (and a check that URL and token work)."""
        with self._talking("checking the server"):
            info = self._get("/api/version")
            self._get("/api/current-user/whoami")
        return str(info.get("release") or info.get("label-studio-os-package", {}).get("version", "?"))

    @staticmethod
    def project_title(store: Store) -> str:
        return f"almdn: {store.name} ({store.project_uuid[:8]})"

    def ensure_project(self, store: Store) -> tuple[int, int]:
        """The Label Studio project of ``store`` on this server, created when missing; its
        labeling config follows the store's class list. Returns ``(local row, project id)``."""
        classes = store.classes()
        if not classes:
            raise LabelStudioError("The project has no classes yet; add a labeled dataset or classes (almdn project create --classes) first.")
        config = build_label_config(classes)
        title = self.project_title(store)
        known = store.ls_projects(self.url)
        from label_studio_sdk.core.api_error import ApiError

        gone: list[int] = []
        with self._talking("finding the project"):
            project = None
            for local_row, pid in reversed(list(zip(known["id"].tolist(), known["project_id"].tolist()))):
                try:
                    project = self._sdk.projects.get(int(pid))
                    break
                except ApiError as exc:
                    if exc.status_code != 404:
                        raise
                    gone.append(int(local_row))  # deleted on the server
            if project is None:  # not recorded, or deleted on the server: look it up by title
                for candidate in self._sdk.projects.list(page_size=100):
                    if candidate.title == title:
                        project = candidate
                        break
            if project is None:
                project = self._sdk.projects.create(
                    title=title,
                    description=f"Active learning project {store.name} ({store.project_uuid}), managed by almdn.",
                    label_config=config,
                    request_options={"max_retries": 0},
                )
            elif config_labels(project.label_config or "") != classes:
                self._sdk.projects.update(int(project.id), label_config=config, request_options={"max_retries": 0})
        row = store.ls_project(self.url, int(project.id), title)
        for local_row in gone:
            if local_row != row:
                store.close_ls_project(local_row)
        return row, int(project.id)

    # ------------------------------------------------------------------ listing

    def _list_tasks(self, project_id: int, include: str | None, doing: str) -> list[dict[str, Any]]:
        """Every task of the project, page by page; raises before returning anything if any
        page fails. ``include`` (e.g. ``"id,data"``) keeps only those fields, five times
        faster, but reduces annotations to their ids: None for complete tasks."""
        tasks: list[dict[str, Any]] = []
        page = 1
        with self._talking(doing):
            while True:
                params = {"project": project_id, "fields": "all", "page": page, "page_size": self.page_size}
                if include:
                    params["include"] = include
                response = self._http.get("/api/tasks", params=params)
                if response.status_code == 404 and page > 1:
                    break  # past the last page
                response.raise_for_status()
                body = response.json()
                chunk = body["tasks"] if isinstance(body, dict) else body
                tasks.extend(chunk)
                total = body.get("total") if isinstance(body, dict) else None
                if not chunk or len(chunk) < self.page_size or (total is not None and len(tasks) >= total):
                    break
                page += 1
        return tasks

    def _ours(self, tasks: list[dict[str, Any]], store: Store) -> dict[int, list[dict[str, Any]]]:
        """Tasks of this store's project, by image id."""
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        uuid = store.project_uuid
        for task in tasks:
            data = task.get("data") or {}
            if data.get(PROJECT_KEY) == uuid and isinstance(data.get(IMAGE_KEY), int):
                out[int(data[IMAGE_KEY])].append(task)
        return out

    def _task_image(self, task_id: int) -> int | None:
        """The image id in a task's data (None: no such task, or not one of ours)."""
        response = self._http.get(f"/api/tasks/{int(task_id)}", params={"fields": "task_only"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        value = (response.json().get("data") or {}).get(IMAGE_KEY)
        return int(value) if isinstance(value, int) else None

    def _annotators(self) -> dict[int, str]:
        if self._users is None:
            from label_studio_sdk.core.api_error import ApiError

            try:
                self._users = {int(u.id): str(u.email or u.username or u.id) for u in self._sdk.users.list()}
            except ApiError:  # a token without the right to list users: ids will do
                self._users = {}
        return self._users

    # ------------------------------------------------------------------ push

    def push(self, store: Store, top_k: int | None = None, *, image_ids: Sequence[int] | None = None, model_version: int | None = None,
             task_data: dict[int, dict[str, Any]] | None = None) -> PushReport:
        """Make sure the ``top_k`` most informative pool images (or exactly ``image_ids``) are
        tasks in Label Studio, with ``model_version``'s detections as pre-annotations.

        ``task_data`` adds fields to each new task's data, by image id (the ranking: rank,
        final score, uncertainties; Label Studio's data manager can sort and filter by them).

        Images that already have a live task (open, annotated or skipped) are not sent again,
        so the same push twice creates no new tasks. The new tasks are recorded as one batch,
        in one store transaction after the server confirmed them.
        """
        from almdn.acquisition.selection import select_batch

        t0 = time.perf_counter()
        if (top_k is None) == (image_ids is None):
            raise ValueError("give either top_k or image_ids")
        if top_k is not None and top_k <= 0:
            raise LabelStudioError("--top-k must be at least 1.")
        scored = store.latest_model_version(scored=True) if model_version is None else model_version
        if image_ids is None:
            ranking = store.pool_ranking(scored)
            chosen = select_batch(ranking.set_index("image_id")["score"].astype(float), int(top_k)).image_ids
        else:
            chosen = [int(i) for i in image_ids]
            pool = set(store.image_ids("pool"))
            outside = [i for i in chosen if i not in pool]
            if outside:
                raise LabelStudioError(f"Images {outside[:10]} are not in the pool (already labeled, test, or unknown); push only pool images.")
        requested = len(chosen)
        row, project_id = self.ensure_project(store)
        recorded = store.tasks(row)
        live = recorded[recorded["status"] != "deleted"]
        live_pairs = {(int(t), int(i)) for t, i in zip(live["task_id"], live["image_id"])}
        has_task = set(live["image_id"].tolist())
        server_tasks: dict[int, list[dict[str, Any]]] = {}
        if any(i not in has_task for i in chosen):  # only then can an orphan matter
            server_tasks = self._ours(self._list_tasks(project_id, "id,data", "listing the project's tasks"), store)
        adopted: list[tuple[int, int]] = []
        already: list[int] = []
        new_images: list[int] = []
        for image_id in chosen:
            orphans = [t["id"] for t in server_tasks.get(image_id, []) if (int(t["id"]), image_id) not in live_pairs]
            if image_id in has_task:
                already.append(image_id)
            elif orphans:
                adopted += [(int(t), image_id) for t in orphans]
            else:
                new_images.append(image_id)
        created: list[tuple[int, int]] = []
        if new_images:
            payloads = self._task_payloads(store, project_id, new_images, scored, task_data or {})
            with self._talking("importing tasks"):
                for start in range(0, len(payloads), IMPORT_CHUNK):
                    part = payloads[start:start + IMPORT_CHUNK]
                    result = self._sdk.projects.import_tasks(project_id, request=part, return_task_ids=True, request_options={"max_retries": 0})
                    task_ids = list(result.task_ids or [])
                    if len(task_ids) != len(part):
                        raise LabelStudioError(f"Label Studio created {len(task_ids)} tasks for {len(part)} images; run the push again to reconcile.")
                    created += [(int(t), int(p["data"][IMAGE_KEY])) for t, p in zip(task_ids, part)]
        batch = store.record_batch(row, created, scored, top_k, adopted=adopted)
        return PushReport(project_id, batch, requested, created, adopted, already, time.perf_counter() - t0)

    def _task_payloads(self, store: Store, project_id: int, image_ids: list[int], model_version: int | None, task_data: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        images = store.images().set_index("image_id").loc[image_ids]
        urls = self._image_urls(project_id, images, store.project_uuid)
        predictions: dict[int, list[dict[str, Any]]] = defaultdict(list)
        mv_name = None
        if model_version is not None:
            mv_name = str(store.model_version(int(model_version))["name"])
            detections = store.detections(model_version, image_ids)
            for r in detections.itertuples(index=False):
                w, h = int(images.at[r.image_id, "width"]), int(images.at[r.image_id, "height"])
                predictions[int(r.image_id)].append({
                    "id": f"mv{model_version}-{r.detection}",
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "type": "rectanglelabels",
                    "original_width": w,
                    "original_height": h,
                    "image_rotation": 0,
                    "value": {**pixels_to_percent((r.x1, r.y1, r.x2, r.y2), w, h), "rectanglelabels": [r.class_name]},
                    "score": float(r.score),
                })
        payloads = []
        for image_id in image_ids:
            data = {k: _json_safe(v) for k, v in (task_data.get(image_id) or {}).items()}
            # our own keys last: extra data can never re-point a task at another image
            data.update({IMAGE_FIELD: urls[image_id], PROJECT_KEY: store.project_uuid, IMAGE_KEY: int(image_id), "file": Path(images.at[image_id, "path"]).name})
            task: dict[str, Any] = {"data": data}
            if mv_name is not None:
                boxes = predictions.get(image_id, [])
                prediction: dict[str, Any] = {"model_version": mv_name, "result": boxes}
                # Label Studio shows the score as a 0-1 confidence: the model's mean confidence in
                # the boxes it proposes (the ranking score is a z-score and goes into the data).
                if boxes:
                    prediction["score"] = sum(b["score"] for b in boxes) / len(boxes)
                task["predictions"] = [prediction]
            payloads.append(task)
        return payloads

    def _image_urls(self, project_id: int, images: Any, project_uuid: str) -> dict[int, str]:
        """URLs the server can show the images at: local files in place, or uploads.

        A local server serves only its document root, and in it only this project's folder
        ``almdn-<project>/``, which holds one symbolic link per image sent
        (``<image id>/<file name>``): nothing else beside the images (annotation files,
        other datasets) can be reached, wherever the images live. The file name is
        percent-encoded in the URL (``#``, ``&``, ``+``, ``%`` are legal in file names).
        """
        paths = {int(i): Path(p) for i, p in images["path"].items()}
        if self.document_root is None:
            return self._upload(project_id, paths)
        folder = self.document_root / f"almdn-{project_uuid[:12]}"
        urls = {}
        try:
            for image_id, path in paths.items():
                link = folder / str(image_id) / path.name
                target = path.resolve()
                if not (link.is_symlink() and Path(os.readlink(link)) == target):
                    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
                    tmp.unlink(missing_ok=True)
                    tmp.symlink_to(target)
                    os.replace(tmp, link)  # atomic: a task never sees a missing link
                urls[image_id] = "/data/local-files/?d=" + quote(link.relative_to(self.document_root).as_posix(), safe="/")
        except OSError as exc:
            raise LabelStudioError(
                f"Cannot link the images into the folder the server serves ('{folder}': {exc.strerror or type(exc).__name__}); "
                "make it writable, then push again. Nothing was written to the project store."
            ) from None
        with self._talking("registering the image folder"):
            existing = {Path(s.path) for s in self._sdk.import_storage.local.list(project=project_id) if s.path}
            if folder not in existing:
                self._sdk.import_storage.local.create(project=project_id, path=str(folder), title=f"almdn images {folder.name}", use_blob_urls=True, request_options={"max_retries": 0})
        return urls

    def _upload(self, project_id: int, paths: dict[int, Path]) -> dict[int, str]:
        """Upload images (without creating tasks) and return their served URLs."""
        urls = {}
        with self._talking("uploading images"):
            for image_id, path in paths.items():
                try:
                    content = path.read_bytes()
                except OSError as exc:
                    raise LabelStudioError(f"Cannot read image '{path}' ({exc.strerror}); restore it, then push again.") from None
                response = self._http.post(f"/api/projects/{project_id}/import", params={"commit_to_project": "false"}, files={path.name: (path.name, content)})
                response.raise_for_status()
                upload_id = response.json()["file_upload_ids"][0]
                info = self._get(f"/api/import/file-upload/{upload_id}")
                urls[image_id] = "/data/" + str(info["file"]).lstrip("/")
        return urls

    # ------------------------------------------------------------------ skipped tasks

    def _skipped_tasks(self, store: Store, image_ids: Sequence[int]) -> list[tuple[int, int, int]]:
        """``(local project row, task id, image id)`` of the skipped tasks of ``image_ids``;
        one sentence if an image has none."""
        tasks = store.tasks()
        skipped = tasks[(tasks["status"] == "skipped") & tasks["image_id"].isin([int(i) for i in image_ids])] if not tasks.empty else tasks
        missing = sorted(set(int(i) for i in image_ids) - set(skipped["image_id"].tolist()))
        if missing:
            raise LabelStudioError(f"Images {missing[:10]} have no skipped task in Label Studio; import the latest labels first (almdn pull), then try again.")
        ours = store.ls_projects(self.url)
        rows = set(ours["id"].tolist())
        elsewhere = skipped[~skipped["ls_project"].isin(rows)]
        if len(elsewhere):
            raise LabelStudioError(f"Images {sorted(elsewhere['image_id'].tolist())[:10]} were sent to another Label Studio server; connect to it to resend them.")
        return [(int(r), int(t), int(i)) for r, t, i in zip(skipped["ls_project"], skipped["task_id"], skipped["image_id"])]

    def reopen_skipped(self, store: Store, image_ids: Sequence[int]) -> int:
        """Open the skipped tasks of ``image_ids`` again: the annotator's skip (a cancelled
        annotation) is deleted, so the same task, with its pre-annotations, waits in the queue
        again; no task is created. Returns how many tasks were reopened."""
        tasks = self._skipped_tasks(store, image_ids)
        for row, task_id, image_id in tasks:
            with self._talking(f"reopening task {task_id}"):
                task = self._get(f"/api/tasks/{task_id}")
                if (task.get("data") or {}).get(IMAGE_KEY) != image_id:
                    raise LabelStudioError(f"Task {task_id} in Label Studio no longer shows image {image_id}; import the latest labels (almdn pull), then try again.")
                for annotation in task.get("annotations") or []:
                    if annotation.get("was_cancelled"):
                        response = self._http.delete(f"/api/annotations/{int(annotation['id'])}/")
                        if response.status_code != 404:  # already gone: the same result
                            response.raise_for_status()
            store.record_pull(row, self.url, [], {(task_id, image_id): "open"}, [])
        return len(tasks)

    def release_skipped(self, store: Store, image_ids: Sequence[int]) -> int:
        """Put skipped images back into the pool: their tasks are deleted in Label Studio and
        recorded as deleted, so a later batch may choose the images again. Returns how many."""
        tasks = self._skipped_tasks(store, image_ids)
        for row, task_id, image_id in tasks:
            with self._talking(f"deleting task {task_id}"):
                if self._task_image(task_id) == image_id:  # never delete a task that now holds another image
                    response = self._http.delete(f"/api/tasks/{task_id}/")
                    if response.status_code != 404:
                        response.raise_for_status()
            store.record_pull(row, self.url, [], {}, [(task_id, image_id)])
        return len(tasks)

    # ------------------------------------------------------------------ pull

    def pull(self, store: Store) -> PullReport:
        """Bring every finished annotation of the store's project into the store.

        Skips cancelled annotations (the task is marked ``skipped``), annotations already
        pulled, and annotations with labels outside the class list or of an image of another
        size (each named in ``problems``; its task stays open and is read again next time).
        Tasks deleted on the server are marked ``deleted`` (labels already pulled stay);
        batches become ``partial`` or ``done``. One store transaction at the end.
        """
        t0 = time.perf_counter()
        known = store.ls_projects(self.url)
        if known.empty:
            raise LabelStudioError(f"Nothing was pushed to Label Studio at {self.url} from this project yet; push first (almdn push --top-k K).")
        row, project_id = int(known["id"].iloc[-1]), int(known["project_id"].iloc[-1])
        report = PullReport(project_id)
        tasks = self._list_tasks(project_id, None, "reading the annotations")
        by_image = self._ours(tasks, store)
        recorded = store.tasks(row)
        recorded = recorded[recorded["status"] != "deleted"]
        # A task is (task id, image id): the server gives a deleted task's id to the next task.
        live = {(int(t), int(i)) for t, i in zip(recorded["task_id"], recorded["image_id"])}
        on_server = {(int(t["id"]), image_id) for image_id, ts in by_image.items() for t in ts}
        listed_ids = {t for t, _ in on_server}
        with self._talking("checking deleted tasks"):
            # A task missing from the listing is looked up once more (a deletion during the
            # listing shifts its pages); one listed with another image was replaced.
            gone = [(t, i) for t, i in sorted(live - on_server) if t in listed_ids or self._task_image(t) != i]
        images = store.images().set_index("image_id")
        classes = set(store.classes())
        have = store.annotations()
        have = have[have["origin"] == "label_studio"]
        have = have[have["ls_project"] == row]
        stored_versions = {(int(a), str(u)) for a, u in zip(have["ls_annotation_id"], have["updated_at"])}
        stored_ids = {(int(t), int(a)) for t, a in zip(have["ls_task_id"], have["ls_annotation_id"])}
        users = None
        new_annotations: list[dict[str, Any]] = []
        task_status: dict[tuple[int, int], str] = {}
        adopted: list[tuple[int, int]] = []
        for image_id, image_tasks in by_image.items():
            if image_id not in images.index:
                report.problems.append(f"Tasks {[t['id'] for t in image_tasks]} refer to image {image_id}, which is not in the project store; delete them in Label Studio.")
                continue
            image = images.loc[image_id]
            for task in image_tasks:
                task_id = int(task["id"])
                key_task = (task_id, image_id)
                if key_task not in live:
                    adopted.append(key_task)
                annotations = task.get("annotations") or []
                submitted = [a for a in annotations if not a.get("was_cancelled")]
                if annotations and not submitted:
                    task_status[key_task] = "skipped"
                for ann in submitted:
                    if (int(ann["id"]), str(ann.get("updated_at"))) in stored_versions:
                        report.duplicates += 1
                        task_status[key_task] = "annotated"
                        continue
                    boxes, problem = self._boxes(ann, task_id, image, classes)
                    if problem:
                        report.problems.append(problem)
                        continue
                    if users is None:
                        with self._talking("reading the annotators"):
                            users = self._annotators()
                    who = ann.get("completed_by")
                    who = who.get("id") if isinstance(who, dict) else who
                    new_annotations.append({
                        "image_id": image_id, "task_id": task_id, "annotation_id": int(ann["id"]), "boxes": boxes,
                        "annotator": users.get(int(who), f"user {who}") if who is not None else None,
                        "created_at": ann.get("created_at"), "updated_at": str(ann.get("updated_at")), "lead_time": ann.get("lead_time"),
                        "update": (task_id, int(ann["id"])) in stored_ids,
                    })
                    task_status[key_task] = "annotated"
        # The newest annotation of an image becomes its current labels.
        new_annotations.sort(key=lambda a: (a["updated_at"], a["annotation_id"]))
        self._write_pull(store, row, new_annotations, task_status, gone, adopted, report)
        report.seconds = time.perf_counter() - t0
        return report

    def _boxes(self, ann: dict[str, Any], task_id: int, image: Any, classes: set[str]) -> tuple[list[Any], str | None]:
        where = f"Annotation {ann['id']} of task {task_id} (image '{image['path']}')"
        boxes = []
        for region in ann.get("result") or []:
            if region.get("type") != "rectanglelabels":
                continue  # e.g. a relation or a comment: not a box
            if region.get("from_name") != FROM_NAME:
                return [], f"{where} has boxes from the control '{region.get('from_name')}', not '{FROM_NAME}'; relabel it with the project's labeling interface, then pull again."
            value = region.get("value") or {}
            names = value.get("rectanglelabels") or []
            if len(names) != 1:
                return [], f"{where} has a box with {len(names)} labels; give every box exactly one label in Label Studio, then pull again."
            if names[0] not in classes:
                return [], f"{where} uses the label '{names[0]}', which is not one of the project's classes ({', '.join(sorted(classes))}); correct it in Label Studio (or add the class), then pull again."
            width, height = int(image["width"]), int(image["height"])
            ow, oh = region.get("original_width") or width, region.get("original_height") or height
            if (int(ow), int(oh)) != (width, height):
                return [], f"{where} was drawn on a {ow}x{oh} image but the stored image is {width}x{height}; check that the file was not replaced, then pull again."
            try:
                x1, y1, x2, y2 = percent_to_pixels(value, width, height)
            except (KeyError, TypeError, ValueError):
                return [], f"{where} has a box without x, y, width and height; fix it in Label Studio, then pull again."
            if x2 <= x1 or y2 <= y1:
                continue  # a zero-size box marks nothing
            boxes.append(_Box(names[0], x1, y1, x2, y2, region_id=region.get("id")))
        return boxes, None

    def _write_pull(self, store: Store, row: int, annotations: list[dict[str, Any]], task_status: dict[int, str], gone: list[int], adopted: list[tuple[int, int]], report: PullReport) -> None:
        result = store.record_pull(row, self.url, annotations, task_status, gone, adopted)
        report.new_annotations = result["new"]
        report.updated_annotations = result["updated"]
        report.labeled_images = result["labeled_images"]
        report.skipped_tasks = result["skipped_tasks"]
        report.deleted_tasks = result["deleted_tasks"]
        batches = store.batches()
        batches = batches[batches["ls_project"] == row]
        report.batches = batches[["batch_id", "status", "tasks", "open", "annotated", "skipped", "deleted"]].to_dict("records")


@dataclass(frozen=True)
class _Box:
    """A pulled box (the store takes any object with these attributes)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False
    region_id: str | None = None


def _json_safe(value: Any) -> Any:
    """A task data value as JSON takes it: NaN becomes null, numpy scalars plain numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def connect(project_dir: str | os.PathLike[str], url: str, token: str, **kwargs: Any) -> LabelStudioClient:
    """Check ``url`` + ``token`` against the server, then save them for the project."""
    client = LabelStudioClient(url, token, **kwargs)
    client.version()
    save_connection(project_dir, url, token)
    return client

