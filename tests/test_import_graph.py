"""The import graph of medic_viz/, read from the source with ``ast``: no module reaches itself
through imports (module level, inside functions and ``TYPE_CHECKING`` blocks alike), and no file
of the repository uses an old import path that :mod:`medic_viz.deprecation` answers with a
warning (except a test asserting that warning, inside ``pytest.warns(DeprecationWarning)``)."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

import medic_viz
import medic_viz.defenses
import medic_viz.defenses.medic as engine
from medic_viz.deprecation import MOVED, canonical_path
from test_architecture import _is_view  # the list of views lives there

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medic_viz"
#: Where the repository's Python lives (notebooks: their code cells).
SOURCES = ("medic_viz", "tests", "benchmarks", "scripts", "notebooks")
#: Old paths that are whole modules (every name they answer has moved); the others are names in a live module.
SHIM_MODULES = {"medic_viz.attacks.triggers", "medic_viz.attacks.advanced", "medic_viz.defenses.baselines",
                "medic_viz.viz.figures"}
#: The one deprecated name whose new home is a view: the core module answers it only when it is
#: looked up (``pipeline.write_outputs`` → ``viz.report.write_outputs``), never imports it.
VIEW_ALIASES = {("medic_viz.pipeline", "write_outputs")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` — runs when the file is the program, never on import."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _warns_deprecation(node: ast.AST) -> bool:
    """``with pytest.warns(DeprecationWarning, ...):`` — a test that asserts the old path warns."""
    if not isinstance(node, ast.With):
        return False
    for item in node.items:
        call = item.context_expr
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "warns"
                and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == "DeprecationWarning"):
            return True
    return False


def _import_nodes(tree: ast.AST, *, skip=lambda node: False):
    """Every Import/ImportFrom in ``tree`` outside the subtrees ``skip`` says to leave out."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if skip(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = (module if is_package else module.rpartition(".")[0]).split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _edges(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The medic_viz modules ``module`` imports: ``import a.b`` → ``a.b``; ``from a import b`` →
    ``a.b`` when that is a module, else ``a`` (the names come from ``a``'s own code). Parent
    packages run on import too, but they are not counted: ``medic_viz/__init__`` imports nearly
    everything, and a package re-exporting its own modules is not a cycle between concepts."""
    out: set[str] = set()
    for node in _import_nodes(ast.parse(source), skip=_is_main_guard):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        base = _absolute(node, module, is_package)
        subs = {f"{base}.{a.name}" for a in node.names} & known
        out |= subs
        if len(subs) < len(node.names):
            out.add(base)
    return {m for m in out if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _edges(path.read_text(), name, path.name == "__init__.py", known) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def test_medic_viz_has_no_import_cycle():
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles (module -> the modules of the cycle it imports):\n" + "\n\n".join(
        _describe(c, graph) for c in cycles)


def test_the_cycle_finder_finds_cycles_through_function_imports_and_ignores_main_blocks():
    known = {"medic_viz.a", "medic_viz.b", "medic_viz.c", "medic_viz.pkg", "medic_viz.pkg.d"}
    graph = {
        "medic_viz.a": _edges("def f():\n    from medic_viz import b\n", "medic_viz.a", False, known),
        "medic_viz.b": _edges("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n",
                              "medic_viz.b", False, known),
        "medic_viz.c": _edges("import medic_viz.a\n", "medic_viz.c", False, known),
        "medic_viz.pkg": _edges("from .d import thing\n", "medic_viz.pkg", True, known),
        "medic_viz.pkg.d": _edges("if __name__ == '__main__':\n    from medic_viz.pkg import main\n",
                                  "medic_viz.pkg.d", False, known),
    }
    assert graph["medic_viz.a"] == {"medic_viz.b"} and graph["medic_viz.b"] == {"medic_viz.c"}
    assert graph["medic_viz.pkg"] == {"medic_viz.pkg.d"} and graph["medic_viz.pkg.d"] == set()
    assert _cycles(graph) == [["medic_viz.a", "medic_viz.b", "medic_viz.c"]]


# ------------------------------------------------------------------------------- old paths


def _python_sources() -> list[tuple[str, str]]:
    """``(label, code)`` of every Python file and notebook code cell under :data:`SOURCES`."""
    out = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if "__pycache__" in path.parts or ".ipynb_checkpoints" in path.parts:
                continue
            rel = path.relative_to(ROOT)
            if path.suffix == ".py":
                out.append((str(rel), path.read_text()))
            elif path.suffix == ".ipynb":
                cells = json.loads(path.read_text())["cells"]
                for i, cell in enumerate(cells):
                    if cell["cell_type"] == "code":
                        code = "".join(cell["source"])
                        # IPython magics and shell lines are not Python
                        code = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                                         for line in code.split("\n"))
                        out.append((f"{rel} cell {i}", code))
    return out


def _old_paths_used(code: str, module: str | None = None, is_package: bool = False) -> list[str]:
    """The deprecated paths ``code`` imports, outside ``pytest.warns(DeprecationWarning)`` blocks."""
    used = []
    for node in _import_nodes(ast.parse(code), skip=_warns_deprecation):
        if isinstance(node, ast.Import):
            used += [a.name for a in node.names if a.name in SHIM_MODULES]
            continue
        base = _absolute(node, module or "", is_package) if node.level else (node.module or "")
        if base in SHIM_MODULES:
            used.append(base)
            continue
        used += [f"{base}.{a.name}" for a in node.names
                 if a.name in MOVED.get(base, {}) or f"{base}.{a.name}" in SHIM_MODULES]
    return used


@pytest.mark.parametrize("top", SOURCES)
def test_nothing_in_the_repository_uses_an_old_import_path(top):
    bad = []
    for label, code in _python_sources():
        if not label.startswith(top + "/"):
            continue
        module = is_package = None
        if label.endswith(".py") and top == "medic_viz":
            module, is_package = _module_name(ROOT / label), label.endswith("__init__.py")
        for old in _old_paths_used(code, module, bool(is_package)):
            bad.append(f"{label}: {old}")
    assert not bad, ("old import paths (they warn; import from the new home, see medic_viz.deprecation.MOVED):\n"
                     + "\n".join(bad))


def test_the_old_path_checker_sees_them_and_allows_a_test_of_the_warning():
    code = (
        "from medic_viz.attacks.triggers import Trigger\n"
        "import medic_viz.viz.figures\n"
        "from medic_viz.attacks import triggers\n"
        "def f():\n    from medic_viz.metrics import resolve_device, predict\n"
        "with pytest.warns(DeprecationWarning):\n    from medic_viz.pipeline import format_table\n"
    )
    assert sorted(_old_paths_used(code)) == ["medic_viz.attacks.triggers", "medic_viz.attacks.triggers",
                                             "medic_viz.metrics.resolve_device", "medic_viz.viz.figures"]
    assert _old_paths_used("from .triggers import Trigger\n", "medic_viz.attacks", True) == ["medic_viz.attacks.triggers"]


# ------------------------------------------------------------------------------- the table


@pytest.mark.parametrize("shim", sorted(MOVED))
def test_every_old_name_warns_and_is_the_one_definition(shim):
    old = importlib.import_module(shim)
    for name in MOVED[shim]:
        module, new = canonical_path(shim, name)
        with pytest.warns(DeprecationWarning, match=f"{shim}.{name} is deprecated; use {module}.{new}"):
            obj = getattr(old, name)
        assert obj is getattr(importlib.import_module(module), new), f"{shim}.{name}"
        assert module not in MOVED or new not in MOVED[module], f"{shim}.{name} points at another old path"


@pytest.mark.parametrize("shim", sorted(MOVED))
def test_a_shim_imports_nothing_it_answers_for(shim):
    """The moved names are not also bound in the shim module (they would answer without a
    warning), and a new home that is a view is reached only by the declared exceptions."""
    path = _modules()[shim]
    tree = ast.parse(path.read_text())
    bound = {a.asname or a.name for node in _import_nodes(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
    bound |= {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
              if isinstance(t, ast.Name)}
    assert not (bound & set(MOVED[shim])), f"{shim} binds moved names {sorted(bound & set(MOVED[shim]))}"
    if not _is_view(shim):
        for name in MOVED[shim]:
            module = MOVED[shim][name].partition(":")[0]
            if _is_view(module):
                assert (shim, name) in VIEW_ALIASES, f"core module {shim} answers {name} from the view {module}"


def test_the_medic_engine_is_the_module_and_the_function_is_medic_viz_medic():
    assert medic_viz.defenses.medic is engine and hasattr(engine, "MedicConfig")
    assert medic_viz.medic is engine.medic and callable(medic_viz.medic)
    with pytest.warns(DeprecationWarning, match="call medic_viz.medic"):
        with pytest.raises(TypeError):
            engine()  # the old call form still reaches the function (which needs a teacher)
