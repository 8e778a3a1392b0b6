"""The import structure of the packages: no cycles (lower layers never import higher ones; the
Label Studio integration never imports the library), and no private name of another module
imported without a comment that says why."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("almdn", "label_studio")


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of :data:`PACKAGES` (a package is its __init__)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports, anywhere in it (a function-level
    import is a dependency too; ``from package import name`` counts as the submodule ``name``
    when there is one, else as the package)."""

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {t for a in node.names if (t := known(a.name))}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else known(base)
                    if target:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = import_graph(modules())
    assert len(graph) > 40  # every module was read
    assert cycles(graph) == []


def test_no_import_cycle_between_the_packages():
    """The library calls the Label Studio integration, never the other way round."""
    graph = import_graph(modules())
    back = sorted((a, b) for a, targets in graph.items() for b in targets if a.startswith("label_studio") and b.startswith("almdn"))
    assert back == []


def test_private_names_of_other_modules_are_imported_only_with_a_reason():
    """``from x import _y`` (or ``import x._y``) reaches into another module's internals: allowed
    only where a comment on the import says why there is no public API (torchvision's backbone
    builders, for instance)."""
    unexplained = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                private += [part for part in (node.module or "").split(".") if part.startswith("_") and not part.startswith("__")]
            elif isinstance(node, ast.Import):
                private = [part for a in node.names for part in a.name.split(".") if part.startswith("_") and not part.startswith("__")]
            else:
                continue
            source = lines[node.lineno - 1 : node.end_lineno]
            if private and not any("#" in line for line in source):
                unexplained.append(f"{path.relative_to(REPO)}:{node.lineno} imports {', '.join(private)}")
    assert unexplained == []


def test_jobs_are_registered_by_import_so_this_test_sees_what_they_run():
    """A job's process runs :data:`almdn.projects.jobs.RUNNER_MODULE`, whose registry imports each job's
    function: the import graph above holds every module a job runs (no import strings)."""
    from almdn.projects import jobs
    from almdn.workflow.job_kinds import JOB_FUNCTIONS

    graph = import_graph(modules())
    assert jobs.RUNNER_MODULE in graph
    assert set(JOB_FUNCTIONS) == set(jobs.JOB_TITLES) == set(jobs.JOB_KINDS)
    for kind, fn in JOB_FUNCTIONS.items():
        assert fn.__module__ in graph[jobs.RUNNER_MODULE], (kind, fn.__module__)
    assert "job_kinds" not in "".join(sorted(graph["almdn.projects.jobs"]))  # jobs starts the runner, never imports it


def test_no_module_imports_by_string():
    """``importlib.import_module`` or ``__import__`` hides a dependency from the graph above."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if called in ("import_module", "__import__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


def test_base_modules_import_no_integration_and_data_no_models():
    """The base modules (errors, registry, the store, the datasets) import no ``label_studio``,
    and ``almdn.data`` never imports ``almdn.models``."""
    graph = import_graph(modules())
    base = [m for m in graph if m in ("almdn.errors", "almdn.registry") or m.startswith(("almdn.projects.store", "almdn.data"))]
    assert "almdn.errors" in base and "almdn.projects.store.schema" in base
    to_label_studio = sorted(f"{m} -> {t}" for m in base for t in graph[m] if t.startswith("label_studio"))
    assert to_label_studio == []
    data_to_models = sorted(f"{m} -> {t}" for m in graph if m.startswith("almdn.data") for t in graph[m] if t.startswith("almdn.models"))
    assert data_to_models == []


def test_each_folder_is_imported_only_from_the_layers_above():
    """The folders of ``almdn/`` are layers (issue 21 item 6): the command line (``cli/``) is
    imported by nothing in the library, the experiments (``experiments/``) only by the command
    line, what the pages show (``display/``) only by the use cases and the command line, and the
    models with the paper's losses and uncertainties (``models/``) use only the datasets and the
    torch-free base."""

    def inside(name: str, *layers: str) -> bool:
        return any(name == layer or name.startswith(layer + ".") for layer in layers)

    graph = import_graph(modules())
    assert "almdn.models.losses" in graph and "almdn.models.uncertainty" in graph and "almdn.cli.commands" in graph
    importers = {
        "almdn.cli": ("almdn.cli",),
        "almdn.experiments": ("almdn.experiments", "almdn.cli"),
        "almdn.display": ("almdn.display", "almdn.workflow", "almdn.cli"),
    }
    upward = sorted(
        f"{m} -> {t}" for m, targets in graph.items() for t in targets for layer, allowed in importers.items() if inside(t, layer) and not inside(m, *allowed)
    )
    assert upward == []
    base = ("almdn.models", "almdn.data", "almdn.errors", "almdn.user_errors", "almdn.registry")
    models_up = sorted(f"{m} -> {t}" for m, targets in graph.items() if inside(m, "almdn.models") for t in targets if not inside(t, *base))
    assert models_up == []
