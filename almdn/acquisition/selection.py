"""Top-B selection from per-image scores: ties, images without detections, small pools.

The paper selects the B highest-scoring pool images each cycle. What it leaves open is pinned
down here:

- **Ties** are broken by pool order (the order of ``scores``), so a selection is reproducible.
- **Images without a kept detection** have no uncertainty (NaN score). The reference ranks
  them last; :data:`NO_DETECTION_POLICIES` lets the user choose: ``"last"`` (after every scored
  image, in pool order) or ``"random"`` (after every scored image, a seeded random sample).
- **A budget larger than the pool** selects the whole pool and says so in
  :attr:`Selection.shortfall`; the batch is never shrunk silently.
- Images that are already labeled are never selected, whatever their score.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NO_DETECTION_POLICIES = ("last", "random")


@dataclass
class Selection:
    """The images chosen for labeling, in the order they were chosen.

    Attributes:
        image_ids: the selected pool images (length ``budget`` unless the pool is smaller).
        by_score: how many of them were chosen by their score (the rest had no score).
        shortfall: ``budget - len(image_ids)``: how many the pool could not supply.
        message: one sentence for the user when something did not go as asked, else "".
    """

    image_ids: list[int]
    by_score: int
    shortfall: int = 0
    message: str = field(default="")


def select_batch(
    scores: pd.Series,
    budget: int,
    labeled: Collection[int] = (),
    no_detection: str = "last",
    seed: int = 0,
) -> Selection:
    """The ``budget`` highest-scoring pool images (Sec. 4.2).

    Args:
        scores: one score per pool image, indexed by image id; NaN for images without a kept
            detection (their policy is ``no_detection``). Higher is more informative.
        budget: B, the number of images to label this cycle.
        labeled: image ids that are already labeled; they are excluded even if scored.
        no_detection: ``"last"`` or ``"random"`` (see the module docstring).
        seed: random stream of the ``"random"`` policy.
    """
    if budget < 0:
        raise ValueError("the budget must be >= 0")
    if no_detection not in NO_DETECTION_POLICIES:
        raise ValueError(f"Unknown no-detection policy '{no_detection}'; choose one of {', '.join(NO_DETECTION_POLICIES)}.")
    if scores.index.has_duplicates:
        raise ValueError("each pool image must have exactly one score")
    pool = scores[~scores.index.isin(list(labeled))]
    values = pool.to_numpy(dtype=np.float64)
    finite = ~np.isnan(values)
    # Stable sort on the negated score: descending, ties in pool order.
    order = np.argsort(-values[finite], kind="stable")
    ranked = pool.index[finite][order].tolist()
    unscored = pool.index[~finite].tolist()
    if no_detection == "random":
        unscored = [unscored[i] for i in np.random.default_rng(seed).permutation(len(unscored))]
    chosen = (ranked + unscored)[:budget]
    by_score = min(len(ranked), budget)
    shortfall = budget - len(chosen)
    message = ""
    if shortfall:
        message = f"Only {len(chosen)} unlabeled images are left, fewer than the {budget} asked for: all of them were selected."
    return Selection([int(i) for i in chosen], by_score, shortfall, message)
