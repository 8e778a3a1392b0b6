"""Acquisition from a model version's stored scores: which pool images to label next.

A project's pool is scored once per model version (:func:`almdn.workflow.score_pool` stores
each image's four z-scored uncertainties and final score); the methods here rank the pool from
those stored values without running the model again: the model version's own final score,
the paper's aggregations of Tab. 2 (:func:`almdn.acquisition.scoring.aggregate`), the mean class
entropy, its score-weighted form over the faint detections too (``entropy_weighted``, the
default, :data:`DEFAULT_ACQUISITION`) and random; and the two-stage methods (candidates by
their first stage, the paper's score or entropy_weighted, then diversity over the embeddings the
scoring kept and class balance from the stored class mass of the detections the first stage
read and the labels, :mod:`almdn.acquisition.batch`). The Label page previews a batch with
:func:`select_for_labeling`, each image with why it was chosen, and ``almdn push --top-k``
sends one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from almdn.acquisition.batch import Batch, BatchInputs, class_mass, score_drivers
from almdn.acquisition.methods import Method, PoolInputs, get_method
from almdn.errors import InvalidChoice
from almdn.projects.store import Store, StoreError

#: The acquisition methods (:func:`almdn.acquisition.methods.get_method`) the app's Label page
#: and ``almdn push --method`` offer: those that work from a model version's stored scores
#: (the other baselines of Tab. 4 need other model variants: see almdn experiment), then the
#: two-stage methods (:mod:`almdn.acquisition.batch`): the paper's score picks candidates, a
#: second stage the batch.
ACQUISITION_METHODS = (
    "almdn", "almdn:sum_all", "almdn:max_loc", "almdn:max_cls", "almdn:max_al", "almdn:max_ep", "entropy", "entropy_weighted", "random",
    "almdn+kcenter_balanced", "almdn+kcenter", "almdn+balance", "almdn+power", "typiclust", "entropy_weighted+balance",
)
#: The Label page's default, and ``almdn push``'s without ``--method``, chosen by measurement on
#: the demo protocol (``bench/runs/demo``, 5 seeds): of the eight methods first measured, the
#: score-weighted entropy over every detection above the low threshold led random by +5.8 and
#: +6.5 mAP@0.5 points at 400 and 600 images (paired 95% intervals above zero) with fewer boxes
#: than entropy; top-B methods that read only the sure detections cannot pick the half of the
#: pool where the young model finds nothing. On the second dataset (``bench/runs/shapes``) it
#: leads random by +1.3 and +2.2 (README, "Active learning on the 5-seed protocol").
DEFAULT_ACQUISITION = "entropy_weighted"
assert DEFAULT_ACQUISITION in ACQUISITION_METHODS
#: What a scoring stores (:meth:`Store.image_scores`, :meth:`Store.detections`,
#: :meth:`Store.embeddings`): the first stages and the second-stage inputs read from it.
STORED_NEEDS = frozenset({"detections"})
STORED_BATCH_NEEDS = frozenset({"embeddings", "class_mass"})
_METHODS: dict[str, Method] = {name: get_method(name) for name in ACQUISITION_METHODS}
assert all(m.needs <= STORED_NEEDS and (m.batch is None or m.batch.needs <= STORED_BATCH_NEEDS) for m in _METHODS.values())
#: The two-stage methods of :data:`ACQUISITION_METHODS`.
TWO_STAGE_METHODS = tuple(name for name, m in _METHODS.items() if m.batch is not None)
#: The methods that compare images by the embeddings a scoring kept (:meth:`Store.embeddings`).
EMBEDDING_METHODS = tuple(name for name, m in _METHODS.items() if m.batch is not None and "embeddings" in m.batch.needs)
#: The first stage of a two-stage method from stored scores: the paper's score.
_PAPER = _METHODS["almdn"]


def _method(method: str | None) -> Method | None:
    if method is not None and method not in _METHODS:
        raise InvalidChoice(f"Unknown acquisition method '{method}'; choose one of {', '.join(ACQUISITION_METHODS)}.")
    return None if method is None else _METHODS[method]


def _scored_version(store: Store, model_version: int | None) -> int:
    mv = store.latest_model_version(scored=True) if model_version is None else int(model_version)
    if mv is None:
        raise StoreError("No model has scored the pool yet; train one on the Train page first.")
    return mv


def stored_inputs(store: Store, method: Method, model_version: int | None = None, seed: int = 0) -> PoolInputs:
    """What ``method`` reads, from the model version's stored scoring of the current pool:
    the stored z-scored uncertainties per image (the almdn methods), the stored score-weighted
    entropy per image (entropy_weighted) or the stored kept detections (entropy); nothing for
    random. A scoring made before the store kept the weighted entropy gives one sentence."""
    pool_ids = store.image_ids("pool")
    inputs = PoolInputs(pool_ids, seed=seed)
    if not method.needs:
        return inputs
    mv = _scored_version(store, model_version)
    if method.kind == "almdn" or method.weighting == "score":
        if method.kind == "entropy":  # only entropy_weighted needs what schema 7 added
            low = store.model_version(mv).get("low_threshold")
            if low is None or low != low:  # NULL: scored before schema 7
                raise InvalidChoice(f"Model version {mv} was scored before the store kept the score-weighted entropy; score the pool again "
                                    "(Retrain, or almdn project score) to rank by entropy_weighted.")
        inputs.image_table = store.image_scores(mv).set_index("image_id").reindex(pd.Index(pool_ids, name="image_id"))
    else:
        inputs.detections = store.detections(mv, pool_ids)
    return inputs


def acquisition_scores(store: Store, method: str | None = "almdn", model_version: int | None = None, seed: int = 0) -> pd.Series:
    """One score per pool image (higher = label it sooner) by ``method`` of
    :data:`ACQUISITION_METHODS`, from the model version's stored uncertainties; ``None``: the
    model version's own final score, by the aggregation it was scored with (in ranking order).
    A two-stage method's first stage is the paper's score (``almdn``)."""
    chosen = _method(method)
    if chosen is None:
        mv = _scored_version(store, model_version)
        return store.pool_ranking(mv).set_index("image_id")["score"].astype(np.float64).rename("score")
    if chosen.batch is not None:
        chosen = _first_stage(chosen)
    return chosen.score(stored_inputs(store, chosen, model_version, seed)).scores.rename("score")


def _first_stage(method: Method) -> Method:
    """The stage-1 method of a two-stage one (``entropy_weighted+balance``: entropy_weighted);
    a name without a first stage of its own (``typiclust``) ranks by the paper's score."""
    first = method.name.partition("+")[0]
    return _METHODS.get(first, _PAPER) if first != method.name else _PAPER


def select_for_labeling(store: Store, k: int, method: str | None = "almdn", model_version: int | None = None, seed: int = 0,
                        exclude_sent: bool = True) -> Batch:
    """The ``k`` pool images to label next by ``method``, each with why it was chosen (one
    sentence, :attr:`Batch.reasons`), leaving out images that already have a live Label Studio
    task when ``exclude_sent``.

    The one-stage methods take the top ``k`` of :func:`acquisition_scores`
    (:meth:`Method.select`); the two-stage methods (:data:`TWO_STAGE_METHODS`) build
    :class:`~almdn.acquisition.batch.BatchInputs` from the store (the stored scores and their
    drivers, the stored detections' class mass, the labeled boxes per class, the embeddings the
    scoring kept) for their second stage. Nothing runs a model. A model version scored before
    embeddings were kept gives one sentence for the methods that need them.
    """
    if int(k) < 1:
        raise InvalidChoice("K must be at least 1.")
    chosen = _method(method)
    sent: set[int] = set()
    if exclude_sent:
        tasks = store.tasks()
        sent = set(tasks.loc[tasks["status"] != "deleted", "image_id"].tolist()) if not tasks.empty else set()
    if chosen is not None and chosen.batch is not None:
        return _two_stage(store, int(k), chosen, model_version, seed, sent)
    scores = acquisition_scores(store, method, model_version, seed)
    scores = scores[~scores.index.isin(sent)]
    ranking = chosen or _PAPER  # the version's own score: reasons as the paper's
    drivers = None
    if ranking.kind not in ("random", "entropy"):
        drivers = _drivers(store, _scored_version(store, model_version))
    return ranking.select(scores, int(k), drivers=drivers)


def _drivers(store: Store, mv: int) -> pd.Series:
    """Per scored image, the z-scored uncertainty behind its score, in words."""
    return score_drivers(store.image_scores(mv))


def _two_stage(store: Store, k: int, method: Method, model_version: int | None, seed: int, sent: set[int]) -> Batch:
    policy, first = method.batch, _first_stage(method)
    mv = _scored_version(store, model_version)
    scores = acquisition_scores(store, first.name, mv)
    pool_ids = [int(i) for i in scores.index]
    classes = store.classes()
    drivers = _drivers(store, mv).reindex(scores.index) if first.kind == "almdn" else None
    inputs = BatchInputs(scores, drivers=drivers, class_names=classes)
    if "class_mass" in policy.needs:
        # the detections the first stage read: a score-weighted one's faint ones too
        if first.weighting == "score":
            inputs.class_mass = store.class_mass(mv, pool_ids)
            if inputs.class_mass is None:
                raise StoreError(f"Model version {mv} was scored before the store kept the classes of its faint detections, which '{method.name}' "
                                 "balances by; score the pool again (Retrain, or almdn project score).")
        else:
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
                f"which '{method.name}' compares images by: re-score the pool with a new model (retrain on the Train page, or almdn project "
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
        batch = method.select(scores, k, labeled=sent, seed=seed, batch_inputs=inputs)
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
