"""Use cases of the Label Studio round trip: start or connect a server, push a batch, pull the
finished labels, resend or release what the annotators skipped.

:mod:`label_studio` only talks to the server; choosing the images and writing the store happen
here. Guarantees, whatever the server does between two calls:

- **No duplicate tasks.** Every task carries our project's id and the image's store id in its
  data. Before importing, :func:`push` lists the project's tasks and adopts those an
  interrupted push had created, so pushing the same images twice (or retrying after a crash
  between the server's answer and the store's commit) creates nothing new.
- **No duplicate or lost annotations.** An annotation is stored once per (project, annotation
  id, version); an annotation edited after a pull is stored again as the image's new current
  labels, the earlier version kept as history. Cancelled (skipped) annotations are not labels.
- **Nothing half-written.** The server is read completely first; the store is written in one
  transaction at the end. A server that goes away in the middle leaves the store as it was,
  and the next call picks up where this one would have.
- **One at a time.** Push, pull, resend and put-back hold the project's labeling lock
  (:func:`project_lock`, a ``flock`` on a file in the project folder) from the first read to
  the last write, across processes (the app and the CLI) and threads (two tabs); the store's
  inserts are idempotent inside their transaction as well.
- **Only our tasks.** A pull takes annotations only from tasks the store recorded as pushed
  (or orphans of a push interrupted before it recorded them, of pool images: adopted and
  reported), never for a test image; any other task carrying our project's id (created by
  hand, or forged) is ignored and named in the result.
- **Nothing deleted unimported.** Putting a skipped image back in the pool refuses when its
  task holds a submitted annotation since the last pull; an annotation deleted in Label
  Studio after it was pulled keeps its labels, is marked in the store and named in the result.
- **Clear refusals.** A label outside the class list, a box on an image of another size, a
  missing server: one sentence naming the task or server and what to do; the other
  annotations of the same pull are still stored.

Every function that talks to the server takes ``server``: a
:class:`~label_studio.client.LabelStudioClient`, or a project folder whose saved connection is
used (and closed again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almdn.data.records import BoxRecord
from almdn.errors import InvalidChoice
from almdn.labeling import label_studio_home, local_server_running
from almdn.registry import LABEL_STUDIO_PORT
from almdn.rounds import plural
from almdn.store import Store
from label_studio.client import IMAGE_KEY, LabelStudioClient, annotation_boxes, prediction_region, save_connection, submitted_annotations, task_payload
from label_studio.errors import LabelStudioError

Server = LabelStudioClient | str | os.PathLike


@contextlib.contextmanager
def _client(server: Server) -> Iterator[LabelStudioClient]:
    if isinstance(server, LabelStudioClient):
        yield server
    else:
        with LabelStudioClient.for_project(server) as client:
            yield client


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
        parts = [f"Pushed {plural(len(self.created), 'new task')} to Label Studio project {self.project_id}"]
        if self.batch_id is not None:
            parts[0] += f" (batch {self.batch_id})"
        if self.already:
            parts.append(f"{len(self.already)} of the top {self.requested} images already {'has' if len(self.already) == 1 else 'have'} a task")
        if self.adopted:
            parts.append(f"{plural(len(self.adopted), 'task')} left by an interrupted push {'was' if len(self.adopted) == 1 else 'were'} recorded")
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
    adopted_tasks: list[int] = field(default_factory=list)  # orphans of an interrupted push
    #: (task id, image id, why) of tasks with our project's id that almdn did not push: ignored
    foreign_tasks: list[tuple[int, int, str]] = field(default_factory=list)
    #: Label Studio ids of pulled annotations deleted on the server since (labels kept, marked)
    deleted_annotations: list[int] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.problems)

    @property
    def notices(self) -> list[str]:
        """What the user should know beyond the counts: ignored tasks, deleted annotations."""
        out = []
        if self.deleted_annotations:
            n = len(self.deleted_annotations)
            out.append(f"{plural(n, 'annotation')} pulled earlier {'was' if n == 1 else 'were'} deleted in Label Studio ({_ids(self.deleted_annotations)}); "
                       f"{'its' if n == 1 else 'their'} labels stay in the project, marked deleted_on_server: relabel or remove them if that was meant.")
        if self.foreign_tasks:
            n = len(self.foreign_tasks)
            shown = "; ".join(f"task {t} ({why})" for t, _, why in self.foreign_tasks[:5]) + ("; ..." if n > 5 else "")
            out.append(f"{plural(n, 'task')} almdn did not push {'was' if n == 1 else 'were'} ignored, nothing of {'it' if n == 1 else 'them'} imported: {shown}.")
        return out

    def __str__(self) -> str:
        text = (
            f"Pulled {self.new_annotations} new and {plural(self.updated_annotations, 'updated annotation')} from Label Studio project "
            f"{self.project_id}: {plural(len(self.labeled_images), 'image')} labeled"
        )
        if self.skipped_tasks:
            text += f", {plural(len(self.skipped_tasks), 'task')} skipped by the annotator"
        if self.deleted_tasks:
            text += f", {plural(len(self.deleted_tasks), 'task')} deleted on the server"
        if self.duplicates:
            text += f", {self.duplicates} already pulled"
        if self.adopted_tasks:
            text += f", {plural(len(self.adopted_tasks), 'task')} of an interrupted push adopted"
        if self.deleted_annotations:
            text += f", {plural(len(self.deleted_annotations), 'pulled annotation')} deleted in Label Studio (labels kept, marked)"
        if self.foreign_tasks:
            text += f", {plural(len(self.foreign_tasks), 'task')} almdn did not push ignored ({_ids([t for t, _, _ in self.foreign_tasks])})"
        if self.problems:
            text += f", {plural(len(self.problems), 'annotation')} rejected"
        return text + f" ({self.seconds:.1f} s)."


def _ids(ids: Sequence[int], shown: int = 5) -> str:
    ids = list(ids)
    return ", ".join(str(i) for i in ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


# --------------------------------------------------------------------------- the project's labeling lock

LOCK_FILE = "labeling.lock"
_held = threading.local()


@contextlib.contextmanager
def project_lock(store: Store, timeout: float = 600.0) -> Iterator[None]:
    """Hold the project's labeling lock: ``flock`` on ``<project>/labeling.lock`` (0600).

    One push, pull, resend or put-back of a project runs at a time, from its first read to its
    last write: across processes (the app and the CLI) and threads (two tabs; each takes its
    own open file, so they exclude each other too). Re-entrant within a thread. Waits up to
    ``timeout`` seconds, then one sentence.
    """
    path = store.path.parent / LOCK_FILE
    key = str(path.resolve())
    held = _held.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabelStudioError(
                        f"Another push or pull of the project in '{store.path.parent}' has held its labeling lock for over {timeout:.0f} s; "
                        "wait for it to finish (or end the process that holds it), then try again."
                    ) from None
                time.sleep(0.05)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _pending_key(row: int) -> str:
    return f"ls_pending_push:{int(row)}"


def pending_push(store: Store, row: int) -> set[int]:
    """Image ids a push was sending to the project's server (local ``row``) when it was
    interrupted before it recorded the tasks: the only orphans a later push or pull adopts."""
    try:
        return {int(i) for i in json.loads(store.meta(_pending_key(row)) or "[]")}
    except (TypeError, ValueError):
        return set()


def _set_pending_push(store: Store, row: int, image_ids: set[int]) -> None:
    store.set_meta(_pending_key(row), json.dumps(sorted(int(i) for i in image_ids)))


# --------------------------------------------------------------------------- the server


def document_root(store: Store) -> Path:
    """The folder a project's local Label Studio serves files from: its own ``media`` folder,
    which holds only links to the images pushed for labeling (never the images' folders, let
    alone ``/``: annotation files or other data beside the images stay unreachable)."""
    from label_studio.server import media_root

    return media_root(store.path.parent)


def reconnect_running(project_dir: str | os.PathLike[str]) -> str | None:
    """When the project's own local server runs (serving the project's images), connect the
    project to it again and return its URL; else None."""
    state = local_server_running(project_dir)
    if not state["running"]:
        return None
    with Store.open(project_dir, create=False) as store:
        root = document_root(store)
    if state["document_root"] != str(root):
        return None
    save_connection(project_dir, state["url"], local=True, document_root=str(root))
    return str(state["url"])


@dataclass
class ServerStart:
    """What :func:`start_label_studio` did."""

    url: str
    seconds: float
    already_running: bool

    @property
    def summary(self) -> str:
        if self.already_running:
            return f"Label Studio already runs at {self.url}."
        return f"Label Studio runs at {self.url} (ready in {self.seconds:.0f} s)."


def start_label_studio(
    project_dir: str | os.PathLike[str], port: int = LABEL_STUDIO_PORT, template: bool = True,
    progress: Callable[[float, str | None], None] | None = None,
) -> ServerStart:
    """Start the project's local Label Studio on 127.0.0.1 and connect the project to it.

    Idempotent: when the project's server already runs, it is only connected again. With
    ``template`` a new server copies a migrated data folder made once per machine (making it
    takes about a minute) instead of migrating its own.
    """
    from label_studio.server import LocalServer, default_template_dir, prepare_template

    url = reconnect_running(project_dir)
    if url is not None:
        return ServerStart(url, 0.0, True)
    with Store.open(project_dir, create=False) as store:
        root = document_root(store)
    home = label_studio_home(project_dir)
    template_dir = None
    if template and not (home / "data").exists():
        template_dir = default_template_dir()
        if not (template_dir / "READY").exists() and progress is not None:
            progress(0.05, f"preparing Label Studio's database in {template_dir} (once per machine, about a minute)")
        prepare_template(template_dir)
    if progress is not None:
        progress(0.6, "starting Label Studio")
    server = LocalServer(home, port=int(port), document_root=root, template=template_dir)
    seconds = server.start()
    save_connection(project_dir, server.url, local=True, document_root=str(root))
    return ServerStart(server.url, seconds, False)


def start_label_studio_job(project_dir: str | os.PathLike[str], port: int):
    """:func:`start_label_studio` as a background job (:mod:`almdn.jobs`): returns the job, or
    None when the server already runs (then the project is only connected to it again)."""
    from almdn import jobs

    if reconnect_running(project_dir) is not None:
        return None
    return jobs.start_job(project_dir, "label_studio", {"project_dir": str(Path(project_dir)), "port": int(port)})


def label_studio_job(context, port: int = LABEL_STUDIO_PORT, project_dir: str | None = None) -> dict[str, Any]:
    """The job of :func:`start_label_studio_job`."""
    project_dir = Path(project_dir) if project_dir else context.folder.parent.parent
    started = start_label_studio(project_dir, port, progress=context.progress)
    return {"url": started.url, "seconds": started.seconds, "summary": started.summary}


def stop_label_studio(project_dir: str | os.PathLike[str]) -> bool:
    """Stop the project's local Label Studio; False when it was not running."""
    from label_studio.server import LocalServer

    return LocalServer(label_studio_home(project_dir)).stop()


def connect_label_studio(project_dir: str | os.PathLike[str], url: str, token: str) -> str:
    """Check ``url`` and ``token`` against a Label Studio server and save them for the project
    (the token in a file only the user can read); returns the server's version."""
    from label_studio.client import connect

    Store.open(project_dir, create=False).close()  # a project folder, or one sentence
    client = connect(project_dir, url, token)
    try:
        return client.version()
    finally:
        client.close()


# --------------------------------------------------------------------------- the project on the server


def project_title(store: Store) -> str:
    return f"almdn: {store.name} ({store.project_uuid[:8]})"


def ensure_project(store: Store, client: LabelStudioClient) -> tuple[int, int]:
    """The Label Studio project of ``store`` on the client's server, created when missing; its
    labeling config follows the store's class list. Returns ``(local row, project id)``."""
    classes = store.classes()
    if not classes:
        raise LabelStudioError("The project has no classes yet; add a labeled dataset or classes (almdn project create --classes) first.")
    title = project_title(store)
    known = store.ls_projects(client.url)
    rows = list(zip(known["id"].tolist(), known["project_id"].tolist()))
    description = f"Active learning project {store.name} ({store.project_uuid}), managed by almdn."
    project_id, gone = client.find_or_create_project(title, description, classes, [pid for _, pid in rows])
    row = store.ls_project(client.url, project_id, title)
    for local_row, pid in rows:
        if int(pid) in gone and local_row != row:
            store.close_ls_project(local_row)
    return row, project_id


# --------------------------------------------------------------------------- push


def choose_for_push(store: Store, top_k: int, method: str | None = None, model_version: int | None = None) -> list[int]:
    """The ``top_k`` most informative pool images, those already sent included (so the same
    push twice sends nothing new): by ``method`` (:data:`almdn.acquisition.stored.ACQUISITION_METHODS`),
    by default the model version's own final score."""
    from almdn.acquisition.stored import select_for_labeling

    if top_k is None or int(top_k) < 1:
        raise InvalidChoice("--top-k must be at least 1.")
    return list(select_for_labeling(store, int(top_k), method, model_version, exclude_sent=False).image_ids)


def _choose_with_reasons(store: Store, top_k: int, method: str | None, model_version: int | None) -> tuple[list[int], dict[int, str]]:
    """:func:`choose_for_push`'s images and, per image, why it was chosen."""
    from almdn.acquisition.stored import select_for_labeling

    if top_k is None or int(top_k) < 1:
        raise InvalidChoice("--top-k must be at least 1.")
    batch = select_for_labeling(store, int(top_k), method, model_version, exclude_sent=False)
    return list(batch.image_ids), batch.why()


def push(store: Store, server: Server, top_k: int | None = None, *, image_ids: Sequence[int] | None = None,
         model_version: int | None = None, method: str | None = None, why: dict[int, str] | None = None) -> PushReport:
    """Make sure the ``top_k`` most informative pool images (:func:`choose_for_push`), or
    exactly ``image_ids`` (a previewed batch), are tasks in Label Studio, with
    ``model_version``'s detections (default: the latest scored) as pre-annotations and the
    ranking (rank, final score, the four uncertainties, predicted classes, ``method`` as
    ``selected_by`` and why the image was chosen as ``selected_why``) in each task's data, which
    Label Studio's data manager can sort and filter by. ``why``: the reasons of a previewed batch
    (``image_ids``); with ``top_k`` they come from the selection. The store's task keeps it too.

    Images that already have a live task (open, annotated or skipped) are not sent again. The
    new tasks are recorded as one batch, in one store transaction after the server confirmed
    them. The whole push holds the project's labeling lock (:func:`project_lock`).
    """
    t0 = time.perf_counter()
    if (top_k is None) == (image_ids is None):
        raise ValueError("give either top_k or image_ids")
    scored = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    with project_lock(store):
        return _push(store, server, top_k, image_ids, scored, method, t0, why)


def _push(store: Store, server: Server, top_k: int | None, image_ids: Sequence[int] | None, scored: int | None, method: str | None, t0: float,
          why: dict[int, str] | None = None) -> PushReport:
    from almdn.labeling import ranking_data

    with _client(server) as client:
        if image_ids is None:
            chosen, why = _choose_with_reasons(store, top_k, method, scored)
        else:
            chosen = [int(i) for i in image_ids]
            pool = set(store.image_ids("pool"))
            outside = [i for i in chosen if i not in pool]
            if outside:
                raise LabelStudioError(f"Images {outside[:10]} are not in the pool (already labeled, test, or unknown); push only pool images.")
        row, project_id = ensure_project(store, client)
        recorded = store.tasks(row)
        live = recorded[recorded["status"] != "deleted"]
        live_pairs = {(int(t), int(i)) for t, i in zip(live["task_id"], live["image_id"])}
        has_task = set(live["image_id"].tolist())
        server_tasks: dict[int, list[dict[str, Any]]] = {}
        if any(i not in has_task for i in chosen):  # only then can an orphan matter
            server_tasks = client.our_tasks(project_id, store.project_uuid, "id,data")
        pending = pending_push(store, row)
        adopted: list[tuple[int, int]] = []
        already: list[int] = []
        new_images: list[int] = []
        for image_id in chosen:
            # only what an interrupted push of ours was sending: a task someone else made with
            # our project's id is no task of ours (pull ignores it and says so)
            orphans = [t["id"] for t in server_tasks.get(image_id, []) if (int(t["id"]), image_id) not in live_pairs] if image_id in pending else []
            if image_id in has_task:
                already.append(image_id)
            elif orphans:
                adopted += [(int(t), image_id) for t in orphans]
            else:
                new_images.append(image_id)
        created: list[tuple[int, int]] = []
        if new_images:
            data = ranking_data(store, scored, new_images, method) if scored is not None else {}
            for image_id in new_images:  # why it was chosen, beside selected_by
                if (why or {}).get(image_id):
                    data.setdefault(image_id, {})["selected_why"] = str(why[image_id])
            payloads = _task_payloads(store, client, project_id, new_images, scored, data)
            # Recorded before the server is asked: if its answer is lost, the next push or pull
            # adopts exactly these images' tasks (and no task made by anyone else).
            _set_pending_push(store, row, pending | set(new_images))
            created = client.import_tasks(project_id, payloads)
        with store.transaction():
            batch = store.record_batch(row, created, scored, top_k, adopted=adopted, why={int(i): str(w) for i, w in (why or {}).items()})
            recorded = {i for _, i in [*created, *adopted]}
            if pending_push(store, row) & recorded:
                _set_pending_push(store, row, pending_push(store, row) - recorded)
    return PushReport(project_id, batch, len(chosen), created, adopted, already, time.perf_counter() - t0)


def _task_payloads(store: Store, client: LabelStudioClient, project_id: int, image_ids: list[int], model_version: int | None,
                   task_data: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    images = store.images().set_index("image_id").loc[image_ids]
    urls = client.image_urls(project_id, {int(i): Path(p) for i, p in images["path"].items()}, store.project_uuid)
    regions: dict[int, list[dict[str, Any]]] = {}
    mv_name = None
    if model_version is not None:
        mv_name = str(store.model_version(int(model_version))["name"])
        for r in store.detections(model_version, image_ids).itertuples(index=False):
            w, h = int(images.at[r.image_id, "width"]), int(images.at[r.image_id, "height"])
            regions.setdefault(int(r.image_id), []).append(
                prediction_region(f"mv{model_version}-{r.detection}", (r.x1, r.y1, r.x2, r.y2), r.class_name, float(r.score), w, h))
    return [
        task_payload(image_id, urls[image_id], Path(images.at[image_id, "path"]).name, store.project_uuid, task_data.get(image_id),
                     mv_name, regions.get(image_id, []))
        for image_id in image_ids
    ]


# --------------------------------------------------------------------------- pull


def pull(store: Store, server: Server) -> PullReport:
    """Bring every finished annotation of the store's project into the store.

    Skips cancelled annotations (the task is marked ``skipped``), annotations already
    pulled, and annotations with labels outside the class list or of an image of another
    size (each named in ``problems``; its task stays open and is read again next time).
    Tasks deleted on the server are marked ``deleted`` (labels already pulled stay);
    batches become ``partial`` or ``done``. One store transaction at the end, the whole pull
    under the project's labeling lock (:func:`project_lock`).

    Only tasks the store recorded as pushed count, and orphans of an interrupted push
    (:func:`pending_push`) of pool images, adopted; a task for a test image, or one almdn never
    pushed, is ignored and named (``foreign_tasks``). A pulled annotation deleted in Label
    Studio since keeps its labels and is marked (``deleted_annotations``).
    """
    t0 = time.perf_counter()
    with project_lock(store):
        return _pull(store, server, t0)


def _pull(store: Store, server: Server, t0: float) -> PullReport:
    with _client(server) as client:
        known = store.ls_projects(client.url)
        if known.empty:
            raise LabelStudioError(f"Nothing was pushed to Label Studio at {client.url} from this project yet; push first (almdn push --top-k K).")
        row, project_id = int(known["id"].iloc[-1]), int(known["project_id"].iloc[-1])
        report = PullReport(project_id)
        by_image = client.our_tasks(project_id, store.project_uuid, None, "reading the annotations")
        recorded = store.tasks(row)
        recorded = recorded[recorded["status"] != "deleted"]
        # A task is (task id, image id): the server gives a deleted task's id to the next task.
        live = {(int(t), int(i)) for t, i in zip(recorded["task_id"], recorded["image_id"])}
        on_server = {(int(t["id"]), image_id) for image_id, ts in by_image.items() for t in ts}
        listed_ids = {t for t, _ in on_server}
        # A task missing from the listing is looked up once more (a deletion during the
        # listing shifts its pages); one listed with another image was replaced.
        gone = [(t, i) for t, i in sorted(live - on_server) if t in listed_ids or client.task_image(t, "checking deleted tasks") != i]
        images = store.images().set_index("image_id")
        classes = set(store.classes())
        pending = pending_push(store, row)
        have = store.annotations()
        have = have[have["origin"] == "label_studio"]
        have = have[have["ls_project"] == row]
        stored_versions = {(int(a), str(u)) for a, u in zip(have["ls_annotation_id"], have["updated_at"])}
        # pulled annotations by their task, to notice those deleted on the server since
        pulled_by_task: dict[tuple[int, int], set[int]] = {}
        for t, i, a, flagged in zip(have["ls_task_id"], have["image_id"], have["ls_annotation_id"], have["deleted_on_server_at"]):
            if flagged is None or (isinstance(flagged, float) and flagged != flagged):
                pulled_by_task.setdefault((int(t), int(i)), set()).add(int(a))
        users = None
        new_annotations: list[dict[str, Any]] = []
        task_status: dict[tuple[int, int], str] = {}
        adopted: list[tuple[int, int]] = []
        deleted_annotations: list[int] = []
        for image_id, image_tasks in sorted(by_image.items()):
            split = str(images.at[image_id, "split"]) if image_id in images.index else None
            for task in image_tasks:
                task_id = int(task["id"])
                key_task = (task_id, image_id)
                if split is None:
                    report.foreign_tasks.append((task_id, image_id, f"image {image_id} is not in the project"))
                    continue
                if split == "test":
                    # never ground truth from Label Studio for the test split, pushed or not
                    report.foreign_tasks.append((task_id, image_id, f"image {image_id} is a test image"))
                    continue
                if key_task not in live:
                    if split == "pool" and image_id in pending:
                        adopted.append(key_task)
                    else:
                        report.foreign_tasks.append((task_id, image_id, f"image {image_id} was never pushed as this task"))
                        continue
                annotations = task.get("annotations") or []
                on_task = {int(a["id"]) for a in annotations if isinstance(a, dict) and "id" in a}
                deleted_annotations += sorted(pulled_by_task.get(key_task, set()) - on_task)
                submitted = submitted_annotations(task)
                if annotations and not submitted:
                    task_status[key_task] = "skipped"
                image = images.loc[image_id]
                for ann in submitted:
                    if (int(ann["id"]), str(ann.get("updated_at"))) in stored_versions:
                        report.duplicates += 1
                        task_status[key_task] = "annotated"
                        continue
                    boxes, problem = annotation_boxes(ann, task_id, image["path"], int(image["width"]), int(image["height"]), classes)
                    boxes = [BoxRecord(name, x1, y1, x2, y2, region_id=region) for name, x1, y1, x2, y2, region in boxes]
                    if problem:
                        report.problems.append(problem)
                        continue
                    if users is None:
                        users = client.annotators()
                    who = ann.get("completed_by")
                    who = who.get("id") if isinstance(who, dict) else who
                    new_annotations.append({
                        "image_id": image_id, "task_id": task_id, "annotation_id": int(ann["id"]), "boxes": boxes,
                        "annotator": users.get(int(who), f"user {who}") if who is not None else None,
                        "created_at": ann.get("created_at"), "updated_at": str(ann.get("updated_at")), "lead_time": ann.get("lead_time"),
                    })
                    task_status[key_task] = "annotated"
        url = client.url
    # The newest annotation of an image becomes its current labels.
    new_annotations.sort(key=lambda a: (a["updated_at"], a["annotation_id"]))
    with store.transaction():
        result = store.record_pull(row, url, new_annotations, task_status, gone, adopted, deleted_annotations)
        if adopted:
            _set_pending_push(store, row, pending_push(store, row) - {i for _, i in adopted})
    report.new_annotations = result["new"]
    report.updated_annotations = result["updated"]
    report.duplicates += result["duplicates"]
    report.labeled_images = result["labeled_images"]
    report.skipped_tasks = result["skipped_tasks"]
    report.deleted_tasks = result["deleted_tasks"]
    report.deleted_annotations = result["deleted_annotations"]
    report.adopted_tasks = [t for t, _ in adopted]
    batches = store.batches()
    batches = batches[batches["ls_project"] == row]
    report.batches = batches[["batch_id", "status", "tasks", "open", "annotated", "skipped", "deleted"]].to_dict("records")
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- skipped tasks


def _skipped_tasks(store: Store, url: str, image_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(local project row, task id, image id)`` of the skipped tasks of ``image_ids``;
    one sentence if an image has none."""
    tasks = store.tasks()
    skipped = tasks[(tasks["status"] == "skipped") & tasks["image_id"].isin([int(i) for i in image_ids])] if not tasks.empty else tasks
    missing = sorted(set(int(i) for i in image_ids) - set(skipped["image_id"].tolist()))
    if missing:
        raise LabelStudioError(f"Images {missing[:10]} have no skipped task in Label Studio; import the latest labels first (almdn pull), then try again.")
    rows = set(store.ls_projects(url)["id"].tolist())
    elsewhere = skipped[~skipped["ls_project"].isin(rows)]
    if len(elsewhere):
        raise LabelStudioError(f"Images {sorted(elsewhere['image_id'].tolist())[:10]} were sent to another Label Studio server; connect to it to resend them.")
    return [(int(r), int(t), int(i)) for r, t, i in zip(skipped["ls_project"], skipped["task_id"], skipped["image_id"])]


def resend_skipped(store: Store, server: Server, image_ids: Sequence[int]) -> int:
    """Offer skipped images to the annotators again: the annotator's skip is deleted in Label
    Studio, so the same task (with its pre-annotations) is open again; no task is created.
    Returns how many tasks were reopened."""
    with project_lock(store), _client(server) as client:
        tasks = _skipped_tasks(store, client.url, image_ids)
        for row, task_id, image_id in tasks:
            client.reopen_task(task_id, image_id)
            store.record_pull(row, client.url, [], {(task_id, image_id): "open"}, [])
    return len(tasks)


def return_skipped_to_pool(store: Store, server: Server, image_ids: Sequence[int]) -> int:
    """Put skipped images back into the pool: their tasks are deleted in Label Studio and
    recorded as deleted, so a later batch may choose the images again by their score.
    Returns how many.

    Refused, with nothing deleted, when any of the tasks holds a submitted (not cancelled)
    annotation the store has not pulled (an annotator labeled the image after skipping it):
    deleting the task would delete that annotation unimported. Pull first; the image is then
    labeled and has no skipped task any more.
    """
    with project_lock(store), _client(server) as client:
        tasks = _skipped_tasks(store, client.url, image_ids)
        annotated = []
        for _, task_id, image_id in tasks:
            task = client.task(task_id, f"checking task {task_id}")
            if task is not None and (task.get("data") or {}).get(IMAGE_KEY) == image_id and submitted_annotations(task):
                annotated.append((task_id, image_id))
        if annotated:
            shown = ", ".join(f"task {t} (image {i})" for t, i in annotated[:5]) + (" ..." if len(annotated) > 5 else "")
            raise LabelStudioError(
                f"{shown} {'has' if len(annotated) == 1 else 'have'} a submitted annotation in Label Studio since the last pull; "
                "nothing was put back: import the labels first (almdn pull, or the Label page), then put back what is still skipped."
            )
        for row, task_id, image_id in tasks:
            client.delete_task(task_id, image_id)  # checks again, right before deleting
            store.record_pull(row, client.url, [], {}, [(task_id, image_id)])
    return len(tasks)
