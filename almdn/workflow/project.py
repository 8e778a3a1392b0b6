"""Use cases: create a project, add images (and labels) to it, export a split.

A project folder holds ``almdn.sqlite`` (the :class:`~almdn.store.Store`), ``exports/`` (COCO
files written for training), ``models/`` and ``label-studio/``. Reading the sources
(COCO, VOC, YOLO, a folder of images) is :mod:`almdn.project`'s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from almdn.errors import UserError
from almdn.project import ImportSummary, add_source
from almdn.rounds import RoundSettings
from almdn.store import STORE_FILE, Store

#: A source: ``(kind, path, split or None)`` or ``(kind, path, split, VOC image set)``.
Source = tuple


def create_project(
    project_dir: str | os.PathLike[str],
    sources: Sequence[Source] = (),
    classes: list[str] | None = None,
    name: str | None = None,
    on_summary: Callable[[ImportSummary], None] | None = None,
    init: str | None = None,
) -> tuple[Store, list[ImportSummary]]:
    """Create a new project at ``project_dir`` from ``sources``; ``classes`` fixes the class
    list and its order first; ``init`` is where its models start (coco, imagenet, none or the
    path of a torchvision state dict: :attr:`almdn.rounds.RoundSettings.init`). Returns the
    open store and what each source added.

    A folder that already holds a project is refused (add sources to it instead). If the
    creation fails (a broken source, Ctrl-C), nothing it made is left behind: the store, and
    the folder when it created it, are deleted again, so the same command can simply be run
    again. ``on_summary(summary)`` is called as each source is added.
    """
    project_dir = Path(project_dir)
    if (project_dir / STORE_FILE).exists():
        raise UserError(f"'{project_dir}' already holds a project; add sources with 'almdn project add'.")
    new_folder = not project_dir.exists()
    store = Store.open(project_dir, name=name or project_dir.resolve().name)
    try:
        if init is not None:
            RoundSettings.load(store).replace(init=str(init)).save(store)  # checked before any source is read
        if classes:
            store.add_classes(classes)
        summaries = add_sources(store, sources, on_summary)
    except BaseException:
        store.close()
        remove_project(project_dir, remove_folder=new_folder)
        raise
    return store, summaries


def add_sources(store: Store, sources: Sequence[Source], on_summary: Callable[[ImportSummary], None] | None = None) -> list[ImportSummary]:
    """Add each source to the project (each in its own transaction: all or nothing per source);
    files already in the project are left as they are."""
    summaries = []
    for kind, path, split, *image_set in sources:
        for summary in add_source(store, kind, path, split, *image_set):
            summaries.append(summary)
            if on_summary is not None:
                on_summary(summary)
    return summaries


def export_split(store: Store, split: str, out: str | os.PathLike[str] | None = None) -> Path:
    """Write a split with its current labels as COCO json (default:
    ``<project>/exports/<split>.json``; ``almdn train --data`` reads it)."""
    return store.export_coco(split, out)


def remove_project(project_dir: str | os.PathLike[str], remove_folder: bool = False) -> None:
    """Delete a project's store files and, with ``remove_folder``, the whole folder (for a
    creation that made the folder: whatever it wrote there goes too)."""
    project_dir = Path(project_dir)
    if remove_folder:
        shutil.rmtree(project_dir, ignore_errors=True)
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        (project_dir / (STORE_FILE + suffix)).unlink(missing_ok=True)
