"""What the store keeps of the data: classes, images and their splits, annotations (with their
provenance) and labels, and the COCO export of a split."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from almdn.projects.store.schema import MAX_CLASS_NAME, SPLITS, StoreError, file_sha256, now

if TYPE_CHECKING:
    import pandas as pd

    from almdn.data.records import ImageRecord


@dataclass(frozen=True)
class PreparedImages:
    """Records whose files :meth:`Store.prepare_images` has read, hashed and decoded, for
    :meth:`Store.add_images` (split they were checked for, and one tuple per record)."""

    split: str
    items: list[tuple]


def _box_key(boxes: Sequence[Any] | None) -> list[tuple] | None:
    """Boxes as a sorted list of ``(class, x1, y1, x2, y2)`` (rounded), to compare labelings."""
    if boxes is None:
        return None
    rows = [b if isinstance(b, tuple) else (b.class_name, b.x1, b.y1, b.x2, b.y2) for b in boxes]
    return sorted((str(name), *(round(float(v), 3) for v in coords)) for name, *coords in rows)


class ImagesMixin:
    """Classes, images and their splits, annotations and labels, and the COCO export."""

    # ------------------------------------------------------------------ classes

    def classes(self) -> list[str]:
        """Class names; label ``k`` (1..C) is ``classes()[k - 1]``."""
        return [row[0] for row in self._query("SELECT name FROM classes ORDER BY id")]

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Append the names not yet in the class list (existing ids never change); returns the list."""
        names = [str(n) for n in names]
        for n in names:
            if not n.strip():
                raise StoreError("A class name cannot be empty; give every class a name.")
            if len(n) > MAX_CLASS_NAME or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in n):
                shown = n[:40].encode("unicode_escape").decode("ascii")
                raise StoreError(f"Class name '{shown}' is over {MAX_CLASS_NAME} characters or holds control characters (such as terminal escapes); rename the class, then try again.")
        with self.transaction() as conn:
            known = {row[0] for row in conn.execute("SELECT name FROM classes")}
            for n in dict.fromkeys(names):
                if n not in known:
                    conn.execute("INSERT INTO classes (name) VALUES (?)", (n,))
        return self.classes()

    def _class_ids(self, conn: sqlite3.Connection) -> dict[str, int]:
        return {name: cid for cid, name in conn.execute("SELECT id, name FROM classes")}

    # ------------------------------------------------------------------ images

    def add_images(self, records: Iterable[ImageRecord | str | os.PathLike[str]] | PreparedImages, split: str = "pool", source: str | None = None) -> dict[str, Any]:
        """Add images (and the labels of records that carry boxes) in one transaction.

        Every file is read and decoded (size, content hash, pixels) by :meth:`prepare_images`
        before the write transaction begins, so a broken, truncated or oversized file stops
        the import with a :class:`~almdn.data.coco.DatasetError` naming it and the store
        unchanged, and the store's write lock is held only for the inserts (the app and a
        retrain finishing meanwhile never wait on the decoding). Pass what
        :meth:`prepare_images` returned to do the decoding earlier still (outside an enclosing
        transaction, as :func:`almdn.projects.sources.add_source` does).

        An image already in the store, by path or by content (the same bytes reached through
        ``..``, a symlink or a copy), is left as it is: adding a dataset twice adds nothing.
        But labels are never dropped unseen: a copy (same bytes under another path) whose
        labels differ from the stored image's, or a file listed twice in one import with
        different labels, stops the import with one sentence naming both. Class names of the
        boxes must be in the class list (:meth:`add_classes`).

        Returns ``{"added": [ids], "existing": [ids], "duplicates": [paths], "labels": n}``:
        ``existing`` are the store's ids of records already there (same path or content),
        ``duplicates`` the paths among them that are new copies of stored content.
        """
        prepared = records if isinstance(records, PreparedImages) else self.prepare_images(records, split)
        if prepared.split != split:
            raise StoreError(f"Images prepared for the '{prepared.split}' split cannot go to '{split}'.")
        with self.transaction() as conn:
            return self._insert_images(conn, prepared.items, split, source)

    def prepare_images(self, records: Iterable[ImageRecord | str | os.PathLike[str]], split: str = "pool") -> PreparedImages:
        """Read, hash and decode every file of ``records`` (no store access, no lock): the
        first half of :meth:`add_images`. Checks each image's size against its record's and
        each box against its image (finite, inside, not empty)."""
        from almdn.data.coco import DatasetError
        from almdn.data.records import ImageRecord, check_image

        if split not in SPLITS:
            raise StoreError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        prepared = []
        for record in records:
            if not isinstance(record, ImageRecord):
                record = ImageRecord(Path(record))
            path = Path(os.path.normpath(Path(record.path).absolute()))  # pool/../pool/a.png is pool/a.png
            if record.boxes is None and split != "pool":
                raise StoreError(f"Image '{path}' has no labels and cannot go to the '{split}' split; add it to the pool or give it labels.")
            try:
                digest, size = file_sha256(path)
            except FileNotFoundError:
                raise DatasetError(f"Cannot read image '{path}' (file not found); put the file back or leave it out, then try again.") from None
            except OSError as exc:
                raise DatasetError(f"Cannot read image '{path}' ({exc.strerror or type(exc).__name__}); fix or remove it, then try again.") from None
            # Decoded once here (cheaply: JPEGs at 1/8 scale), so a truncated file fails now, not in training.
            width, height = check_image(path)  # EXIF orientation applied: the size browsers show
            if record.width is not None and record.height is not None and (record.width, record.height) != (width, height):
                turned = " (its EXIF orientation turns it; almdn uses the image as browsers show it)" if (record.width, record.height) == (height, width) else ""
                raise DatasetError(
                    f"Image '{path}' is {width}x{height} pixels{turned} but its annotations say {record.width}x{record.height}; "
                    "fix the annotation file or the image, then try again."
                )
            if record.boxes:
                self._check_boxes(record.boxes, {"path": str(path), "width": width, "height": height})
            prepared.append((record, str(path), digest, size, int(width), int(height)))
        return PreparedImages(split, prepared)

    def _insert_images(self, conn: sqlite3.Connection, prepared: Sequence[tuple], split: str, source: str | None) -> dict[str, Any]:
        from almdn.data.coco import DatasetError

        added: list[int] = []
        existing: list[int] = []
        duplicates: list[str] = []
        n_labels = 0
        stamp = now()
        class_ids = self._class_ids(conn)
        labels_of: dict[int, tuple[str, list | None]] = {}  # image id -> (path, boxes) of this import's records
        for record, path, digest, size, width, height in prepared:
            row = conn.execute("SELECT id, path FROM images WHERE path = ?", (path,)).fetchone()
            copy = False
            if row is None:
                row = conn.execute("SELECT id, path FROM images WHERE sha256 = ? AND size_bytes = ? ORDER BY id LIMIT 1", (digest, size)).fetchone()
                copy = row is not None
            if row is not None:
                image_id, stored_path = int(row[0]), str(row[1])
                if record.boxes is not None:
                    seen = labels_of.get(image_id)
                    if seen is not None:  # listed twice in this import (under one name or two)
                        if _box_key(seen[1]) != _box_key(record.boxes):
                            same = f"'{path}' is listed twice" if seen[0] == path else f"'{path}' and '{seen[0]}' are the same image (identical bytes)"
                            raise DatasetError(f"{same} in {source or 'the import'} with different labels; keep one of them or make their labels agree, then try again.")
                    elif copy and _box_key(self._current_boxes(conn, image_id)) != _box_key(record.boxes):
                        raise DatasetError(
                            f"'{path}' and '{stored_path}' (image {image_id}, already in the project) are the same image (identical bytes) but their labels differ; "
                            "keep one of them or make their labels agree, then try again."
                        )
                    labels_of.setdefault(image_id, (path, record.boxes))
                if copy:
                    duplicates.append(path)
                existing.append(image_id)
                continue
            cursor = conn.execute(
                "INSERT INTO images (path, width, height, size_bytes, sha256, split, source, source_id, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path, width, height, size, digest, split, source, record.source_id, stamp),
            )
            image_id = int(cursor.lastrowid)
            added.append(image_id)
            labels_of[image_id] = (path, record.boxes)
            if record.boxes is not None:
                n_labels += self._insert_annotation(
                    conn, class_ids, image_id, record.boxes, origin="import", source=source, imported_at=stamp, where=path
                )
        return {"added": added, "existing": existing, "duplicates": duplicates, "labels": n_labels}

    @staticmethod
    def _current_boxes(conn: sqlite3.Connection, image_id: int) -> list[tuple] | None:
        """The current labels of a stored image as ``(class, x1, y1, x2, y2)``; None when unlabeled."""
        if conn.execute("SELECT 1 FROM annotations WHERE image_id = ? AND is_current = 1", (image_id,)).fetchone() is None:
            return None
        return conn.execute(
            "SELECT c.name, l.x1, l.y1, l.x2, l.y2 FROM labels l JOIN annotations a ON a.id = l.annotation_id JOIN classes c ON c.id = l.class_id "
            "WHERE a.image_id = ? AND a.is_current = 1",
            (image_id,),
        ).fetchall()

    def _insert_annotation(self, conn: sqlite3.Connection, class_ids: dict[str, int], image_id: int, boxes: Sequence[Any], *, origin: str, where: str, **provenance: Any) -> int:
        """Insert one annotation (made current) and its boxes; returns the number of boxes."""
        unknown = sorted({b.class_name for b in boxes if b.class_name not in class_ids})
        if unknown:
            raise StoreError(f"Labels {unknown} of '{where}' are not in the project's classes {sorted(class_ids)}; add them to the classes or fix the labels, then try again.")
        conn.execute("UPDATE annotations SET is_current = 0 WHERE image_id = ? AND is_current = 1", (image_id,))
        columns = ["image_id", "origin", "is_current", *provenance]
        cursor = conn.execute(
            f"INSERT INTO annotations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            (image_id, origin, 1, *provenance.values()),
        )
        annotation_id = int(cursor.lastrowid)
        conn.executemany(
            "INSERT INTO labels (annotation_id, image_id, class_id, x1, y1, x2, y2, difficult, region_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (annotation_id, image_id, class_ids[b.class_name], float(b.x1), float(b.y1), float(b.x2), float(b.y2), int(bool(getattr(b, "difficult", False))), getattr(b, "region_id", None))
                for b in boxes
            ],
        )
        return len(boxes)

    def images(self, split: str | None = None) -> pd.DataFrame:
        """One row per image: id, path, width, height, size_bytes, sha256, split, source,
        source_id, added_at, num_labels (boxes of its current annotation, NaN if unlabeled)."""
        where = "WHERE i.split = ?" if split else ""
        return self._frame(
            f"""SELECT i.id AS image_id, i.path, i.width, i.height, i.size_bytes, i.sha256, i.split, i.source, i.source_id, i.added_at,
                       CASE WHEN a.id IS NULL THEN NULL ELSE (SELECT COUNT(*) FROM labels l WHERE l.annotation_id = a.id) END AS num_labels
                FROM images i LEFT JOIN annotations a ON a.image_id = i.id AND a.is_current = 1
                {where} ORDER BY i.id""",
            (split,) if split else (),
        )

    def image(self, image_id: int) -> dict[str, Any]:
        rows = self._frame("SELECT id AS image_id, path, width, height, size_bytes, sha256, split, source, source_id, added_at FROM images WHERE id = ?", (int(image_id),))
        if rows.empty:
            raise StoreError(f"Image {image_id} is not in the store.")
        return rows.iloc[0].to_dict()

    def image_ids(self, split: str | None = None) -> list[int]:
        if split is None:
            return [r[0] for r in self._query("SELECT id FROM images ORDER BY id")]
        return [r[0] for r in self._query("SELECT id FROM images WHERE split = ? ORDER BY id", (split,))]

    def labeled_image_ids(self) -> list[int]:
        """The training set: images in the ``labeled`` split."""
        return self.image_ids("labeled")

    def counts(self) -> dict[str, int]:
        """Images per split, classes, labels, model versions, batches and open tasks."""
        with self.snapshot() as conn:
            out = {s: 0 for s in SPLITS}
            out.update({split: n for split, n in conn.execute("SELECT split, COUNT(*) FROM images GROUP BY split")})
            out["images"] = sum(out[s] for s in SPLITS)
            out["classes"] = conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0]
            out["labels"] = conn.execute("SELECT COUNT(*) FROM labels l JOIN annotations a ON a.id = l.annotation_id WHERE a.is_current = 1").fetchone()[0]
            out["model_versions"] = conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
            out["batches"] = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
            out["open_tasks"] = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'open'").fetchone()[0]
        return out

    # ------------------------------------------------------------------ labels

    def add_labels(self, image_id: int, boxes: Sequence[Any], *, origin: str = "import", source: str | None = None, annotator: str | None = None, split: str | None = "labeled") -> int:
        """Give an image a new current annotation with ``boxes`` (records with ``class_name``,
        ``x1..y2`` in pixels); the previous one stays in the history. Moves the image to
        ``split`` (default ``labeled``; None keeps it). Returns the annotation id."""
        image = self.image(image_id)
        self._check_boxes(boxes, image)
        with self.transaction() as conn:
            self._insert_annotation(conn, self._class_ids(conn), int(image_id), boxes, origin=origin, where=image["path"], source=source, annotator=annotator, imported_at=now())
            if split is not None:
                conn.execute("UPDATE images SET split = ? WHERE id = ?", (split, int(image_id)))
            return int(conn.execute("SELECT id FROM annotations WHERE image_id = ? AND is_current = 1", (int(image_id),)).fetchone()[0])

    @staticmethod
    def _check_boxes(boxes: Sequence[Any], image: dict[str, Any]) -> None:
        for b in boxes:
            if not (0 <= b.x1 < b.x2 <= image["width"] and 0 <= b.y1 < b.y2 <= image["height"]):
                raise StoreError(
                    f"Box ({b.x1}, {b.y1}, {b.x2}, {b.y2}) of '{image['path']}' is empty or outside the "
                    f"{image['width']}x{image['height']} image; fix the box, then try again."
                )

    def labels(self, image_ids: Iterable[int] | None = None, split: str | None = None) -> pd.DataFrame:
        """The current labels: one row per box with class and provenance (annotation id,
        origin, source, Label Studio project/task/annotation ids, annotator, times)."""
        where, params = [], []
        if image_ids is not None:
            ids = [int(i) for i in image_ids]
            where.append(f"l.image_id IN ({', '.join('?' * len(ids))})" if ids else "0")
            params += ids
        if split is not None:
            where.append("i.split = ?")
            params.append(split)
        clause = ("AND " + " AND ".join(where)) if where else ""
        return self._frame(
            f"""SELECT l.image_id, l.id AS label_id, c.name AS class_name, l.class_id, l.x1, l.y1, l.x2, l.y2, l.difficult,
                       l.annotation_id, a.origin, a.source, p.url AS ls_url, p.project_id AS ls_project_id, a.ls_task_id, a.ls_annotation_id,
                       a.annotator, a.created_at, a.updated_at, a.imported_at
                FROM labels l JOIN annotations a ON a.id = l.annotation_id JOIN classes c ON c.id = l.class_id
                JOIN images i ON i.id = l.image_id LEFT JOIN ls_projects p ON p.id = a.ls_project
                WHERE a.is_current = 1 {clause} ORDER BY l.image_id, l.id""",
            params,
        )

    def annotations(self, image_id: int | None = None) -> pd.DataFrame:
        """Every annotation (current and earlier ones) with its provenance and box count."""
        where = "WHERE a.image_id = ?" if image_id is not None else ""
        return self._frame(
            f"""SELECT a.id AS annotation_id, a.image_id, a.origin, a.source, a.ls_project, p.url AS ls_url, p.project_id AS ls_project_id,
                       a.ls_task_id, a.ls_annotation_id, a.annotator, a.created_at, a.updated_at, a.lead_time, a.imported_at, a.is_current,
                       a.deleted_on_server_at,
                       (SELECT COUNT(*) FROM labels l WHERE l.annotation_id = a.id) AS num_labels
                FROM annotations a LEFT JOIN ls_projects p ON p.id = a.ls_project {where} ORDER BY a.id""",
            (int(image_id),) if image_id is not None else (),
        )

    def export_coco(self, split: str = "labeled", path: str | os.PathLike[str] | None = None, image_ids: Iterable[int] | None = None) -> Path:
        """Write the images of ``split`` (or exactly ``image_ids``) with their current labels as
        a COCO detection file that :class:`almdn.data.coco.CocoDetectionDataset` reads.

        Image ids are the store's; file names are absolute paths (so any image root works);
        category ``k`` is class ``k``. Default path: ``<project>/exports/<split>.json``.
        """
        from almdn.data.coco import write_coco

        with self.snapshot() as conn:
            if image_ids is None:
                rows = conn.execute("SELECT id, path, width, height FROM images WHERE split = ? ORDER BY id", (split,)).fetchall()
            else:
                wanted = {int(i) for i in image_ids}
                rows = [r for r in conn.execute("SELECT id, path, width, height FROM images ORDER BY id") if r[0] in wanted]
            ids = {r[0] for r in rows}
            labels = [
                r for r in conn.execute(
                    """SELECT l.id, l.image_id, l.class_id, l.x1, l.y1, l.x2, l.y2, l.difficult FROM labels l
                       JOIN annotations a ON a.id = l.annotation_id WHERE a.is_current = 1 ORDER BY l.image_id, l.id"""
                ) if r[1] in ids
            ]
            classes = conn.execute("SELECT id, name FROM classes ORDER BY id").fetchall()
        images = [{"id": i, "file_name": p, "width": w, "height": h} for i, p, w, h in rows]
        annotations = [
            {"id": lid, "image_id": iid, "category_id": cid, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "difficult": d}
            for lid, iid, cid, x1, y1, x2, y2, d in labels
        ]
        categories = [{"id": cid, "name": name} for cid, name in classes]
        out = Path(path) if path is not None else self.path.parent / "exports" / f"{split if image_ids is None else 'selection'}.json"
        if not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # exports hold the labels: private to the user
        written = write_coco(out, images, annotations, categories, info={"description": f"almdn project {self.name}", "split": split})
        with contextlib.suppress(OSError):
            os.chmod(written, 0o600)
        return written
