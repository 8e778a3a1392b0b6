"""The experiment layer: the paper's active-learning experiments (runner) and their report."""
