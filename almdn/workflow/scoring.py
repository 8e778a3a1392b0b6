"""Use case: score the pool into the store (Sec. 3.3).

:func:`score_pool` runs a model over every pool image (the one inference loop,
:func:`almdn.engine.inference.predict`, with its progress and cancellation hooks), lists the
files it cannot read, and returns the per-image and per-detection tables;
:func:`write_scoring` stores them with that list. A round (:func:`almdn.workflow.run_round`),
a rescore of an existing model version (:func:`rescore`) and the CLI's ``almdn project score``
(:func:`score_checkpoint`) all go through these two, so the app and the CLI store the same
scores for the same model and pool, and both record the unreadable files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almdn.rounds import RoundError, RoundSettings, unreadable_key
from almdn.store import Store


@dataclass
class PoolScoring:
    """The pool scored by one model: the store's two tables and the files it could not read."""

    images: Any  # pandas.DataFrame, image_scores()
    detections: Any  # pandas.DataFrame, detections_frame()
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # {"image_id", "path", "error"}
    seconds: float = 0.0


def score_pool(
    store: Store, model, settings: RoundSettings, progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None, progress_bar: bool = False,
) -> PoolScoring:
    """Score every pool image with ``model`` (Sec. 3.3); unreadable files are listed, skipped.

    ``settings`` gives the confidence threshold, the aggregation (Tab. 2), the batch size and
    the device. ``progress(fraction)`` after every batch; ``should_stop()`` before every batch
    (True: :class:`almdn.errors.Cancelled`); ``progress_bar``: a terminal progress bar.
    Returns the tables :meth:`Store.write_scores` takes; the z-scores are taken over the kept
    detections of the readable pool.
    """
    from almdn.acquisition.scoring import detections_frame, image_scores
    from almdn.data.images import ImageFolderDataset, restore_boxes
    from almdn.engine.inference import predict

    t0 = time.perf_counter()
    pool = store.images("pool")
    dataset = ImageFolderDataset(pool["path"].tolist(), sizes=list(zip(pool["width"], pool["height"])))
    dataset.image_ids = [int(i) for i in pool["image_id"]]  # detections carry the store's ids
    predictions = predict(
        model, dataset, batch_size=int(settings.score_batch_size), device=settings.device, progress=progress_bar, desc="score",
        on_progress=(lambda done, total: progress(done / max(total, 1))) if progress is not None else None, should_stop=should_stop,
    )
    ok = [i for i, p in enumerate(predictions) if p is not None]
    unreadable = [
        # the file is read once more for its sentence: only the few broken ones are
        {"image_id": dataset.image_ids[i], "error": dataset[i][1].get("error", "unreadable"), "path": str(dataset.file_paths[i])}
        for i, p in enumerate(predictions) if p is None
    ]
    ids = [dataset.image_ids[i] for i in ok]
    # a large image was decoded reduced: its boxes go back to its own pixels
    detections = detections_frame([restore_boxes(predictions[i], dataset.box_scale(i)) for i in ok], ids, float(settings.conf_threshold))
    table = image_scores(detections, ids, settings.aggregation)
    return PoolScoring(table, detections, unreadable, time.perf_counter() - t0)


def write_scoring(store: Store, model_version: int, scoring: PoolScoring, settings: RoundSettings) -> None:
    """The scores and the list of unreadable pool files, in one transaction."""
    with store.transaction():
        store.write_scores(model_version, scoring.images, scoring.detections, aggregation=settings.aggregation, conf_threshold=float(settings.conf_threshold))
        store.set_meta(unreadable_key(model_version), json.dumps(scoring.unreadable))


def rescore(store: Store, model_version: int | None = None, settings: RoundSettings | None = None) -> PoolScoring:
    """Score the current pool again with an existing model version (e.g. after new images
    were added) and replace that version's scores."""
    from almdn.engine.checkpoint import load_model

    settings = (settings or RoundSettings.load(store)).check()
    mv = store.latest_model_version() if model_version is None else int(model_version)
    if mv is None:
        raise RoundError("No model yet: train one first (Train page).")
    model = load_model(store.model_version(mv)["checkpoint"])
    scoring = score_pool(store, model, settings)
    write_scoring(store, mv, scoring, settings)
    return scoring


@dataclass
class CheckpointScoring:
    """What :func:`score_checkpoint` recorded."""

    model_version: int
    scoring: PoolScoring


def score_checkpoint(store: Store, checkpoint: str | os.PathLike[str], settings: RoundSettings, progress_bar: bool = False) -> CheckpointScoring:
    """Record a model trained elsewhere (``almdn train``'s ``model.pt``) as a model version of
    the project and score the pool with it: the version, its scores and the unreadable files
    in one transaction, so a crash (even kill -9) never leaves a version without its scores."""
    from almdn.engine.checkpoint import load_model, read_checkpoint

    settings = settings.check()
    model = load_model(checkpoint, device="cpu")
    metrics = read_checkpoint(checkpoint).get("metrics") or {}
    if not store.image_ids("pool"):
        raise RoundError("The pool is empty: there is nothing to score.")
    scoring = score_pool(store, model, settings, progress_bar=progress_bar)
    with store.transaction():
        mv = store.record_model_version(Path(checkpoint).resolve(), metrics, class_names=list(model.class_names))
        write_scoring(store, mv, scoring, settings)
    return CheckpointScoring(mv, scoring)
