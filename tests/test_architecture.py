"""The package's layering, checked from the source: the core never imports a view, and modules
stay small enough to hold one concept (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medic_viz"

#: View modules (and packages): they read the core; the core never imports them.
VIEWS = (
    "medic_viz.viz",
    "medic_viz.widgets",
    "medic_viz.cli",
    "medic_viz.cli_args",
    "medic_viz.cli_common",
    "medic_viz.cli_compare",
    "medic_viz.cli_import",
    "medic_viz.cli_serve",
    "medic_viz.interrupts",
    "medic_viz.experiments.report",
)

#: Core modules allowed to import one named view module, and why.
FACADE_IMPORTS = {
    # the package keeps `medic_viz.experiments.run_grid` / `compare` / `write_reports` importable;
    # experiments.report imports medic_viz.viz only inside its functions
    ("medic_viz.experiments", "medic_viz.experiments.report"),
}

MAX_LINES = 600
#: Modules allowed over MAX_LINES: (ceiling, why). The ceiling is the module's size when it was
#: listed: a listed module may shrink, never grow; splitting it is the way to add to it.
LONG_MODULES: dict[str, tuple[int, str]] = {}  # none since 2026-12-06 (data/synthetic.py split)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_view(name: str) -> bool:
    return any(name == v or name.startswith(v + ".") for v in VIEWS)


def _imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, anywhere in it: function bodies and
    ``TYPE_CHECKING`` blocks too; relative imports resolved; ``from pkg import name`` counts as
    ``pkg`` and ``pkg.name`` (``name`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _imports(path: Path) -> set[str]:
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_view_list_names_real_modules():
    names = {_module_name(p) for p in _modules()}
    for v in VIEWS:
        assert v in names, f"{v} is listed as a view but no such module exists; update VIEWS"


def test_the_core_never_imports_a_view():
    bad = []
    for path in _modules():
        name = _module_name(path)
        if _is_view(name):
            continue
        for imported in sorted(_imports(path)):
            if _is_view(imported) and not any(name == a and (imported == b or imported.startswith(b + "."))
                                              for a, b in FACADE_IMPORTS):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {imported}")
    assert not bad, "core modules import views (views may import the core, not the other way):\n" + "\n".join(bad)


def test_the_import_checker_sees_imports_inside_functions_and_relative_ones():
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from medic_viz.cli import main\n"
        "def f():\n    from medic_viz.viz.figures import figure2_grid\n"
        "from .widgets import apps\n"
        "from ..viz import curves\n"
    )
    got = _imports_of(src, "medic_viz.analysis.claim")
    assert {"medic_viz.cli", "medic_viz.viz.figures", "medic_viz.analysis.widgets.apps", "medic_viz.viz.curves"} <= got
    assert "medic_viz.widgets.apps" in _imports_of("from .widgets import apps\n", "medic_viz.pipeline")
    assert "medic_viz.widgets" in _imports_of("from . import widgets\n", "medic_viz", is_package=True)
    assert _is_view("medic_viz.widgets.state.picker") and not _is_view("medic_viz.vizier")


def test_importing_the_core_loads_no_view_and_no_plotting_library():
    core = [_module_name(p) for p in _modules() if not _is_view(_module_name(p))]
    code = (
        "import importlib, sys\n"
        f"for m in {core!r}:\n"
        "    importlib.import_module(m)\n"
        f"views = {VIEWS!r}\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('plotly', 'ipywidgets')"
        " or any(m == v or m.startswith(v + '.') for v in views)]\n"
        "print(sorted(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    # experiments.report is a view the experiments package re-exports (FACADE_IMPORTS); it loads no plotting
    assert [m for m in loaded if m != "medic_viz.experiments.report"] == []


def _size_problem(name: str, n: int) -> str | None:
    """Why a module ``name`` of ``n`` lines breaks the size rule, or None."""
    if name in LONG_MODULES:
        ceiling, _why = LONG_MODULES[name]
        if n <= MAX_LINES:
            return f"{name} has {n} lines now: remove it from LONG_MODULES"
        if n > ceiling:
            return (f"{name} has {n} lines, over its ceiling of {ceiling} in LONG_MODULES: a listed module may not "
                    "grow; split it by concept (or move something out) instead of raising the ceiling")
        return None
    if n > MAX_LINES:
        return f"{name} has {n} lines (> {MAX_LINES}): split it by concept, or add it to LONG_MODULES with the reason"
    return None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_under_the_line_limit(path):
    problem = _size_problem(_module_name(path), len(path.read_text().splitlines()))
    assert problem is None, problem


def test_long_modules_name_real_modules_and_may_not_grow(monkeypatch):
    names = {_module_name(p) for p in _modules()}
    assert not set(LONG_MODULES) - names, f"LONG_MODULES names no such module: {sorted(set(LONG_MODULES) - names)}"
    name, ceiling = "medic_viz.data.synthetic", 611  # as it was listed before its split
    monkeypatch.setitem(LONG_MODULES, name, (ceiling, "a listed module"))
    assert _size_problem(name, ceiling) is None
    assert "over its ceiling" in (_size_problem(name, ceiling + 1) or "")
    assert "remove it from LONG_MODULES" in (_size_problem(name, MAX_LINES) or "")
    assert _size_problem("medic_viz.not_listed", MAX_LINES) is None
    assert "split it by concept" in (_size_problem("medic_viz.not_listed", MAX_LINES + 1) or "")
