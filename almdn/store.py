"""The project store: a project's whole state in one SQLite database, the single source of truth.

It holds:

- **classes**: the class list; class id ``k`` (1..C) is the detector's label ``k``.
- **images**: path, pixel size, file size, SHA-256 content hash and split (``pool``: unlabeled
  candidates; ``labeled``: the training set; ``test``: held-out evaluation images).
- **annotations** and their **labels** (pixel boxes): every labeling of an image with its
  provenance, an initial import (which dataset file) or a Label Studio annotation (server,
  project, task and annotation ids, annotator, times). History is kept: an image's current
  labels are those of its one ``is_current`` annotation.
- **rounds** of active learning and **model versions** (checkpoint, metrics, the exact labeled
  set each was trained on).
- **scores** per image and model version (the four raw uncertainties of Sec. 3.3, their
  z-scores, the final score) and the **detections** they came from, each with its own four
  uncertainties.
- **batches** sent to Label Studio and the **tasks** that hold their images, with status.

Writes are transactions (all or nothing, so a crash in the middle of an import leaves the
store as it was); the database runs in WAL mode so readers (the app) never block on, nor see
half of, a writer's work. The schema carries a version (``PRAGMA user_version``); opening an
older store migrates it in one transaction.

A :class:`Store` may be shared by threads (its operations are serialized); for parallel work
open one per process or thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from almdn.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from almdn.data.records import ImageRecord

#: The four uncertainties of Sec. 3.3, in the order of :data:`almdn.models.UNCERTAINTY_NAMES`
#: (repeated here so that opening a store does not import torch; a test keeps them equal).
UNCERTAINTY_NAMES = ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic")
Z_NAMES = tuple(f"z_{name}" for name in UNCERTAINTY_NAMES)
SPLITS = ("pool", "labeled", "test")
TASK_STATUSES = ("open", "annotated", "skipped", "deleted")
STORE_FILE = "almdn.sqlite"

_UNC_COLS = ", ".join(f"{n} REAL" for n in UNCERTAINTY_NAMES)
_Z_COLS = ", ".join(f"{n} REAL" for n in Z_NAMES)

#: Schema migrations: ``MIGRATIONS[v]`` takes a store from version ``v`` to ``v + 1``.
MIGRATIONS: list[str] = [
    # 0 -> 1: the data: classes, images, annotations and their labels.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        width INTEGER NOT NULL CHECK (width > 0),
        height INTEGER NOT NULL CHECK (height > 0),
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        split TEXT NOT NULL CHECK (split IN ('pool', 'labeled', 'test')),
        source TEXT,
        source_id TEXT,
        added_at TEXT NOT NULL
    );
    CREATE INDEX images_split ON images (split);
    CREATE INDEX images_sha256 ON images (sha256);
    CREATE TABLE annotations (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images (id),
        origin TEXT NOT NULL CHECK (origin IN ('import', 'label_studio')),
        source TEXT,
        ls_project INTEGER,
        ls_task_id INTEGER,
        ls_annotation_id INTEGER,
        annotator TEXT,
        created_at TEXT,
        updated_at TEXT,
        lead_time REAL,
        imported_at TEXT NOT NULL,
        is_current INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX annotations_image ON annotations (image_id);
    CREATE UNIQUE INDEX annotations_one_current ON annotations (image_id) WHERE is_current = 1;
    CREATE UNIQUE INDEX annotations_ls_version ON annotations (ls_project, ls_annotation_id, updated_at)
        WHERE origin = 'label_studio';
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        annotation_id INTEGER NOT NULL REFERENCES annotations (id),
        image_id INTEGER NOT NULL REFERENCES images (id),
        class_id INTEGER NOT NULL REFERENCES classes (id),
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        difficult INTEGER NOT NULL DEFAULT 0,
        region_id TEXT,
        CHECK (x2 > x1 AND y2 > y1)
    );
    CREATE INDEX labels_annotation ON labels (annotation_id);
    CREATE INDEX labels_image ON labels (image_id);
    """,
    # 1 -> 2: rounds, model versions and their scores.
    f"""
    CREATE TABLE rounds (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
    CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        checkpoint TEXT NOT NULL,
        metrics TEXT NOT NULL DEFAULT '{{}}',
        round_id INTEGER REFERENCES rounds (id),
        num_labeled INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE model_version_images (
        model_version_id INTEGER NOT NULL REFERENCES model_versions (id),
        image_id INTEGER NOT NULL REFERENCES images (id),
        PRIMARY KEY (model_version_id, image_id)
    ) WITHOUT ROWID;
    CREATE TABLE scorings (
        model_version_id INTEGER PRIMARY KEY REFERENCES model_versions (id),
        aggregation TEXT NOT NULL,
        conf_threshold REAL,
        num_images INTEGER NOT NULL,
        num_detections INTEGER NOT NULL,
        scored_at TEXT NOT NULL
    );
    CREATE TABLE image_scores (
        model_version_id INTEGER NOT NULL REFERENCES model_versions (id),
        image_id INTEGER NOT NULL REFERENCES images (id),
        num_detections INTEGER NOT NULL,
        {_UNC_COLS}, {_Z_COLS},
        score REAL,
        PRIMARY KEY (model_version_id, image_id)
    ) WITHOUT ROWID;
    CREATE TABLE detections (
        model_version_id INTEGER NOT NULL REFERENCES model_versions (id),
        image_id INTEGER NOT NULL REFERENCES images (id),
        detection INTEGER NOT NULL,
        class_id INTEGER NOT NULL REFERENCES classes (id),
        score REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        {_UNC_COLS},
        cls_entropy REAL,
        PRIMARY KEY (model_version_id, image_id, detection)
    ) WITHOUT ROWID;
    """,
    # 2 -> 3: Label Studio projects, the batches pushed to them and their tasks.
    """
    CREATE TABLE ls_projects (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL,
        project_id INTEGER NOT NULL,
        title TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (url, project_id)
    );
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        ls_project INTEGER NOT NULL REFERENCES ls_projects (id),
        round_id INTEGER REFERENCES rounds (id),
        model_version_id INTEGER REFERENCES model_versions (id),
        top_k INTEGER,
        status TEXT NOT NULL CHECK (status IN ('sent', 'partial', 'done')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        ls_project INTEGER NOT NULL REFERENCES ls_projects (id),
        task_id INTEGER NOT NULL,
        image_id INTEGER NOT NULL REFERENCES images (id),
        batch_id INTEGER REFERENCES batches (id),
        status TEXT NOT NULL CHECK (status IN ('open', 'annotated', 'skipped', 'deleted')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    -- Label Studio reuses the id of a deleted task: only live tasks have unique ids.
    CREATE UNIQUE INDEX tasks_live ON tasks (ls_project, task_id) WHERE status != 'deleted';
    CREATE INDEX tasks_image ON tasks (image_id);
    CREATE INDEX tasks_batch ON tasks (batch_id);
    """,
    # 3 -> 4: an annotation deleted in Label Studio after it was pulled is marked, never silently kept.
    """
    ALTER TABLE annotations ADD COLUMN deleted_on_server_at TEXT;
    """,
    # 4 -> 5 (issue 19): why each pushed image was chosen, and the image embeddings a model
    # version's scoring kept (one np.savez archive per version: image ids, float32 vectors).
    """
    ALTER TABLE tasks ADD COLUMN selected_why TEXT;
    CREATE TABLE embeddings (
        model_version_id INTEGER PRIMARY KEY REFERENCES model_versions (id),
        num_images INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(UserError, RuntimeError):
    """The store cannot do what was asked; the message says what to do instead."""


#: Longest class name accepted (a class name is shown on every box, table and task).
MAX_CLASS_NAME = 200


def now() -> str:
    """UTC time stamp, ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(hex digest, size in bytes)`` of a file's content."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _finite(value: Any) -> float | None:
    """A float for SQLite, NaN as NULL."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


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


class Store:
    """A project's store; use :meth:`open` (or :meth:`create`)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], create: bool = True, name: str | None = None) -> Store:
        """Open the store at ``path`` (a database file, or a project folder holding
        ``almdn.sqlite``), creating it when ``create``; migrates an older schema.

        A store that is read-only or fails SQLite's ``quick_check`` is refused here with one
        sentence naming the file, before anything reads or writes it.
        """
        path = Path(path)
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / STORE_FILE
        if not path.exists() and not create:
            raise StoreError(f"No project store at '{path}'; create the project first (almdn project create).")
        try:
            if not path.parent.exists():
                # private to the user whatever the umask: the store holds annotators' e-mails
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                path.parent.chmod(0o700)
            if not path.exists():
                # 0600 before SQLite opens it; its -wal and -shm files take the same mode
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600))
        except FileExistsError:
            pass  # another process created it first
        except OSError as exc:
            raise StoreError(f"Cannot create the project folder '{path.parent}' ({exc.strerror}); choose a folder you can write to.") from None
        if path.exists():
            reason = _read_only_reason(path)
            if reason:
                raise StoreError(f"The project store '{path}' is read-only ({reason}); make it writable ({_WRITABLE_HINT}), then try again.")
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # Cheap for a project's size (milliseconds for thousands of images) and it finds a
            # damaged page before a command reads half a table or writes into it.
            check = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise _fault(path, exc) from None
        if check != ["ok"]:
            conn.close()
            problem = next((line.strip() for row in check for line in row.splitlines() if line.strip() and "***" not in line), "quick_check failed")
            raise StoreError(f"The project store '{path}' is damaged ({problem}); restore it from a backup or create the project again, then try again.")
        if mode.lower() != "wal":
            conn.close()
            raise StoreError(f"The project store '{path}' cannot use write-ahead logging (its file system refuses it); move the project to a local disk.")
        # FULL: a committed label survives a power cut too (WAL makes it cheap: one fsync per commit).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        store = cls(path, conn)
        try:
            store._migrate(name)
        except BaseException:
            conn.close()
            raise
        return store

    create = open

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store('{self.path}')"

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, name: str | None, target: int = SCHEMA_VERSION) -> None:
        with self.transaction() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"The project store '{self.path}' has schema version {version}, newer than this almdn "
                    f"understands ({SCHEMA_VERSION}); upgrade almdn to open it."
                )
            for v in range(version, target):
                for statement in _statements(MIGRATIONS[v]):
                    conn.execute(statement)
            if version == 0:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("project_uuid", uuid.uuid4().hex), ("name", name or self.path.parent.name), ("created_at", now())],
                )
            if target != version:
                conn.execute(f"PRAGMA user_version = {int(target)}")

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: everything inside commits together or not at all.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers queue instead of
        failing half-way; nested use joins the outer transaction. SQLite faults (a read-only or
        damaged file, a full disk) become one :class:`StoreError` naming the file.
        """
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            with self._faults():
                self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
                    raise _fault(self.path, exc) from None
                raise
            else:
                with self._faults():
                    self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            with self._faults():
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _faults(self) -> Iterator[None]:
        """SQLite faults as one sentence naming the store (constraint violations pass: they are bugs)."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise _fault(self.path, exc) from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock, self._faults():
            return self._conn.execute(sql, params).fetchall()

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd

        with self._lock, self._faults():
            cursor = self._conn.execute(sql, params)
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)

    # ------------------------------------------------------------------ project metadata

    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def project_uuid(self) -> str:
        return str(self.meta("project_uuid"))

    @property
    def name(self) -> str:
        return str(self.meta("name"))

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
        transaction, as :func:`almdn.project.add_source` does).

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

    def set_split(self, image_ids: Iterable[int], split: str) -> int:
        """Move images to ``split``; returns how many changed."""
        if split not in SPLITS:
            raise StoreError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        ids = [int(i) for i in image_ids]
        with self.transaction() as conn:
            missing = [i for i in ids if conn.execute("SELECT 1 FROM images WHERE id = ?", (i,)).fetchone() is None]
            if missing:
                raise StoreError(f"Images {missing[:10]} are not in the store; nothing was changed.")
            if split != "pool":
                unlabeled = [i for i in ids if conn.execute("SELECT 1 FROM annotations WHERE image_id = ? AND is_current = 1", (i,)).fetchone() is None]
                if unlabeled:
                    raise StoreError(f"Images {unlabeled[:10]} have no labels and cannot go to the '{split}' split; label them first. Nothing was changed.")
            before = conn.total_changes
            conn.executemany("UPDATE images SET split = ? WHERE id = ? AND split != ?", [(split, i, split) for i in ids])
            return conn.total_changes - before

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

    # ------------------------------------------------------------------ rounds and model versions

    def start_round(self, note: str = "") -> int:
        """Begin a new active-learning round; returns its id."""
        with self.transaction() as conn:
            return int(conn.execute("INSERT INTO rounds (started_at, note) VALUES (?, ?)", (now(), note)).lastrowid)

    def current_round(self) -> int | None:
        rows = self._query("SELECT MAX(id) FROM rounds")
        return rows[0][0]

    def rounds(self) -> pd.DataFrame:
        """Rounds with their model versions and batches counted."""
        return self._frame(
            """SELECT r.id AS round_id, r.started_at, r.note,
                      (SELECT COUNT(*) FROM model_versions m WHERE m.round_id = r.id) AS model_versions,
                      (SELECT COUNT(*) FROM batches b WHERE b.round_id = r.id) AS batches
               FROM rounds r ORDER BY r.id"""
        )

    def record_model_version(
        self,
        checkpoint: str | os.PathLike[str],
        metrics: dict[str, Any] | None = None,
        labeled_image_ids: Iterable[int] | None = None,
        name: str | None = None,
        round_id: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> int:
        """Record a trained model: its checkpoint, metrics and the labeled set it was trained
        on (default: the current ``labeled`` split). ``class_names`` (the model's) must equal
        the store's class list when given. Returns the model version id."""
        if class_names is not None and list(class_names) != self.classes():
            raise StoreError(
                f"The model's classes {list(class_names)} differ from the project's {self.classes()}; "
                "train it on the project's export (almdn project export) so labels match."
            )
        with self.transaction() as conn:
            ids = [int(i) for i in (labeled_image_ids if labeled_image_ids is not None else [r[0] for r in conn.execute("SELECT id FROM images WHERE split = 'labeled'")])]
            if round_id is None:
                round_id = conn.execute("SELECT MAX(id) FROM rounds").fetchone()[0]
            number = conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] + 1
            cursor = conn.execute(
                "INSERT INTO model_versions (name, checkpoint, metrics, round_id, num_labeled, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name or f"model-{number}", str(checkpoint), json.dumps(metrics or {}, default=float), round_id, len(ids), now()),
            )
            mv = int(cursor.lastrowid)
            conn.executemany("INSERT INTO model_version_images (model_version_id, image_id) VALUES (?, ?)", [(mv, i) for i in ids])
        return mv

    def model_versions(self) -> pd.DataFrame:
        """Model versions with checkpoint, metrics (dict), round, labeled-set size and scoring."""
        frame = self._frame(
            """SELECT m.id AS model_version_id, m.name, m.checkpoint, m.metrics, m.round_id, m.num_labeled, m.created_at,
                      s.aggregation, s.conf_threshold, s.num_images AS num_scored, s.scored_at
               FROM model_versions m LEFT JOIN scorings s ON s.model_version_id = m.id ORDER BY m.id"""
        )
        frame["metrics"] = [json.loads(m) for m in frame["metrics"]]
        return frame

    def model_version(self, model_version: int | str) -> dict[str, Any]:
        frame = self.model_versions()
        key = "name" if isinstance(model_version, str) else "model_version_id"
        hit = frame[frame[key] == model_version]
        if hit.empty:
            raise StoreError(f"Model version {model_version!r} is not in the store; see the list with almdn project info.")
        return hit.iloc[0].to_dict()

    def training_set(self, model_version: int) -> list[int]:
        """The labeled image ids a model version was trained on."""
        return [r[0] for r in self._query("SELECT image_id FROM model_version_images WHERE model_version_id = ? ORDER BY image_id", (int(model_version),))]

    def latest_model_version(self, scored: bool = False) -> int | None:
        """The newest model version (with scores if ``scored``), or None."""
        sql = "SELECT MAX(model_version_id) FROM scorings" if scored else "SELECT MAX(id) FROM model_versions"
        return self._query(sql)[0][0]

    # ------------------------------------------------------------------ scores

    def write_scores(self, model_version: int, images: pd.DataFrame, detections: pd.DataFrame, aggregation: str = "max_all", conf_threshold: float | None = None) -> None:
        """Store one scoring of the pool by ``model_version`` (replacing an earlier one).

        Args:
            images: :func:`almdn.acquisition.scoring.image_scores` output: ``image_id``,
                ``num_detections``, the four raw uncertainties, their ``z_`` values, ``score``
                (NaN for images without a kept detection).
            detections: :func:`almdn.acquisition.scoring.detections_frame` output:
                ``image_id``, ``detection``, ``label`` (1..C), ``score``, ``x1..y2`` (pixels),
                the four uncertainties and ``cls_entropy``.
        """
        mv = int(model_version)
        missing = [c for c in ("image_id", "num_detections", *UNCERTAINTY_NAMES, *Z_NAMES, "score") if c not in images.columns]
        if missing:
            raise StoreError(f"The image scores lack columns {missing}; pass the table image_scores() returns.")
        missing = [c for c in ("image_id", "detection", "label", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES) if c not in detections.columns]
        if missing:
            raise StoreError(f"The detections lack columns {missing}; pass the table detections_frame() returns.")
        image_rows = [
            (mv, int(r.image_id), int(r.num_detections), *(_finite(getattr(r, c)) for c in (*UNCERTAINTY_NAMES, *Z_NAMES, "score")))
            for r in images.itertuples(index=False)
        ]
        has_entropy = "cls_entropy" in detections.columns
        det_rows = [
            (mv, int(r.image_id), int(r.detection), int(r.label), float(r.score), float(r.x1), float(r.y1), float(r.x2), float(r.y2),
             *(_finite(getattr(r, c)) for c in UNCERTAINTY_NAMES), _finite(r.cls_entropy) if has_entropy else None)
            for r in detections.itertuples(index=False)
        ]
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE id = ?", (mv,)).fetchone() is None:
                raise StoreError(f"Model version {mv} is not in the store; record it first (record_model_version).")
            n_classes = conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0]
            bad = sorted({row[3] for row in det_rows if not 1 <= row[3] <= n_classes})
            if bad:
                raise StoreError(f"Detections have labels {bad[:5]} outside the project's {n_classes} classes; score with a model trained on this project.")
            for table in ("image_scores", "detections", "scorings", "embeddings"):  # a rescore's embeddings follow (write_embeddings)
                conn.execute(f"DELETE FROM {table} WHERE model_version_id = ?", (mv,))
            cols = ", ".join(("model_version_id", "image_id", "num_detections", *UNCERTAINTY_NAMES, *Z_NAMES, "score"))
            conn.executemany(f"INSERT INTO image_scores ({cols}) VALUES ({', '.join('?' * (4 + 2 * len(UNCERTAINTY_NAMES)))})", image_rows)
            cols = ", ".join(("model_version_id", "image_id", "detection", "class_id", "score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy"))
            conn.executemany(f"INSERT INTO detections ({cols}) VALUES ({', '.join('?' * (10 + len(UNCERTAINTY_NAMES)))})", det_rows)
            conn.execute(
                "INSERT INTO scorings (model_version_id, aggregation, conf_threshold, num_images, num_detections, scored_at) VALUES (?, ?, ?, ?, ?, ?)",
                (mv, aggregation, conf_threshold, len(image_rows), len(det_rows), now()),
            )

    def write_embeddings(self, model_version: int, image_ids: Sequence[int], embeddings: Any) -> None:
        """Keep the image embeddings a scoring of ``model_version`` computed (pool and labeled
        images, one row each, ``(N, D)``, stored float32), replacing earlier ones."""
        import io

        import numpy as np

        ids = np.asarray([int(i) for i in image_ids], dtype=np.int64)
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(len(ids), -1)
        buffer = io.BytesIO()
        np.savez(buffer, image_ids=ids, embeddings=vectors)
        with self.transaction() as conn:
            conn.execute("DELETE FROM embeddings WHERE model_version_id = ?", (int(model_version),))
            conn.execute("INSERT INTO embeddings (model_version_id, num_images, dim, data) VALUES (?, ?, ?, ?)",
                         (int(model_version), len(ids), int(vectors.shape[1]), buffer.getvalue()))

    def embeddings(self, model_version: int) -> tuple[Any, Any] | None:
        """``(image_ids (N,), embeddings (N, D) float32)`` kept by the scoring of
        ``model_version``, or None (scored before embeddings were kept, or by a model without them)."""
        import io

        import numpy as np

        rows = self._query("SELECT data FROM embeddings WHERE model_version_id = ?", (int(model_version),))
        if not rows:
            return None
        with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as archive:
            return archive["image_ids"], archive["embeddings"]

    def _scored_version(self, model_version: int | None) -> int:
        mv = self.latest_model_version(scored=True) if model_version is None else int(model_version)
        if mv is None:
            raise StoreError("No model version has scored the pool yet; score it first (almdn project score --checkpoint MODEL).")
        if not self._query("SELECT 1 FROM scorings WHERE model_version_id = ?", (mv,)):
            raise StoreError(f"Model version {mv} has not scored the pool; score it first (almdn project score).")
        return mv

    def image_scores(self, model_version: int | None = None) -> pd.DataFrame:
        """The scores of every image scored by ``model_version`` (default: the latest scored)."""
        mv = self._scored_version(model_version)
        cols = ", ".join(f"s.{c}" for c in ("num_detections", *UNCERTAINTY_NAMES, *Z_NAMES, "score"))
        return self._frame(f"SELECT s.image_id, {cols} FROM image_scores s WHERE s.model_version_id = ? ORDER BY s.image_id", (mv,))

    def detections(self, model_version: int | None = None, image_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Kept detections of ``model_version`` with class names and their four uncertainties."""
        mv = self._scored_version(model_version)
        where, params = "", [mv]
        if image_ids is not None:
            ids = [int(i) for i in image_ids]
            where = f"AND d.image_id IN ({', '.join('?' * len(ids))})" if ids else "AND 0"
            params += ids
        cols = ", ".join(f"d.{c}" for c in (*UNCERTAINTY_NAMES, "cls_entropy"))
        return self._frame(
            f"""SELECT d.image_id, d.detection, d.class_id AS label, c.name AS class_name, d.score, d.x1, d.y1, d.x2, d.y2, {cols}
                FROM detections d JOIN classes c ON c.id = d.class_id WHERE d.model_version_id = ? {where}
                ORDER BY d.image_id, d.detection""",
            params,
        )

    def pool_ranking(self, model_version: int | None = None) -> pd.DataFrame:
        """Pool images by informativeness under ``model_version`` (default: latest scored).

        One row per pool image: ``rank`` (1 = most informative), image_id, path, score, the
        raw and z-scored uncertainties, num_detections, ``task_status`` (the status of its
        newest Label Studio task, None if never sent) and ``task_why`` (why that task's image
        was chosen, None if not recorded). Images without a kept detection (NaN
        score) come after every scored image; ties keep image-id order. Unscored pool images
        (added after the scoring) are listed last with NaN score.
        """
        mv = self._scored_version(model_version)
        cols = ", ".join(f"s.{c}" for c in (*UNCERTAINTY_NAMES, *Z_NAMES))
        frame = self._frame(
            f"""SELECT i.id AS image_id, i.path, s.score, s.num_detections, {cols},
                       (SELECT t.status FROM tasks t WHERE t.image_id = i.id ORDER BY t.id DESC LIMIT 1) AS task_status,
                       (SELECT t.selected_why FROM tasks t WHERE t.image_id = i.id ORDER BY t.id DESC LIMIT 1) AS task_why
                FROM images i LEFT JOIN image_scores s ON s.image_id = i.id AND s.model_version_id = ?
                WHERE i.split = 'pool'
                ORDER BY s.score IS NULL, s.score DESC, i.id""",
            (mv,),
        )
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame

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
                       t.selected_why
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
                       b.status, b.created_at, b.updated_at, COUNT(t.id) AS tasks, {counts}
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

        Idempotent: a task already live or an annotation version already stored (another
        pull committed it first) inserts nothing and counts as a duplicate.

        Returns ``{"new", "updated", "duplicates", "labeled_images", "skipped_tasks",
        "deleted_tasks", "deleted_annotations"}`` (task lists hold task ids; the last, the
        annotations newly marked).
        """
        stamp = now()
        out: dict[str, Any] = {"new": 0, "updated": 0, "duplicates": 0, "labeled_images": [], "skipped_tasks": [], "deleted_tasks": [], "deleted_annotations": []}
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
                self._insert_annotation(
                    conn, class_ids, int(a["image_id"]), a["boxes"], origin="label_studio", where=f"task {a['task_id']}",
                    source=source, ls_project=int(ls_project), ls_task_id=int(a["task_id"]), ls_annotation_id=int(a["annotation_id"]),
                    annotator=a.get("annotator"), created_at=a.get("created_at"), updated_at=a.get("updated_at"), lead_time=a.get("lead_time"), imported_at=stamp,
                )
                conn.execute("UPDATE images SET split = 'labeled' WHERE id = ? AND split = 'pool'", (int(a["image_id"]),))
                labeled.add(int(a["image_id"]))
                out["updated" if earlier else "new"] += 1
            for annotation_id in dict.fromkeys(int(a) for a in deleted_annotations):
                changed = conn.execute(
                    "UPDATE annotations SET deleted_on_server_at = ? WHERE origin = 'label_studio' AND ls_project = ? AND ls_annotation_id = ? AND deleted_on_server_at IS NULL",
                    (stamp, int(ls_project), annotation_id),
                ).rowcount
                if changed:
                    out["deleted_annotations"].append(annotation_id)
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
        return out

    def check_integrity(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks and the store's own rules
        (empty when consistent)."""
        problems = []
        with self.snapshot() as conn:
            result = conn.execute("PRAGMA integrity_check").fetchall()
            if result != [("ok",)]:
                problems += [r[0] for r in result]
            problems += [f"foreign key: {r}" for r in conn.execute("PRAGMA foreign_key_check").fetchall()]
            orphans = conn.execute("SELECT COUNT(*) FROM labels l LEFT JOIN annotations a ON a.id = l.annotation_id WHERE a.id IS NULL OR a.image_id != l.image_id").fetchone()[0]
            if orphans:
                problems.append(f"{orphans} labels without a matching annotation")
            unlabeled = conn.execute(
                "SELECT COUNT(*) FROM images i WHERE i.split != 'pool' AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id AND a.is_current = 1)"
            ).fetchone()[0]
            if unlabeled:
                problems.append(f"{unlabeled} images in the labeled or test split have no current annotation")
        return problems


_WRITABLE_HINT = "chmod u+w on the file and its folder, chattr -i if it is immutable"


def _read_only_reason(path: Path) -> str | None:
    """Why ``path`` (an existing store) cannot be written, or None. Checked up front because
    SQLite opens such a file read-only without a word and fails only at the first write.
    The mode bits count even for root: a store someone made read-only stays read-only."""
    import fcntl
    import struct

    try:
        st = path.stat()
        with open(path, "rb") as f:
            try:  # FS_IOC_GETFLAGS; FS_IMMUTABLE_FL = 0x10 (ext4, xfs, btrfs)
                flags = struct.unpack("l", fcntl.ioctl(f.fileno(), 0x80086601, struct.pack("l", 0)))[0]
            except OSError:
                flags = 0
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if flags & 0x10:
        return "the file is immutable"
    if not st.st_mode & 0o200 or not os.access(path, os.W_OK):
        return f"mode {st.st_mode & 0o777:o}"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"its folder '{path.parent}' is not writable"
    return None


def _fault(path: Path, exc: BaseException) -> StoreError:
    """One sentence for a SQLite fault of the store at ``path``."""
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return StoreError(f"The project store '{path}' is read-only ({text}); make it writable ({_WRITABLE_HINT}), then try again.")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return StoreError(f"The project store '{path}' is damaged ({text}); restore it from a backup or create the project again, then try again.")
    if "locked" in low or "busy" in low:
        return StoreError(f"The project store '{path}' stayed locked by another program ({text}); wait for it to finish, then try again.")
    if "full" in low or "disk i/o" in low or "unable to open" in low:
        return StoreError(f"The project store '{path}' cannot be read or written ({text}); check the disk (free space, permissions), then try again.")
    return StoreError(f"The project store '{path}' failed ({text}); check the file, or restore it from a backup, then try again.")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit on its own)."""
    out, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            out.append("\n".join(current).strip())
            current = []
    if "".join(current).strip():
        raise ValueError("incomplete statement in a migration")
    return out
