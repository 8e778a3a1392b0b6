"""Train, evaluate, save: the one sequence behind ``almdn train``, every cycle of an experiment
(:mod:`almdn.loop`) and every round of a project (:func:`almdn.workflow.run_round`).

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
from almdn.models.anchors import DEFAULT_MIN_COVERAGE


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
    conf_threshold: float = 0.5,
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
