"""The diversity-stage families (coverage, class balance, cold start, sampling) behind
``almdn.acquisition.diversity``: torch-free, and gathered there under their own names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from almdn.acquisition import diversity

FAMILIES = ("conventions", "coverage", "class_balance", "cold_start", "sampling")


def test_every_family_module_is_torch_free():
    allowed = {"__future__", "math", "collections", "numpy", "scipy", "sklearn"}
    for name in FAMILIES:
        module = importlib.import_module(f"almdn.acquisition.{name}")
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names = {n for n in names if not n.startswith("almdn.acquisition.")}  # a sibling family
        assert {n.split(".")[0] for n in names} <= allowed, name
        siblings = {n.module.rpartition(".")[2] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("almdn.acquisition.")}
        assert siblings <= set(FAMILIES), name


def test_diversity_gathers_each_public_name_from_its_family():
    for name in diversity.__all__:
        obj = getattr(diversity, name)
        if callable(obj):
            assert obj.__module__.rpartition(".")[2] in FAMILIES, name
    assert diversity.POWER_MODES == ("power", "softmax", "softrank")
