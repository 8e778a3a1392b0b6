"""Sizes a newcomer can read (issue 21 item 6): no module of ``almdn/`` or ``app/`` over 600
lines and no function (or method, or nested function) over 100 lines, except the demo
generator's drawing code, exempt by name."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("almdn", "app")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100

#: The demo generator's drawing functions, which may grow long (file -> function names).
DRAWING_CODE = {
    "almdn/data/demo/render.py": {"_render", "_background", "_composite", "_prepare_digit_layer", "_prepare_patch_layer", "_clutter_mask"},
    "almdn/data/shapes.py": {"draw_shape", "_parts", "_fill_pattern", "_textures"},
}


def offenders(source: str, relative: str) -> list[str]:
    """What in one module breaks the limits, one line each (``file: what``)."""
    out = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        out.append(f"{relative}: {lines} lines (at most {MAX_MODULE_LINES})")
    exempt = DRAWING_CODE.get(relative, set())
    for node in ast.walk(ast.parse(source, relative)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in exempt:
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{relative}:{node.lineno} {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})")
    return out


def test_the_check_finds_long_modules_and_functions():
    long_function = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert offenders(long_function, "almdn/x.py") == [f"almdn/x.py:1 f is {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"]
    method = "class A:\n    def g(self):\n" + "        y = 2\n" * MAX_FUNCTION_LINES
    assert [o.split(" ")[1] for o in offenders(method, "almdn/x.py")] == ["g"]
    assert offenders(long_function.replace("def f", "def draw_shape"), "almdn/data/shapes.py") == []
    assert offenders(long_function.replace("def f", "def draw_shape"), "almdn/x.py") != []  # exempt only where it is drawing code
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert offenders(long_module, "app/x.py") == [f"app/x.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"]
    assert offenders("x = 1\n" * MAX_MODULE_LINES, "app/x.py") == []


def test_no_module_over_600_lines_and_no_function_over_100():
    found = []
    files = [p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))]
    assert len(files) > 40  # every module was read
    for path in files:
        found += offenders(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())
    assert not found, "too long (split at a natural seam):\n" + "\n".join(found)


def test_the_exempt_drawing_code_exists():
    """An exemption for a function that was renamed or moved would exempt nothing: keep the list true."""
    for relative, names in DRAWING_CODE.items():
        tree = ast.parse((REPO / relative).read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert names <= defined, (relative, sorted(names - defined))
