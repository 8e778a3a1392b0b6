"""Acquisition methods: one registry, one interface (numpy / pandas only).

Every method runs on the same detector (Sec. 4.2: "we reproduce all numbers by applying each
sampling method to the proposed GMM architecture"). A :class:`Method` says which model variant
it trains (:attr:`Method.model_variant`), what it reads of that model (:attr:`Method.needs`:
the kept detections, the predicted loss, several passes, features), how it turns what it reads
into one score per pool image (:meth:`Method.score`) and how the batch is chosen from the
scores (:meth:`Method.select`: the top B, or for a batch method a second stage,
:mod:`almdn.acquisition.batch`, with why each image is in it).

What a method reads comes from a model (:func:`almdn.acquisition.scoring.method_inputs`, the
experiment runner) or from a project's stored scores (:mod:`almdn.acquisition.stored`, the
app's Label page and ``almdn push --method``); ``almdn score`` and a project's scoring rank by
the ``almdn`` method of their aggregation.

Names (:func:`get_method`): ``almdn`` (the paper's score on the gmm head, ``max_all``),
``almdn_eff`` (the same on the eff head), ``almdn_eq5`` / ``almdn_type2`` (a detector trained
with that classification loss), ``almdn_weighted`` (every detection above the low threshold,
weighted by its score), ``entropy_weighted`` (the same for the mean class entropy),
``entropy_weighted_sum`` (its sum over the image's detections instead of the mean),
``almdn:<aggregation>`` / ``almdn_eff:<aggregation>`` (any
aggregation of Tab. 2, e.g. ``almdn:sum_cls``), ``random``, ``entropy``, ``coreset``,
``llal``, ``mc_dropout``, ``ensemble``; ``typiclust`` (the cold-start choice); and any of them
followed by ``+<stage>``, a second stage that turns the scores into a batch
(``almdn+kcenter_balanced``, ``almdn+kmedoids``, ``almdn+power``, ...:
:func:`almdn.acquisition.batch.policy_from_name`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from almdn.acquisition.aggregation import AGGREGATIONS, aggregate, image_scores
from almdn.acquisition.baselines import coreset_scores, loss_prediction_scores, mean_entropy_scores, random_scores
from almdn.acquisition.batch import Batch, BatchInputs, BatchPolicy, policy_from_name, select
from almdn.acquisition.selection import select_batch
from almdn.registry import DEFAULT_AGGREGATION

BASELINES = ("random", "entropy", "coreset", "llal", "mc_dropout", "ensemble")

#: What each kind of method reads of its model(s) beside the pool's ids (fields of
#: :class:`PoolInputs`): "detections" (the first model's kept detections), "predicted_loss"
#: (LLAL's module), "passes" (detections of class probabilities averaged over dropout passes
#: or ensemble members), "features" (pooled trunk features of the pool and the labeled set).
KIND_NEEDS: dict[str, frozenset[str]] = {
    "almdn": frozenset({"detections"}),
    "entropy": frozenset({"detections"}),
    "llal": frozenset({"predicted_loss"}),
    "mc_dropout": frozenset({"passes"}),
    "ensemble": frozenset({"passes"}),
    "coreset": frozenset({"features"}),
    "random": frozenset(),
    "typiclust": frozenset(),  # no score: its batch stage reads the embeddings
}


#: The :class:`PoolInputs` fields that satisfy each need (any one of them).
_NEED_FIELDS = {"detections": ("detections", "image_table"), "predicted_loss": ("predicted_loss",), "passes": ("passes",),
                "features": ("pool_features",)}


@dataclass
class PoolInputs:
    """What a method reads, in the order of ``pool_ids`` (each None unless the method needs it).

    Attributes:
        pool_ids: the unlabeled images.
        detections: the first model's kept detections
            (:func:`~almdn.acquisition.scoring.detections_frame`: one row per detection with
            the four uncertainties and the class entropy).
        image_table: the pool's per-image z-scored uncertainties as a project stored them
            (index: image id, :func:`~almdn.acquisition.aggregation.image_scores`); an almdn
            method aggregates these instead of z-scoring ``detections`` again.
        predicted_loss: ``(N,)`` LLAL's predicted detection loss per image.
        passes: kept detections of the class probabilities averaged over several passes
            (MC-dropout's dropout passes, the ensemble's members).
        pool_features, labeled_features: ``(N, D)`` / ``(M, D)`` trunk features (core-set).
        budget: B (core-set's greedy selection needs it); seed: the random stream.
    """

    pool_ids: Sequence[int]
    detections: pd.DataFrame | None = None
    image_table: pd.DataFrame | None = None
    predicted_loss: Any = None
    passes: pd.DataFrame | None = None
    pool_features: Any = None
    labeled_features: Any = None
    budget: int = 0
    seed: int = 0


@dataclass
class PoolScores:
    """One acquisition pass over the pool.

    Attributes:
        scores: one score per pool image (index: image id), NaN = no kept detection.
        table: per-image detail: for the almdn methods the four raw and z-scored uncertainties
            (:func:`~almdn.acquisition.aggregation.image_scores`), else just the score.
        seconds: wall-clock time of the pass (forward passes included), where measured.
    """

    scores: pd.Series
    table: pd.DataFrame
    seconds: float = 0.0


@dataclass(frozen=True)
class Method:
    """An acquisition method and the model variant it trains.

    Attributes:
        name: as given by the user.
        kind: "almdn", "typiclust" or one of :data:`BASELINES` (:data:`KIND_NEEDS`).
        head: the mixture head ("gmm" or "eff").
        aggregation: Tab. 2 aggregation of the almdn score; for an entropy method, "sum" sums
            the (score-weighted) class entropies of an image's detections instead of averaging.
        extras_dropout: dropout on the extra layers while training and scoring (MC-dropout).
        loss_prediction: train LLAL's learning-loss module with the detector.
        members: independently trained models (the ensemble's 3).
        cls_loss: the classification loss its detector trains with ("eq5" or "type2"); None
            keeps the experiment's (``model.cls_loss``, else :data:`almdn.registry.DEFAULT_CLS_LOSS`).
        weighting: which detections the almdn or entropy score reads: "threshold" (the paper's:
            those scoring at least the confidence threshold) or "score" (every detection above
            the low threshold, each uncertainty weighted by the detection's score, so that every
            image with a detection is ranked; :func:`~almdn.acquisition.aggregation.image_scores`,
            :func:`~almdn.acquisition.baselines.mean_entropy_scores`).
        batch: the second stage that chooses the batch from the scores (None: the top B).
    """

    name: str
    kind: str
    head: str = "gmm"
    aggregation: str = DEFAULT_AGGREGATION
    extras_dropout: float = 0.0
    loss_prediction: bool = False
    members: int = 1
    cls_loss: str | None = None
    weighting: str = "threshold"
    batch: BatchPolicy | None = None

    @property
    def model_variant(self) -> dict:
        """The build_model keywords that distinguish this method's detector."""
        variant = {"head": self.head, "extras_dropout": self.extras_dropout, "loss_prediction": self.loss_prediction}
        if self.cls_loss is not None:
            variant["cls_loss"] = self.cls_loss
        return variant

    @property
    def needs(self) -> frozenset[str]:
        """What :meth:`score` reads (fields of :class:`PoolInputs`, :data:`KIND_NEEDS`)."""
        return KIND_NEEDS[self.kind]

    @property
    def reads_predictions(self) -> bool:
        """Whether the method reads the first model's detections on the pool (its score or its
        batch stage's detection features), which methods on the same model can share."""
        return bool(self.needs & {"detections", "predicted_loss"}) or (self.batch is not None and "detection_features" in self.batch.needs)

    def detection_threshold(self, conf_threshold: float, low_threshold: float) -> float:
        """The score from which a detection counts for this method (Sec. 3.3's threshold; the
        low one for a score-weighted method)."""
        return low_threshold if self.weighting == "score" else conf_threshold

    def score(self, inputs: PoolInputs) -> PoolScores:
        """One score per pool image (higher = label it sooner) from what the method needs."""
        missing = [n for n in sorted(self.needs) if all(getattr(inputs, f) is None for f in _NEED_FIELDS[n])]
        if missing:
            raise ValueError(f"The {self.name} method needs the pool's {', '.join(missing).replace('_', ' ')}, which were not given.")
        table, scores = None, _SCORERS[self.kind](self, inputs)
        if isinstance(scores, pd.DataFrame):  # the almdn methods: the per-image table with its score
            table, scores = scores, scores.set_index("image_id")["score"]
        if table is None:
            table = scores.rename("score").reset_index()
        return PoolScores(scores.astype(np.float64), table)

    def select(
        self, scores: pd.Series, budget: int, labeled: Collection[int] = (), no_detection: str = "last", seed: int = 0,
        batch_inputs: BatchInputs | None = None, drivers: pd.Series | None = None,
    ) -> Batch:
        """The batch of ``budget`` pool images, each with why it was chosen: the top B of
        ``scores`` (:func:`~almdn.acquisition.selection.select_batch`, images without a score
        by ``no_detection``), or the second stage :attr:`batch` over ``batch_inputs``
        (:func:`~almdn.acquisition.batch.select`). ``drivers``: per image the uncertainty
        behind its score, in words, for the reasons of the top B."""
        if self.batch is not None:
            if batch_inputs is None:
                raise ValueError(f"The {self.name} method chooses its batch by a second stage, which needs its inputs.")
            return select(self.batch, batch_inputs, budget, labeled, seed=seed)
        chosen = select_batch(scores, budget, labeled, no_detection, seed=seed)
        return Batch(chosen.image_ids, self._reasons(scores, chosen.image_ids, drivers), chosen.by_score, chosen.shortfall, chosen.message)

    def _reasons(self, scores: pd.Series, chosen: list[int], drivers: pd.Series | None) -> list[str]:
        """Why each image of a top-B batch was chosen: its rank by the score (and the driver)."""
        if self.kind == "random":
            return ["a random sample of the pool"] * len(chosen)
        values = scores.to_numpy(dtype=np.float64)
        order = np.argsort(-np.where(np.isnan(values), -np.inf, values), kind="stable")
        rank = dict(zip(scores.index[order].tolist(), range(1, len(order) + 1)))
        out = []
        for i in chosen:
            value = scores.get(i, np.nan)
            driver = drivers.get(i) if drivers is not None else None
            if value != value:
                out.append("no detection above the threshold: fills the batch")
            elif self.kind == "entropy":
                what = "summed" if self.aggregation == "sum" else "mean"
                out.append(f"{what} class entropy rank {rank[i]} ({value:.3f})")
            else:
                out.append(f"uncertainty rank {rank[i]}" + (f" ({driver})" if isinstance(driver, str) and driver else ""))
        return out


def _almdn(method: Method, inputs: PoolInputs):
    """Sec. 3.3: the z-scored uncertainties' maxima per image, aggregated (Tab. 2)."""
    if inputs.image_table is not None:  # stored z-scores: aggregated again, not recomputed
        return aggregate(inputs.image_table, method.aggregation).rename("score")
    return image_scores(inputs.detections, list(inputs.pool_ids), method.aggregation, score_weighted=method.weighting == "score")


def _entropy(method: Method, inputs: PoolInputs) -> pd.Series:
    """The mean (or, aggregation "sum", summed) class entropy of each image's detections
    (score-weighted: over the faint ones too); a project's stored per-image score-weighted mean
    where given (``image_table``)."""
    weighted, total = method.weighting == "score", method.aggregation == "sum"
    if inputs.image_table is not None and weighted:
        if total:  # a project's scoring keeps the weighted mean only, not what the sum needs
            raise ValueError(f"The {method.name} method needs the pool's detections; a project's stored scores hold only the weighted mean.")
        return inputs.image_table["entropy_weighted"].astype(np.float64).rename("score")
    return mean_entropy_scores(inputs.detections, list(inputs.pool_ids), score_weighted=weighted, total=total)


def _pool_zeros(method: Method, inputs: PoolInputs) -> pd.Series:
    return pd.Series(0.0, index=pd.Index(list(inputs.pool_ids), name="image_id"), name="score")


#: kind -> the function from a method and its inputs to the scores (or the almdn table).
_SCORERS: dict[str, Callable[[Method, PoolInputs], Any]] = {
    "almdn": _almdn,
    "entropy": _entropy,
    "llal": lambda m, i: loss_prediction_scores(i.predicted_loss, list(i.pool_ids)),
    "mc_dropout": lambda m, i: mean_entropy_scores(i.passes, list(i.pool_ids)),
    "ensemble": lambda m, i: mean_entropy_scores(i.passes, list(i.pool_ids)),
    "coreset": lambda m, i: coreset_scores(i.pool_features, i.labeled_features, i.budget, list(i.pool_ids)),
    "random": lambda m, i: random_scores(list(i.pool_ids), i.seed),
    "typiclust": _pool_zeros,
}

#: The methods by name: each builds its :class:`Method` from the multi-pass settings
#: (MC-dropout's dropout, the ensemble's size).
METHODS: dict[str, Callable[[float, int], Method]] = {
    "almdn": lambda dropout, size: Method("almdn", "almdn"),
    "almdn_eff": lambda dropout, size: Method("almdn_eff", "almdn", head="eff"),
    "almdn_eq5": lambda dropout, size: Method("almdn_eq5", "almdn", cls_loss="eq5"),
    "almdn_type2": lambda dropout, size: Method("almdn_type2", "almdn", cls_loss="type2"),
    "almdn_weighted": lambda dropout, size: Method("almdn_weighted", "almdn", weighting="score"),
    "random": lambda dropout, size: Method("random", "random"),
    "entropy": lambda dropout, size: Method("entropy", "entropy"),
    "entropy_weighted": lambda dropout, size: Method("entropy_weighted", "entropy", weighting="score"),
    "entropy_weighted_sum": lambda dropout, size: Method("entropy_weighted_sum", "entropy", aggregation="sum", weighting="score"),
    "coreset": lambda dropout, size: Method("coreset", "coreset"),
    "llal": lambda dropout, size: Method("llal", "llal", loss_prediction=True),
    "mc_dropout": lambda dropout, size: Method("mc_dropout", "mc_dropout", extras_dropout=dropout),
    "ensemble": lambda dropout, size: Method("ensemble", "ensemble", members=size),
    "typiclust": lambda dropout, size: Method("typiclust", "typiclust", batch=policy_from_name("typiclust")),
}
#: The heads of the ``<base>:<aggregation>`` names.
AGGREGATION_BASES = {"almdn": "gmm", "almdn_eff": "eff"}


def get_method(name: str, mc_dropout: float = 0.1, ensemble_size: int = 3) -> Method:
    """The :class:`Method` called ``name`` (see the module docstring for the names)."""
    first, plus, stage = name.partition("+")
    if plus:  # <first stage>+<second stage>, e.g. almdn+kcenter_balanced
        return dataclasses.replace(get_method(first, mc_dropout, ensemble_size), name=name, batch=policy_from_name(name))
    if name in METHODS:
        return METHODS[name](mc_dropout, ensemble_size)
    base, colon, aggregation = name.partition(":")
    if colon and base in AGGREGATION_BASES:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"Unknown aggregation '{aggregation}' in method '{name}'; choose one of {', '.join(AGGREGATIONS)}.")
        return Method(name, "almdn", head=AGGREGATION_BASES[base], aggregation=aggregation)
    known = [*METHODS, "almdn:<aggregation>", "<method>+<stage>"]
    raise ValueError(f"Unknown acquisition method '{name}'; choose one of {', '.join(known)}.")


def paper_method(aggregation: str = DEFAULT_AGGREGATION) -> Method:
    """The paper's score by ``aggregation`` (Tab. 2): what ``almdn score`` and a project's
    scoring rank the pool by."""
    return get_method(f"almdn:{aggregation}") if aggregation != DEFAULT_AGGREGATION else get_method("almdn")
