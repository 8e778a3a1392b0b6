"""Talking to a Label Studio server: find or create a project, list, import, reopen and
delete tasks, link or upload images; and the formats that cross the wire (tasks with
pre-annotations, rectangle regions in percent, annotations back to pixel boxes).

Pure I/O: nothing here chooses images or touches the project store. The round trip built on
it (push the most informative images, pull the finished annotations, with its guarantees: no
duplicate tasks, no duplicate or lost annotations, nothing half-written) is
:mod:`almdn.workflow.labeling`. Every failure is one sentence (:class:`LabelStudioError`).

Boxes travel in percent of ``original_width`` / ``original_height`` (Label Studio's
rectangle results); :func:`percent_to_pixels` converts exactly (to 1e-6 px).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from label_studio.errors import LabelStudioError, LabelStudioUnavailable
from label_studio.config import FROM_NAME, IMAGE_FIELD, TO_NAME, LabelStudioConfigError, build_label_config, config_labels
from label_studio.server import read_secret_json, write_secret_json

#: Task data keys that tie a task to our project and image.
PROJECT_KEY = "almdn_project"
IMAGE_KEY = "almdn_image_id"
#: Task data key telling a review task (a labeled image's labels, to correct) from new labeling.
PURPOSE_KEY = "almdn_purpose"
IMPORT_CHUNK = 1000  # tasks per import request: one request for a usual batch




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
        # One HTTP stack: the SDK runs on our httpx client (its public ``httpx_client``
        # argument), and the few calls the SDK has no fitting method for (the task listing, see
        # _list_tasks; a task by id with a 404 as None; deletes and the file upload, whose
        # errors must name what was being done) go through the same client, its connection
        # pool and its timeout. ``follow_redirects`` as the SDK sets it on the client it would make.
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=timeout, follow_redirects=True)
        self._sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout, max_retries=2, httpx_client=self._http)
        self._users: dict[int, str] | None = None

    @classmethod
    def for_project(cls, project_dir: str | os.PathLike[str], **kwargs: Any) -> LabelStudioClient:
        """The client for the connection saved in ``project_dir``."""
        conn = load_connection(project_dir)
        return cls(conn["url"], conn["token"], document_root=conn.get("document_root"), **kwargs)

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r}, token=***)"

    def close(self) -> None:
        self._http.close()  # the SDK's client too: it is the same one

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

    def find_or_create_project(self, title: str, description: str, classes: Sequence[str], known: Sequence[int] = ()) -> tuple[int, list[int]]:
        """The server's project for ``title``: the newest of ``known`` (project ids used before,
        oldest first) that still exists, else the one with that title, else a new one; its
        labeling config is set to ``classes``. Returns ``(project id, known ids deleted on the
        server)``."""
        from label_studio_sdk.core.api_error import ApiError

        config = build_label_config(list(classes))
        gone: list[int] = []
        with self._talking("finding the project"):
            project = None
            for pid in reversed([int(p) for p in known]):
                try:
                    project = self._sdk.projects.get(pid)
                    break
                except ApiError as exc:
                    if exc.status_code != 404:
                        raise
                    gone.append(pid)  # deleted on the server
            if project is None:  # none known, or all deleted on the server: look it up by title
                for candidate in self._sdk.projects.list(page_size=100):
                    if candidate.title == title:
                        project = candidate
                        break
            if project is None:
                project = self._sdk.projects.create(title=title, description=description, label_config=config, request_options={"max_retries": 0})
            elif _config_labels_or_none(project.label_config) != list(classes):
                # ours to manage: a config that lost our classes, or an empty or malformed one, is rewritten
                self._sdk.projects.update(int(project.id), label_config=config, request_options={"max_retries": 0})
        return int(project.id), gone

    # ------------------------------------------------------------------ tasks

    def our_tasks(self, project_id: int, project_key: str, include: str | None = None, doing: str = "listing the project's tasks") -> dict[int, list[dict[str, Any]]]:
        """Every task of the project whose data carries ``project_key`` (:data:`PROJECT_KEY`),
        by the image id in its data (:data:`IMAGE_KEY`); raises before returning anything if
        any page fails. ``include`` (e.g. ``"id,data"``) keeps only those fields, five times
        faster, but reduces annotations to their ids: None for complete tasks."""
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for task in self._list_tasks(project_id, include, doing):
            data = task.get("data") or {}
            if data.get(PROJECT_KEY) == project_key and isinstance(data.get(IMAGE_KEY), int):
                out[int(data[IMAGE_KEY])].append(task)
        return out

    def _list_tasks(self, project_id: int, include: str | None, doing: str) -> list[dict[str, Any]]:
        """Every task of the project, page by page until the server's ``total`` is read.

        A server may cap the page size below :attr:`page_size` (Label Studio's
        ``TASK_API_PAGE_SIZE_MAX``), so a short page is no end: only ``total`` (or an empty
        page, or the 404 Label Studio answers past the last page) is. The SDK's own task
        pager does not fit: it asks for pages until one is empty, which Label Studio answers
        with 404 (an error), and it never reads ``total``. A task listed twice (pages shifted
        by a deletion during the listing) is kept once. So this pager is written here, on the
        SDK's own HTTP client (one stack, see ``__init__``).
        """
        tasks: dict[int, dict[str, Any]] = {}
        page = 1
        with self._talking(doing):
            while True:
                params = {"project": project_id, "fields": "all", "page": page, "page_size": self.page_size}
                if include:
                    params["include"] = include
                response = self._http.get("/api/tasks", params=params)
                if response.status_code == 404 and page > 1:
                    break  # past the last page (tasks deleted during the listing)
                response.raise_for_status()
                body = response.json()
                chunk = body["tasks"] if isinstance(body, dict) else body
                for task in chunk:
                    tasks.setdefault(int(task["id"]), task)
                total = body.get("total") if isinstance(body, dict) else None
                if not chunk or not isinstance(body, dict):
                    break  # an empty page, or a server that lists everything at once
                if total is None:
                    if len(chunk) < self.page_size:
                        break  # no total to go by: a short page is the last
                elif len(tasks) >= int(total):
                    break
                page += 1
        return list(tasks.values())

    def task(self, task_id: int, doing: str = "checking a task") -> dict[str, Any] | None:
        """A task with its annotations (None: no such task)."""
        with self._talking(doing):
            response = self._http.get(f"/api/tasks/{int(task_id)}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
        return response.json()

    def task_image(self, task_id: int, doing: str = "checking a task") -> int | None:
        """The image id in a task's data (None: no such task, or not one of ours)."""
        with self._talking(doing):
            response = self._http.get(f"/api/tasks/{int(task_id)}", params={"fields": "task_only"})
            if response.status_code == 404:
                return None
            response.raise_for_status()
        value = (response.json().get("data") or {}).get(IMAGE_KEY)
        return int(value) if isinstance(value, int) else None

    def annotators(self) -> dict[int, str]:
        """User id -> e-mail (or name) of the server's users; empty for a token without the
        right to list users (ids will do)."""
        if self._users is None:
            from label_studio_sdk.core.api_error import ApiError

            with self._talking("reading the annotators"):
                try:
                    self._users = {int(u.id): str(u.email or u.username or u.id) for u in self._sdk.users.list()}
                except ApiError:
                    self._users = {}
        return self._users

    def import_tasks(self, project_id: int, payloads: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Create the tasks ``payloads`` (:func:`task_payload`); returns ``(task id, image id)``
        of each. Never retried: a retried import whose first attempt reached the server would
        create its tasks twice (the next push adopts what an interrupted one created)."""
        created: list[tuple[int, int]] = []
        with self._talking("importing tasks"):
            for start in range(0, len(payloads), IMPORT_CHUNK):
                part = payloads[start:start + IMPORT_CHUNK]
                result = self._sdk.projects.import_tasks(project_id, request=part, return_task_ids=True, request_options={"max_retries": 0})
                task_ids = list(result.task_ids or [])
                if len(task_ids) != len(part):
                    raise LabelStudioError(f"Label Studio created {len(task_ids)} tasks for {len(part)} images; run the push again to reconcile.")
                created += [(int(t), int(p["data"][IMAGE_KEY])) for t, p in zip(task_ids, part)]
        return created

    def reopen_task(self, task_id: int, image_id: int) -> None:
        """Open a skipped task again: the annotator's skip (a cancelled annotation) is deleted,
        so the same task, with its pre-annotations, waits in the queue again."""
        with self._talking(f"reopening task {task_id}"):
            task = self._get(f"/api/tasks/{task_id}")
            if (task.get("data") or {}).get(IMAGE_KEY) != image_id:
                raise LabelStudioError(f"Task {task_id} in Label Studio no longer shows image {image_id}; import the latest labels (almdn pull), then try again.")
            for annotation in task.get("annotations") or []:
                if annotation.get("was_cancelled"):
                    response = self._http.delete(f"/api/annotations/{int(annotation['id'])}/")
                    if response.status_code != 404:  # already gone: the same result
                        response.raise_for_status()

    def delete_task(self, task_id: int, image_id: int, keep_submitted: bool = True) -> None:
        """Delete a task, unless it now holds another image (a deleted task's id is reused);
        with ``keep_submitted`` (the default) a task holding a submitted (not cancelled)
        annotation is refused with one sentence: deleting it would delete the annotation."""
        task = self.task(task_id, f"deleting task {task_id}")
        if task is None or (task.get("data") or {}).get(IMAGE_KEY) != image_id:
            return
        if keep_submitted and submitted_annotations(task):
            raise LabelStudioError(
                f"Task {task_id} (image {image_id}) has a submitted annotation in Label Studio; import it first (almdn pull), "
                "then the image is labeled and stays out of the pool."
            )
        with self._talking(f"deleting task {task_id}"):
            response = self._http.delete(f"/api/tasks/{task_id}/")
            if response.status_code != 404:
                response.raise_for_status()

    # ------------------------------------------------------------------ images

    def image_urls(self, project_id: int, paths: dict[int, Path], project_key: str) -> dict[int, str]:
        """URLs the server can show the images at (by image id): local files in place, or uploads.

        A local server serves only its document root, and in it only this project's folder
        ``almdn-<project>/``, which holds one symbolic link per image sent
        (``<image id>/<file name>``): nothing else beside the images (annotation files,
        other datasets) can be reached, wherever the images live. The file name is
        percent-encoded in the URL (``#``, ``&``, ``+``, ``%`` are legal in file names).
        """
        paths = {int(i): Path(p) for i, p in paths.items()}
        if self.document_root is None:
            return self._upload(project_id, paths)
        folder = self.document_root / f"almdn-{project_key[:12]}"
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


# --------------------------------------------------------------------------- task and annotation formats


def label_region(region_id: str, box: Sequence[float], class_name: str, width: int, height: int) -> dict[str, Any]:
    """A labeled box as a region of an annotation (a rectangle in percent of the image)."""
    return {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {**pixels_to_percent(box, int(width), int(height)), "rectanglelabels": [class_name]},
    }


def prediction_region(region_id: str, box: Sequence[float], class_name: str, score: float, width: int, height: int) -> dict[str, Any]:
    """A detection as a pre-annotation region (a rectangle in percent of the image)."""
    return {**label_region(region_id, box, class_name, width, height), "score": float(score)}


def task_payload(image_id: int, url: str, file_name: str, project_key: str, data: dict[str, Any] | None = None,
                 model_version: str | None = None, regions: list[dict[str, Any]] | None = None, *,
                 purpose: str = "label", labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One task to import: ``data`` (e.g. the ranking) plus the image's URL, its file name and
    the keys that tie the task to our project and image; with ``model_version`` (its name) the
    ``regions`` (:func:`prediction_region`) as that model's prediction. A ``review`` task
    (``purpose``, :data:`PURPOSE_KEY` in its data) carries the image's current ``labels``
    (:func:`label_region`) as an annotation the reviewer edits."""
    data = {k: _json_safe(v) for k, v in (data or {}).items()}
    # our own keys last: extra data can never re-point a task at another image
    data.update({IMAGE_FIELD: url, PROJECT_KEY: project_key, IMAGE_KEY: int(image_id), "file": file_name, PURPOSE_KEY: purpose})
    task: dict[str, Any] = {"data": data}
    if labels is not None:
        task["annotations"] = [{"result": labels}]
    if model_version is not None:
        boxes = regions or []
        prediction: dict[str, Any] = {"model_version": model_version, "result": boxes}
        # Label Studio shows the score as a 0-1 confidence: the model's mean confidence in
        # the boxes it proposes (the ranking score is a z-score and goes into the data).
        if boxes:
            prediction["score"] = sum(b["score"] for b in boxes) / len(boxes)
        task["predictions"] = [prediction]
    return task


#: A box of an annotation: class name, pixel ``x1, y1, x2, y2`` and the region's id.
Box = tuple[str, float, float, float, float, str | None]


def annotation_boxes(ann: dict[str, Any], task_id: int, path: str, width: int, height: int, classes: set[str]) -> tuple[list[Box], str | None]:
    """The boxes of an annotation of an image (``path``, ``width`` x ``height`` pixels), or
    one sentence why it cannot be taken (a label outside ``classes``, another image size, a
    box with several labels, another labeling interface)."""
    where = f"Annotation {ann['id']} of task {task_id} (image '{path}')"
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
        width, height = int(width), int(height)
        ow, oh = region.get("original_width") or width, region.get("original_height") or height
        if (int(ow), int(oh)) != (width, height):
            return [], f"{where} was drawn on a {ow}x{oh} image but the stored image is {width}x{height}; check that the file was not replaced, then pull again."
        try:
            x1, y1, x2, y2 = percent_to_pixels(value, width, height)
        except (KeyError, TypeError, ValueError):
            return [], f"{where} has a box without x, y, width and height; fix it in Label Studio, then pull again."
        if x2 <= x1 or y2 <= y1:
            continue  # a zero-size box marks nothing
        boxes.append((names[0], x1, y1, x2, y2, region.get("id")))
    return boxes, None


def submitted_annotations(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task's annotations that are labels: submitted, not cancelled (skipped)."""
    return [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]


def _json_safe(value: Any) -> Any:
    """A task data value as JSON takes it: NaN becomes null, numpy scalars plain numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _config_labels_or_none(config: Any) -> list[str] | None:
    """The labels of a project's config as the server sent it; None when it is empty or malformed."""
    try:
        return config_labels(config)
    except LabelStudioConfigError:
        return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def connect(project_dir: str | os.PathLike[str], url: str, token: str, **kwargs: Any) -> LabelStudioClient:
    """Check ``url`` + ``token`` against the server, then save them for the project."""
    client = LabelStudioClient(url, token, **kwargs)
    client.version()
    save_connection(project_dir, url, token)
    return client
