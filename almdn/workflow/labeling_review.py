"""Sending labeled images back to Label Studio for review, and reading the reviews (issue 22).

A review task holds the image's current labels as an annotation the reviewer edits (or
leaves), told apart from new labeling by ``almdn_purpose: review`` in its data and by the
store's task record (``purpose = 'review'``). :func:`almdn.workflow.labeling.pull` brings the
reviews back with the rest, under the same guarantees (see :mod:`almdn.workflow.labeling`),
and these:

- **A review that changes nothing writes nothing.** The pre-filled annotation Label Studio
  created is the task's *baseline* (its id and version, recorded at push); a pull that finds
  only it has nothing to read, and a reviewed annotation whose boxes equal the image's current
  labels (:func:`almdn.projects.store.same_labels`) becomes the new baseline, the task
  ``annotated`` with outcome ``unchanged``, and no label version is written.
- **Every version kept.** A correction becomes the image's current labels with provenance
  ``review by NAME`` (``via_review``); the version before it stays in the history.
- **Test labels only on request.** A test image is sent for review only with
  ``include_test``; a pull that changes a test label names the model versions whose test
  results it makes out of date.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from almdn.projects.rounds import plural
from almdn.projects.store import Store, same_labels
from almdn.workflow.labeling_lock import Server, _client, project_lock  # the labeling use cases' shared internals
from almdn.workflow.labeling_push import PushReport, ensure_project
from label_studio.client import PURPOSE_KEY, LabelStudioClient, label_region, task_payload

#: The task purpose of a review (:data:`label_studio.client.PURPOSE_KEY` in its data).
REVIEW = "review"


class ReviewPushReport(PushReport):
    """What :func:`push_review` did (``already``: images with an open review task)."""

    def __str__(self) -> str:
        text = f"Sent {plural(len(self.created), 'image')} for review to Label Studio project {self.project_id}"
        if self.batch_id is not None:
            text += f" (batch {self.batch_id})"
        if self.already:
            text += f"; {plural(len(self.already), 'image')} already {'has' if len(self.already) == 1 else 'have'} an open review task"
        if self.adopted:
            text += f"; {plural(len(self.adopted), 'review task')} left by an interrupted send recorded"
        return text + f" ({self.seconds:.1f} s)."


def _pending_key(row: int) -> str:
    return f"ls_pending_review:{int(row)}"


def _pending(store: Store, row: int) -> set[int]:
    import json

    try:
        return {int(i) for i in json.loads(store.meta(_pending_key(row)) or "[]")}
    except (TypeError, ValueError):
        return set()


def _set_pending(store: Store, row: int, image_ids: set[int]) -> None:
    import json

    store.set_meta(_pending_key(row), json.dumps(sorted(int(i) for i in image_ids)))


def untouched(annotation: dict[str, Any]) -> bool:
    """A pre-filled annotation no one has edited since it was imported: Label Studio sets
    ``updated_by`` at the first edit, and its editor sends the time spent (``lead_time``)."""
    return annotation.get("updated_by") is None and annotation.get("lead_time") is None


def _baseline(task: dict[str, Any] | None) -> tuple[int, str] | None:
    """``(annotation id, updated_at)`` of a review task's untouched pre-filled annotation."""
    for annotation in (task or {}).get("annotations") or []:
        if isinstance(annotation, dict) and untouched(annotation):
            return int(annotation["id"]), str(annotation.get("updated_at"))
    return None


def push_review(store: Store, server: Server, image_ids: Sequence[int], *, why: dict[int, str] | None = None,
                include_test: bool = False) -> ReviewPushReport:
    """Send labeled images (``image_ids``; test images only with ``include_test``) to Label
    Studio as review tasks: each holds the image's current labels as an editable annotation
    and ``why`` (per image, the sentence the review queue gives) as ``review_why`` in its data.

    An image whose review task is still open is not sent again; a task an interrupted send
    created is adopted. One store transaction after the server confirmed the tasks, the whole
    send under the project's labeling lock. Raises one sentence (nothing sent) when an image
    has no labels, is in the pool, or is a test image without ``include_test``.
    """
    t0 = time.perf_counter()
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    with project_lock(store):
        store.check_reviewable(ids, include_test=include_test)
        with _client(server) as client:
            row, project_id = ensure_project(store, client)
            recorded = store.review_tasks(row)
            live = recorded[recorded["status"] != "deleted"]
            live_pairs = {(int(t), int(i)) for t, i in zip(live["task_id"], live["image_id"])}
            open_review = set(live.loc[live["status"] == "open", "image_id"].astype(int))
            pending = _pending(store, row)
            server_tasks = client.our_tasks(project_id, store.project_uuid, None, "looking for an interrupted send") if pending & set(ids) else {}
            already, adopted, new_images, baselines = [], [], [], {}
            for image_id in ids:
                orphans = [t for t in server_tasks.get(image_id, []) if (t.get("data") or {}).get(PURPOSE_KEY) == REVIEW
                           and (int(t["id"]), image_id) not in live_pairs] if image_id in pending else []
                if image_id in open_review:
                    already.append(image_id)
                elif orphans:
                    adopted += [(int(t["id"]), image_id) for t in orphans]
                    baselines.update({int(t["id"]): b for t in orphans if (b := _baseline(t)) is not None})
                else:
                    new_images.append(image_id)
            created: list[tuple[int, int]] = []
            sent_with = {i: store.current_annotation(i) for i in ids}
            if new_images:
                payloads = _review_payloads(store, client, project_id, new_images, why or {})
                _set_pending(store, row, pending | set(new_images))
                created = client.import_tasks(project_id, payloads)
                for task_id, _ in created:
                    baseline = _baseline(client.task(task_id, "reading the review task just created"))
                    if baseline is not None:
                        baselines[task_id] = baseline
        with store.transaction():
            batch = store.record_review_batch(row, [*created, *adopted], sent_with, baselines, {int(i): str(w) for i, w in (why or {}).items()})
            _set_pending(store, row, _pending(store, row) - {i for _, i in [*created, *adopted]})
    return ReviewPushReport(project_id, batch, len(ids), created, adopted, already, time.perf_counter() - t0)


def _review_payloads(store: Store, client: LabelStudioClient, project_id: int, image_ids: list[int], why: dict[int, str]) -> list[dict[str, Any]]:
    images = store.images().set_index("image_id").loc[image_ids]
    urls = client.image_urls(project_id, {int(i): Path(p) for i, p in images["path"].items()}, store.project_uuid)
    regions: dict[int, list[dict[str, Any]]] = {int(i): [] for i in image_ids}
    for r in store.labels(image_ids).itertuples(index=False):
        w, h = int(images.at[r.image_id, "width"]), int(images.at[r.image_id, "height"])
        regions[int(r.image_id)].append(label_region(f"label-{r.label_id}", (r.x1, r.y1, r.x2, r.y2), r.class_name, w, h))
    return [
        task_payload(i, urls[i], Path(images.at[i, "path"]).name, store.project_uuid,
                     {"review_why": why.get(i, ""), "split": str(images.at[i, "split"]), "labels_before": len(regions[i])},
                     purpose=REVIEW, labels=regions[i])
        for i in image_ids
    ]


# --------------------------------------------------------------------------- what a pull reads of a review


def review_tasks_by_key(store: Store, row: int) -> dict[tuple[int, int], tuple[int, str] | None]:
    """Live review tasks of the project's server (local ``row``): ``(task id, image id)`` ->
    baseline (the annotation version that equals the store's labels, or None)."""
    tasks = store.review_tasks(row)
    tasks = tasks[tasks["status"] != "deleted"]
    return {(int(t), int(i)): b for t, i, b in zip(tasks["task_id"], tasks["image_id"], tasks["review_baseline"])}


def reviewed(annotations: list[dict[str, Any]], baseline: tuple[int, str] | None) -> list[dict[str, Any]]:
    """The annotations of a review task a reviewer has acted on: not the baseline version, not
    an untouched pre-filled one."""
    return [a for a in annotations if (int(a["id"]), str(a.get("updated_at"))) != (tuple(baseline) if baseline else None) and not untouched(a)]


def review_outcome(boxes: Sequence[Any], current: Sequence[tuple]) -> str:
    """``unchanged`` when the reviewed boxes equal the image's current labels, else ``corrected``."""
    return "unchanged" if same_labels([(b.class_name, b.x1, b.y1, b.x2, b.y2) for b in boxes], current) else "corrected"


def reviewer(annotation: dict[str, Any], users: dict[int, str]) -> str | None:
    """Who reviewed: the last editor of the pre-filled annotation (it was created by the import),
    else whoever completed it."""
    who = annotation.get("updated_by") or annotation.get("completed_by")
    who = who.get("id") if isinstance(who, dict) else who
    return users.get(int(who), f"user {who}") if who is not None else None


def stale_results_notice(store: Store, test_images: Sequence[int]) -> str | None:
    """One sentence naming the model versions whose test results a review of ``test_images``
    made out of date, or None."""
    if not test_images:
        return None
    stale = store.stale_model_versions()
    names = ", ".join(stale["name"].astype(str).tolist()[:8]) + (" ..." if len(stale) > 8 else "")
    text = f"Review changed the test labels of {plural(len(test_images), 'image')}"
    if stale.empty:
        return text + "; no model version was evaluated on the earlier labels."
    return text + f": the test results of {plural(len(stale), 'model version')} ({names}) were measured on the earlier labels and are out of date; retrain to compare on the corrected test split."


__all__ = ["REVIEW", "ReviewPushReport", "push_review", "review_outcome", "review_tasks_by_key", "reviewed", "reviewer", "stale_results_notice", "untouched"]
