"""What the store keeps of label review (issue 22): the latest label-error queue, every version of
an image's labels with its provenance, the review tasks sent to Label Studio and what they
corrected, and the model results a changed test label invalidates."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from almdn.projects.store.schema import StoreError, now

if TYPE_CHECKING:
    import pandas as pd

#: Two boxes closer than this (pixels, every coordinate) are the same label: Label Studio keeps
#: boxes in percent of the image, so a round trip moves them by float rounding only.
SAME_BOX_PIXELS = 0.05


def same_labels(a: Sequence[tuple], b: Sequence[tuple], tolerance: float = SAME_BOX_PIXELS) -> bool:
    """Whether two labelings, each ``(class, x1, y1, x2, y2)`` rows, hold the same boxes
    (as multisets, coordinates within ``tolerance`` pixels)."""
    if len(a) != len(b):
        return False
    left = sorted((str(n), *map(float, c)) for n, *c in a)
    right = sorted((str(n), *map(float, c)) for n, *c in b)
    unmatched = list(right)
    for name, *coords in left:
        hit = next((j for j, (n2, *c2) in enumerate(unmatched) if n2 == name and all(abs(u - v) <= tolerance for u, v in zip(coords, c2))), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def labels_changed(before: Sequence[tuple], after: Sequence[tuple], tolerance: float = SAME_BOX_PIXELS) -> int:
    """How many labels a correction changed: boxes of ``after`` with no equal box in ``before``
    plus boxes of ``before`` left without one (a moved box counts twice: removed and added,
    a relabelled one likewise)."""
    unmatched = [(str(n), *map(float, c)) for n, *c in before]
    added = 0
    for name, *coords in ((str(n), *map(float, c)) for n, *c in after):
        hit = next((j for j, (n2, *c2) in enumerate(unmatched) if n2 == name and all(abs(u - v) <= tolerance for u, v in zip(coords, c2))), None)
        if hit is None:
            added += 1
        else:
            unmatched.pop(hit)
    return added + len(unmatched)


def _frame_blob(frame: pd.DataFrame | None) -> bytes | None:
    return None if frame is None else frame.to_json(orient="table", index=False, double_precision=15).encode()  # 15: float64 kept to the last digit that counts


def _blob_frame(blob: bytes | None) -> pd.DataFrame | None:
    import pandas as pd

    return None if blob is None else pd.read_json(io.StringIO(bytes(blob).decode()), orient="table")


class ReviewMixin:
    """The label-error queue, label versions with provenance, review tasks and their outcomes."""

    # ------------------------------------------------------------------ the label-error queue

    def write_review_queue(self, queue: pd.DataFrame, detections: pd.DataFrame | None = None, *, model_version: int | None = None,
                           folds: int = 0, scoring: str = "mixture", conf_threshold: float | None = None, num_labeled: int | None = None) -> int:
        """Keep a label-error queue (:func:`almdn.workflow.review.review_queue`'s frame) and the
        detections it was computed from (store pixels), replacing earlier queues. Returns its id."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM review_queues")
            return int(conn.execute(
                "INSERT INTO review_queues (created_at, model_version_id, folds, scoring, conf_threshold, num_labeled, items, detections) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), model_version, int(folds), str(scoring), conf_threshold,
                 int(num_labeled if num_labeled is not None else queue["image_id"].nunique() if len(queue) else 0),
                 _frame_blob(queue.reset_index(drop=True)), _frame_blob(detections.reset_index(drop=True) if detections is not None else None)),
            ).lastrowid)

    def latest_review_queue(self) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
        """``(queue, detections)`` of the latest kept queue, or None. The queue gains
        ``relabeled``: the image's labels changed since the queue was computed (its items may
        be out of date). ``queue.attrs``: ``created_at``, ``model_version``, ``folds``,
        ``scoring``, ``conf_threshold``, ``num_labeled``."""
        rows = self._query("SELECT created_at, model_version_id, folds, scoring, conf_threshold, num_labeled, items, detections FROM review_queues ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        created_at, mv, folds, scoring, conf, num_labeled, items, detections = rows[0]
        queue = _blob_frame(items)
        changed = {r[0] for r in self._query("SELECT DISTINCT image_id FROM annotations WHERE imported_at > ?", (created_at,))}
        queue["relabeled"] = queue["image_id"].astype("int64").isin(changed) if len(queue) else queue.get("image_id", []).astype(bool)
        queue.attrs.update(created_at=created_at, model_version=mv, folds=int(folds), scoring=scoring, conf_threshold=conf, num_labeled=int(num_labeled))
        return queue, _blob_frame(detections)

    # ------------------------------------------------------------------ label versions

    def label_versions(self, image_id: int) -> pd.DataFrame:
        """Every version of an image's labels, oldest first: annotation id, ``provenance``
        (``import`` with its file, ``annotator NAME``, ``review by NAME``), annotator, times,
        ``is_current``, ``via_review``, the Label Studio task, and its boxes counted."""
        frame = self._frame(
            """SELECT a.id AS annotation_id, a.origin, a.source, a.annotator, a.via_review, a.ls_task_id, a.ls_annotation_id,
                      a.created_at, a.updated_at, a.imported_at, a.is_current, a.deleted_on_server_at,
                      (SELECT COUNT(*) FROM labels l WHERE l.annotation_id = a.id) AS num_labels
               FROM annotations a WHERE a.image_id = ? ORDER BY a.id""",
            (int(image_id),),
        )
        frame.insert(1, "provenance", [
            (f"import ({src})" if src else "import") if origin == "import" else f"{'review' if review else 'annotator'} {'by ' if review else ''}{who or 'unknown'}"
            for origin, src, who, review in zip(frame["origin"], frame["source"], frame["annotator"], frame["via_review"])
        ])
        return frame

    def annotation_boxes(self, annotation_id: int) -> list[tuple]:
        """The boxes of one stored annotation as ``(class, x1, y1, x2, y2)``."""
        return self._query(
            "SELECT c.name, l.x1, l.y1, l.x2, l.y2 FROM labels l JOIN classes c ON c.id = l.class_id WHERE l.annotation_id = ? ORDER BY l.id",
            (int(annotation_id),),
        )

    def current_annotation(self, image_id: int) -> int | None:
        rows = self._query("SELECT id FROM annotations WHERE image_id = ? AND is_current = 1", (int(image_id),))
        return int(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ review tasks

    def record_review_batch(self, ls_project: int, tasks: Sequence[tuple[int, int]], sent_with: Mapping[int, int],
                            baselines: Mapping[int, tuple[int, str]], why: Mapping[int, str] | None = None) -> int | None:
        """Record review tasks pushed to Label Studio, as one batch: ``tasks`` ``(task id, image
        id)``; ``sent_with``: per image, the store annotation whose labels the task holds;
        ``baselines``: per task id, the ``(annotation id, updated_at)`` Label Studio gave that
        pre-filled annotation (a pull that finds only it has nothing to take). Returns the batch id."""
        if not tasks:
            return None
        stamp = now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE tasks SET status = 'deleted', updated_at = ? WHERE ls_project = ? AND task_id = ? AND status != 'deleted'",
                [(stamp, int(ls_project), int(t)) for t, _ in tasks],
            )
            round_id = conn.execute("SELECT MAX(id) FROM rounds").fetchone()[0]
            batch = int(conn.execute(
                "INSERT INTO batches (ls_project, round_id, model_version_id, top_k, status, created_at, updated_at) VALUES (?, ?, NULL, NULL, 'sent', ?, ?)",
                (int(ls_project), round_id, stamp, stamp),
            ).lastrowid)
            conn.executemany(
                """INSERT INTO tasks (ls_project, task_id, image_id, batch_id, status, created_at, updated_at, selected_why, purpose,
                                      review_annotation_id, review_baseline) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, 'review', ?, ?)""",
                [(int(ls_project), int(t), int(i), batch, stamp, stamp, (why or {}).get(int(i)), sent_with.get(int(i)),
                  json.dumps(list(baselines[int(t)])) if int(t) in baselines else None) for t, i in tasks],
            )
            self.refresh_batch_status(conn)
        return batch

    def review_tasks(self, ls_project: int | None = None) -> pd.DataFrame:
        """Live and past review tasks: task id, image, split, status, outcome, the annotation
        it was sent with, its baseline ``(Label Studio annotation id, updated_at)`` or None."""
        where, params = ("AND t.ls_project = ?", (int(ls_project),)) if ls_project is not None else ("", ())
        frame = self._frame(
            f"""SELECT t.id, t.ls_project, t.task_id, t.image_id, i.split, t.batch_id, t.status, t.review_outcome, t.review_annotation_id,
                       t.review_baseline, t.selected_why, t.created_at, t.updated_at
                FROM tasks t JOIN images i ON i.id = t.image_id WHERE t.purpose = 'review' {where} ORDER BY t.id""",
            params,
        )
        frame["review_baseline"] = [tuple(json.loads(b)) if isinstance(b, str) else None for b in frame["review_baseline"]]
        return frame

    def review_summary(self) -> dict[str, int]:
        """What review did, for the History page: review tasks ``sent``, still ``open``,
        ``unchanged`` (reviewed, nothing to correct), ``corrected_images``, and
        ``corrected_labels`` (boxes added, removed or changed by the corrections, each
        against the version before it; :func:`labels_changed`)."""
        with self.snapshot() as conn:
            sent, still_open, unchanged = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(status = 'open'), 0), COALESCE(SUM(review_outcome = 'unchanged'), 0) FROM tasks WHERE purpose = 'review' AND status != 'deleted'"
            ).fetchone()
            reviewed = conn.execute("SELECT id, image_id FROM annotations WHERE via_review = 1 ORDER BY id").fetchall()
            changed = 0
            for annotation_id, image_id in reviewed:
                before = conn.execute("SELECT MAX(id) FROM annotations WHERE image_id = ? AND id < ?", (image_id, annotation_id)).fetchone()[0]
                boxes = lambda a: conn.execute(  # noqa: E731
                    "SELECT c.name, l.x1, l.y1, l.x2, l.y2 FROM labels l JOIN classes c ON c.id = l.class_id WHERE l.annotation_id = ?", (a,)).fetchall()
                changed += labels_changed(boxes(before) if before is not None else [], boxes(annotation_id))
        return {"sent": int(sent), "open": int(still_open), "unchanged": int(unchanged),
                "corrected_images": len({i for _, i in reviewed}), "corrected_labels": int(changed)}

    def stale_model_versions(self) -> pd.DataFrame:
        """Model versions whose test results predate a change of the test split's labels (by
        review): ``model_version_id``, ``name``, ``created_at``, ``changed_test_images`` (how
        many test images were relabeled after the version was evaluated). Their test mAP no
        longer measures the current test labels."""
        return self._frame(
            """SELECT m.id AS model_version_id, m.name, m.created_at,
                      (SELECT COUNT(DISTINCT a.image_id) FROM annotations a JOIN images i ON i.id = a.image_id
                       WHERE i.split = 'test' AND a.via_review = 1 AND a.imported_at > m.created_at) AS changed_test_images
               FROM model_versions m WHERE changed_test_images > 0 ORDER BY m.id"""
        )

    def check_reviewable(self, image_ids: Sequence[int], include_test: bool = False) -> None:
        """One sentence unless every image has labels to review: labeled (or, with
        ``include_test``, test) and a current annotation."""
        ids = [int(i) for i in image_ids]
        if not ids:
            raise StoreError("Choose at least one labeled image to send for review.")
        split = dict(self._query(f"SELECT id, split FROM images WHERE id IN ({', '.join('?' * len(ids))})", ids))
        unknown = [i for i in ids if i not in split]
        if unknown:
            raise StoreError(f"Images {unknown[:10]} are not in the project; choose images from the review queue.")
        pool = [i for i in ids if split[i] == "pool"]
        if pool:
            raise StoreError(f"Images {pool[:10]} are in the pool and have no labels to review; send them for labeling instead (Label page).")
        test = [i for i in ids if split[i] == "test"]
        if test and not include_test:
            raise StoreError(
                f"Images {test[:10]} are test images; their labels are reviewed only on explicit request (--include-test), "
                "since a changed test label makes every earlier model's test mAP out of date."
            )
        unlabeled = [i for i in ids if self.current_annotation(i) is None]
        if unlabeled:
            raise StoreError(f"Images {unlabeled[:10]} have no current labels to review.")
