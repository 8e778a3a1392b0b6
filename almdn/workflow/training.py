"""Use case: run a round (train a model version on the labeled set, evaluate it on the test
split, score the pool with it, record all of it in the store).

This is the app's "Retrain" (as a background job, :func:`retrain_job`) and the step after
every batch of labels comes back from Label Studio. By default a round trains like every cycle
of the paper's protocol (and of :mod:`almdn.experiments.runner`): from the same initial weights (the seed's,
with the pretrained backbone) and the same schedule as the previous version, so that the
difference between two versions' mAP is the labels that were added, not extra training.
Fine-tuning from the latest model version (``start_from="previous"``) is an explicit choice.

Nothing reaches the store before the round is complete: the new model version, its metrics,
the exact labeled set it was trained on, a new round and the pool's scores are written in one
transaction at the end. A cancelled or failed round leaves the store as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from almdn.errors import Cancelled
from almdn.models.anchors import DEFAULT_MIN_COVERAGE
from almdn.projects.rounds import RoundError, RoundResult, RoundSettings
from almdn.projects.store import Store
from almdn.workflow.project import anchor_coverage_warning, report_warning
from almdn.workflow.scoring import score_pool, write_scoring


def _no_progress(fraction: float, stage: str | None = None) -> None:
    pass


def _test_dataset(store: Store, folder: Path, classes: list[str]):
    from almdn.data.coco import CocoDetectionDataset

    if not store.image_ids("test"):
        return None
    path = store.export_coco("test", folder / "test.json")
    return CocoDetectionDataset(path, class_names=classes)


def _initial_model(store: Store, settings: RoundSettings, classes: list[str], train_set=None, progress=_no_progress) -> tuple[Any, int | None, str | None]:
    """The model to train: the latest compatible model version's (warm start; it keeps the
    anchors it was trained with) or a new one from the settings' starting point (with the
    anchors fitted to the labeled boxes when the settings say so). Returns (model, the version
    it was warm-started from or None, the anchor fit's sentence or None); without ``train_set``
    nothing is fitted."""
    from almdn.engine.checkpoint import CheckpointError, checkpoint_model, read_checkpoint
    from almdn.engine.fit import AnchorFitError, build_starting_model

    options = settings.model_options()
    wanted = {**options, "image_size": options.get("image_size"), "class_names": classes}
    versions = store.model_versions()
    if settings.start_from == "previous" and not versions.empty:
        checkpoint = str(versions.iloc[-1]["checkpoint"])
        try:
            payload = read_checkpoint(checkpoint)
        except CheckpointError:
            payload = None  # a checkpoint moved away: start fresh rather than fail
        if payload is not None:
            config = payload.get("model_config")
            if isinstance(config, dict) and all(config.get(k) == v for k, v in wanted.items()):
                model = checkpoint_model(payload, checkpoint)  # a bad config or weights: one sentence
                return model, int(versions.iloc[-1]["model_version_id"]), None
    fit_to = train_set if settings.fit_anchors else None
    if fit_to is not None:
        progress(0.0, f"fitting the anchors to the boxes of {len(train_set)} labeled images")
    try:
        # the initial weights are a function of the seed; coco or a weights file is loaded into them
        started = build_starting_model(
            class_names=classes, init=settings.init, seed=int(settings.seed), fit_anchors_to=fit_to, **options,
        )
    except AnchorFitError as exc:  # no boxes to fit to
        raise RoundError(f"{exc} Turn off 'Fit anchors to the labeled boxes' or label some boxes.") from None
    except ValueError as exc:  # an input size the architecture cannot take
        raise RoundError(f"The round settings do not build a model: {exc}") from None
    return started.model, None, started.anchor_fit


def _round_folder(store: Store) -> Path:
    """A new folder for a round's exported labels and model, under the project's ``models``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = store.path.parent / "models" / f"{stamp}-{os.getpid()}"
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o700)  # the exported labels and the model: private to the user
    return folder


def run_round(
    store: Store,
    settings: RoundSettings | None = None,
    progress: Callable[[float, str | None], None] = _no_progress,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    note: str = "",
    on_warning: Callable[[str], None] | None = None,
    min_anchor_coverage: float | None = DEFAULT_MIN_COVERAGE,
) -> RoundResult:
    """Train a new model version on the store's labeled split, evaluate it on the test split,
    score the pool and record everything (one transaction at the end).

    Args:
        settings: default: the project's saved :class:`RoundSettings`.
        progress: ``progress(fraction of the round, stage or None)``; training takes the first
            80 %, evaluation and scoring the rest.
        on_metrics: called with every logged training step (iteration, total, loss, lr, ...).
        should_stop: polled between steps; True cancels the round (:class:`almdn.errors.Cancelled`).
        on_warning, min_anchor_coverage: the small-object check of the labeled boxes for the
            round's model as built (anchors fitted when the settings say so), before training
            (:func:`almdn.workflow.project.anchor_coverage_warning`; None skips it). The warning
            is kept in :attr:`RoundResult.warnings` (the app's Train page shows it) and goes to
            ``on_warning``, else it is issued as an ``AnchorCoverageWarning``.

    Raises:
        RoundError: no labeled images, no classes, or bad settings (one sentence).
        Cancelled: ``should_stop`` said so; nothing was recorded.
    """
    from almdn.data.coco import CocoDetectionDataset
    from almdn.engine.fit import train_evaluate_save

    t_start = time.perf_counter()
    settings = (settings or RoundSettings.load(store)).check()
    classes = store.classes()
    if not classes:
        raise RoundError("The project has no classes; add a labeled dataset first (Projects page).")
    labeled = store.labeled_image_ids()
    if not labeled:
        raise RoundError("No image is labeled yet; label some in Label Studio and import them before training.")
    folder = _round_folder(store)
    recorded = False
    try:
        progress(0.0, f"exporting {len(labeled)} labeled images")
        train_file = store.export_coco("labeled", folder / "train.json", image_ids=labeled)
        train_set = CocoDetectionDataset(train_file, class_names=classes)
        model, warm_from, anchor_fit = _initial_model(store, settings, classes, train_set, progress)
        extra: dict[str, Any] = {"warm_start_from": warm_from, "settings": dataclasses.asdict(settings)}
        if anchor_fit is not None:
            extra["anchor_fit"] = anchor_fit
        warning = anchor_coverage_warning(store, settings, model=model, data=train_set, min_coverage=min_anchor_coverage) if min_anchor_coverage is not None else None
        report_warning(warning, on_warning)
        previous = store.latest_model_version()
        previous_metrics = dict(store.model_version(previous)["metrics"]) if previous is not None else {}
        config = settings.train_config()
        progress(0.0, f"training on {len(labeled)} images ({config.iterations} iterations"
                      + (f", from model version {warm_from})" if warm_from is not None else ")"))
        test_set = _test_dataset(store, folder, classes)

        def callback(iteration: int, total: int, entry: dict[str, float]) -> bool:
            if on_metrics is not None:
                on_metrics({**entry, "total": total})
            progress(0.8 * (iteration / total), None)
            if iteration == total and test_set is not None:
                progress(0.8, f"evaluating on {len(test_set)} test images")
            return not (should_stop is not None and should_stop())

        fitted = train_evaluate_save(
            model, train_set, config, folder, test_set=test_set, device=settings.device, resume=False, progress=False, callback=callback,
            conf_threshold=settings.conf_threshold, extra_metrics=extra, min_anchor_coverage=None,  # checked above, with the settings' advice
        )
        if should_stop is not None and should_stop():
            raise Cancelled()
        n_pool = len(store.image_ids("pool"))
        progress(0.9, f"scoring {n_pool} pool images")
        scoring = score_pool(store, model, settings, progress=lambda f: progress(0.9 + 0.08 * f, None), should_stop=should_stop) if n_pool else None
        progress(0.99, "recording the model version")
        with store.transaction():
            round_id = store.start_round(note or f"retrain on {len(labeled)} labeled images")
            mv = store.record_model_version(
                fitted.checkpoint.resolve(), fitted.metrics, labeled_image_ids=labeled, round_id=round_id, class_names=list(model.class_names))
            if scoring is not None:
                write_scoring(store, mv, scoring, settings)
        recorded = True
    finally:
        if not recorded:
            shutil.rmtree(folder, ignore_errors=True)
    name = str(store.model_version(mv)["name"])
    return RoundResult(
        model_version=mv, name=name, metrics=_plain(fitted.metrics), previous_model_version=previous, previous_metrics=_plain(previous_metrics),
        num_labeled=len(labeled), num_scored=len(scoring.images) if scoring is not None else 0,
        unreadable=scoring.unreadable if scoring is not None else [], train_seconds=fitted.result.seconds,
        seconds=time.perf_counter() - t_start, checkpoint=str(fitted.checkpoint), warnings=[warning] if warning else [],
    )


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy scalars to floats, keys to strings)."""
    return json.loads(json.dumps(metrics, default=float))


def retrain_job(context, settings: dict[str, Any] | None = None, project_dir: str | None = None) -> dict[str, Any]:
    """The app's "Retrain" as a background job (:mod:`almdn.projects.jobs`), with the project's saved
    settings changed by ``settings`` (the tests' short and long schedules); a cancelled round
    ends the job as cancelled (the same :class:`almdn.errors.Cancelled`). The result carries
    the round's ``warnings``, which the app's job panel shows, and its
    :meth:`~almdn.projects.rounds.RoundResult.summary` (``almdn project retrain`` prints the same sentence)."""
    project_dir = Path(project_dir) if project_dir else context.folder.parent.parent
    with Store.open(project_dir, create=False) as store:
        chosen = RoundSettings.load(store).replace(**settings) if settings else None
        result = run_round(store, chosen, progress=context.progress, on_metrics=context.log_metrics, should_stop=context.cancelled)
    return {**result.to_dict(), "summary": result.summary()}
