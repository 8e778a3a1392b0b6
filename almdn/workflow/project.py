"""Use cases: create a project, add images (and labels) to it, export a split.

Adding labeled boxes (at creation too) checks them for the project's rounds: how many have an
anchor of the round's model that overlaps them well (:func:`anchor_coverage_warning`; small
objects, issue 12), so a user learns before the first round that its settings need a larger
input or fitted anchors.

A project folder holds ``almdn.sqlite`` (the :class:`~almdn.projects.store.Store`), ``exports/`` (COCO
files written for training), ``models/`` and ``label-studio/``. Reading the sources
(COCO, VOC, YOLO, a folder of images) is :mod:`almdn.projects.sources`'s.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from almdn.errors import UserError
from almdn.models.anchors import DEFAULT_MIN_COVERAGE, AnchorCoverageWarning, BoxSet, coverage_warning, not_checked
from almdn.projects.sources import ImportSummary, add_source
from almdn.projects.rounds import RoundSettings
from almdn.projects.store import STORE_FILE, Store

#: A source: ``(kind, path, split or None)`` or ``(kind, path, split, VOC image set)``.
Source = tuple


def create_project(
    project_dir: str | os.PathLike[str],
    sources: Sequence[Source] = (),
    classes: list[str] | None = None,
    name: str | None = None,
    on_summary: Callable[[ImportSummary], None] | None = None,
    init: str | None = None,
    on_warning: Callable[[str], None] | None = None,
    min_anchor_coverage: float | None = DEFAULT_MIN_COVERAGE,
) -> tuple[Store, list[ImportSummary]]:
    """Create a new project at ``project_dir`` from ``sources``; ``classes`` fixes the class
    list and its order first; ``init`` is where its models start (coco, imagenet, none or the
    path of a torchvision state dict: :attr:`almdn.projects.rounds.RoundSettings.init`). Returns the
    open store and what each source added.

    A folder that already holds a project is refused (add sources to it instead). If the
    creation fails (a broken source, Ctrl-C), nothing it made is left behind: the store, and
    the folder when it created it, are deleted again, so the same command can simply be run
    again. ``on_summary(summary)`` is called as each source is added; ``on_warning`` and
    ``min_anchor_coverage``: the small-object check of the labeled boxes (:func:`add_sources`).
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
        summaries = add_sources(store, sources, on_summary, on_warning=on_warning, min_anchor_coverage=min_anchor_coverage)
    except BaseException:
        store.close()
        remove_project(project_dir, remove_folder=new_folder)
        raise
    return store, summaries


def add_sources(
    store: Store,
    sources: Sequence[Source],
    on_summary: Callable[[ImportSummary], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    min_anchor_coverage: float | None = DEFAULT_MIN_COVERAGE,
) -> list[ImportSummary]:
    """Add each source to the project (each in its own transaction: all or nothing per source);
    files already in the project are left as they are.

    When the sources added labeled boxes, the project's labeled boxes are checked for its
    rounds (:func:`anchor_coverage_warning`, below ``min_anchor_coverage``; None skips it): the
    warning goes to ``on_warning`` (the app shows it), else it is issued as an
    :class:`~almdn.models.anchors.AnchorCoverageWarning` (the CLI prints it). It never fails
    the import."""
    summaries = []
    for kind, path, split, *image_set in sources:
        for summary in add_source(store, kind, path, split, *image_set):
            summaries.append(summary)
            if on_summary is not None:
                on_summary(summary)
    if min_anchor_coverage is not None and any(s.split == "labeled" and s.labels for s in summaries):
        report_warning(anchor_coverage_warning(store, min_coverage=min_anchor_coverage), on_warning)
    return summaries


def labeled_boxes(store: Store) -> BoxSet:
    """The labeled split's current boxes with their images' sizes
    (:class:`~almdn.models.anchors.BoxSet`), read from the store: no image is decoded."""
    labels = store.labels(split="labeled")
    if labels.empty:
        return BoxSet(torch.zeros(0, 4), torch.zeros(0, 2))
    sizes = store.images("labeled").set_index("image_id").loc[labels["image_id"], ["height", "width"]]
    return BoxSet(torch.tensor(labels[["x1", "y1", "x2", "y2"]].to_numpy(dtype="float32")), torch.tensor(sizes.to_numpy(dtype="float32")))


def anchor_coverage_warning(
    store: Store,
    settings: RoundSettings | None = None,
    model: Any = None,
    data: Any = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> str | None:
    """The small-object warning for a project's rounds: too few labeled boxes have an anchor
    of the round's model with IoU >= 0.5 (:func:`almdn.models.anchors.coverage_warning`), with
    the numbers and what to change in the round settings. None when the coverage suffices.

    ``model`` / ``data``: a round's own model and training set; by default a model built from
    ``settings`` (the project's) without weights, which is cheap (anchors hold none; fitted
    as the round would fit them when ``settings.fit_anchors``), and the labeled boxes read
    from the store (:func:`labeled_boxes`). Never raises: a failure is the sentence."""
    settings = settings or RoundSettings.load(store)
    try:
        if data is None:
            data = labeled_boxes(store)
            if len(data) == 0:
                return None
        if model is None:
            from almdn.models import build_model

            model = build_model(num_classes=max(1, len(store.classes())), pretrained=False, **settings.model_options())
            settings.fit_model_anchors(model, data)
    except Exception as exc:  # noqa: BLE001 - a diagnostic never fails what it checks
        return not_checked(exc)
    return coverage_warning(model, data, min_coverage, advice=settings.coverage_advice())


def report_warning(message: str | None, on_warning: Callable[[str], None] | None) -> None:
    """Hand a use case's warning to its caller's ``on_warning``, or issue it as an
    :class:`~almdn.models.anchors.AnchorCoverageWarning` (the CLI prints those as one line)."""
    if not message:
        return
    if on_warning is not None:
        on_warning(message)
    else:
        warnings.warn(AnchorCoverageWarning(message), stacklevel=3)


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
