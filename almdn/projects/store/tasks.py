"""What the store keeps of Label Studio: its projects, the batches pushed to them and the tasks
that hold their images (with status), and what a pull records."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from almdn.projects.store.schema import TASK_STATUSES, StoreError, now

if TYPE_CHECKING:
    import pandas as pd


class TasksMixin:
    """Label Studio projects, the batches pushed to them, their tasks, and what a pull records."""

    # ------------------------------------------------------------------ Label Studio bookkeeping

    def ls_project(self, url: str, project_id: int, title: str) -> int:
        """The local row of a Label Studio project (recorded on first use); returns its id."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM ls_projects WHERE url = ? AND project_id = ?", (url, int(project_id))).fetchone()
            if row is not None:
                return int(row[0])
            return int(conn.execute("INSERT INTO ls_projects (url, project_id, title, created_at) VALUES (?, ?, ?, ?)", (url, int(project_id), title, now())).lastrowid)

    def ls_projects(self, url: str | None = None) -> pd.DataFrame:
        where = "WHERE url = ?" if url else ""
        return self._frame(f"SELECT id, url, project_id, title, created_at FROM ls_projects {where} ORDER BY id", (url,) if url else ())

    def tasks(self, ls_project: int | None = None, batch_id: int | None = None) -> pd.DataFrame:
        """Label Studio tasks: local id, project row, task id, image id, batch, status, times."""
        where, params = [], []
        if ls_project is not None:
            where.append("t.ls_project = ?")
            params.append(int(ls_project))
        if batch_id is not None:
            where.append("t.batch_id = ?")
            params.append(int(batch_id))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._frame(
            f"""SELECT t.id, t.ls_project, p.project_id AS ls_project_id, t.task_id, t.image_id, i.path, t.batch_id, t.status, t.created_at, t.updated_at,
                       t.selected_why, t.purpose, t.review_outcome
                FROM tasks t JOIN images i ON i.id = t.image_id JOIN ls_projects p ON p.id = t.ls_project {clause} ORDER BY t.id""",
            params,
        )

    def record_batch(self, ls_project: int, tasks: Sequence[tuple[int, int]], model_version: int | None, top_k: int | None, adopted: Sequence[tuple[int, int]] = (),
                     why: dict[int, str] | None = None) -> int | None:
        """Record a pushed batch: ``tasks`` are new ``(task_id, image_id)`` pairs, ``adopted``
        are tasks found on the server that an interrupted push had created; ``why``: per image,
        the sentence saying why it was chosen. One transaction. Returns the batch id (None when
        there was nothing new)."""
        if not tasks and not adopted:
            return None
        stamp = now()
        with self.transaction() as conn:
            # The server just gave these ids to new tasks, so a live task of ours with the same
            # id was deleted there (Label Studio reuses the id of a deleted task).
            conn.executemany(
                "UPDATE tasks SET status = 'deleted', updated_at = ? WHERE ls_project = ? AND task_id = ? AND status != 'deleted'",
                [(stamp, int(ls_project), int(t)) for t, _ in [*tasks, *adopted]],
            )
            round_id = conn.execute("SELECT MAX(id) FROM rounds").fetchone()[0]
            batch = int(conn.execute(
                "INSERT INTO batches (ls_project, round_id, model_version_id, top_k, status, created_at, updated_at) VALUES (?, ?, ?, ?, 'sent', ?, ?)",
                (int(ls_project), round_id, model_version, top_k, stamp, stamp),
            ).lastrowid)
            conn.executemany(
                "INSERT INTO tasks (ls_project, task_id, image_id, batch_id, status, created_at, updated_at, selected_why) VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
                [(int(ls_project), int(t), int(i), batch, stamp, stamp, (why or {}).get(i))
                 for t, i in dict.fromkeys((int(t), int(i)) for t, i in [*tasks, *adopted])],
            )
            self.refresh_batch_status(conn)
        return batch

    def batches(self) -> pd.DataFrame:
        """Batches with their task counts by status."""
        counts = ", ".join(f"SUM(t.status = '{s}') AS {s}" for s in TASK_STATUSES)
        frame = self._frame(
            f"""SELECT b.id AS batch_id, b.ls_project, p.url AS ls_url, p.project_id AS ls_project_id, b.round_id, b.model_version_id, b.top_k,
                       b.status, b.created_at, b.updated_at, COUNT(t.id) AS tasks, {counts},
                       COALESCE(MAX(t.purpose), 'label') AS purpose
                FROM batches b JOIN ls_projects p ON p.id = b.ls_project LEFT JOIN tasks t ON t.batch_id = b.id
                GROUP BY b.id ORDER BY b.id"""
        )
        for s in TASK_STATUSES:
            frame[s] = frame[s].fillna(0).astype(int)
        return frame

    def refresh_batch_status(self, conn: sqlite3.Connection) -> None:
        """Batch status from its tasks: ``done`` when none is open, ``partial`` when some are
        finished, else ``sent``. Call inside a transaction."""
        rows = conn.execute(
            """SELECT b.id, b.status, SUM(t.status = 'open'), COUNT(t.id) FROM batches b
               LEFT JOIN tasks t ON t.batch_id = b.id GROUP BY b.id"""
        ).fetchall()
        stamp = now()
        for batch, status, n_open, n_tasks in rows:
            n_open = n_open or 0
            new = "done" if n_open == 0 else ("partial" if n_open < n_tasks else "sent")
            if new != status:
                conn.execute("UPDATE batches SET status = ?, updated_at = ? WHERE id = ?", (new, stamp, batch))

    def close_ls_project(self, ls_project: int) -> int:
        """A Label Studio project is gone from its server: its open tasks become ``deleted``
        (labels already pulled stay). Returns how many tasks changed."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE tasks SET status = 'deleted', updated_at = ? WHERE ls_project = ? AND status = 'open'", (now(), int(ls_project))
            ).rowcount
            self.refresh_batch_status(conn)
        return changed

    def record_pull(
        self,
        ls_project: int,
        source: str,
        annotations: Sequence[dict[str, Any]],
        task_status: dict[tuple[int, int] | int, str],
        deleted_tasks: Sequence[tuple[int, int] | int],
        adopted: Sequence[tuple[int, int]] = (),
        deleted_annotations: Sequence[int] = (),
        review_outcomes: dict[tuple[int, int], tuple[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Record what a pull read from Label Studio, in one transaction.

        Tasks are named by ``(task id, image id)``: Label Studio gives the id of a deleted
        task to the next one it creates, so an id alone is not an identity.

        Args:
            annotations: oldest first, each ``{"image_id", "task_id", "annotation_id",
                "boxes", "annotator", "created_at", "updated_at", "lead_time"}``;
                each becomes its image's current annotation (so the newest wins) and moves a
                pool image to ``labeled``.
            task_status: the new status of live tasks, by ``(task id, image id)`` (or by a
                bare task id, meaning the live task with that id).
            deleted_tasks: live tasks gone from the server (pairs or bare ids, likewise).
            adopted: tasks found on the server but not recorded (an interrupted push).
            deleted_annotations: Label Studio ids of pulled annotations deleted on the server
                since: marked (``deleted_on_server_at``), their labels kept.
            review_outcomes: review tasks whose review found nothing to correct, by ``(task
                id, image id)``: ``("unchanged", (annotation id, updated_at))``, the version
                recorded as the task's new baseline; no label is written. An annotation with
                ``"via_review": True`` is a correction: written as the image's current labels
                (provenance ``review``), its task's outcome ``corrected``.

        Idempotent: a task already live or an annotation version already stored (another
        pull committed it first) inserts nothing and counts as a duplicate.

        Returns ``{"new", "updated", "duplicates", "labeled_images", "skipped_tasks",
        "deleted_tasks", "deleted_annotations", "reviewed_unchanged", "corrected_images",
        "test_labels_changed"}`` (task lists hold task ids; ``deleted_annotations`` the
        annotations newly marked; the review lists hold image ids).
        """
        stamp = now()
        out: dict[str, Any] = {"new": 0, "updated": 0, "duplicates": 0, "labeled_images": [], "skipped_tasks": [], "deleted_tasks": [], "deleted_annotations": [],
                               "reviewed_unchanged": [], "corrected_images": [], "test_labels_changed": []}
        labeled: set[int] = set()
        def live(task: int | tuple[int, int]) -> tuple[str, tuple[int, ...]]:
            """WHERE clause and parameters of one live task."""
            if isinstance(task, tuple):
                return "ls_project = ? AND task_id = ? AND image_id = ? AND status != 'deleted'", (int(ls_project), int(task[0]), int(task[1]))
            return "ls_project = ? AND task_id = ? AND status != 'deleted'", (int(ls_project), int(task))

        with self.transaction() as conn:
            class_ids = self._class_ids(conn)
            for task in deleted_tasks:  # first: a reused id may come back as adopted
                where, params = live(task)
                conn.execute(f"UPDATE tasks SET status = 'deleted', updated_at = ? WHERE {where}", (stamp, *params))
                out["deleted_tasks"].append(int(task[0] if isinstance(task, tuple) else task))
            # Idempotent inside the transaction: a task already live, or an annotation version
            # already stored (another pull committed it meanwhile), inserts nothing.
            for t, i in dict.fromkeys((int(t), int(i)) for t, i in adopted):
                if conn.execute("SELECT 1 FROM tasks WHERE ls_project = ? AND task_id = ? AND status != 'deleted'", (int(ls_project), t)).fetchone() is None:
                    conn.execute(
                        "INSERT INTO tasks (ls_project, task_id, image_id, batch_id, status, created_at, updated_at) VALUES (?, ?, ?, NULL, 'open', ?, ?)",
                        (int(ls_project), t, i, stamp, stamp),
                    )
            labeled |= self._record_pulled_annotations(conn, class_ids, int(ls_project), source, annotations, stamp, out, live)
            for annotation_id in dict.fromkeys(int(a) for a in deleted_annotations):
                changed = conn.execute(
                    "UPDATE annotations SET deleted_on_server_at = ? WHERE origin = 'label_studio' AND ls_project = ? AND ls_annotation_id = ? AND deleted_on_server_at IS NULL",
                    (stamp, int(ls_project), annotation_id),
                ).rowcount
                if changed:
                    out["deleted_annotations"].append(annotation_id)
            for task, (outcome, baseline) in (review_outcomes or {}).items():
                where, params = live(task)
                changed = conn.execute(
                    f"UPDATE tasks SET review_outcome = ?, review_baseline = ?, updated_at = ? WHERE {where} AND purpose = 'review' AND review_baseline IS NOT ?",
                    (outcome, json.dumps(list(baseline)), stamp, *params, json.dumps(list(baseline))),
                ).rowcount
                if changed:
                    out["reviewed_unchanged"].append(int(task[1]))
            for task, status in task_status.items():
                if status not in TASK_STATUSES:
                    raise StoreError(f"Unknown task status '{status}'.")
                where, params = live(task)
                before = conn.execute(f"SELECT status FROM tasks WHERE {where}", params).fetchone()
                if before is not None and before[0] != status:
                    conn.execute(f"UPDATE tasks SET status = ?, updated_at = ? WHERE {where}", (status, stamp, *params))
                    if status == "skipped":
                        out["skipped_tasks"].append(int(task[0] if isinstance(task, tuple) else task))
            self.refresh_batch_status(conn)
        out["labeled_images"] = sorted(labeled)
        for key in ("corrected_images", "test_labels_changed", "reviewed_unchanged"):
            out[key] = sorted(set(out[key]))
        return out

    def _record_pulled_annotations(self, conn: sqlite3.Connection, class_ids: dict[str, int], ls_project: int, source: str,
                                   annotations: Sequence[dict[str, Any]], stamp: str, out: dict[str, Any], live: Any) -> set[int]:
        """:meth:`record_pull`'s annotations (counted into ``out``); returns the pool images they labeled."""
        labeled: set[int] = set()
        for a in annotations:
            version = (int(ls_project), int(a["annotation_id"]), a.get("updated_at"))
            if conn.execute(
                "SELECT 1 FROM annotations WHERE origin = 'label_studio' AND ls_project = ? AND ls_annotation_id = ? AND updated_at IS ?", version
            ).fetchone() is not None:
                out["duplicates"] += 1
                continue
            earlier = conn.execute(
                "SELECT 1 FROM annotations WHERE origin = 'label_studio' AND ls_project = ? AND ls_annotation_id = ?", version[:2]
            ).fetchone() is not None
            via_review = bool(a.get("via_review"))
            self._insert_annotation(
                conn, class_ids, int(a["image_id"]), a["boxes"], origin="label_studio", where=f"task {a['task_id']}",
                source=source, ls_project=int(ls_project), ls_task_id=int(a["task_id"]), ls_annotation_id=int(a["annotation_id"]),
                annotator=a.get("annotator"), created_at=a.get("created_at"), updated_at=a.get("updated_at"), lead_time=a.get("lead_time"), imported_at=stamp,
                via_review=int(via_review),
            )
            out["updated" if earlier else "new"] += 1
            if via_review:
                where, params = live((int(a["task_id"]), int(a["image_id"])))
                conn.execute(f"UPDATE tasks SET review_outcome = 'corrected', updated_at = ? WHERE {where}", (stamp, *params))
                out["corrected_images"].append(int(a["image_id"]))
                split = conn.execute("SELECT split FROM images WHERE id = ?", (int(a["image_id"]),)).fetchone()[0]
                if split == "test":
                    out["test_labels_changed"].append(int(a["image_id"]))
                continue
            conn.execute("UPDATE images SET split = 'labeled' WHERE id = ? AND split = 'pool'", (int(a["image_id"]),))
            labeled.add(int(a["image_id"]))
        return labeled
