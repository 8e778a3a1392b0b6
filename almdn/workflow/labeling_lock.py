"""What every Label Studio use case shares: the server argument (a client or a project folder),
the project's labeling lock and the record of an interrupted push (see
:mod:`almdn.workflow.labeling` for the guarantees they give)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator

from almdn.projects.store import Store
from label_studio.client import LabelStudioClient
from label_studio.errors import LabelStudioError

Server = LabelStudioClient | str | os.PathLike


@contextlib.contextmanager
def _client(server: Server) -> Iterator[LabelStudioClient]:
    if isinstance(server, LabelStudioClient):
        yield server
    else:
        with LabelStudioClient.for_project(server) as client:
            yield client


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
