"""One active-learning round on a project store: train a model version on the labeled set,
evaluate it on the test split, score the pool with it, and record all of it in the store.

This is the "Retrain" of the app and the step after every batch of labels comes back from
Label Studio. By default a round trains like every cycle of the paper's protocol (and of
:mod:`almdn.loop`): from the same initial weights (the seed's, with the pretrained backbone)
and the same schedule as the previous version, so that the difference between two versions'
mAP is the labels that were added, not extra training. Fine-tuning from the latest model
version (``start_from="previous"``) is an explicit choice: cheaper, but its mAP mixes more
training with the new labels, and the Train page says so.

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from almdn.registry import CLASS_LOSSES, DEFAULT_CLS_LOSS, ROUND_ARCH_NAMES, ROUND_HEAD_TYPES
from almdn.store import Store, StoreError

#: Store meta key of a project's round settings (JSON).
SETTINGS_KEY = "app.round_settings"
ARCH_CHOICES = ROUND_ARCH_NAMES  # almdn.registry: what a round offers
#: Where a retrain starts (:attr:`RoundSettings.start_from`), in words.
START_CHOICES = {"initial": "the initial weights (like the previous version: the paper's retrain)", "previous": "the previous model version (fine-tune)"}
HEAD_CHOICES = ROUND_HEAD_TYPES


class RoundError(RuntimeError):
    """A round cannot run; the message says what to do."""


class RoundCancelled(Exception):
    """The round was stopped by its ``should_stop`` callback; nothing was recorded."""


@dataclass
class RoundSettings:
    """How a project's models are built, trained and how they score the pool.

    Attributes:
        arch: detector architecture (see :func:`almdn.models.build_model`).
        head: mixture head, "gmm" or "eff".
        num_components: K, mixture components per box coordinate and class.
        iterations, batch_size, lr: the training schedule (warm-up and step decay,
            :meth:`almdn.engine.train.TrainConfig.demo` shape).
        optimizer: "adamw" or "sgd" (the paper's).
        cls_loss: classification loss, "type2" (mixture likelihood, keeps the class mixture
            from collapsing) or "eq5" (the paper's Eq. 5).
        augment: training augmentation ("auto": SSD's recipe; "none" switches it off).
        hflip: whether the augmentation flips images (off for mirror-sensitive classes).
        zoom_out_max: the zoom-out's largest canvas in image sides (SSD: 4; smaller keeps
            small objects above the smallest anchor).
        start_from: "initial" (default): the seed's initial weights, as the paper retrains
            every cycle, so versions compare like with like; "previous": fine-tune the latest
            model version's weights when it has the same architecture, head, K and classes.
        conf_threshold: detections with at least this score count for scoring (Sec. 3.3).
        aggregation: how the four z-scored uncertainties make an image's score (Tab. 2).
        seed: initial weights and data order.
        device: "auto", "cpu", "cuda", ...
        score_batch_size: images per inference batch when scoring.
    """

    arch: str = "ssd_mobilenet_v2_small"
    head: str = "gmm"
    num_components: int = 4
    iterations: int = 300
    batch_size: int = 32
    lr: float = 0.002
    optimizer: str = "adamw"
    cls_loss: str = DEFAULT_CLS_LOSS
    augment: str = "auto"
    hflip: bool = True
    zoom_out_max: float = 4.0
    start_from: str = "initial"
    conf_threshold: float = 0.5
    aggregation: str = "max_all"
    seed: int = 0
    device: str = "auto"
    score_batch_size: int = 32

    def check(self) -> RoundSettings:
        from almdn.acquisition.scoring import AGGREGATIONS

        problems = []
        if self.arch not in ARCH_CHOICES:
            problems.append(f"architecture '{self.arch}' is not one of {', '.join(ARCH_CHOICES)}")
        if self.cls_loss not in CLASS_LOSSES:
            problems.append(f"classification loss '{self.cls_loss}' is not one of {', '.join(CLASS_LOSSES)}")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"optimizer '{self.optimizer}' is not sgd or adamw")
        if self.augment not in ("auto", "ssd", "flip", "none"):
            problems.append(f"augmentation '{self.augment}' is not one of auto, ssd, flip, none")
        if self.start_from not in START_CHOICES:
            problems.append(f"start '{self.start_from}' is not one of {', '.join(START_CHOICES)}")
        if self.head not in HEAD_CHOICES:
            problems.append(f"head '{self.head}' is not one of {', '.join(HEAD_CHOICES)}")
        if not 1 <= int(self.num_components) <= 16:
            problems.append(f"K = {self.num_components} is outside 1..16")
        if int(self.iterations) < 1 or int(self.batch_size) < 1:
            problems.append("iterations and batch size must be at least 1")
        if not float(self.lr) > 0:
            problems.append("the learning rate must be positive")
        if not 0.0 <= float(self.conf_threshold) < 1.0:
            problems.append(f"the confidence threshold {self.conf_threshold} is outside [0, 1)")
        if self.aggregation not in AGGREGATIONS:
            problems.append(f"aggregation '{self.aggregation}' is not one of Tab. 2's ({', '.join(AGGREGATIONS)})")
        if problems:
            raise RoundError("Invalid settings: " + "; ".join(problems) + ".")
        return self

    def train_config(self):
        from almdn.engine.train import TrainConfig

        base = TrainConfig.demo(int(self.iterations))
        # ~100 points on the live loss curve whatever the budget.
        return dataclasses.replace(
            base, batch_size=int(self.batch_size), lr=float(self.lr), seed=int(self.seed), optimizer=self.optimizer,
            augment=self.augment, hflip=bool(self.hflip), zoom_out_max=float(self.zoom_out_max), weight_decay=1e-4 if self.optimizer == "adamw" else base.weight_decay,
            log_every=max(1, min(10, int(self.iterations) // 100)), checkpoint_every=max(50, int(self.iterations) // 4),
        )

    @classmethod
    def load(cls, store: Store) -> RoundSettings:
        """The project's saved settings (defaults for anything not saved)."""
        raw = store.meta(SETTINGS_KEY)
        values = json.loads(raw) if raw else {}
        # The old boolean ``warm_start`` was saved with its default (True) by every project, so
        # it says nothing about a user's choice: it is dropped and ``start_from`` applies.
        values.pop("warm_start", None)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def save(self, store: Store) -> None:
        self.check()
        store.set_meta(SETTINGS_KEY, json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> RoundSettings:
        return dataclasses.replace(self, **changes)


@dataclass
class PoolScoring:
    """The pool scored by one model: the store's two tables and the files it could not read."""

    images: Any  # pandas.DataFrame, image_scores()
    detections: Any  # pandas.DataFrame, detections_frame()
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # {"image_id", "path", "error"}
    seconds: float = 0.0


@dataclass
class RoundResult:
    """What a round did; ``metrics`` and ``previous_metrics`` are the test-split numbers of the
    new and of the previous model version (empty when there is none / no test split)."""

    model_version: int
    name: str
    metrics: dict[str, Any]
    previous_model_version: int | None
    previous_metrics: dict[str, Any]
    num_labeled: int
    num_scored: int
    unreadable: list[dict[str, Any]]
    train_seconds: float
    seconds: float
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One sentence: the new mAP next to the previous one."""
        new, old = self.metrics.get("map50"), self.previous_metrics.get("map50")
        how = f"fine-tuned from version {self.metrics['warm_start_from']}" if self.metrics.get("warm_start_from") is not None else "trained from the initial weights"
        text = f"Model version {self.model_version} ({self.name}) {how} on {self.num_labeled} labeled images"
        if new is not None:
            text += f": mAP@0.5 {new:.3f}"
            if old is not None:
                text += f" (previous {old:.3f}, {new - old:+.3f})"
        text += f"; {self.num_scored} pool images scored"
        if self.unreadable:
            text += f", {plural(len(self.unreadable), 'unreadable image')} skipped"
        return text + "."


#: The settings that make two trainings the same schedule from the same starting point.
SCHEDULE_KEYS = ("arch", "head", "num_components", "iterations", "batch_size", "lr", "optimizer", "cls_loss", "augment", "hflip", "zoom_out_max", "seed")


@dataclass
class TrainingDescription:
    """How a model version was trained and whether its mAP compares like with like with the
    previous version's (same starting point and schedule, only the labeled set differs)."""

    model_version: int
    previous: int | None
    fine_tuned_from: int | None
    comparable: bool
    differences: dict[str, tuple[Any, Any]]
    sentence: str


def describe_training(store: Store, model_version: int) -> TrainingDescription:
    """The Train page's sentence on how ``model_version`` was trained, from what its round
    recorded (:func:`run_round` stores its settings and the version it started from)."""
    versions = store.model_versions()
    ids = [int(v) for v in versions["model_version_id"]]
    mv = int(model_version)
    info = store.model_version(mv)
    metrics = info["metrics"] or {}
    settings = metrics.get("settings")
    previous = max((v for v in ids if v < mv), default=None)
    n = int(info["num_labeled"])
    if not settings:
        sentence = f"Model version {mv} was recorded from an existing checkpoint (almdn project score), so how it was trained is not known here."
        return TrainingDescription(mv, previous, None, False, {}, sentence)
    fine_tuned_from = metrics.get("warm_start_from")
    schedule = (f"{settings.get('iterations')} {settings.get('optimizer', 'sgd')} iterations at batch {settings.get('batch_size')}, "
                f"lr {float(settings.get('lr', 0)):g}, on {n} labeled images")
    if fine_tuned_from is not None:
        added = n - int(store.model_version(int(fine_tuned_from))["num_labeled"])
        sentence = (f"Model version {mv} was fine-tuned from version {fine_tuned_from} for another {schedule}: its mAP mixes "
                    f"{settings.get('iterations')} more iterations of training with the {plural(added, 'added image')}, "
                    "so it does not compare like with like with the previous version.")
        return TrainingDescription(mv, previous, int(fine_tuned_from), False, {}, sentence)
    start = f"from the initial weights (seed {settings.get('seed', 0)})"
    if previous is None:
        return TrainingDescription(mv, None, None, False, {}, f"Model version {mv} was trained {start} for {schedule}.")
    prev_info = store.model_version(previous)
    prev_metrics = prev_info["metrics"] or {}
    prev_settings = prev_metrics.get("settings")
    added = n - int(prev_info["num_labeled"])
    if not prev_settings:
        sentence = (f"Model version {mv} was trained {start} for {schedule}; version {previous} was recorded from an existing checkpoint, "
                    "so whether the two compare like with like is not known.")
        return TrainingDescription(mv, previous, None, False, {}, sentence)
    differences = {k: (prev_settings.get(k), settings.get(k)) for k in SCHEDULE_KEYS if prev_settings.get(k) != settings.get(k)}
    if prev_metrics.get("warm_start_from") is not None:
        differences["start"] = (f"fine-tuned from version {prev_metrics['warm_start_from']}", "initial weights")
    if not differences:
        sentence = (f"Model version {mv} was trained {start} for {schedule}: the same starting point and schedule as version {previous} "
                    f"({plural(int(prev_info['num_labeled']), 'labeled image')}), so the change in mAP comes from the "
                    f"{plural(added, 'added image')} (and run-to-run noise).")
        return TrainingDescription(mv, previous, None, True, {}, sentence)
    changed = ", ".join(f"{k} {a} → {b}" for k, (a, b) in differences.items())
    sentence = (f"Model version {mv} was trained {start} for {schedule}; version {previous} was trained differently ({changed}), "
                f"so the change in mAP mixes that with the {plural(added, 'added image')}.")
    return TrainingDescription(mv, previous, None, False, differences, sentence)


def plural(count: int, noun: str) -> str:
    """'1 task', '3 tasks', '1 added image', '0 added images'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _progress_noop(fraction: float, stage: str | None = None) -> None:
    pass


def score_pool(store: Store, model, settings: RoundSettings, progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None) -> PoolScoring:
    """Score every pool image with ``model`` (Sec. 3.3); unreadable files are listed, skipped.

    Returns the per-image and per-detection tables that :meth:`Store.write_scores` takes; the
    z-scores are taken over the kept detections of the readable pool.
    """
    import torch

    from almdn.acquisition.scoring import detections_frame, image_scores
    from almdn.data.coco import collate_detection
    from almdn.data.images import ImageFolderDataset, restore_boxes
    from almdn.engine.checkpoint import resolve_device

    t0 = time.perf_counter()
    pool = store.images("pool")
    dataset = ImageFolderDataset(pool["path"].tolist(), sizes=list(zip(pool["width"], pool["height"])))
    dataset.image_ids = [int(i) for i in pool["image_id"]]  # detections carry the store's ids
    device = resolve_device(settings.device)
    model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(settings.score_batch_size), shuffle=False, collate_fn=collate_detection)
    predictions: list[dict | None] = []
    unreadable: list[dict[str, Any]] = []
    with torch.no_grad():
        for images, targets in loader:
            if should_stop is not None and should_stop():
                raise RoundCancelled()
            readable = [img.to(device) for img in images if img is not None]
            outputs = iter(model(readable) if readable else [])
            for img, target in zip(images, targets):
                if img is None:
                    predictions.append(None)
                    unreadable.append({"image_id": int(target["image_id"]), "error": target.get("error", "unreadable")})
                else:  # a large image was decoded reduced: its boxes go back to its own pixels
                    predictions.append(restore_boxes({k: v.cpu() for k, v in next(outputs).items()}, dataset.box_scale(len(predictions))))
            if progress is not None:
                progress(len(predictions) / max(len(dataset), 1))
    paths = dict(zip(dataset.image_ids, pool["path"]))
    for item in unreadable:
        item["path"] = str(paths[item["image_id"]])
    ok = [i for i, p in enumerate(predictions) if p is not None]
    ids = [dataset.image_ids[i] for i in ok]
    detections = detections_frame([predictions[i] for i in ok], ids, float(settings.conf_threshold))
    table = image_scores(detections, ids, settings.aggregation)
    return PoolScoring(table, detections, unreadable, time.perf_counter() - t0)


def _test_dataset(store: Store, folder: Path, classes: list[str]):
    from almdn.data.coco import CocoDetectionDataset

    if not store.image_ids("test"):
        return None
    path = store.export_coco("test", folder / "test.json")
    return CocoDetectionDataset(path, class_names=classes)


def _initial_model(store: Store, settings: RoundSettings, classes: list[str]):
    """The model to train: the latest compatible model version's (warm start) or a new one."""
    import torch

    from almdn.engine.checkpoint import CheckpointError, read_checkpoint
    from almdn.models import build_model, model_from_config

    wanted = {"arch": settings.arch, "head": settings.head, "num_components": int(settings.num_components), "class_names": classes, "cls_loss": settings.cls_loss}
    versions = store.model_versions()
    if settings.start_from == "previous" and not versions.empty:
        checkpoint = str(versions.iloc[-1]["checkpoint"])
        try:
            payload = read_checkpoint(checkpoint)
        except CheckpointError:
            payload = None  # a checkpoint moved away: start fresh rather than fail
        if payload is not None:
            config = payload["model_config"]
            if all(config.get(k) == v for k, v in wanted.items()):
                model = model_from_config(config)
                model.load_state_dict(payload["state_dict"])
                return model, int(versions.iloc[-1]["model_version_id"])
    torch.manual_seed(int(settings.seed))  # the initial weights are a function of the seed
    model = build_model(
        arch=settings.arch, num_classes=len(classes), head=settings.head, num_components=int(settings.num_components),
        class_names=classes, pretrained=settings.arch != "ssd_small", cls_loss=settings.cls_loss,
    )
    return model, None


def run_round(
    store: Store,
    settings: RoundSettings | None = None,
    progress: Callable[[float, str | None], None] = _progress_noop,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    note: str = "",
) -> RoundResult:
    """Train a new model version on the store's labeled split, evaluate it on the test split,
    score the pool and record everything (one transaction at the end).

    Args:
        settings: default: the project's saved :class:`RoundSettings`.
        progress: ``progress(fraction of the round, stage or None)``; training takes the first
            80 %, evaluation and scoring the rest.
        on_metrics: called with every logged training step (iteration, total, loss, lr, ...).
        should_stop: polled between steps; True cancels the round (:class:`RoundCancelled`).

    Raises:
        RoundError: no labeled images, no classes, or bad settings (one sentence).
        RoundCancelled: ``should_stop`` said so; nothing was recorded.
    """
    from almdn.data.coco import CocoDetectionDataset
    from almdn.engine.checkpoint import save_checkpoint
    from almdn.engine.inference import evaluate
    from almdn.engine.train import train

    t_start = time.perf_counter()
    settings = (settings or RoundSettings.load(store)).check()
    classes = store.classes()
    if not classes:
        raise RoundError("The project has no classes; add a labeled dataset first (Projects page).")
    labeled = store.labeled_image_ids()
    if not labeled:
        raise RoundError("No image is labeled yet; label some in Label Studio and import them before training.")
    project_dir = store.path.parent
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = project_dir / "models" / f"{stamp}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    recorded = False
    try:
        progress(0.0, f"exporting {len(labeled)} labeled images")
        train_file = store.export_coco("labeled", folder / "train.json", image_ids=labeled)
        train_set = CocoDetectionDataset(train_file, class_names=classes)
        model, warm_from = _initial_model(store, settings, classes)
        previous = store.latest_model_version()
        previous_metrics = dict(store.model_version(previous)["metrics"]) if previous is not None else {}
        config = settings.train_config()
        progress(0.0, f"training on {len(labeled)} images ({config.iterations} iterations"
                      + (f", from model version {warm_from})" if warm_from is not None else ")"))

        def callback(iteration: int, total: int, entry: dict[str, float]) -> bool:
            if on_metrics is not None:
                on_metrics({**entry, "total": total})
            progress(0.8 * (iteration / total), None)
            return not (should_stop is not None and should_stop())

        result = train(model, train_set, config, out_dir=folder, device=settings.device, resume=False, progress=False, callback=callback)
        if result.stopped_early:
            raise RoundCancelled()
        metrics: dict[str, Any] = {}
        test_set = _test_dataset(store, folder, classes)
        if test_set is not None:
            progress(0.8, f"evaluating on {len(test_set)} test images")
            metrics = {k: v for k, v in evaluate(model, test_set, device=settings.device, conf_threshold=settings.conf_threshold).items()}
        if should_stop is not None and should_stop():
            raise RoundCancelled()
        n_pool = len(store.image_ids("pool"))
        progress(0.9, f"scoring {n_pool} pool images")
        scoring = score_pool(store, model, settings, progress=lambda f: progress(0.9 + 0.08 * f, None), should_stop=should_stop) if n_pool else None
        metrics.update(
            train_seconds=result.seconds, iterations=result.iterations, skipped_steps=result.skipped_steps,
            warm_start_from=warm_from, settings=dataclasses.asdict(settings),
        )
        checkpoint = save_checkpoint(folder / "model.pt", model.cpu(), metrics=metrics)
        (folder / "checkpoint.pt").unlink(missing_ok=True)  # the resumable state is no longer needed
        progress(0.99, "recording the model version")
        with store.transaction():
            round_id = store.start_round(note or f"retrain on {len(labeled)} labeled images")
            mv = store.record_model_version(checkpoint.resolve(), metrics, labeled_image_ids=labeled, round_id=round_id, class_names=list(model.class_names))
            if scoring is not None:
                write_scoring(store, mv, scoring, settings)
        recorded = True
    finally:
        if not recorded:
            shutil.rmtree(folder, ignore_errors=True)
    name = str(store.model_version(mv)["name"])
    return RoundResult(
        model_version=mv, name=name, metrics=_plain(metrics), previous_model_version=previous, previous_metrics=_plain(previous_metrics),
        num_labeled=len(labeled), num_scored=len(scoring.images) if scoring is not None else 0,
        unreadable=scoring.unreadable if scoring is not None else [], train_seconds=result.seconds,
        seconds=time.perf_counter() - t_start, checkpoint=str(checkpoint),
    )


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


def unreadable_key(model_version: int) -> str:
    """Store meta key of the pool files a model version's scoring could not read."""
    return f"app.unreadable.{int(model_version)}"


def write_scoring(store: Store, model_version: int, scoring: PoolScoring, settings: RoundSettings) -> None:
    """The scores and the list of unreadable pool files, in one transaction."""
    with store.transaction():
        store.write_scores(model_version, scoring.images, scoring.detections, aggregation=settings.aggregation, conf_threshold=float(settings.conf_threshold))
        store.set_meta(unreadable_key(model_version), json.dumps(scoring.unreadable))


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy scalars to floats, keys to strings)."""
    return json.loads(json.dumps(metrics, default=float))


# --------------------------------------------------------------------------- jobs


def retrain_job(context, settings: dict[str, Any] | None = None, project_dir: str | None = None) -> dict[str, Any]:
    """The app's "Retrain" as a background job (:mod:`almdn.jobs`)."""
    from almdn.jobs import JobCancelled

    project_dir = Path(project_dir) if project_dir else context.folder.parent.parent
    with Store.open(project_dir, create=False) as store:
        chosen = RoundSettings.load(store).replace(**settings) if settings else None
        try:
            result = run_round(store, chosen, progress=context.progress, on_metrics=context.log_metrics, should_stop=context.cancelled)
        except RoundCancelled:
            raise JobCancelled() from None
    return {**result.to_dict(), "summary": result.summary()}


def label_studio_job(context, port: int = 8080, project_dir: str | None = None) -> dict[str, Any]:
    """Start the project's local Label Studio (migrating the per-machine template the first
    time, about a minute) and connect the project to it."""
    from label_studio.client import save_connection
    from label_studio.server import LocalServer, default_template_dir, prepare_template

    project_dir = Path(project_dir) if project_dir else context.folder.parent.parent
    with Store.open(project_dir, create=False) as store:
        root = document_root(store)
    running = LocalServer(Path(project_dir) / "label-studio").status()
    if running["running"] and running["document_root"] == str(root):
        # Idempotent: a second start finds the project's server and only reconnects to it.
        save_connection(project_dir, running["url"], local=True, document_root=str(root))
        return {"url": running["url"], "seconds": 0.0, "summary": f"Label Studio already runs at {running['url']}."}
    template = default_template_dir()
    if not (template / "READY").exists():
        context.progress(0.05, "preparing Label Studio's database (once per machine, about a minute)")
        prepare_template(template)
    context.progress(0.6, "starting Label Studio")
    server = LocalServer(Path(project_dir) / "label-studio", port=int(port), document_root=root, template=template)
    seconds = server.start()
    save_connection(project_dir, server.url, local=True, document_root=str(root))
    return {"url": server.url, "seconds": seconds, "summary": f"Label Studio runs at {server.url} (ready in {seconds:.0f} s)."}


def document_root(store: Store) -> Path:
    """The folder a project's local Label Studio serves files from: its own ``media`` folder,
    which holds only links to the images pushed for labeling (never the images' folders, let
    alone ``/``: annotation files or other data beside the images stay unreachable)."""
    from label_studio.server import media_root

    return media_root(store.path.parent)
