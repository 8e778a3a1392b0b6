"""Pushing a batch to Label Studio: the project on the server, the images chosen, the tasks with
their pre-annotations and ranking (see :mod:`almdn.workflow.labeling` for the guarantees)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almdn.errors import InvalidChoice
from almdn.projects.rounds import plural
from almdn.projects.store import Store
from almdn.workflow.labeling_lock import (  # the labeling use cases' shared internals
    Server,
    _client,
    _set_pending_push,
    pending_push,
    project_lock,
)
from label_studio.client import LabelStudioClient, prediction_region, task_payload
from label_studio.errors import LabelStudioError


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
    from almdn.display.labeling_status import ranking_data

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

