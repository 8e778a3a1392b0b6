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
- **batches** sent to Label Studio and the **tasks** that hold their images, with status and
  purpose (``label`` a pool image, ``review`` a labeled image's labels), and the latest
  **label-error queue** (:mod:`almdn.projects.store.review`).

Writes are transactions (all or nothing, so a crash in the middle of an import leaves the
store as it was); the database runs in WAL mode so readers (the app) never block on, nor see
half of, a writer's work. The schema carries a version (``PRAGMA user_version``); opening an
older store migrates it in one transaction.

A :class:`Store` may be shared by threads (its operations are serialized); for parallel work
open one per process or thread.
"""

from __future__ import annotations

from almdn.registry import UNCERTAINTY_NAMES
from almdn.projects.store.core import StoreCore
from almdn.projects.store.images import ImagesMixin, PreparedImages
from almdn.projects.store.schema import (
    MAX_CLASS_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    SPLITS,
    STORE_FILE,
    TASK_STATUSES,
    Z_NAMES,
    StoreError,
    _statements,  # the package's own helper, named here as before the split (the migration tests read it)
    file_sha256,
    now,
)
from almdn.projects.store.review import ReviewMixin, labels_changed, same_labels
from almdn.projects.store.tasks import TasksMixin
from almdn.projects.store.versions import VersionsMixin

__all__ = [
    "MAX_CLASS_NAME", "MIGRATIONS", "SCHEMA_VERSION", "SPLITS", "STORE_FILE", "TASK_STATUSES", "UNCERTAINTY_NAMES", "Z_NAMES",
    "PreparedImages", "Store", "StoreError", "file_sha256", "labels_changed", "now", "same_labels",
]


class Store(ImagesMixin, VersionsMixin, TasksMixin, ReviewMixin, StoreCore):
    """A project's store; use :meth:`open` (or :meth:`create`).

    One class over one connection, written in parts by what they keep: the connection, its
    transactions and metadata (:mod:`almdn.projects.store.core`), images and labels
    (:mod:`almdn.projects.store.images`), model versions and scores (:mod:`almdn.projects.store.versions`) and
    Label Studio tasks (:mod:`almdn.projects.store.tasks`), label review (:mod:`almdn.projects.store.review`); the schema is :mod:`almdn.projects.store.schema`.
    """
