"""Reading a project's sources (a COCO, VOC or YOLO dataset or a folder of unlabeled images)
and adding them to its store; creating a project is a use case,
:func:`almdn.workflow.create_project`.

A project folder holds ``almdn.sqlite`` (the :class:`~almdn.projects.store.Store`), ``exports/`` (COCO
files written for training) and ``label-studio/`` (a local server's data and credentials).
Images stay where they are; the store records their absolute paths and content hashes.

Splits: images from an annotated source go to ``labeled`` (the initial training set) unless
another split is asked for; a dataset folder's test annotations go to ``test``; a folder of
images goes to ``pool``. Images imported into the pool lose their boxes on purpose (the pool
is what annotators label); the summary says how many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from almdn.data.coco import DatasetError
from almdn.data.records import BoxRecord, ImageRecord
from almdn.projects.store import SPLITS, Store, StoreError

SOURCE_KINDS = ("coco", "voc", "yolo", "images")


@dataclass
class ImportSummary:
    """What one source added to a project."""

    source: str
    split: str
    added: int
    existing: int
    labels: int
    dropped_labels: int = 0
    duplicates: int = 0  # of ``existing``: new paths whose content the project already holds

    def __str__(self) -> str:
        text = f"{self.source}: {self.added} images added to '{self.split}' with {self.labels} boxes"
        if self.existing:
            text += f", {self.existing} already in the project"
            if self.duplicates:
                text += f" ({self.duplicates} of them by identical content under another path)"
        if self.dropped_labels:
            text += f", {self.dropped_labels} boxes left out (images in the pool are unlabeled)"
        return text + "."


def coco_records(annotation_file: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> tuple[list[ImageRecord], list[str]]:
    """Records and class names of a COCO detection file (crowd regions are left out)."""
    from almdn.data.coco import CocoDetectionDataset

    dataset = CocoDetectionDataset(annotation_file, image_root=image_root, cache_images=False)
    records = []
    for i, path in enumerate(dataset.file_paths):
        target = dataset.target(i)
        boxes = [
            BoxRecord(dataset.classes[int(label) - 1], *(float(v) for v in box))
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist())
        ]
        size = dataset.image_sizes[i]
        records.append(ImageRecord(path, size[1] if size else None, size[0] if size else None, boxes, source_id=str(dataset.image_ids[i])))
    return records, list(dataset.classes)


def _coco_sources(path: Path, split: str | None) -> list[tuple[str, list[ImageRecord], list[str], str]]:
    if path.is_file():
        records, classes = coco_records(path)
        return [(str(path), records, classes, split or "labeled")]
    annotations = path / "annotations"
    found = []
    for name, default_split in (("train", split or "labeled"), ("test", "test")):
        file = annotations / f"{name}.json"
        if file.is_file():
            records, classes = coco_records(file)
            found.append((str(file), records, classes, default_split))
    if not found:
        raise DatasetError(f"'{path}' is neither a COCO json file nor a folder with annotations/train.json; point at one of those.")
    return found


def _yolo_sources(path: Path, split: str | None) -> list[tuple[str, list[ImageRecord], list[str], str]]:
    from almdn.data.yolo import read_yolo, read_yolo_names

    names = read_yolo_names(path)
    subsets = [p.name for p in sorted((path / "images").iterdir()) if p.is_dir()] if (path / "images").is_dir() else []
    if not subsets:
        return [(str(path), read_yolo(path, names=names), names, split or "labeled")]
    out = []
    for sub in subsets:
        target = "test" if sub in ("val", "valid", "test") else (split or "labeled")
        out.append((f"{path}/images/{sub}", read_yolo(path, sub, names=names), names, target))
    return out


def read_source(kind: str, path: str | os.PathLike[str], split: str | None = None, image_set: str | None = None) -> list[tuple[str, list[ImageRecord], list[str], str]]:
    """``(source name, records, class names, split)`` for each part of a dataset."""
    path = Path(path)
    if kind == "coco":
        return _coco_sources(path, split)
    if kind == "voc":
        from almdn.data.voc import read_voc, voc_class_names

        records = read_voc(path, image_set)
        return [(str(path) + (f" ({image_set})" if image_set else ""), records, voc_class_names(records), split or "labeled")]
    if kind == "yolo":
        return _yolo_sources(path, split)
    if kind == "images":
        from almdn.data.images import list_images

        return [(str(path), [ImageRecord(p, source_id=str(p.relative_to(path))) for p in list_images(path)], [], split or "pool")]
    raise StoreError(f"Unknown source kind '{kind}'; use one of {', '.join(SOURCE_KINDS)}.")


def add_source(store: Store, kind: str, path: str | os.PathLike[str], split: str | None = None, image_set: str | None = None) -> list[ImportSummary]:
    """Add a dataset (or an image folder) to ``store`` in one transaction: its classes, its
    images and, outside the pool, their boxes. All or nothing.

    Every file is read, hashed and decoded before the write transaction begins
    (:meth:`~almdn.projects.store.Store.prepare_images`): the store's write lock is held only for the
    inserts, so the app stays responsive during a large import and a retrain that finishes
    meanwhile records its model without waiting."""
    if split is not None and split not in SPLITS:
        raise StoreError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    parts = read_source(kind, path, split, image_set)
    ready = []
    for source, records, classes, target in parts:  # no lock taken: reading and decoding only
        dropped = 0
        if target == "pool":
            dropped = sum(len(r.boxes or []) for r in records)
            records = [ImageRecord(r.path, r.width, r.height, None, r.source_id) for r in records]
        ready.append((source, classes, target, dropped, store.prepare_images(records, target)))
    summaries = []
    with store.transaction():
        for source, classes, target, dropped, prepared in ready:
            store.add_classes(classes)
            result = store.add_images(prepared, split=target, source=source)
            summaries.append(ImportSummary(source, target, len(result["added"]), len(result["existing"]), result["labels"], dropped, len(result["duplicates"])))
    return summaries
