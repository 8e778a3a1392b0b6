"""A folder (or list) of unlabeled images, for scoring a pool that has no annotations.

Large images are decoded at reduced size (JPEG: Pillow's ``draft``, which decodes at 1/2,
1/4 or 1/8 scale inside the DCT; other formats: ``reduce``), so a 12000 x 12000 photo costs
a few megabytes instead of gigabytes; the detectors here look at 128-800 px anyway. An item
then carries ``box_scale`` and :func:`restore_boxes` maps its detections back to the
original pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from almdn.data.coco import MAX_DECODE_SIDE, DatasetError, decode_image, reduced_size  # noqa: F401  (decoding lives with read_image in coco.py)
from almdn.data.records import image_size

#: Detection keys in image pixels (x, y, x, y order): what goes back to the original image
#: size with the boxes (:func:`restore_boxes`): the boxes, the K component means and their
#: sigmas, the anchors.
BOX_KEYS: tuple[str, ...] = ("boxes", "component_boxes", "component_sigmas", "anchor_boxes")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root`` (recursively), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder of images.")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def restore_boxes(prediction: dict, box_scale: tuple[float, float] | None) -> dict:
    """A detector's prediction on a reduced image, with every pixel-valued key (boxes, component
    boxes and sigmas, anchors: :data:`BOX_KEYS`) in the original pixels."""

    if box_scale is None or box_scale == (1.0, 1.0):
        return prediction
    sx, sy = box_scale
    scale = torch.tensor([sx, sy, sx, sy], dtype=prediction["boxes"].dtype)
    return {**prediction, **{key: prediction[key] * scale for key in BOX_KEYS if key in prediction}}


class ImageFolderDataset(torch.utils.data.Dataset):
    """Unlabeled images; items are ``(image, {"image_id": i})`` like the labeled datasets.

    With ``skip_broken`` a file that cannot be decoded yields ``(None, {"image_id": i,
    "error": sentence})`` instead of raising, so a scoring run lists it and goes on.

    Args:
        sizes: ``(width, height)`` of each image when known (the store has them); used by
            :meth:`box_scale` without reading headers.
        max_side: images with a longer side are decoded reduced to it (None: never).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        root: str | os.PathLike[str] | None = None,
        skip_broken: bool = True,
        sizes: Sequence[tuple[int, int]] | None = None,
        max_side: int | None = MAX_DECODE_SIDE,
    ):
        self.file_paths = [Path(p) for p in paths]
        self.root = Path(root) if root is not None else None
        self.image_ids = list(range(len(self.file_paths)))
        self.skip_broken = skip_broken
        self.sizes = list(sizes) if sizes is not None else None
        self.max_side = max_side

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], skip_broken: bool = True) -> ImageFolderDataset:
        return cls(list_images(root), root=root, skip_broken=skip_broken)

    def file_name(self, index: int) -> str:
        path = self.file_paths[index]
        return str(path.relative_to(self.root)) if self.root is not None else str(path)

    def box_scale(self, index: int) -> tuple[float, float]:
        """``(sx, sy)`` that map boxes on the decoded image of ``index`` to its original
        pixels ((1, 1) unless it was reduced; also for an unreadable file)."""
        if self.sizes is not None and self.sizes[index] is not None:
            width, height = (int(v) for v in self.sizes[index])
        else:
            try:
                width, height = image_size(self.file_paths[index])  # EXIF orientation applied, as decoded
            except DatasetError:
                return 1.0, 1.0
        tw, th = reduced_size(width, height, self.max_side)
        return width / tw, height / th

    def __len__(self) -> int:
        return len(self.file_paths)

    def __getitem__(self, index: int):
        try:
            array = decode_image(self.file_paths[index], self.max_side)
        except DatasetError as exc:
            if not self.skip_broken:
                raise
            return None, {"image_id": self.image_ids[index], "error": str(exc)}
        image = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
        return image, {"image_id": self.image_ids[index]}
