"""Acquisition from a model version's stored scores: which pool images to label next.

A project's pool is scored once per model version (:func:`almdn.workflow.score_pool` stores
each image's four z-scored uncertainties and final score); the methods here rank the pool from
those stored values without running the model again: the model version's own final score,
the paper's aggregations of Tab. 2 (:func:`almdn.acquisition.scoring.aggregate`), the mean class
entropy and random; and the two-stage methods (candidates by the paper's score, then
diversity over the embeddings the scoring kept and class balance from the stored detections
and labels, :mod:`almdn.acquisition.batch`). The Label page previews a batch with
:func:`select_for_labeling`, each image with why it was chosen, and ``almdn push --top-k``
sends one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from almdn.acquisition.batch import Batch, BatchInputs, class_mass, policy_from_name, score_drivers, select
from almdn.errors import InvalidChoice
from almdn.store import Store, StoreError

#: Acquisition methods that work from a model version's stored scores (the other baselines of
#: Tab. 4 need other model variants: see almdn experiment), then the two-stage methods
#: (:mod:`almdn.acquisition.batch`): the paper's score picks candidates, a second stage the batch.
ACQUISITION_METHODS = (
    "almdn", "almdn:sum_all", "almdn:max_loc", "almdn:max_cls", "almdn:max_al", "almdn:max_ep", "entropy", "random",
    "almdn+kcenter_balanced", "almdn+kcenter", "almdn+balance", "almdn+power", "typiclust",
)
#: The two-stage methods of :data:`ACQUISITION_METHODS` (:func:`almdn.acquisition.batch.policy_from_name`).
TWO_STAGE_METHODS = ("almdn+kcenter_balanced", "almdn+kcenter", "almdn+balance", "almdn+power", "typiclust")
#: The methods that compare images by the embeddings a scoring kept (:meth:`Store.embeddings`).
EMBEDDING_METHODS = ("almdn+kcenter_balanced", "almdn+kcenter", "typiclust")


def _check_method(method: str | None) -> None:
    if method is not None and method not in ACQUISITION_METHODS:
        raise InvalidChoice(f"Unknown acquisition method '{method}'; choose one of {', '.join(ACQUISITION_METHODS)}.")


def acquisition_scores(store: Store, method: str | None = "almdn", model_version: int | None = None, seed: int = 0) -> pd.Series:
    """One score per pool image (higher = label it sooner) by ``method`` of
    :data:`ACQUISITION_METHODS`, from the model version's stored uncertainties; ``None``: the
    model version's own final score, by the aggregation it was scored with (in ranking order).
    A two-stage method's first stage is the paper's score (``almdn``)."""
    from almdn.acquisition.baselines import mean_entropy_scores, random_scores
    from almdn.acquisition.aggregation import aggregate

    _check_method(method)
    if method in TWO_STAGE_METHODS:
        method = "almdn"
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


def select_for_labeling(store: Store, k: int, method: str | None = "almdn", model_version: int | None = None, seed: int = 0,
                        exclude_sent: bool = True) -> Batch:
    """The ``k`` pool images to label next by ``method``, each with why it was chosen (one
    sentence, :attr:`Batch.reasons`), leaving out images that already have a live Label Studio
    task when ``exclude_sent``.

    The one-stage methods take the top ``k`` of :func:`acquisition_scores`
    (:func:`almdn.acquisition.selection.select_batch`); the two-stage methods
    (:data:`TWO_STAGE_METHODS`) build :class:`~almdn.acquisition.batch.BatchInputs` from the
    store (the stored scores and their drivers, the stored detections' class mass, the labeled
    boxes per class, the embeddings the scoring kept) and run
    :func:`almdn.acquisition.batch.select`. Nothing runs a model. A model version scored
    before embeddings were kept gives one sentence for the methods that need them.
    """
    from almdn.acquisition.selection import select_batch

    if int(k) < 1:
        raise InvalidChoice("K must be at least 1.")
    _check_method(method)
    sent: set[int] = set()
    if exclude_sent:
        tasks = store.tasks()
        sent = set(tasks.loc[tasks["status"] != "deleted", "image_id"].tolist()) if not tasks.empty else set()
    if method in TWO_STAGE_METHODS:
        return _two_stage(store, int(k), method, model_version, seed, sent)
    scores = acquisition_scores(store, method, model_version, seed)
    scores = scores[~scores.index.isin(sent)]
    chosen = select_batch(scores, int(k))
    return Batch(chosen.image_ids, _one_stage_reasons(store, method, model_version, scores, chosen.image_ids), chosen.by_score, chosen.shortfall, chosen.message)


def _drivers(store: Store, mv: int) -> pd.Series:
    """Per scored image, the z-scored uncertainty behind its score, in words."""
    return score_drivers(store.image_scores(mv))


def _one_stage_reasons(store: Store, method: str | None, model_version: int | None, scores: pd.Series, chosen: list[int]) -> list[str]:
    if method == "random":
        return ["a random sample of the pool"] * len(chosen)
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    values = scores.to_numpy(dtype=np.float64)
    order = np.argsort(-np.where(np.isnan(values), -np.inf, values), kind="stable")
    rank = dict(zip(scores.index[order].tolist(), range(1, len(order) + 1)))
    drivers = _drivers(store, mv) if method != "entropy" else pd.Series(dtype=object)
    out = []
    for i in chosen:
        value = scores.get(i, np.nan)
        if value != value:
            out.append("no detection above the threshold: fills the batch")
        elif method == "entropy":
            out.append(f"mean class entropy rank {rank[i]} ({value:.3f})")
        else:
            driver = drivers.get(i)
            out.append(f"uncertainty rank {rank[i]}" + (f" ({driver})" if isinstance(driver, str) and driver else ""))
    return out


def _two_stage(store: Store, k: int, method: str, model_version: int | None, seed: int, sent: set[int]) -> Batch:
    policy = policy_from_name(method)
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    if mv is None:
        raise StoreError("No model has scored the pool yet; train one on the Train page first.")
    scores = acquisition_scores(store, "almdn", mv)
    pool_ids = [int(i) for i in scores.index]
    classes = store.classes()
    inputs = BatchInputs(scores, drivers=_drivers(store, mv).reindex(scores.index), class_names=classes)
    if "class_mass" in policy.needs:
        inputs.class_mass = class_mass(store.detections(mv, pool_ids), pool_ids, len(classes))
        counts = np.zeros(len(classes))
        labels = store.labels(split="labeled")["class_id"].to_numpy(dtype=np.int64)
        np.add.at(counts, labels[(labels >= 1) & (labels <= len(classes))] - 1, 1.0)
        inputs.labeled_counts = counts
    left_out: list[int] = []
    if "embeddings" in policy.needs:
        stored = store.embeddings(mv)
        if stored is None:
            name = store.model_version(mv)["name"]
            raise StoreError(
                f"Model version {mv} ({name}) has no image embeddings (it was scored before almdn kept them, or it is not an SSD), "
                f"which '{method}' compares images by: re-score the pool with a new model (retrain on the Train page, or almdn project "
                "score --checkpoint MODEL) or choose almdn, entropy, random, almdn+balance or almdn+power.")
        ids, vectors = stored
        row = {int(i): j for j, i in enumerate(ids)}
        # pool images without an embedding (unreadable, added after the scoring) only fill a shortfall
        keep = [i for i in pool_ids if i in row]
        left_out = [i for i in pool_ids if i not in row and i not in sent]
        position = pd.Index(pool_ids).get_indexer(keep)
        inputs = inputs.subset(position)
        inputs.embeddings = vectors[[row[i] for i in keep]].astype(np.float64)
        # the labeled images, and those out for labeling, are the fixed centers
        centers = [row[i] for i in sorted(set(store.image_ids("labeled")) | (sent & set(pool_ids))) if i in row]
        inputs.labeled_embeddings = vectors[centers].astype(np.float64) if centers else None
    try:
        batch = select(policy, inputs, k, labeled=sent, seed=seed)
    except ValueError as exc:  # an input the policy needs is missing: one sentence
        raise StoreError(str(exc)) from None
    if len(batch.image_ids) < k and left_out:
        fill = left_out[: k - len(batch.image_ids)]
        batch.image_ids += fill
        batch.reasons += ["not scored by this model version: fills the batch"] * len(fill)
        batch.shortfall = k - len(batch.image_ids)
        batch.message = "" if not batch.shortfall else (
            f"Only {len(batch.image_ids)} unlabeled images are left, fewer than the {k} asked for: all of them were selected.")
    return batch
