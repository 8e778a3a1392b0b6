"""Use case: score the pool into the store (Sec. 3.3).

:func:`score_pool` runs a model over every pool image (the one scoring path,
:func:`almdn.acquisition.scoring.kept_pool_detections`, with its progress and cancellation
hooks, which ``almdn score`` runs too), lists the files it cannot read, and returns the
per-image table of the paper's score (:func:`almdn.acquisition.methods.paper_method`) and the
per-detection table;
:func:`write_scoring` stores them with that list. A round (:func:`almdn.workflow.run_round`),
a rescore of an existing model version (:func:`rescore`) and the CLI's ``almdn project score``
(:func:`score_checkpoint`) all go through these two, so the app and the CLI store the same
scores for the same model and pool, and both record the unreadable files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almdn.projects.rounds import RoundError, RoundSettings, unreadable_key
from almdn.projects.store import Store

log = logging.getLogger(__name__)


@dataclass
class PoolScoring:
    """The pool scored by one model: the store's two tables, the files it could not read, and
    the image embeddings the two-stage acquisition compares images by
    (:mod:`almdn.acquisition.batch`): ``embedding_ids`` (the readable pool images, then the
    labeled ones) and ``embeddings`` ``(N, D)`` float32, None for a model without a trunk
    (``embeddings_note`` says why)."""

    images: Any  # pandas.DataFrame, image_scores()
    detections: Any  # pandas.DataFrame, kept_pool_detections()
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # {"image_id", "path", "error"}
    seconds: float = 0.0
    embedding_ids: list[int] = field(default_factory=list)
    embeddings: Any = None  # numpy (N, D) float32
    embeddings_note: str = ""
    embedding_seconds: float = 0.0  # the share of ``seconds`` the embeddings cost
    class_mass: Any = None  # pandas.DataFrame (image_id, class_id, mass): the faint detections' per class


def score_pool(
    store: Store, model, settings: RoundSettings, progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None, progress_bar: bool = False, embeddings: bool = True,
) -> PoolScoring:
    """Score every pool image with ``model`` (Sec. 3.3); unreadable files are listed, skipped.

    ``settings`` gives the confidence threshold, the aggregation (Tab. 2), the batch size and
    the device. ``progress(fraction)`` after every batch; ``should_stop()`` before every batch
    (True: :class:`almdn.errors.Cancelled`); ``progress_bar``: a terminal progress bar.
    Returns the tables :meth:`Store.write_scores` takes; the z-scores are taken over the kept
    detections of the readable pool.

    With ``embeddings`` (an SSD: a backbone with ``forward_trunk``) it also keeps each image's
    embedding, the global-average-pooled last trunk map of
    :func:`almdn.acquisition.scoring.acquisition_features`: for the pool from the same forward
    pass as the detections (a hook on the trunk: each image is decoded and run once), then for
    the labeled images (one trunk pass each). Other models: none, with a logged note.
    """
    import numpy as np
    import pandas as pd
    import torch

    from almdn.acquisition.baselines import mean_entropy_scores
    from almdn.acquisition.batch import class_mass
    from almdn.acquisition.methods import PoolInputs, paper_method
    from almdn.acquisition.scoring import kept_pool_detections
    from almdn.engine.inference import kept_mask
    from almdn.data.images import ImageFolderDataset

    t0 = time.perf_counter()
    pool = store.images("pool")
    dataset = ImageFolderDataset(pool["path"].tolist(), sizes=list(zip(pool["width"], pool["height"])))
    dataset.image_ids = [int(i) for i in pool["image_id"]]  # detections carry the store's ids
    backbone = getattr(model, "backbone", None)
    trunk = getattr(backbone, "trunk", None)
    note = ""
    if embeddings and not (hasattr(backbone, "forward_trunk") and isinstance(trunk, torch.nn.Module)):
        note = (f"No image embeddings kept for {type(model).__name__} (it has no SSD trunk): the acquisition methods that compare "
                "images (almdn+kcenter, almdn+kcenter_balanced, typiclust) need an SSD model.")
        log.info(note)
        embeddings = False
    labeled = store.images("labeled") if embeddings else pool.iloc[:0]
    share = len(pool) / max(len(pool) + len(labeled), 1)  # of the progress, the pool's part
    pooled: list[Any] = []
    hook_seconds = [0.0]

    def keep_embedding(module, inputs, output) -> None:
        t = time.perf_counter()
        pooled.append(list(output)[-1].mean(dim=(2, 3)).float().cpu())
        hook_seconds[0] += time.perf_counter() - t

    hook = trunk.register_forward_hook(keep_embedding) if embeddings else None
    try:
        # the one scoring path (almdn score's too): kept detections, boxes in the images' own pixels
        # one pass at the lower threshold: the kept detections are its rows at the confidence
        # threshold (numbered before any threshold, so the same rows as a pass at it)
        faint, readable = kept_pool_detections(
            model, dataset, settings.scoring_low_threshold, int(settings.score_batch_size), settings.device, progress=progress_bar,
            on_progress=(lambda done, total: progress(share * done / max(total, 1))) if progress is not None else None, should_stop=should_stop,
        )
    finally:
        if hook is not None:
            hook.remove()
    ok = np.flatnonzero(readable).tolist()
    unreadable = [
        # the file is read once more for its sentence: only the few broken ones are
        {"image_id": dataset.image_ids[i], "error": dataset[i][1].get("error", "unreadable"), "path": str(dataset.file_paths[i])}
        for i in np.flatnonzero(~readable).tolist()
    ]
    ids = [dataset.image_ids[i] for i in ok]
    detections = faint[kept_mask(faint["score"].to_numpy(dtype=np.float32), float(settings.conf_threshold))].reset_index(drop=True)
    table = paper_method(settings.aggregation).score(PoolInputs(ids, detections=detections)).table
    # entropy_weighted's score from the faint detections too, so the images without a sure one are ranked
    table["entropy_weighted"] = mean_entropy_scores(faint, ids, score_weighted=True).to_numpy()
    # and the classes those faint detections hold, which entropy_weighted+balance balances by
    mass = class_mass(faint, ids, len(store.classes()))
    rows, cols = np.nonzero(mass)
    faint_mass = pd.DataFrame({"image_id": np.asarray(ids, dtype=np.int64)[rows], "class_id": cols + 1, "mass": mass[rows, cols]})
    scoring = PoolScoring(table, detections, unreadable, 0.0, embeddings_note=note, class_mass=faint_mass)
    if embeddings:
        vectors = torch.cat(pooled) if pooled else torch.zeros(0, 0)
        if len(vectors) != len(ids):  # the trunk ran other than once per readable image: keep none
            scoring.embeddings_note = f"No image embeddings kept: the trunk gave {len(vectors)} for {len(ids)} scored images."
            log.warning(scoring.embeddings_note)
        else:
            t1 = time.perf_counter()
            lab_ids, lab_vectors = _labeled_embeddings(
                model, labeled, int(settings.score_batch_size), settings.device, should_stop,
                (lambda f: progress(share + (1 - share) * f)) if progress is not None else None)
            scoring.embedding_ids = ids + lab_ids
            parts = [v for v in (vectors, lab_vectors) if len(v)]
            scoring.embeddings = torch.cat(parts).numpy().astype("float32") if parts else None
            scoring.embedding_seconds = hook_seconds[0] + time.perf_counter() - t1
    scoring.seconds = time.perf_counter() - t0
    return scoring


def _labeled_embeddings(model, labeled, batch_size: int, device, should_stop, progress) -> tuple[list[int], Any]:
    """The labeled images' embeddings (readable ones; the same vector as
    :func:`~almdn.acquisition.scoring.acquisition_features`), through the one inference loop."""
    import torch
    from torch.utils.data import DataLoader

    from almdn.data.coco import collate_detection
    from almdn.data.images import ImageFolderDataset
    from almdn.engine.checkpoint import resolve_device
    from almdn.engine.inference import inference_batches

    if not len(labeled):
        return [], torch.zeros(0, 0)
    dataset = ImageFolderDataset(labeled["path"].tolist(), sizes=list(zip(labeled["width"], labeled["height"])))
    image_ids = [int(i) for i in labeled["image_id"]]
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)
    ids, chunks, start = [], [], 0
    hook = (lambda done, total: progress(done / max(total, 1))) if progress is not None else None
    with torch.no_grad():
        for images, _ in inference_batches(loader, len(dataset), desc="embed", on_progress=hook, should_stop=should_stop):
            readable = [(image_ids[start + j], img) for j, img in enumerate(images) if img is not None]
            start += len(images)
            if readable:
                ids += [i for i, _ in readable]
                chunks.append(model.image_features([img.to(device) for _, img in readable]).float().cpu())
    return ids, torch.cat(chunks) if chunks else torch.zeros(0, 0)


def write_scoring(store: Store, model_version: int, scoring: PoolScoring, settings: RoundSettings) -> None:
    """The scores, the list of unreadable pool files and the image embeddings, in one transaction."""
    with store.transaction():
        store.write_scores(model_version, scoring.images, scoring.detections, aggregation=settings.aggregation, conf_threshold=float(settings.conf_threshold),
                           low_threshold=settings.scoring_low_threshold, class_mass=scoring.class_mass)
        store.set_meta(unreadable_key(model_version), json.dumps(scoring.unreadable))
        if scoring.embeddings is not None:  # else none: write_scores dropped an earlier scoring's
            store.write_embeddings(model_version, scoring.embedding_ids, scoring.embeddings)


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
