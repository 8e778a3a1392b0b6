"""Acquisition from a model version's stored scores: which pool images to label next.

A project's pool is scored once per model version (:func:`almdn.workflow.score_pool` stores
each image's four z-scored uncertainties and final score); the methods here rank the pool from
those stored values without running the model again: the model version's own final score,
the paper's aggregations of Tab. 2 (:func:`almdn.acquisition.scoring.aggregate`), the mean class
entropy and random. The Label page previews a batch with :func:`select_for_labeling` and
``almdn push --top-k`` sends one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from almdn.errors import InvalidChoice
from almdn.store import Store, StoreError

#: Acquisition methods that work from a model version's stored scores (the other baselines of
#: Tab. 4 need other model variants: see almdn experiment).
ACQUISITION_METHODS = ("almdn", "almdn:sum_all", "almdn:max_loc", "almdn:max_cls", "almdn:max_al", "almdn:max_ep", "entropy", "random")


def acquisition_scores(store: Store, method: str | None = "almdn", model_version: int | None = None, seed: int = 0) -> pd.Series:
    """One score per pool image (higher = label it sooner) by ``method`` of
    :data:`ACQUISITION_METHODS`, from the model version's stored uncertainties; ``None``: the
    model version's own final score, by the aggregation it was scored with (in ranking order)."""
    from almdn.acquisition.baselines import mean_entropy_scores, random_scores
    from almdn.acquisition.aggregation import aggregate

    if method is not None and method not in ACQUISITION_METHODS:
        raise InvalidChoice(f"Unknown acquisition method '{method}'; choose one of {', '.join(ACQUISITION_METHODS)}.")
    pool_ids = store.image_ids("pool")
    if method == "random":
        return random_scores(pool_ids, seed)
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    if mv is None:
        raise StoreError("No model has scored the pool yet; train one on the Train page first.")
    if method is None:
        return store.pool_ranking(mv).set_index("image_id")["score"].astype(np.float64).rename("score")
    if method == "entropy":
        return mean_entropy_scores(store.detections(mv, pool_ids), pool_ids)
    aggregation = "max_all" if method == "almdn" else method.split(":", 1)[1]
    table = store.image_scores(mv).set_index("image_id").reindex(pd.Index(pool_ids, name="image_id"))
    return aggregate(table, aggregation).rename("score")


def select_for_labeling(store: Store, k: int, method: str | None = "almdn", model_version: int | None = None, seed: int = 0, exclude_sent: bool = True):
    """The top-``k`` pool images by ``method`` (:func:`acquisition_scores`,
    :func:`almdn.acquisition.selection.select_batch`), leaving out images that already have a
    live Label Studio task when ``exclude_sent``."""
    from almdn.acquisition.selection import select_batch

    if int(k) < 1:
        raise InvalidChoice("K must be at least 1.")
    scores = acquisition_scores(store, method, model_version, seed)
    if exclude_sent:
        tasks = store.tasks()
        sent = set(tasks.loc[tasks["status"] != "deleted", "image_id"].tolist()) if not tasks.empty else set()
        scores = scores[~scores.index.isin(sent)]
    return select_batch(scores, int(k))
