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

The code, by use case: the server (start, stop, connect) here; :mod:`~almdn.workflow.labeling_push`
(:func:`push`); :mod:`~almdn.workflow.labeling_review` (:func:`push_review`: labeled images
back for review, and what a pull reads of a review); :mod:`~almdn.workflow.labeling_pull` (:func:`pull`, :func:`resend_skipped`,
:func:`return_skipped_to_pool`); :mod:`~almdn.workflow.labeling_lock` (the lock and what they
share). Every name is importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almdn.display.labeling_status import label_studio_home, local_server_running
from almdn.registry import LABEL_STUDIO_PORT
from almdn.projects.store import Store
from almdn.workflow.labeling_lock import LOCK_FILE, Server, pending_push, project_lock
from almdn.workflow.labeling_pull import PullReport, pull, resend_skipped, return_skipped_to_pool
from almdn.workflow.labeling_push import PushReport, choose_for_push, ensure_project, project_title, push
from almdn.workflow.labeling_review import ReviewPushReport, push_review
from label_studio.client import save_connection

__all__ = [
    "LOCK_FILE", "PullReport", "PushReport", "ReviewPushReport", "Server", "ServerStart", "choose_for_push", "connect_label_studio", "document_root",
    "ensure_project", "label_studio_job", "pending_push", "project_lock", "project_title", "pull", "push", "push_review", "reconnect_running",
    "resend_skipped", "return_skipped_to_pool", "start_label_studio", "start_label_studio_job", "stop_label_studio",
]


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
    """:func:`start_label_studio` as a background job (:mod:`almdn.projects.jobs`): returns the job, or
    None when the server already runs (then the project is only connected to it again)."""
    from almdn.projects import jobs

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

