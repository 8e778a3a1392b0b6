"""Build, then train, evaluate, save: the one sequence behind ``almdn train``, every cycle of an
experiment (:mod:`almdn.experiments.runner`) and every round of a project (:func:`almdn.workflow.run_round`).

:func:`build_starting_model` builds the model a training starts from: the architecture, its
head, K, the classification loss and the box likelihood, the initial weights (a seed, an
ImageNet backbone, torchvision's COCO detector or a weights file) and, when asked, the SSD's
anchors fitted to the training boxes.
:func:`train_evaluate_save` trains a model, evaluates it on the test split when there is one
(mAP, mixture collapse, uncertainty quality: :func:`almdn.engine.inference.evaluate`), and
writes ``model.pt`` with its metrics (and ``metrics.json``) into the run folder. The callers
differ only in what they keep of the evaluation (``summarize``) and add to the metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almdn.engine import distributed
from almdn.engine.checkpoint import save_checkpoint
from almdn.engine.inference import evaluate
from almdn.engine.train import TrainConfig, TrainResult, train
from almdn.errors import Cancelled
from almdn.models.losses import ClassLoss, LocDensity
from almdn.models.anchors import DEFAULT_MIN_COVERAGE
from almdn.registry import DEFAULT_CLS_LOSS, DEFAULT_CONF_THRESHOLD, DEFAULT_NUM_COMPONENTS


class AnchorFitError(ValueError):
    """The anchors could not be fitted to the training boxes (there are none); the message
    says so in one sentence."""


@dataclass
class StartingModel:
    """What :func:`build_starting_model` built: the model and, in order, what it has to say
    about it (the classes mapped to a COCO detector's, the anchor fit); ``anchor_fit`` is the
    fit's sentence alone (None without a fit)."""

    model: Any
    notes: list[str]
    anchor_fit: str | None = None


def build_starting_model(
    arch: str,
    class_names: list[str],
    head: str = "gmm",
    num_components: int = DEFAULT_NUM_COMPONENTS,
    cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
    loc_density: LocDensity = "paper",
    init: str | None = None,
    fit_anchors_to=None,
    seed: int | None = None,
    **build_options: Any,
) -> StartingModel:
    """The model a training starts from (:func:`almdn.models.build_model`).

    Args:
        arch, head, num_components: the detector, its head (Fig. 2) and K (Eq. 2).
        cls_loss, loc_density: the classification loss (Eq. 5 or Type-2) and the box
            likelihood of Eq. 3.
        init: the starting point, "imagenet", "coco", "none" or a torchvision state dict's
            path (:mod:`almdn.models.pretrained`); None: only ``build_options`` decide
            (``pretrained``), nothing is loaded.
        fit_anchors_to: a dataset whose boxes the SSD's anchors are fitted to
            (:func:`almdn.models.anchors.fit_anchors`), after the weights are loaded (anchors
            hold none); None keeps the architecture's anchors.
        seed: seeds torch before the build, so the initial weights are a function of it
            (None: the current random state).
        build_options: more build_model keywords (image size, anchors, dropout, ...); they
            win over the starting point's build options.

    Raises:
        ValueError: the options do not build a model (an image size, anchors);
            :class:`AnchorFitError` when there are no boxes to fit the anchors to.
    """
    import torch

    from almdn.models import build_model
    from almdn.models.pretrained import apply_init, init_build_options

    if seed is not None:
        torch.manual_seed(int(seed))
    if init is not None:
        build_options = {**init_build_options(arch, head, init), **build_options}
    model = build_model(
        arch, num_classes=len(class_names), head=head, num_components=num_components, class_names=list(class_names),
        cls_loss=cls_loss, loc_density=loc_density, **build_options,
    )
    notes = []
    if init is not None and (message := apply_init(model, init, arch)):
        notes.append(message)
    fitted = None
    if fit_anchors_to is not None:
        from almdn.models.anchors import apply_fitted_anchors, fit_anchors

        try:
            fit = fit_anchors(model, fit_anchors_to)
        except ValueError as exc:
            raise AnchorFitError(str(exc)) from None
        apply_fitted_anchors(model, fit)  # in place: the weights (and a loaded init) are kept
        fitted = fit.summary()
        notes.append(fitted)
    return StartingModel(model, notes, fitted)


@dataclass
class Fitted:
    """What :func:`train_evaluate_save` did: the training's result, the metrics stored with the
    model, the full evaluation (None without a test split) and ``model.pt`` (None on a rank
    other than 0 of a process group, which neither evaluates nor saves)."""

    result: TrainResult
    metrics: dict[str, Any]
    evaluation: dict[str, Any] | None
    checkpoint: Path | None


def train_evaluate_save(
    model,
    train_set,
    config: TrainConfig,
    out_dir: str | Path,
    test_set=None,
    device=None,
    resume: bool = True,
    progress: bool = True,
    eval_progress: bool = False,
    callback: Callable[[int, int, dict[str, float]], bool | None] | None = None,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    extra_metrics: dict[str, Any] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    keep_resume_state: bool = False,
    min_anchor_coverage: float | None = DEFAULT_MIN_COVERAGE,
) -> Fitted:
    """Train ``model`` on ``train_set`` (:func:`almdn.engine.train.train`), evaluate it on
    ``test_set`` and save ``out_dir/model.pt`` and ``out_dir/metrics.json``.

    Args:
        callback: the training's step callback; when it stops the training,
            :class:`almdn.errors.Cancelled` is raised and nothing is saved.
        summarize: what of the evaluation goes into the metrics (default: all of it).
        extra_metrics: added to the metrics (e.g. the round's settings).
        checkpoint_extra: more entries of ``model.pt`` (e.g. the training config).
        keep_resume_state: keep ``checkpoint.pt`` (the resumable training state) instead of
            deleting it once the model is saved.
        min_anchor_coverage: the training's small-object warning threshold; None for a caller
            that checks the coverage itself (a project's round, whose advice names its settings).

    The metrics always carry ``train_seconds``, ``iterations``, ``skipped_steps`` and
    ``parameters``; with a test split also ``eval_s_per_image``.
    """
    out_dir = Path(out_dir)
    result = train(model, train_set, config, out_dir=out_dir, device=device, resume=resume, progress=progress, callback=callback,
                   min_anchor_coverage=min_anchor_coverage)
    if result.stopped_early:
        raise Cancelled()
    if not distributed.is_main_process():
        return Fitted(result, {}, None, None)
    metrics: dict[str, Any] = {}
    full = None
    if test_set is not None:
        t0 = time.perf_counter()
        full = evaluate(model, test_set, device=device, progress=eval_progress, conf_threshold=conf_threshold)
        metrics = summarize(full) if summarize is not None else dict(full)
        metrics["eval_s_per_image"] = (time.perf_counter() - t0) / max(len(test_set), 1)
    metrics.update(
        train_seconds=result.seconds, iterations=result.iterations, skipped_steps=result.skipped_steps,
        parameters=sum(p.numel() for p in model.parameters()), **(extra_metrics or {}),
    )
    checkpoint = save_checkpoint(out_dir / "model.pt", model.cpu(), metrics=metrics, **(checkpoint_extra or {}))
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, default=float))
    tmp.replace(out_dir / "metrics.json")
    if not keep_resume_state:
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)  # the resumable state is no longer needed
    return Fitted(result, metrics, full, checkpoint)
