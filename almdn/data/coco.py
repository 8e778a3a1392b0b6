"""Reading and writing COCO-format object-detection datasets.

A COCO detection file is JSON with three lists: ``images`` (``id``, ``file_name`` relative to
an image folder, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
``category_id``, ``bbox`` as ``[x, y, w, h]`` in pixels, ``area``, ``iscrowd``) and
``categories`` (``id``, ``name``). Category ids need not be contiguous: the dataset maps them
to labels ``1..C`` in the order of the category list sorted by id (or in the order of
``class_names`` when given, so that a test set shares the train set's mapping); label 0 is
background, as in torchvision's detectors.

Every problem with the files on disk surfaces as a :class:`DatasetError` whose message is one
sentence naming the file and what to do, never a decoder traceback. In particular:

- ids (``id``, ``image_id``, ``category_id``) are JSON integers: ``[1]``, ``true``, ``1.0`` and
  ``"1"`` are refused, so no annotation silently lands on another image;
- ``iscrowd`` is 0 or 1 (also written ``"0"``/``"1"`` or ``false``/``true``); crowd regions
  are left out, as COCO evaluation does; any other value is refused;
- a ``file_name`` listed under two image ids is refused (its labels would be split between
  two records, one of them dropped on import);
- boxes are kept inside their image: a box spilling over the border keeps only its part in
  the image and a box with nothing left (or zero size) is dropped, both summed up in one
  :class:`BoxesAdjusted` warning per file. The image's size is the file's ``width`` and
  ``height``, or, for an image without them, the image file's own (header, EXIF orientation
  applied), so boxes of such images are checked too. (The VOC reader refuses such boxes
  instead: VOC boxes are whole pixels, so one past the border is a mistake in the file; COCO's
  are continuous and tools commonly write them a fraction past the border.)
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from almdn.data.records import decode, image_size, reduced_size
from almdn.errors import DatasetError  # defined with the other user errors; importable from here as before

__all__ = ["BoxesAdjusted", "CocoDetectionDataset", "DatasetError", "collate_detection", "read_image", "write_coco"]


class BoxesAdjusted(UserWarning):
    """Boxes of a dataset were clipped to their image or dropped as empty (one per dataset)."""


def _box_summary(path: Path, clipped: dict[int, int], dropped: dict[int, int], file_paths: Sequence[Path], shown: int = 3) -> str | None:
    """One sentence such as "In 'train.json': 3 boxes clipped to their image and 2 empty boxes
    ... dropped, in 4 images (a.png, b.png, c.png, ...).", or None when nothing was fixed."""
    if not clipped and not dropped:
        return None
    images = sorted(set(clipped) | set(dropped))
    names = ", ".join(file_paths[i].name for i in images[:shown]) + (", ..." if len(images) > shown else "")
    parts = []
    if clipped:
        parts.append(f"{sum(clipped.values())} boxes clipped to their image")
    if dropped:
        parts.append(f"{sum(dropped.values())} empty boxes (zero width or height, or outside the image) dropped")
    return f"In '{path}': {' and '.join(parts)}, in {len(images)} images ({names})."


def _annotation_error(path: Path, reason: str) -> DatasetError:
    return DatasetError(f"Cannot read annotation file '{path}' ({reason}); fix or regenerate it, then try again.")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to a uint8 RGB array (H, W, 3), EXIF orientation applied
    (:func:`almdn.data.records.decode`, full size).

    Grey, palette, RGBA (alpha dropped) and 16-bit images are converted. Any failure raises
    :class:`DatasetError` naming the file.
    """
    return decode(path, None, array=True)


#: Longest side an image is decoded at for scoring (larger ones are reduced to it).
MAX_DECODE_SIDE = 2048


def decode_image(path: str | os.PathLike[str], max_side: int | None = MAX_DECODE_SIDE) -> np.ndarray:
    """A uint8 RGB array (H, W, 3) of the image, at :func:`reduced_size` of its oriented size;
    one :class:`DatasetError` sentence if the file is unreadable or above the pixel limit
    (:func:`almdn.data.records.decode`)."""
    return decode(path, max_side, array=True)


def default_image_root(annotation_file: Path, images: list) -> Path:
    """Where a COCO file's images are, for the two common layouts: ``images/`` beside the
    ``annotations/`` folder (``<file>/../../images``, almdn's and COCO's own) or ``images/``
    beside the file. The first that holds one of the first 20 listed images wins; with none,
    the first (a missing image is then reported with its full path)."""
    candidates = [annotation_file.parent.parent / "images", annotation_file.parent / "images"]
    names = [im["file_name"] for im in images[:20] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    for root in candidates:
        if any((root / name).is_file() for name in names):
            return root
    return candidates[0]


def _short_reason(exc: BaseException) -> str:
    """A short, single-line reason: the OS error text or the first line of the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.rstrip(".")  # "Is a directory", not "[Errno 21] Is a directory: '...'"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rstrip(".")


class CocoDetectionDataset(torch.utils.data.Dataset):
    """Detection dataset over a COCO annotation file, for training and evaluation.

    ``dataset[i]`` returns ``(image, target)``: ``image`` is a float32 tensor (3, H, W) in
    [0, 1] (RGB), ``target`` is ``{"boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,)
    in 1..C, "image_id": int}``; N may be 0 (boxes then have shape (0, 4)).

    Args:
        annotation_file: path of the COCO JSON file.
        image_root: folder that ``file_name`` entries are relative to; defaults to
            :func:`default_image_root` (``../images`` or ``images/`` beside the file).
        cache_images: keep decoded uint8 images in memory after first use.
        class_names: fixes the label order (label ``k`` is ``class_names[k - 1]``); every
            category name of the file must be in it. Default: the file's categories by id.

    Attributes:
        classes: category names, label ``k`` (1..C) is ``classes[k - 1]``; 0 is background.
        image_ids: COCO image ids, in file order.
        file_paths: image paths, aligned with ``image_ids``.
        image_sizes: ``(height, width)`` from the annotation file (None where not given).
        category_ids: COCO category id of each class, aligned with ``classes`` (None for a
            class of ``class_names`` that the file does not have).
        max_side: an image whose longer side exceeds it is decoded reduced to it (JPEG draft /
            ``reduce``, :func:`almdn.data.images.decode_image`) and its boxes are scaled with
            it, so a 12000 x 12000 photo costs megabytes, not gigabytes; None never reduces.
            Every box this dataset returns is in the decoded image's pixels.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        cache_images: bool = True,
        class_names: Sequence[str] | None = None,
        max_side: int | None = 2048,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.max_side = max_side
        self._scales: dict[Path, tuple[float, float]] = {}
        self.cache_images = cache_images
        self._cache: dict[Path, np.ndarray] = {}
        coco = self._load_json()
        self.image_root = Path(image_root) if image_root is not None else default_image_root(self.annotation_file, coco["images"])
        self._parse(coco, class_names)

    # ---------------------------------------------------------------- parsing

    def _load_json(self) -> dict[str, Any]:
        path = self.annotation_file
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _annotation_error(path, "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _annotation_error(path, _short_reason(exc)) from None
        try:
            coco = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _annotation_error(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(coco, dict):
            raise _annotation_error(path, "the top level is not a JSON object")
        for key in ("images", "categories"):
            if not isinstance(coco.get(key), list):
                raise _annotation_error(path, f"'{key}' is missing or not a list")
        if not isinstance(coco.get("annotations", []), list):
            raise _annotation_error(path, "'annotations' is not a list")
        return coco

    def _parse(self, coco: dict[str, Any], class_names: Sequence[str] | None) -> None:
        path = self.annotation_file
        label_of_cat = self._parse_categories(coco, class_names)
        index_of = self._parse_images(coco)
        boxes, labels, clipped, degenerate = self._parse_annotations(coco, index_of, label_of_cat)
        #: One sentence on the boxes fixed while reading (None when none were), e.g. for a CLI to show.
        self.box_summary = _box_summary(path, clipped, degenerate, self.file_paths)
        if self.box_summary:
            # One warning per dataset, not one per image: a big dataset would print thousands.
            warnings.warn(BoxesAdjusted(self.box_summary), stacklevel=3)
        self._boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        self._labels = [torch.tensor(lb, dtype=torch.int64) for lb in labels]

    def _parse_categories(self, coco: dict[str, Any], class_names: Sequence[str] | None) -> dict[int, int]:
        """Categories -> labels 1..C: sets ``classes`` and ``category_ids``; returns the label of each category id."""
        path = self.annotation_file
        cat_names: dict[int, str] = {}
        for k, cat in enumerate(coco["categories"]):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
                raise _annotation_error(path, f"category #{k} needs an integer 'id' and a string 'name'")
            if cat["id"] in cat_names:
                raise _annotation_error(path, f"category id {cat['id']} appears twice")
            cat_names[int(cat["id"])] = cat["name"]
        if class_names is None:
            ordered = sorted(cat_names)
            names = [cat_names[i] for i in ordered]
            if len(set(names)) != len(names):
                raise _annotation_error(path, "two categories share a name")
            self.classes: list[str] = names
            self.category_ids: list[int | None] = list(ordered)
        else:
            self.classes = [str(n) for n in class_names]
            if len(set(self.classes)) != len(self.classes):
                raise DatasetError(f"The class names given for '{path}' contain duplicates; pass each name once.")
            unknown = sorted({n for n in cat_names.values() if n not in self.classes})
            if unknown:
                raise DatasetError(
                    f"Categories {unknown} in '{path}' are not among the expected classes "
                    f"{self.classes}; use a file with the same categories as the training set."
                )
            by_name = {n: i for i, n in cat_names.items()}
            self.category_ids = [by_name.get(n) for n in self.classes]
        label_of_name = {n: k + 1 for k, n in enumerate(self.classes)}
        label_of_cat = {cid: label_of_name[name] for cid, name in cat_names.items()}
        return label_of_cat

    def _parse_images(self, coco: dict[str, Any]) -> dict[int, int]:
        """Images: sets ``image_ids``, ``file_paths`` and ``image_sizes``; returns the index of each image id."""
        path = self.annotation_file
        self.image_ids: list[int] = []
        self.file_paths: list[Path] = []
        self.image_sizes: list[tuple[int, int] | None] = []
        index_of: dict[int, int] = {}
        id_of_file: dict[str, int] = {}
        for k, im in enumerate(coco["images"]):
            if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
                raise _annotation_error(path, f"image #{k} needs an integer 'id' and a string 'file_name'")
            image_id = int(im["id"])
            if image_id in index_of:
                raise _annotation_error(path, f"image id {image_id} appears twice")
            file_path = self.image_root / im["file_name"]
            key = os.path.normpath(file_path)
            if key in id_of_file:
                raise _annotation_error(
                    path, f"file_name '{im['file_name']}' is listed under image ids {id_of_file[key]} and {image_id}; list each image once, with all its annotations"
                )
            id_of_file[key] = image_id
            index_of[image_id] = len(self.image_ids)
            self.image_ids.append(image_id)
            self.file_paths.append(file_path)
            self.image_sizes.append(self._image_size(im, k, file_path))
        return index_of

    def _parse_annotations(
        self, coco: dict[str, Any], index_of: dict[int, int], label_of_cat: dict[int, int],
    ) -> tuple[list[list[list[float]]], list[list[int]], dict[int, int], dict[int, int]]:
        """Annotations, grouped per image: the boxes and labels of each image and, per image, how
        many boxes were clipped to it and how many were dropped as empty."""
        path = self.annotation_file
        boxes: list[list[list[float]]] = [[] for _ in self.image_ids]
        labels: list[list[int]] = [[] for _ in self.image_ids]
        clipped: dict[int, int] = {}
        degenerate: dict[int, int] = {}
        for k, ann in enumerate(coco.get("annotations", [])):
            if not isinstance(ann, dict):
                raise _annotation_error(path, f"annotation #{k} is not an object")
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1, "0", "1") or isinstance(crowd, float):
                raise _annotation_error(path, f"annotation #{k} has 'iscrowd' {json.dumps(crowd)[:40]}; use 0 or 1")
            if crowd in (1, "1"):
                continue  # crowd regions are not single objects: COCO evaluation ignores them too
            bbox = ann.get("bbox")
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
                raise _annotation_error(path, f"annotation #{k} needs a 'bbox' of four finite numbers")
            for key in ("image_id", "category_id"):
                if not _is_int(ann.get(key)):
                    raise _annotation_error(path, f"annotation #{k} needs an integer '{key}', not {json.dumps(ann.get(key))[:40]}")
            if ann.get("image_id") not in index_of:
                raise _annotation_error(path, f"annotation #{k} refers to image id {ann.get('image_id')!r}, which is not in 'images'")
            if ann.get("category_id") not in label_of_cat:
                raise _annotation_error(path, f"annotation #{k} has category id {ann.get('category_id')!r}, which is not in 'categories'")
            i = index_of[ann["image_id"]]
            x, y, w, h = (float(v) for v in bbox)
            x0, y0, x1, y1 = x, y, x + w, y + h
            size = self.image_sizes[i]
            unclipped = (x0, y0, x1, y1)
            if size is not None:  # a box spilling over the border keeps only its part in the image
                x0, x1 = min(max(x0, 0.0), size[1]), min(max(x1, 0.0), size[1])
                y0, y1 = min(max(y0, 0.0), size[0]), min(max(y1, 0.0), size[0])
            if x1 <= x0 or y1 <= y0:
                degenerate[i] = degenerate.get(i, 0) + 1
                continue
            if (x0, y0, x1, y1) != unclipped:
                clipped[i] = clipped.get(i, 0) + 1
            boxes[i].append([x0, y0, x1, y1])
            labels[i].append(label_of_cat[ann["category_id"]])
        return boxes, labels, clipped, degenerate

    def _image_size(self, im: dict[str, Any], k: int, file_path: Path) -> tuple[int, int] | None:
        """``(height, width)`` of image entry #k: the file's ``width``/``height``, else the image
        file's own (header, EXIF orientation applied; None when unreadable: decoding says so)."""
        w, h = im.get("width"), im.get("height")
        if w is None and h is None:
            try:
                width, height = image_size(file_path)
            except DatasetError:
                return None
            return height, width
        if not (_whole(w) and _whole(h) and w > 0 and h > 0):
            raise _annotation_error(self.annotation_file, f"image #{k} has 'width' {json.dumps(w)[:20]} and 'height' {json.dumps(h)[:20]}; give both as positive integers, or neither")
        return int(h), int(w)

    # ---------------------------------------------------------------- access

    @property
    def num_classes(self) -> int:
        """Number of object classes C (labels are 1..C; 0 is background)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.image_ids)

    def decode_scale(self, index: int) -> tuple[float, float]:
        """``(sx, sy)``: decoded pixels per original pixel of one image; (1, 1) unless its
        longer side exceeds ``max_side``. Read from the annotation's size, else the header."""
        path = self.file_paths[index]
        scale = self._scales.get(path)
        if scale is None:
            size = self.image_sizes[index]
            if size is None:
                try:
                    width, height = image_size(path)  # EXIF orientation applied, as decoded
                    size = (height, width)
                except DatasetError:
                    size = (0, 0)  # unreadable: load_image says so in one sentence
            h, w = size
            tw, th = reduced_size(w, h, self.max_side) if w and h else (w, h)
            scale = self._scales[path] = (tw / w, th / h) if w and h else (1.0, 1.0)
        return scale

    def target(self, index: int) -> dict[str, Any]:
        """The target of one image, without decoding the image (boxes in the decoded image's
        pixels, see ``max_side``)."""
        sx, sy = self.decode_scale(index) if self.max_side else (1.0, 1.0)
        boxes = self._boxes[index].clone()
        if (sx, sy) != (1.0, 1.0):
            boxes *= torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
        return {
            "boxes": boxes,
            "labels": self._labels[index].clone(),
            "image_id": self.image_ids[index],
        }

    def targets(self) -> list[dict[str, Any]]:
        """All targets in order, without decoding any image (for evaluation)."""
        return [self.target(i) for i in range(len(self))]

    def load_image(self, index: int) -> np.ndarray:
        """The decoded uint8 RGB array (H, W, 3) of one image (cached if ``cache_images``)."""
        path = self.file_paths[index]
        arr = self._cache.get(path)
        if arr is None:
            sx, sy = self.decode_scale(index) if self.max_side else (1.0, 1.0)
            if (sx, sy) != (1.0, 1.0):
                arr = decode_image(path, self.max_side)
            else:
                arr = read_image(path)
            size = self.image_sizes[index]
            if size is not None and (sx, sy) != (1.0, 1.0):
                size = (round(size[0] * sy), round(size[1] * sx))  # what the file's annotated size decodes to
            if size is not None and arr.shape[:2] != size:
                raise DatasetError(
                    f"Image '{path}' is {arr.shape[1]}x{arr.shape[0]} pixels but "
                    f"'{self.annotation_file}' says {size[1]}x{size[0]}; fix the annotation "
                    "file or the image, then try again."
                )
            if self.cache_images:
                arr.flags.writeable = False  # shared between calls: nobody may edit it in place
                self._cache[path] = arr
        return arr

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        arr = self.load_image(index)
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)
        return image, self.target(index)

    def subset(self, indices: Iterable[int]) -> "CocoDetectionDataset":
        """A dataset over the given positions (same classes, shared image cache)."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self):
                raise IndexError(f"index {i} is out of range for {len(self)} images")
        sub = copy.copy(self)  # shallow: the cache dict stays shared
        sub.image_ids = [self.image_ids[i] for i in indices]
        sub.file_paths = [self.file_paths[i] for i in indices]
        sub.image_sizes = [self.image_sizes[i] for i in indices]
        sub._boxes = [self._boxes[i] for i in indices]
        sub._labels = [self._labels[i] for i in indices]
        return sub

    def index_of(self, image_id: int) -> int:
        """Position of a COCO image id in this dataset."""
        try:
            return self.image_ids.index(image_id)
        except ValueError:
            raise KeyError(f"image id {image_id} is not in this dataset") from None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}('{self.annotation_file}', images={len(self)}, "
                f"classes={self.num_classes})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    """An integer, or a float with an integral value (some tools write sizes as 640.0)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Collate ``(image, target)`` pairs into ``(list_of_images, list_of_targets)``.

    Detection images can differ in size and targets in box count, so nothing is stacked.
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays through ``json.dumps``."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_coco(
    path: str | os.PathLike[str],
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a COCO detection file deterministically (given order, no timestamps), atomically.

    The file is written next to its destination and renamed into place, so readers never see
    half a file. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if info is not None:
        doc["info"] = info
    doc["images"] = list(images)
    doc["annotations"] = list(annotations)
    doc["categories"] = list(categories)
    text = json.dumps(doc, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
