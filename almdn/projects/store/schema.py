"""The store's schema and its migrations, the store's error, and the helpers every part uses.

The schema carries a version (``PRAGMA user_version``); ``MIGRATIONS[v]`` takes a store from
version ``v`` to ``v + 1``, and opening an older store runs the missing ones in one transaction.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from almdn.errors import UserError
from almdn.registry import UNCERTAINTY_NAMES

#: The four uncertainties' z-scores, as the image scores store them.
Z_NAMES = tuple(f"z_{name}" for name in UNCERTAINTY_NAMES)
SPLITS = ("pool", "labeled", "test")
TASK_STATUSES = ("open", "annotated", "skipped", "deleted")
TASK_PURPOSES = ("label", "review")
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
    # 5 -> 6 (issue 22): review tasks (labeled images sent back with their current labels as
    # editable annotations), which labels each was sent with, the Label Studio version that
    # equals the store's labels (a pull that finds only it has nothing to write), its outcome;
    # annotations that came from a review; the latest label-error queue.
    """
    ALTER TABLE tasks ADD COLUMN purpose TEXT NOT NULL DEFAULT 'label' CHECK (purpose IN ('label', 'review'));
    ALTER TABLE tasks ADD COLUMN review_annotation_id INTEGER REFERENCES annotations (id);
    ALTER TABLE tasks ADD COLUMN review_baseline TEXT;
    ALTER TABLE tasks ADD COLUMN review_outcome TEXT CHECK (review_outcome IN ('unchanged', 'corrected'));
    ALTER TABLE annotations ADD COLUMN via_review INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE review_queues (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        model_version_id INTEGER REFERENCES model_versions (id),
        folds INTEGER NOT NULL,
        scoring TEXT NOT NULL,
        conf_threshold REAL,
        num_labeled INTEGER NOT NULL,
        items BLOB NOT NULL,
        detections BLOB
    );
    """,
    # 6 -> 7 (issue 19): per scored image, the mean class entropy of its detections above the
    # low threshold, each weighted by its score (the entropy_weighted acquisition; NULL for an
    # image without such a detection), and that threshold (NULL: a scoring made before).
    """
    ALTER TABLE image_scores ADD COLUMN entropy_weighted REAL;
    ALTER TABLE scorings ADD COLUMN low_threshold REAL;
    """,
    # 7 -> 8 (issue 19): per scored image and class, the summed confidence of its detections
    # above the low threshold (the class mass entropy_weighted+balance balances by: the faint
    # detections its score reads; a class without such a detection has no row), and whether a
    # scoring kept it (0: made before).
    """
    CREATE TABLE class_mass (
        model_version_id INTEGER NOT NULL REFERENCES model_versions (id),
        image_id INTEGER NOT NULL REFERENCES images (id),
        class_id INTEGER NOT NULL REFERENCES classes (id),
        mass REAL NOT NULL CHECK (mass > 0),
        PRIMARY KEY (model_version_id, image_id, class_id)
    );
    ALTER TABLE scorings ADD COLUMN class_mass_kept INTEGER NOT NULL DEFAULT 0;
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
