"""Names every layer needs without importing torch (the CLI's choices, the store, the app).

The library modules that implement these names import them from here, so a choice offered by
the command line or the app is always one the library knows.
"""

from __future__ import annotations

#: Classification losses: "eq5" is the paper's pi-weighted sum of component cross-entropies
#: (Eq. 5 / Eq. 9); "type2" is the reference implementation's mixture likelihood of the target
#: class (:func:`almdn.losses.mixture_class_nll`).
CLASS_LOSSES: tuple[str, ...] = ("eq5", "type2")
#: The classification loss of every model trained without saying otherwise. Type-2, by
#: measurement: on the demo protocol it keeps the class mixture from collapsing at equal mAP
#: (README, Results).
DEFAULT_CLS_LOSS = "type2"
