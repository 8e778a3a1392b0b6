"""What the app shows of the Label Studio round trip: is the project's server there, what a
task carries about the ranking, what was skipped, how far the batches are. Pushing and
pulling are use cases (:mod:`almdn.workflow.labeling`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almdn.projects.store import Store


@dataclass
class ServerStatus:
    """Where the project's Label Studio is and whether it answers.

    ``problem`` and ``action`` are, when something is not right, what is wrong and what to do
    about it on the Settings page (:meth:`sentence` joins them); ``username`` and ``password``
    are the login of the project's own local server (None for a remote server: its users log
    in with their own accounts).
    """

    connected: bool
    url: str | None = None
    local: bool = False
    reachable: bool = False
    problem: str = ""
    action: str = ""
    username: str | None = None
    password: str | None = None

    def sentence(self, on_settings_page: bool = False) -> str:
        """One sentence for the user ("" when all is well); on the Settings page itself it does
        not send the user to the Settings page."""
        if not self.problem:
            return ""
        if not self.action:
            return self.problem
        action = self.action if on_settings_page else f"{self.action} on the Settings page"
        tail = " Everything else in the app keeps working." if self.connected else ""
        return f"{self.problem}; {action}.{tail}"

    @property
    def message(self) -> str:
        return self.sentence()

    def __repr__(self) -> str:  # the password never lands in a log
        return f"ServerStatus(connected={self.connected}, url={self.url!r}, local={self.local}, reachable={self.reachable}, username={self.username!r}, password=***)"


def label_studio_home(project_dir: str | os.PathLike[str]) -> Path:
    """The folder of a project's Label Studio state: its local server's data, the admin login
    and the connection (which server the project talks to)."""
    return Path(project_dir) / "label-studio"


def server_status(project_dir: str | os.PathLike[str], timeout: float = 2.0) -> ServerStatus:
    """The project's Label Studio connection, a quick health check of it, and the login of a
    local server (the admin user almdn created for this project)."""
    from label_studio.client import LabelStudioError, load_connection
    from label_studio.server import Credentials, ServerError, health

    try:
        connection = load_connection(project_dir)
    except LabelStudioError as exc:
        path = label_studio_home(project_dir) / "connection.json"
        if not path.exists():
            return ServerStatus(False, problem="Not connected to Label Studio", action="start a local one or connect to a server")
        return ServerStatus(False, problem=str(exc))
    url = str(connection["url"])
    local = bool(connection.get("local"))
    username = password = None
    if local:
        try:
            login = Credentials.load(label_studio_home(project_dir) / "credentials.json")
            username, password = login.username, login.password
        except ServerError:
            pass  # load_connection read the same file: only a race can get here
    if health(url, timeout=timeout):
        return ServerStatus(True, url, local, True, username=username, password=password)
    action = "start it again" if local else "check that the server runs and that its URL is right"
    return ServerStatus(True, url, local, False, f"Label Studio at {url} does not answer", action, username, password)


def local_server_running(project_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The project's own local server: ``{"running", "healthy", "url", ...}``
    (:meth:`label_studio.server.LocalServer.status`)."""
    from label_studio.server import LocalServer

    return LocalServer(label_studio_home(project_dir)).status()


#: Task data fields of the ranking, as Label Studio's data manager shows them (``data.rank`` ...).
RANKING_FIELDS = ("rank", "final_score", "driven_by", "box_aleatoric", "box_epistemic", "class_aleatoric", "class_epistemic",
                  "predicted_classes", "num_detections", "model_version", "selected_by")


def ranking_data(store: Store, model_version: int, image_ids: list[int] | None = None, method: str | None = None) -> dict[int, dict[str, Any]]:
    """Per pool image, what its task carries about the ranking (:data:`RANKING_FIELDS`): its rank
    and final score under ``model_version``, which uncertainty and detection drive the score,
    the image's four uncertainties (maxima over its kept detections), its predicted classes,
    and the acquisition ``method`` that chose it. Annotators and leads sort and filter by them
    in Label Studio."""
    from almdn.display import store_tables as views

    table = views.pool_table(store, model_version).set_index("image_id")
    name = str(store.model_version(int(model_version))["name"])
    wanted = table.index if image_ids is None else [int(i) for i in image_ids if int(i) in table.index]
    out: dict[int, dict[str, Any]] = {}
    for image_id in wanted:
        r = table.loc[image_id]
        out[int(image_id)] = {
            "rank": int(r["rank"]),
            "final_score": _number(r["score"]),
            "driven_by": r["driven_by"] or None,
            **{views.UNCERTAINTY_LABELS[n].replace(" ", "_"): _number(r[n]) for n in views.UNCERTAINTY_LABELS},
            "predicted_classes": r["classes"],
            "num_detections": int(r["num_detections"]),
            "model_version": name,
            "selected_by": method or "almdn",
        }
    return out


def _number(value: Any) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)


def skipped_images(store: Store) -> Any:
    """Pool images whose Label Studio task the annotator skipped: image id, path, task id,
    batch, when (newest first)."""
    tasks = store.tasks()
    if tasks.empty:
        return tasks
    skipped = tasks[tasks["status"] == "skipped"]
    pool = set(store.image_ids("pool"))
    return skipped[skipped["image_id"].isin(pool)].sort_values("updated_at", ascending=False).reset_index(drop=True)


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
