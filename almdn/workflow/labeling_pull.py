"""Pulling the finished labels from Label Studio, and resending or putting back what the
annotators skipped (see :mod:`almdn.workflow.labeling` for the guarantees)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from almdn.data.records import BoxRecord
from almdn.projects.rounds import plural
from almdn.projects.store import Store
from almdn.workflow.labeling_review import review_outcome, review_tasks_by_key, reviewed, reviewer, stale_results_notice
from almdn.workflow.labeling_lock import (  # the labeling use cases' shared internals
    Server,
    _client,
    _set_pending_push,
    pending_push,
    project_lock,
)
from label_studio.client import IMAGE_KEY, annotation_boxes, submitted_annotations
from label_studio.errors import LabelStudioError


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
    #: images whose review found nothing to correct (nothing written), and those corrected
    reviewed_unchanged: list[int] = field(default_factory=list)
    corrected_images: list[int] = field(default_factory=list)
    #: test images whose labels a review changed, and the sentence naming the results it dates
    test_labels_changed: list[int] = field(default_factory=list)
    stale_notice: str | None = None

    @property
    def rejected(self) -> int:
        return len(self.problems)

    @property
    def notices(self) -> list[str]:
        """What the user should know beyond the counts: ignored tasks, deleted annotations."""
        out = [self.stale_notice] if self.stale_notice else []
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
        if self.corrected_images or self.reviewed_unchanged:
            text += f", review: {plural(len(self.corrected_images), 'image')} corrected, {len(self.reviewed_unchanged)} unchanged"
        if self.problems:
            text += f", {plural(len(self.problems), 'annotation')} rejected"
        return text + f" ({self.seconds:.1f} s)."


def _ids(ids: Sequence[int], shown: int = 5) -> str:
    ids = list(ids)
    return ", ".join(str(i) for i in ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


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
        users: dict[int, str] | None = None
        new_annotations: list[dict[str, Any]] = []
        task_status: dict[tuple[int, int], str] = {}
        outcomes: dict[tuple[int, int], tuple[str, tuple[int, str] | None]] = {}
        adopted: list[tuple[int, int]] = []
        deleted_annotations: list[int] = []
        review = review_tasks_by_key(store, row)
        for image_id, image_tasks in sorted(by_image.items()):
            split = str(images.at[image_id, "split"]) if image_id in images.index else None
            for task in image_tasks:
                task_id = int(task["id"])
                key_task = (task_id, image_id)
                if split is None:
                    report.foreign_tasks.append((task_id, image_id, f"image {image_id} is not in the project"))
                    continue
                if split == "test" and key_task not in review:
                    # ground truth for the test split only from a review asked for (push_review, include_test)
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
                submitted = reviewed(submitted_annotations(task), review[key_task]) if key_task in review else submitted_annotations(task)
                if any(isinstance(a, dict) and a.get("was_cancelled") for a in annotations) and not submitted:
                    task_status[key_task] = "skipped"
                for ann in submitted:
                    if (int(ann["id"]), str(ann.get("updated_at"))) in stored_versions:
                        report.duplicates += 1
                        task_status[key_task] = "annotated"
                        continue
                    if users is None:
                        users = client.annotators()
                    taken = _read_annotation(store, ann, task_id, images.loc[image_id], image_id, classes, users, key_task in review, report)
                    if taken is None:
                        continue
                    task_status[key_task] = "annotated"
                    if taken.get("outcome") == "unchanged":
                        outcomes[key_task] = ("unchanged", (int(ann["id"]), str(ann.get("updated_at"))))
                    else:
                        new_annotations.append(taken)
        url = client.url
    # The newest annotation of an image becomes its current labels.
    new_annotations.sort(key=lambda a: (a["updated_at"], a["annotation_id"]))
    with store.transaction():
        result = store.record_pull(row, url, new_annotations, task_status, gone, adopted, deleted_annotations, outcomes)
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
    report.reviewed_unchanged = result["reviewed_unchanged"]
    report.corrected_images = result["corrected_images"]
    report.test_labels_changed = result["test_labels_changed"]
    report.stale_notice = stale_results_notice(store, report.test_labels_changed)
    batches = store.batches()
    batches = batches[batches["ls_project"] == row]
    report.batches = batches[["batch_id", "status", "tasks", "open", "annotated", "skipped", "deleted"]].to_dict("records")
    report.seconds = time.perf_counter() - t0
    return report


def _read_annotation(store: Store, ann: dict[str, Any], task_id: int, image: Any, image_id: int, classes: set[str], users: dict[int, str],
                     is_review: bool, report: PullReport) -> dict[str, Any] | None:
    """One submitted annotation as :meth:`Store.record_pull` takes it (``outcome``
    ``unchanged``: a review that found nothing to correct), or None when it cannot be taken
    (the sentence goes to ``report.problems``)."""
    boxes, problem = annotation_boxes(ann, task_id, image["path"], int(image["width"]), int(image["height"]), classes)
    if problem:
        report.problems.append(problem)
        return None
    boxes = [BoxRecord(name, x1, y1, x2, y2, region_id=region) for name, x1, y1, x2, y2, region in boxes]
    outcome = None
    if is_review:
        current = store.current_annotation(image_id)
        outcome = review_outcome(boxes, store.annotation_boxes(current) if current is not None else [])
    if is_review:
        annotator = reviewer(ann, users)
    else:
        who = ann.get("completed_by")
        who = who.get("id") if isinstance(who, dict) else who
        annotator = users.get(int(who), f"user {who}") if who is not None else None
    return {
        "image_id": image_id, "task_id": task_id, "annotation_id": int(ann["id"]), "boxes": boxes, "annotator": annotator,
        "created_at": ann.get("created_at"), "updated_at": str(ann.get("updated_at")), "lead_time": ann.get("lead_time"),
        "via_review": is_review, "outcome": outcome,
    }


# --------------------------------------------------------------------------- skipped tasks


def _skipped_tasks(store: Store, url: str, image_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(local project row, task id, image id)`` of the skipped tasks of ``image_ids``;
    one sentence if an image has none."""
    tasks = store.tasks()
    tasks = tasks[tasks["purpose"] == "label"]  # a skipped review leaves the labels as they are: nothing to resend or put back
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
