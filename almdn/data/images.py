"""A folder (or list) of unlabeled images, for scoring a pool that has no annotations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from almdn.data.coco import DatasetError, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root`` (recursively), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder of images.")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImageFolderDataset(torch.utils.data.Dataset):
    """Unlabeled images; items are ``(image, {"image_id": i})`` like the labeled datasets.

    With ``skip_broken`` a file that cannot be decoded yields ``(None, {"image_id": i,
    "error": sentence})`` instead of raising, so a scoring run lists it and goes on.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None, skip_broken: bool = True):
        self.file_paths = [Path(p) for p in paths]
        self.root = Path(root) if root is not None else None
        self.image_ids = list(range(len(self.file_paths)))
        self.skip_broken = skip_broken

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], skip_broken: bool = True) -> ImageFolderDataset:
        return cls(list_images(root), root=root, skip_broken=skip_broken)

    def file_name(self, index: int) -> str:
        path = self.file_paths[index]
        return str(path.relative_to(self.root)) if self.root is not None else str(path)

    def __len__(self) -> int:
        return len(self.file_paths)

    def __getitem__(self, index: int):
        try:
            array = read_image(self.file_paths[index])
        except DatasetError as exc:
            if not self.skip_broken:
                raise
            return None, {"image_id": self.image_ids[index], "error": str(exc)}
        image = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
        return image, {"image_id": self.image_ids[index]}
