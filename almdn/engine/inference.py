"""Running a trained detector over a dataset: detections with uncertainties, and mAP.

:func:`predict` returns every detection with all its mixture parameters (for drawing, the
baselines and the project's pool scoring); :func:`kept_detections` is the path for large
pools: batched, pinned-memory loading with worker processes, NMS and uncertainties on the
device, and only the columns the image score needs, thresholded on the device and copied back
once per batch. Both run their batches through :func:`inference_batches`, the one loop with a
progress bar, a progress hook and a cancellation hook.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from almdn.data.coco import collate_detection
from almdn.engine import distributed
from almdn.engine.checkpoint import resolve_device
from almdn.engine.metrics import evaluate_predictions
from almdn.engine.quality import quality_report
from almdn.errors import Cancelled
from almdn.engine.precision import apply_channels_last, mixed_precision, resolve_precision
from almdn.models import UNCERTAINTY_NAMES, Detector
from almdn.models.postprocess import MIXTURE_KEYS
from almdn.registry import DEFAULT_CONF_THRESHOLD


#: ``on_progress(items done, items in all)``, called after every batch.
ProgressHook = Callable[[int, int], None]
#: ``should_stop()``, polled before every batch: True stops the run with :class:`Cancelled`.
StopHook = Callable[[], bool]


def inference_batches(
    loader: Iterable, total: int, progress: bool = False, desc: str = "predict",
    on_progress: ProgressHook | None = None, should_stop: StopHook | None = None,
) -> Iterator:
    """The batches of ``loader`` (each ``(images, second)``, ``second`` one entry per item), with
    a progress bar when ``progress``; ``on_progress(done, total)`` after each batch has been
    used, and :class:`~almdn.errors.Cancelled` as soon as ``should_stop()`` is true."""
    done = 0
    for batch in tqdm(loader, disable=not progress, desc=desc, unit="batch"):
        if should_stop is not None and should_stop():
            raise Cancelled()
        yield batch
        done += len(batch[1])
        if on_progress is not None:
            on_progress(done, total)


@torch.no_grad()
def predict(
    model: Detector,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "predict",
    on_progress: ProgressHook | None = None,
    should_stop: StopHook | None = None,
) -> list[dict[str, torch.Tensor] | None]:
    """Detections (with the four uncertainties) for every item of ``dataset``, on the CPU.

    ``dataset`` yields ``(image, target)`` pairs; targets are ignored except that an item whose
    image is None (a broken file of an :class:`ImageFolderDataset`) gets None. ``progress``
    shows a bar; ``on_progress`` and ``should_stop`` are :func:`inference_batches`' hooks.
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
    for images, _ in inference_batches(loader, len(dataset), progress, desc, on_progress, should_stop):
        readable = [img.to(device, non_blocking=True) for img in images if img is not None]
        detections = iter(model(readable) if readable else [])
        out.extend(None if img is None else {k: v.cpu() for k, v in next(detections).items()} for img in images)
    return out


def evaluate(
    model: Detector,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
) -> dict:
    """mAP@0.5, mAP@0.75 and mAP@[.5:.95] (pycocotools) and VOC07 11-point mAP@0.5, plus, from
    the same detections, the mixture-collapse and uncertainty-quality reports of
    :mod:`almdn.engine.quality` on the detections scoring at least ``conf_threshold``
    (``mixture_collapse``, ``uncertainty_quality``)."""
    predictions = predict(model, dataset, batch_size, device, progress=progress, desc="evaluate")
    targets = dataset.targets() if hasattr(dataset, "targets") else [dataset[i][1] for i in range(len(dataset))]
    metrics = evaluate_predictions(predictions, targets, model.num_classes - 1, max_dets=model.detections_per_img)
    metrics.update(quality_report(predictions, targets, conf_threshold))
    return metrics


def kept_mask(scores: torch.Tensor, conf_threshold: float) -> torch.Tensor:
    """Sec. 3.3's kept detections: those scoring at least ``conf_threshold``. The one filter
    of the library (:func:`kept_detections`, :func:`~almdn.acquisition.scoring.detections_frame`):
    the float32 scores are compared in float32, as numpy compares them with a Python float."""
    return scores >= conf_threshold


@dataclass
class KeptDetections:
    """The kept detections (score >= threshold) of a run of dataset items, as CPU columns.

    Attributes:
        index: ``(N, 3)`` int64: the dataset position of the detection's image, its index
            among that image's detections (before the threshold, as
            :func:`~almdn.acquisition.scoring.detections_frame` numbers them) and its label.
        values: ``(N, 10)`` float32, columns :attr:`VALUE_COLUMNS`.
        readable: ``(M,)`` bool, one per item scored: False for an unreadable image.
        num_detections: detections of these items before the threshold.
        mixture: when asked for, each kept detection's mixture, float32 ``(N, ...)`` per key of
            :data:`~almdn.models.postprocess.MIXTURE_KEYS` (component boxes, weights,
            variances and per-edge sigmas; class weights and probabilities); else None.
    """

    index: torch.Tensor
    values: torch.Tensor
    readable: torch.Tensor
    num_detections: int
    mixture: dict[str, torch.Tensor] | None = None

    INDEX_COLUMNS = ("position", "detection", "label")
    VALUE_COLUMNS = ("score", "x1", "y1", "x2", "y2", *UNCERTAINTY_NAMES, "cls_entropy")


def collate_pool(batch):
    """``(images, readable)``: the images stacked into one ``(B, 3, H, W)`` tensor when they
    are all readable and of one size (one pinned host-to-device copy per batch), else a list
    with None for unreadable ones; ``readable`` is a bool tensor per item."""
    images = [item[0] for item in batch]
    readable = torch.tensor([img is not None for img in images], dtype=torch.bool)
    if bool(readable.all()) and len({tuple(img.shape) for img in images}) == 1:
        return torch.stack(images), readable
    return images, readable


@torch.no_grad()
def kept_detections(
    model: Detector,
    dataset: Dataset,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    amp: str = "off",
    channels_last: bool = False,
    start: int = 0,
    stop: int | None = None,
    progress: bool = False,
    desc: str = "score",
    on_progress: ProgressHook | None = None,
    should_stop: StopHook | None = None,
    mixture: bool = False,
) -> KeptDetections:
    """Detections with ``score >= conf_threshold`` of dataset items ``[start, stop)``.

    The same detections, in the same order, as ``detections_frame(predict(...))`` over those
    items, without moving every mixture parameter of every detection to the CPU: per batch
    the needed columns are concatenated and thresholded on the device and copied back once.
    ``amp`` ("off", "bf16", "fp16") and ``channels_last`` apply on CUDA (see
    :mod:`almdn.engine.precision`). ``on_progress`` and ``should_stop``: see
    :func:`inference_batches`. ``mixture``: also return each kept detection's mixture
    (:attr:`KeptDetections.mixture`, what ``almdn score`` writes to ``detections.json``).
    """
    device = resolve_device(device)
    model.to(device).eval()
    precision = resolve_precision(amp, channels_last, device, model)
    if precision.note and distributed.is_main_process():
        warnings.warn(precision.note, stacklevel=2)
    apply_channels_last(model, precision)
    stop = len(dataset) if stop is None else stop
    items = dataset if (start, stop) == (0, len(dataset)) else Subset(dataset, range(start, stop))
    loader = DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_pool,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
    )
    value_keys = ("scores", "boxes", *UNCERTAINTY_NAMES, "cls_entropy")
    index_parts, value_parts, readable_parts, mixture_parts, total, offset = [], [], [], [], 0, start
    bar = inference_batches(loader, len(items), progress and distributed.is_main_process(), desc, on_progress, should_stop)
    for images, readable in bar:
        positions = offset + readable.nonzero().squeeze(1)
        offset += len(readable)
        readable_parts.append(readable)
        if torch.is_tensor(images):
            batch = list(images.to(device, non_blocking=True).unbind(0))
        else:
            batch = [img.to(device, non_blocking=True) for img in images if img is not None]
        if not batch:
            continue
        with mixed_precision(model, precision):
            detections = model(batch)
        counts = torch.tensor([len(d["labels"]) for d in detections])
        total += int(counts.sum())
        labels = torch.cat([d["labels"] for d in detections])
        columns = [torch.cat([d[k] for d in detections]) for k in value_keys]
        values = torch.cat([c[:, None] if c.dim() == 1 else c for c in columns], 1).float()
        keep = kept_mask(values[:, 0], conf_threshold).cpu()
        image = torch.repeat_interleave(torch.arange(len(counts)), counts)
        within = torch.arange(len(image)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        index_parts.append(torch.stack([positions[image[keep]], within[keep], labels.cpu()[keep]], 1))
        value_parts.append(values[keep.to(device)].cpu())
        if mixture:
            mixture_parts.append({key: torch.cat([d[key] for d in detections])[keep.to(device)].float().cpu() for key in MIXTURE_KEYS})
    index = torch.cat(index_parts) if index_parts else torch.zeros((0, 3), dtype=torch.long)
    values = torch.cat(value_parts) if value_parts else torch.zeros((0, len(KeptDetections.VALUE_COLUMNS)))
    readable = torch.cat(readable_parts) if readable_parts else torch.zeros(0, dtype=torch.bool)
    kept = KeptDetections(index, values, readable, total)
    if mixture:
        kept.mixture = {key: torch.cat([p[key] for p in mixture_parts]) for key in MIXTURE_KEYS} if mixture_parts else empty_mixture(model)
    return kept


def empty_mixture(model: Detector) -> dict[str, torch.Tensor]:
    """The :data:`~almdn.models.postprocess.MIXTURE_KEYS` of no detection of ``model``."""
    k, c = model.num_components, model.num_classes
    shapes = {"class_weights": (0, k), "class_probs": (0, k, c)}
    return {key: torch.zeros(shapes.get(key, (0, k, 4))) for key in MIXTURE_KEYS}
