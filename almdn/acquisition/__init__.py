"""Image scoring for active learning: the paper's (Sec. 3.3) and the baselines.

Import the submodules: :mod:`~almdn.acquisition.aggregation` (torch-free, what the app reads),
:mod:`~almdn.acquisition.scoring`, :mod:`~almdn.acquisition.methods`, ...; the package itself
imports nothing, so reading a score does not load the detector's libraries."""
