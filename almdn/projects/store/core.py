"""The store's connection: opening and migrating a store, transactions and snapshots, queries,
project metadata, and the integrity check."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from almdn.projects.store.schema import (  # the package's own helpers (the store's parts share them)
    _WRITABLE_HINT, MIGRATIONS, SCHEMA_VERSION, STORE_FILE, StoreError, _fault, _read_only_reason, _statements, now,
)

if TYPE_CHECKING:
    import pandas as pd


_S = TypeVar("_S", bound="StoreCore")


class StoreCore:
    """The connection: opening (and migrating), transactions, queries, project metadata and the
    integrity check. :class:`almdn.projects.store.Store` adds what the store keeps."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls: type[_S], path: str | os.PathLike[str], create: bool = True, name: str | None = None) -> _S:
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

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store('{self.path}')"

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
