"""Use case: the review queue of the labeled images (issue 22): which labels look wrong.

:func:`review_queue` takes the project's labeled split (its current labels, exported as a
round exports them), runs a model over it at confidence 0 (everything the detector keeps, so
that a label no detection covers at any confidence is seen), scores every label and every
confident detection with :func:`almdn.review.scoring.label_quality` (missing box, wrong class,
loose box, spurious label) and returns the flagged items ranked, with image file names and
class names.

Which model scores which image:

- ``folds=0`` (in sample): the project's current model version on every labeled image. Quick
  (inference only), but that model was trained on these labels, wrong ones included, and
  agrees with them: it hides the errors it memorised (the ``seen_by_model`` column says
  which images it was trained on).
- ``folds=k`` (out of fold, k >= 2): k models, each trained with the project's saved round
  settings (:class:`almdn.projects.rounds.RoundSettings`: architecture, schedule, seed, initial weights,
  fitted anchors; always from the initial weights, never from a model that saw every image) on
  the images of the other k - 1 folds (:func:`almdn.review.folds.out_of_fold`), and each scores
  only its own fold's images: no model scores an image it was trained on. It costs k
  trainings; the models are temporary (``<project>/review/``, removed afterwards) and nothing
  is written to the store.

Like a round, it reports ``progress(fraction, stage or None)`` and polls ``should_stop()``
(True: :class:`almdn.errors.Cancelled`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from almdn.errors import Cancelled, InvalidChoice, UserError
from almdn.registry import DEFAULT_CONF_THRESHOLD
from almdn.review.folds import Fold, out_of_fold, out_of_fold_detections
from almdn.review.scoring import BOX_COLUMNS, DEFAULT_SCORING, KIND_NAMES, KINDS, SCORINGS, label_quality, labels_frame
from almdn.projects.rounds import RoundSettings
from almdn.projects.store import Store

#: Items per kind in the queue unless asked otherwise.
DEFAULT_TOP_K: int = 20
#: Detections kept with a queue for drawing (:func:`find_label_errors`): the low-score ones would bury
#: the image, and the rules judge labels by confident detections anyway.
DRAW_THRESHOLD: float = 0.3
#: The columns of :func:`review_queue`'s frame.
QUEUE_COLUMNS: tuple[str, ...] = (
    "rank", "kind", "kind_name", "image_id", "file_name", "class_name", "other_class_name", "label_index", "detection",
    *BOX_COLUMNS, "iou", "score", "review_score", "fold", "seen_by_model", "path",
)


def _no_progress(fraction: float, stage: str | None = None) -> None:
    pass


def _check_choices(kind: str | None, scoring: str, folds: int, top_k: int | None) -> None:
    if kind is not None and kind not in KINDS:
        raise InvalidChoice(f"Unknown kind of label error '{kind}'; choose one of {', '.join(KINDS)}.")
    if scoring not in SCORINGS:
        raise InvalidChoice(f"Unknown review scoring '{scoring}'; choose one of {', '.join(SCORINGS)}.")
    if int(folds) < 0 or int(folds) == 1:
        raise InvalidChoice(f"--folds {folds} is not possible: 0 scores with the current model, 2 or more trains that many out-of-fold models.")
    if top_k is not None and int(top_k) < 1:
        raise InvalidChoice(f"--top-k {top_k} is not possible: ask for at least 1 item.")


def review_queue(
    project: str | os.PathLike[str] | Store,
    kind: str | None = None,
    top_k: int | None = DEFAULT_TOP_K,
    folds: int = 0,
    *,
    scoring: str = DEFAULT_SCORING,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    settings: RoundSettings | None = None,
    seed: int | None = None,
    progress: Callable[[float, str | None], None] = _no_progress,
    should_stop: Callable[[], bool] | None = None,
    include_test: bool = False,
) -> pd.DataFrame:
    """The ranked review queue of the project's labeled images.

    Args:
        project: the project folder (or its open store).
        kind: one of :data:`almdn.review.scoring.KINDS` (``missing``, ``class``, ``loose``,
            ``spurious``), or None for every kind.
        top_k: the highest ``top_k`` items of each kind (None: every flagged item).
        folds: 0 scores with the current model version (in sample); k >= 2 trains k
            out-of-fold models with the project's round settings (see the module docstring).
        scoring: which of :data:`almdn.review.scoring.SCORINGS` ranks the items.
        conf_threshold: a detection at or above this score is confident (the missing-box,
            wrong-class and loose-box rules); the model runs at threshold 0 regardless.
        settings: the round settings the out-of-fold models train with, the batch size and
            device of the inference (default: the project's saved ones).
        seed: the folds' split (default: the settings' seed).
        progress, should_stop: as :func:`almdn.workflow.run_round`'s.
        include_test: the test split's labels too, only on this explicit request (a changed
            test label dates every earlier model's test mAP), scored by the current model
            (never trained on them; in sample only).

    Returns:
        One row per flagged item (:data:`QUEUE_COLUMNS`), kind by kind (in ``KINDS`` order),
        highest ``review_score`` first; ``rank`` counts from 1 within each kind. The box
        (x1..y2, the store's pixels) is the label's, for a missing box the detection's;
        ``class_name`` is the label's class (missing box: the detected class),
        ``other_class_name`` the detected class of a wrong-class label. ``fold``: the
        out-of-fold model that scored the image (missing in sample); ``seen_by_model``: that
        model was trained on the image (in sample: the current model's training set). The
        frame's ``attrs`` hold ``folds`` (the :class:`almdn.review.folds.Fold` list, empty in
        sample), ``model_version`` (in sample), ``scoring`` and ``num_labeled``.

    Raises:
        UserError: no labeled image, no model version (in sample), fewer labeled images than
            folds, or an unknown kind or scoring (one sentence).
        Cancelled: ``should_stop`` said so; nothing was written.
    """
    _check_choices(kind, scoring, folds, top_k)
    if isinstance(project, Store):
        return _review_queue(project, kind, top_k, int(folds), scoring, conf_threshold, settings, seed, progress, should_stop, include_test)[0]
    with Store.open(project, create=False) as store:
        return _review_queue(store, kind, top_k, int(folds), scoring, conf_threshold, settings, seed, progress, should_stop, include_test)[0]


def find_label_errors(
    project: str | os.PathLike[str] | Store,
    folds: int = 0,
    *,
    scoring: str = DEFAULT_SCORING,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    draw_threshold: float = DRAW_THRESHOLD,
    settings: RoundSettings | None = None,
    seed: int | None = None,
    progress: Callable[[float, str | None], None] = _no_progress,
    should_stop: Callable[[], bool] | None = None,
    include_test: bool = False,
) -> pd.DataFrame:
    """Every flagged item of the labeled images (:func:`review_queue` with no ``top_k``), kept in
    the store (:meth:`~almdn.projects.store.Store.write_review_queue`) with the model's
    detections at or above ``draw_threshold`` on the queued images (store pixels; the Review
    page draws them beside the labels). Returns the queue; nothing is kept when cancelled."""
    _check_choices(None, scoring, folds, None)
    if not isinstance(project, Store):
        with Store.open(project, create=False) as store:
            return find_label_errors(store, folds, scoring=scoring, conf_threshold=conf_threshold, draw_threshold=draw_threshold,
                                     settings=settings, seed=seed, progress=progress, should_stop=should_stop, include_test=include_test)
    queue, detections = _review_queue(project, None, None, int(folds), scoring, conf_threshold, settings, seed, progress, should_stop, include_test)
    detections = detections[(detections["score"] >= float(draw_threshold)) & detections["image_id"].isin(queue["image_id"])]
    project.write_review_queue(queue, detections.reset_index(drop=True), model_version=queue.attrs["model_version"], folds=int(folds),
                               scoring=scoring, conf_threshold=float(conf_threshold), num_labeled=queue.attrs["num_labeled"])
    return queue


def review_job(context, project_dir: str | None = None, folds: int = 0, scoring: str = DEFAULT_SCORING) -> dict[str, Any]:
    """The Review page's "Find label errors" as a background job (:mod:`almdn.projects.jobs`),
    in the manner of :func:`almdn.workflow.training.retrain_job`: progress, cancel, and a
    one-sentence ``summary``."""
    project_dir = Path(project_dir) if project_dir else context.folder.parent.parent
    queue = find_label_errors(project_dir, int(folds), scoring=scoring, progress=context.progress, should_stop=context.cancelled)
    counts = queue["kind"].value_counts() if len(queue) else pd.Series(dtype=int)
    found = ", ".join(f"{int(counts[k])} {KIND_NAMES[k]}" for k in KINDS if k in counts) or "nothing that looks wrong"
    how = f"{int(folds)} out-of-fold models" if folds else "the current model (in sample)"
    return {"summary": f"{queue['image_id'].nunique() if len(queue) else 0} of {queue.attrs['num_labeled']} labeled images flagged by {how}: {found}.",
            "items": int(len(queue))}


def _review_queue(store: Store, kind, top_k, folds, scoring, conf_threshold, settings, seed, progress, should_stop,
                  include_test: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    from almdn.data.coco import CocoDetectionDataset

    settings = (settings or RoundSettings.load(store)).check()
    classes = store.classes()
    labeled = store.labeled_image_ids()
    if not labeled or not classes:
        raise UserError("The project has no labeled images to review; label some in Label Studio and pull them first.")
    model_version = None
    if folds == 0:
        model_version = store.latest_model_version()
        if model_version is None:
            raise UserError("The project has no model yet to review its labels with; train one first (almdn's Train page, "
                            "or a round), or review out of fold with --folds 4.")
    elif folds > len(labeled):
        raise UserError(f"{folds} folds need at least {folds} labeled images; the project has {len(labeled)}: use fewer folds.")
    if include_test and folds:
        raise UserError("Test labels are reviewed with the current model (--folds 0), which was never trained on them; leave out --folds.")
    if include_test:
        labeled = labeled + store.image_ids("test")
    folder = store.path.parent / "review" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # the exported labels and the fold models: private
    try:
        progress(0.0, f"exporting {len(labeled)} labeled images")
        data = CocoDetectionDataset(store.export_coco("labeled", folder / "labeled.json", image_ids=labeled), class_names=classes)
        if folds == 0:
            detections, fold_list, seen = _in_sample(store, model_version, data, settings, progress, should_stop)
        else:
            detections, fold_list, seen = _out_of_fold(data, classes, folds, settings, seed, folder, progress, should_stop)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    progress(0.99, "scoring the labels")
    labels = labels_frame(data.targets(), list(data.image_ids))
    items = label_quality(detections, labels, conf_threshold=float(conf_threshold), kinds=[kind] if kind else KINDS)
    fold_by_image = {i: f.index for f in fold_list for i in f.score_ids}
    if fold_list:  # out of fold: did the model that scored an image train on it? (never, by construction)
        seen = {i for f in fold_list for i in f.score_ids if i in set(f.train_ids)}
    queue = _queue(store, items, data, classes, scoring, top_k, seen, fold_by_image)
    queue.attrs.update(folds=fold_list, model_version=model_version, scoring=scoring, num_labeled=len(labeled))
    progress(1.0, None)
    return queue, _in_store_pixels(detections, data, classes)


def _in_store_pixels(detections: pd.DataFrame, data, classes: list[str]) -> pd.DataFrame:
    """The detections with class names, their boxes in the store's pixels (a large image was decoded reduced)."""
    out = detections[["image_id", "label", "score", *BOX_COLUMNS]].copy()
    if len(out):
        scale = np.array([data.decode_scale(data.index_of(int(i))) for i in out["image_id"]], dtype=np.float64).reshape(-1, 2)
        for j, column in enumerate(BOX_COLUMNS):
            out[column] = out[column].to_numpy(dtype=np.float64) / scale[:, j % 2]
    out.insert(1, "class_name", np.array(["", *classes], dtype=object)[out["label"].to_numpy(dtype=np.int64)])
    return out.drop(columns="label").reset_index(drop=True)


def _detections(model, data, settings: RoundSettings, progress: Callable[[float], None] | None, should_stop) -> pd.DataFrame:
    """Everything the detector keeps on ``data`` (threshold 0), through the one inference loop."""
    from almdn.acquisition.scoring import detections_frame
    from almdn.engine.inference import predict

    predictions = predict(
        model, data, batch_size=int(settings.score_batch_size), device=settings.device, desc="review",
        on_progress=(lambda done, total: progress(done / max(total, 1))) if progress is not None else None, should_stop=should_stop,
    )
    return detections_frame(predictions, list(data.image_ids), conf_threshold=0.0)


def _in_sample(store: Store, model_version: int, data, settings, progress, should_stop):
    from almdn.engine.checkpoint import load_model

    model = load_model(store.model_version(model_version)["checkpoint"], device="cpu")
    progress(0.0, f"running model version {model_version} over {len(data)} labeled images")
    detections = _detections(model, data, settings, lambda f: progress(0.95 * f, None), should_stop)
    return detections, [], set(store.training_set(model_version))


def fresh_model(settings: RoundSettings, classes: list[str]):
    """A round's model before training: the seed's initial weights with the settings' starting
    point (:attr:`RoundSettings.init`), never a trained model version's."""
    import torch

    from almdn.models import build_model
    from almdn.models.pretrained import apply_init, init_build_options
    from almdn.projects.rounds import RoundError

    torch.manual_seed(int(settings.seed))
    try:
        model = build_model(num_classes=len(classes), class_names=classes, **settings.model_options(),
                            **init_build_options(settings.arch, settings.head, settings.init))
    except ValueError as exc:  # an input size the architecture cannot take
        raise RoundError(f"The round settings do not build a model: {exc}") from None
    apply_init(model, settings.init, settings.arch)
    return model


def _out_of_fold(data, classes, k: int, settings: RoundSettings, seed, folder: Path, progress, should_stop):
    from almdn.engine.fit import train_evaluate_save
    from almdn.projects.rounds import RoundError

    fold_list: list[Fold] = out_of_fold(list(data.image_ids), k, int(settings.seed if seed is None else seed))
    config = settings.train_config()
    frames = []
    share = 0.98 / len(fold_list)
    for fold in fold_list:
        start = fold.index * share
        if should_stop is not None and should_stop():
            raise Cancelled()
        train_set = data.subset([data.index_of(i) for i in fold.train_ids])
        scored = data.subset([data.index_of(i) for i in fold.score_ids])
        model = fresh_model(settings, classes)
        if settings.fit_anchors:
            try:
                settings.fit_model_anchors(model, train_set)
            except ValueError as exc:  # no boxes to fit to
                raise RoundError(f"{exc} Turn off 'Fit anchors to the labeled boxes' or label some boxes.") from None
        progress(start, f"out-of-fold model {fold.index + 1}/{len(fold_list)}: training on {len(train_set)} images "
                        f"({config.iterations} iterations)")

        def callback(iteration: int, total: int, entry: dict[str, float], start: float = start) -> bool:
            progress(start + 0.9 * share * iteration / max(total, 1), None)
            return not (should_stop is not None and should_stop())

        train_evaluate_save(model, train_set, config, folder / f"fold-{fold.index}", test_set=None, device=settings.device, resume=False,
                            progress=False, callback=callback, conf_threshold=settings.conf_threshold, min_anchor_coverage=None)
        progress(start + 0.9 * share, f"out-of-fold model {fold.index + 1}/{len(fold_list)}: scoring its {len(scored)} images")
        frames.append(_detections(model, scored, settings, lambda f, start=start: progress(start + share * (0.9 + 0.1 * f), None), should_stop))
    return out_of_fold_detections(frames, fold_list, model_column="model"), fold_list, set()


def _queue(store: Store, items: pd.DataFrame, data, classes: list[str], scoring: str, top_k: int | None, seen: set[int],
           fold_by_image: dict[int, int]) -> pd.DataFrame:
    """The flagged items ranked by ``scoring``, top ``top_k`` per kind, with names and the store's pixels."""
    if items.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUEUE_COLUMNS})
    items = items.copy()
    items["review_score"] = items[scoring].astype(float)
    items["kind_order"] = items["kind"].map({k: i for i, k in enumerate(KINDS)})
    items = items.sort_values(["kind_order", "review_score", "image_id", "label_index", "detection"],
                              ascending=[True, False, True, True, True], kind="mergesort", na_position="first")
    items["rank"] = items.groupby("kind", sort=False).cumcount() + 1
    if top_k is not None:
        items = items[items["rank"] <= int(top_k)]
    items = items.reset_index(drop=True)
    # boxes back in the store's pixels (a large image was decoded reduced)
    scale = np.array([data.decode_scale(data.index_of(int(i))) for i in items["image_id"]], dtype=np.float64).reshape(-1, 2)
    for j, column in enumerate(BOX_COLUMNS):
        items[column] = items[column].to_numpy(dtype=np.float64) / scale[:, j % 2]
    paths = store.images().set_index("image_id")["path"]
    items["path"] = paths.reindex(items["image_id"].astype("int64")).to_numpy()
    items["file_name"] = [Path(p).name if isinstance(p, str) else "" for p in items["path"]]
    names = np.array(["", *classes], dtype=object)
    items["class_name"] = names[items["class"].to_numpy(dtype=np.int64)]
    other = items["other_class"].fillna(0).to_numpy(dtype=np.int64)
    items["other_class_name"] = np.where(other > 0, names[other], "")
    items["kind_name"] = items["kind"].map(KIND_NAMES)
    items["fold"] = pd.array([fold_by_image.get(int(i)) for i in items["image_id"]], dtype="Int64")
    items["seen_by_model"] = items["image_id"].astype("int64").isin(seen)
    return items[list(QUEUE_COLUMNS)]


def queue_table(queue: pd.DataFrame) -> str:
    """The queue as a plain-text table for a terminal (one line per item)."""
    if queue.empty:
        return "No label looks wrong."
    shown = pd.DataFrame({
        "rank": queue["rank"], "kind": queue["kind"], "image": queue["file_name"],
        "class": [c if not o else f"{c} -> {o}" for c, o in zip(queue["class_name"], queue["other_class_name"])],
        "box": [f"{a:.0f},{b:.0f},{c:.0f},{d:.0f}" for a, b, c, d in queue[list(BOX_COLUMNS)].itertuples(index=False)],
        "iou": [f"{v:.2f}" if pd.notna(v) else "-" for v in queue["iou"]],
        "det score": [f"{v:.2f}" if pd.notna(v) else "-" for v in queue["score"]],
        "review score": [f"{v:.3f}" for v in queue["review_score"]],
    })
    return shown.to_string(index=False)


__all__ = ["DEFAULT_SCORING", "DEFAULT_TOP_K", "DRAW_THRESHOLD", "QUEUE_COLUMNS", "find_label_errors", "fresh_model", "queue_table", "review_job", "review_queue"]
