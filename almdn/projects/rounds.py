"""What a project's rounds are made of: their settings (how models are built, trained and
score the pool, saved in the store), what a round reports, and how a model version was trained
in words (the Train page's sentence).

Running a round is a use case: :func:`almdn.workflow.run_round`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from almdn.errors import UserError
from almdn.registry import (
    AUGMENT_POLICIES, CLASS_LOSSES, DEFAULT_AGGREGATION, DEFAULT_AUGMENT, DEFAULT_CLS_LOSS, DEFAULT_CONF_THRESHOLD, DEFAULT_LOW_THRESHOLD,
    DEFAULT_NUM_COMPONENTS, DEFAULT_OPTIMIZER, FIXED_IMAGE_SIZES, MAX_COMPONENTS, MIN_COMPONENTS, OPTIMIZERS,
    ROUND_ARCH_NAMES, ROUND_HEAD_TYPES,
)
from almdn.projects.store import Store

#: Store meta key of a project's round settings (JSON).
SETTINGS_KEY = "app.round_settings"


def unreadable_key(model_version: int) -> str:
    """Store meta key of the pool files a model version's scoring could not read (JSON list)."""
    return f"app.unreadable.{int(model_version)}"

ARCH_CHOICES = ROUND_ARCH_NAMES  # almdn.registry: what a round offers
#: The input sizes a round accepts (px).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 2048
#: Where a retrain starts (:attr:`RoundSettings.start_from`), in words.
START_CHOICES = {"initial": "the initial weights (like the previous version: the paper's retrain)", "previous": "the previous model version (fine-tune)"}
HEAD_CHOICES = ROUND_HEAD_TYPES


class RoundError(UserError, RuntimeError):
    """A round cannot run; the message says what to do."""


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
        image_size: the model's input side in pixels (None: the architecture's own); larger
            gives small objects more pixels and a finer anchor grid (the small-object warning).
        fit_anchors: fit the SSD's anchor scales and ratios to the labeled boxes when a round
            builds its model (:func:`almdn.models.anchors.fit_anchors`, YOLO's autoanchor).
        init: the initial weights' starting point: "imagenet" (an ImageNet backbone where the
            architecture has one), "coco" (torchvision's COCO-trained detector, classes mapped
            to COCO's), "none" (random) or the path of a torchvision state dict of the same
            architecture (:mod:`almdn.models.pretrained`).
        start_from: "initial" (default): the seed's initial weights, as the paper retrains
            every cycle, so versions compare like with like; "previous": fine-tune the latest
            model version's weights when it has the same architecture, head, K and classes.
        conf_threshold: detections with at least this score count for scoring (Sec. 3.3).
        low_threshold: detections with at least this score (or ``conf_threshold`` where that
            is lower) count, weighted by it, for the score-weighted mean class entropy a
            scoring also stores (``entropy_weighted``).
        aggregation: how the four z-scored uncertainties make an image's score (Tab. 2).
        seed: initial weights and data order.
        device: "auto", "cpu", "cuda", ...
        score_batch_size: images per inference batch when scoring.
    """

    arch: str = "ssd_mobilenet_v2_small"
    head: str = "gmm"
    num_components: int = DEFAULT_NUM_COMPONENTS
    iterations: int = 300
    batch_size: int = 32
    lr: float = 0.002
    optimizer: str = DEFAULT_OPTIMIZER
    cls_loss: str = DEFAULT_CLS_LOSS
    augment: str = DEFAULT_AUGMENT
    hflip: bool = True
    zoom_out_max: float = 4.0
    image_size: int | None = None
    fit_anchors: bool = False
    start_from: str = "initial"
    init: str = "imagenet"
    conf_threshold: float = DEFAULT_CONF_THRESHOLD
    low_threshold: float = DEFAULT_LOW_THRESHOLD
    aggregation: str = DEFAULT_AGGREGATION
    seed: int = 0
    device: str = "auto"
    score_batch_size: int = 32

    def check(self) -> RoundSettings:
        from almdn.acquisition.aggregation import AGGREGATIONS

        problems = []
        if self.arch not in ARCH_CHOICES:
            problems.append(f"architecture '{self.arch}' is not one of {', '.join(ARCH_CHOICES)}")
        if self.cls_loss not in CLASS_LOSSES:
            problems.append(f"classification loss '{self.cls_loss}' is not one of {', '.join(CLASS_LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer '{self.optimizer}' is not one of {', '.join(OPTIMIZERS)}")
        if self.augment not in AUGMENT_POLICIES:
            problems.append(f"augmentation '{self.augment}' is not one of {', '.join(AUGMENT_POLICIES)}")
        problems += _init_problems(self.init, self.arch)
        if self.image_size is not None and not MIN_IMAGE_SIZE <= int(self.image_size) <= MAX_IMAGE_SIZE:
            problems.append(f"image size {self.image_size} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px")
        fixed = FIXED_IMAGE_SIZES.get(self.arch)
        if self.image_size is not None and fixed is not None and int(self.image_size) != fixed:
            problems.append(f"{self.arch} takes only {fixed} px images (leave the image size empty)")
        if self.start_from not in START_CHOICES:
            problems.append(f"start '{self.start_from}' is not one of {', '.join(START_CHOICES)}")
        if self.head not in HEAD_CHOICES:
            problems.append(f"head '{self.head}' is not one of {', '.join(HEAD_CHOICES)}")
        if not MIN_COMPONENTS <= int(self.num_components) <= MAX_COMPONENTS:
            problems.append(f"K = {self.num_components} is outside {MIN_COMPONENTS}..{MAX_COMPONENTS}")
        if int(self.iterations) < 1 or int(self.batch_size) < 1:
            problems.append("iterations and batch size must be at least 1")
        if not float(self.lr) > 0:
            problems.append("the learning rate must be positive")
        if not 0.0 <= float(self.conf_threshold) < 1.0:
            problems.append(f"the confidence threshold {self.conf_threshold} is outside [0, 1)")
        if not 0.0 <= float(self.low_threshold) < 1.0:
            problems.append(f"the low threshold {self.low_threshold} is outside [0, 1)")
        if self.aggregation not in AGGREGATIONS:
            problems.append(f"aggregation '{self.aggregation}' is not one of Tab. 2's ({', '.join(AGGREGATIONS)})")
        if problems:
            raise RoundError("Invalid settings: " + "; ".join(problems) + ".")
        return self

    @property
    def scoring_low_threshold(self) -> float:
        """The threshold of the detections a scoring weights for ``entropy_weighted``: the low
        one, or the confidence threshold where that is lower (then they are the kept ones)."""
        return min(float(self.low_threshold), float(self.conf_threshold))

    def model_options(self) -> dict[str, Any]:
        """:func:`almdn.models.build_model` keywords of the rounds' architecture (the same for a
        round's model and for the coverage check of a project's labeled boxes)."""
        options = {"arch": self.arch, "head": self.head, "num_components": int(self.num_components), "cls_loss": self.cls_loss}
        if self.image_size is not None:
            options["image_size"] = int(self.image_size)
        return options

    def fit_model_anchors(self, model, data) -> str | None:
        """With :attr:`fit_anchors`, fit ``model``'s anchors to the boxes of ``data`` in place
        (:func:`almdn.models.anchors.fit_anchors`) and return the fit's sentence; else None."""
        if not self.fit_anchors:
            return None
        from almdn.models.anchors import apply_fitted_anchors, fit_anchors

        fit = fit_anchors(model, data)
        apply_fitted_anchors(model, fit)
        return fit.summary()

    def coverage_advice(self) -> str:
        """What a project's user can do about the small-object warning: its settings, not
        ``almdn train``'s options (:func:`almdn.models.anchors.coverage_message`)."""
        if self.fit_anchors:
            return ("the anchors are already fitted to the labeled boxes, so a larger input image size is what is left "
                    "(the app's Settings page: 'Input image size')")
        return ("turn on 'Fit anchors to the labeled boxes' (the anchor scales and ratios fitted to these boxes), or set a larger "
                "'Input image size' for a finer anchor grid, in the project's round settings (the app's Settings page)")

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
    #: What the round warned about (the small-object warning), for the app to show.
    warnings: list[str] = dataclasses.field(default_factory=list)

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


def _init_problems(init: str, arch: str) -> list[str]:
    """What is wrong with starting point ``init`` for ``arch`` (nothing: an empty list)."""
    from pathlib import Path

    from almdn.models.pretrained import INIT_CHOICES, TORCHVISION_COCO_WEIGHTS

    if init not in INIT_CHOICES and not Path(init).expanduser().is_file():
        return [f"starting point '{init}' is neither {', '.join(INIT_CHOICES)} nor a weights file"]
    if init not in ("imagenet", "none") and arch not in TORCHVISION_COCO_WEIGHTS:
        return [f"starting point '{init}' needs one of {', '.join(TORCHVISION_COCO_WEIGHTS)}; {arch} starts from imagenet or none"]
    return []


#: The settings that make two trainings the same schedule from the same starting point.
SCHEDULE_KEYS = ("arch", "head", "num_components", "init", "image_size", "fit_anchors", "iterations", "batch_size", "lr", "optimizer", "cls_loss",
                 "augment", "hflip", "zoom_out_max", "seed")


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
    # a setting a version's round did not record yet had its default then
    default = dataclasses.asdict(RoundSettings())
    before, after = ({k: s.get(k, default[k]) for k in SCHEDULE_KEYS} for s in (prev_settings, settings))
    differences = {k: (before[k], after[k]) for k in SCHEDULE_KEYS if before[k] != after[k]}
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
