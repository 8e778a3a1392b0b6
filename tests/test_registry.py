"""One registry of architectures and heads: every layer offers exactly what the library builds."""

from __future__ import annotations

from almdn import registry


def test_the_registry_names_what_the_builders_build():
    from almdn.models import ARCH_NAMES, FRCNN_ARCHITECTURES, SSD_BUILDERS, HEAD_TYPES

    assert set(registry.SSD_ARCHITECTURES) == set(SSD_BUILDERS)
    assert set(registry.FRCNN_ARCHITECTURES) == set(FRCNN_ARCHITECTURES)
    assert ARCH_NAMES == registry.ARCH_NAMES == (*registry.SSD_ARCHITECTURES, *registry.FRCNN_ARCHITECTURES)
    assert HEAD_TYPES == registry.HEAD_TYPES
    assert set(registry.MIXTURE_HEAD_TYPES) < set(registry.HEAD_TYPES)
    assert all(registry.ARCHITECTURES[name] for name in registry.ARCH_NAMES)  # a line on each


def test_the_cli_offers_every_architecture_and_head():
    import click

    from almdn.cli import main

    train = main.commands["train"]
    choices = {p.name: p.type.choices for p in train.params if isinstance(p.type, click.Choice)}
    assert tuple(choices["arch"]) == registry.ARCH_NAMES
    assert tuple(choices["head"]) == registry.HEAD_TYPES


def test_rounds_and_the_app_offer_the_registry_s_round_choices():
    from almdn.projects.rounds import RoundSettings

    assert "ssdlite320_mobilenet_v3_large" in registry.ROUND_ARCH_NAMES
    assert set(registry.ROUND_ARCH_NAMES) <= set(registry.SSD_ARCHITECTURES)
    assert RoundSettings().arch == registry.ROUND_ARCH_NAMES[0]
    for arch in registry.ROUND_ARCH_NAMES:
        RoundSettings(arch=arch).check()
    for head in registry.ROUND_HEAD_TYPES:
        RoundSettings(head=head).check()


# ---- each default named once: a second literal anywhere in almdn/ or app/ is listed by file:line

import ast  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Parameter (or field, or click option) names that carry the confidence threshold.
THRESHOLD_NAMES = ("conf_threshold", "threshold", "score_threshold")
#: Names that carry K.
K_NAMES = ("num_components", "components", "k", "K")


def _sources() -> list[Path]:
    return sorted(p for folder in ("almdn", "app") for p in (REPO / folder).rglob("*.py") if p.name != "registry.py")


def _defaults(tree: ast.AST):
    """``(name, default node)`` of every parameter default, annotated field and keyword default
    (a click option's ``default=``, named by its parameter)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            for arg, default in zip(positional[len(positional) - len(a.defaults):], a.defaults):
                yield arg.arg, default
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                if default is not None:
                    yield arg.arg, default
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value
        elif isinstance(node, ast.Call):
            names = [c.value for c in node.args if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if "default" in keywords and names:
                # the option's names ("-K", "--components", "components"): the first that is a known name
                plain = [option.lstrip("-").replace("-", "_") for option in names]
                yield next((n for n in plain if n in THRESHOLD_NAMES + K_NAMES), plain[-1]), keywords["default"]


def _is(node: ast.AST, value: object) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def test_the_defaults_appear_as_literals_only_in_the_registry():
    offending = []
    for path in _sources():
        text = path.read_text()
        where = path.relative_to(REPO)
        for name, default in _defaults(ast.parse(text, str(path))):
            if name in THRESHOLD_NAMES and _is(default, registry.DEFAULT_CONF_THRESHOLD):
                offending.append(f"{where}:{default.lineno}: {name} = {default.value} (registry.DEFAULT_CONF_THRESHOLD)")
            if name in K_NAMES and _is(default, registry.DEFAULT_NUM_COMPONENTS):
                offending.append(f"{where}:{default.lineno}: {name} = {default.value} (registry.DEFAULT_NUM_COMPONENTS)")
        for lineno, line in enumerate(text.splitlines(), 1):
            if re.search(r"""["']max_all["']""", line):
                offending.append(f"{where}:{lineno}: \"max_all\" (registry.DEFAULT_AGGREGATION)")
    assert offending == [], "\n".join(offending)


def test_the_literal_search_finds_what_it_looks_for():
    tree = ast.parse(
        "def f(conf_threshold: float = 0.5, *, num_components: int = 4): ...\n"
        "class S:\n    k: int = 4\n    threshold: float = 0.5\n"
        "option('--conf-threshold', default=0.5)\noption('-K', '--components', 'components', default=4)\n"
    )
    found = [(name, d.value) for name, d in _defaults(tree) if _is(d, 0.5) or _is(d, 4)]
    assert ("conf_threshold", 0.5) in found and ("num_components", 4) in found and ("k", 4) in found
    assert ("threshold", 0.5) in found and ("K", 4) in found
