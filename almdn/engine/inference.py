"""Running a trained detector over a dataset: detections with uncertainties, and mAP."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from almdn.data.coco import collate_detection
from almdn.engine.checkpoint import resolve_device
from almdn.engine.metrics import evaluate_predictions
from almdn.models import MixtureSSD


@torch.no_grad()
def predict(
    model: MixtureSSD,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "predict",
) -> list[dict[str, torch.Tensor] | None]:
    """Detections (with the four uncertainties) for every item of ``dataset``, on the CPU.

    ``dataset`` yields ``(image, target)`` pairs; targets are ignored except that an item whose
    image is None (a broken file of an :class:`ImageFolderDataset`) gets None.
    """
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_detection,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    out: list[dict[str, torch.Tensor] | None] = []
    for images, _ in tqdm(loader, disable=not progress, desc=desc, unit="batch"):
        readable = [img.to(device, non_blocking=True) for img in images if img is not None]
        detections = iter(model(readable) if readable else [])
        out.extend(None if img is None else {k: v.cpu() for k, v in next(detections).items()} for img in images)
    return out


def evaluate(
    model: MixtureSSD,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict:
    """mAP@0.5, mAP@0.75 and mAP@[.5:.95] (pycocotools) and VOC07 11-point mAP@0.5."""
    predictions = predict(model, dataset, batch_size, device, progress=progress, desc="evaluate")
    targets = dataset.targets() if hasattr(dataset, "targets") else [dataset[i][1] for i in range(len(dataset))]
    return evaluate_predictions(predictions, targets, model.num_classes - 1, max_dets=model.detections_per_img)
