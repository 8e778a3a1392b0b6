"""The app's side of the Label Studio round trip: is the project's server there, send a batch,
bring finished labels back (:mod:`label_studio.client` does the talking)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almdn.store import Store


@dataclass
class ServerStatus:
    """Where the project's Label Studio is and whether it answers.

    ``message`` is one sentence for the user when something is not right, else "".
    """

    connected: bool
    url: str | None = None
    local: bool = False
    reachable: bool = False
    message: str = ""


def server_status(project_dir: str | os.PathLike[str], timeout: float = 2.0) -> ServerStatus:
    """The project's Label Studio connection and a quick health check of it."""
    from label_studio.client import LabelStudioError, load_connection
    from label_studio.server import health

    try:
        connection = load_connection(project_dir)
    except LabelStudioError as exc:
        path = Path(project_dir) / "label-studio" / "connection.json"
        if not path.exists():
            return ServerStatus(False, message="Not connected to Label Studio: start a local one or connect to a server on the Settings page.")
        return ServerStatus(False, message=str(exc))
    url = str(connection["url"])
    local = bool(connection.get("local"))
    if health(url, timeout=timeout):
        return ServerStatus(True, url, local, True)
    hint = "start it again on the Settings page" if local else "check that the server runs and the URL on the Settings page is right"
    return ServerStatus(True, url, local, False, f"Label Studio at {url} does not answer; {hint}. Everything else in the app keeps working.")


def push_batch(store: Store, project_dir: str | os.PathLike[str], image_ids: list[int], model_version: int | None = None):
    """Send ``image_ids`` (a batch from :func:`almdn.views.select_for_labeling`) to the
    project's Label Studio with ``model_version``'s detections as pre-annotations."""
    from label_studio.client import LabelStudioClient

    with LabelStudioClient.for_project(project_dir) as client:
        return client.push(store, image_ids=image_ids, model_version=model_version if model_version is not None else store.latest_model_version(scored=True))


def pull_labels(store: Store, project_dir: str | os.PathLike[str]):
    """Import every finished annotation of the project's Label Studio into the store."""
    from label_studio.client import LabelStudioClient

    with LabelStudioClient.for_project(project_dir) as client:
        return client.pull(store)


def has_open_tasks(store: Store) -> bool:
    return int(store.counts()["open_tasks"]) > 0


def batch_table(store: Store) -> Any:
    """Batches with their progress in Label Studio (as of the last import)."""
    batches = store.batches()
    if batches.empty:
        return batches
    batches = batches.copy()
    batches["finished"] = batches["annotated"] + batches["skipped"] + batches["deleted"]
    batches["progress"] = batches["finished"] / batches["tasks"].where(batches["tasks"] > 0, 1)
    return batches
