"""The image score of Sec. 3.3 from per-detection uncertainties, in pandas only (no torch):
z-score every kept detection's four uncertainties over the scored pool, take the maximum per
image, and combine the four by one of Tab. 2's aggregations. The app's pages read these
without importing torch; :mod:`almdn.acquisition.scoring` produces the detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from almdn.errors import InvalidChoice
from almdn.registry import DEFAULT_AGGREGATION, UNCERTAINTY_NAMES

#: The paper's short names (u_alb, u_epb, u_alc, u_epc) for the four uncertainties.
SHORT_NAMES = dict(zip(("alb", "epb", "alc", "epc"), UNCERTAINTY_NAMES))


def _aggregation_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tab. 2's aggregation functions: name -> ("max" | "sum", the uncertainties combined)."""
    groups = {
        "loc": ("alb", "epb"),  # both uncertainties of the localization head
        "cls": ("alc", "epc"),  # both of the classification head
        "al": ("alb", "alc"),  # aleatoric of both heads
        "ep": ("epb", "epc"),  # epistemic of both heads
        "all": ("alb", "epb", "alc", "epc"),
    }
    table = {short: ("max", (short,)) for short in SHORT_NAMES}
    for op in ("sum", "max"):
        table.update({f"{op}_{group}": (op, members) for group, members in groups.items()})
    return table


#: Every aggregation of Tab. 2 by name; ``max_all`` is the paper's (and the default).
AGGREGATIONS: dict[str, tuple[str, tuple[str, ...]]] = _aggregation_table()
assert DEFAULT_AGGREGATION in AGGREGATIONS


def image_scores(
    detections: pd.DataFrame, image_ids: Sequence[int], aggregation: str = DEFAULT_AGGREGATION, score_weighted: bool = False
) -> pd.DataFrame:
    """Per image: detection count, the four raw uncertainties (max over detections), their
    z-scored values (Sec. 3.3) and the final ``score`` by ``aggregation`` of the z-values.

    z-scores use the mean and population std over all rows of ``detections`` (the pool's kept
    detections). Images without a kept detection get NaN values and NaN score (see
    :func:`almdn.acquisition.selection.select_batch` for what happens to them).

    Args:
        aggregation: a key of :data:`AGGREGATIONS`; ``max_all`` (the paper's best) takes the
            maximum of the four z-scored values, ``"sum_loc"`` the sum of the localization
            head's two, ``"alc"`` only the classification aleatoric one, and so on.
        score_weighted: multiply each detection's uncertainties by its score before the
            z-scores (the expected uncertainty of a detection that is an object with
            probability ``score``). Meant for detections above a low threshold: every image
            with any detection is then ranked, and a near-background detection cannot
            outrank a likely object on its uncertainty alone. The raw columns then hold the
            weighted values.
    """
    if aggregation not in AGGREGATIONS:
        raise InvalidChoice(f"Unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    if score_weighted:
        detections = detections.assign(**{name: detections[name] * detections["score"] for name in UNCERTAINTY_NAMES})
    z = detections[list(UNCERTAINTY_NAMES)].astype(np.float64)
    std = z.std(ddof=0).replace(0.0, 1.0)  # a constant uncertainty carries no ranking signal
    z = (z - z.mean()) / std
    z.columns = [f"z_{c}" for c in UNCERTAINTY_NAMES]
    per_det = pd.concat([detections[["image_id", *UNCERTAINTY_NAMES]], z], axis=1)
    grouped = per_det.groupby("image_id")
    table = grouped.max()
    table.insert(0, "num_detections", grouped.size())
    table = table.reindex(pd.Index(list(image_ids), name="image_id"))
    table["num_detections"] = table["num_detections"].fillna(0).astype(int)
    table["score"] = aggregate(table, aggregation)
    return table.reset_index()


def aggregate(table: pd.DataFrame, aggregation: str = DEFAULT_AGGREGATION) -> pd.Series:
    """An image's final score from its z-scored uncertainties (columns ``z_loc_aleatoric``
    ...) by ``aggregation`` (Tab. 2); NaN for an image without a kept detection
    (``num_detections`` 0). A plain head has no localization uncertainty (NaN): the
    aggregation combines what exists."""
    if aggregation not in AGGREGATIONS:
        raise InvalidChoice(f"Unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    op, members = AGGREGATIONS[aggregation]
    values = table[[f"z_{SHORT_NAMES[m]}" for m in members]]
    score = values.max(axis=1, skipna=True) if op == "max" else values.sum(axis=1, min_count=1)
    score[table["num_detections"].fillna(0).to_numpy() == 0] = np.nan
    return score.astype(np.float64)


def score_driver(table: pd.DataFrame, aggregation: str = DEFAULT_AGGREGATION) -> tuple[np.ndarray, np.ndarray]:
    """Which uncertainty an image's final score comes from: under a "max" aggregation (Tab. 2)
    the one whose z-value is the score, under a "sum" the largest term. Returns, per row of
    ``table`` (with the ``z_*`` columns of :func:`image_scores`), the uncertainty's name (None
    without a score) and its z-value (NaN without). An unknown aggregation reads all four; a
    column the table lacks (a head without that uncertainty) does not count."""
    _, members = AGGREGATIONS.get(aggregation, AGGREGATIONS[DEFAULT_AGGREGATION])
    names = [SHORT_NAMES[m] for m in members if f"z_{SHORT_NAMES[m]}" in table]
    if not names:
        return np.full(len(table), None, dtype=object), np.full(len(table), np.nan)
    z = table[[f"z_{n}" for n in names]].to_numpy(dtype=np.float64)
    has = ~np.isnan(z).all(axis=1)
    if "score" in table:
        has &= table["score"].notna().to_numpy()
    best = np.argmax(np.where(np.isnan(z), -np.inf, z), axis=1)
    driver = np.where(has, np.array(names, dtype=object)[best], None)
    return driver, np.where(has, z[np.arange(len(z)), best], np.nan)
