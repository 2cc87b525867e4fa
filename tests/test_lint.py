"""Lint and types (docs/architecture.md "Lint and types"): ruff and mypy pass on the repository with
its own configuration (pyproject.toml), every function-level import that the import policy does not
cover says why it must be lazy, and the two tools' phase-2 exclusion lists name the same files."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    done = _run("ruff", "check", ".")
    assert done.returncode == 0, f"ruff check:\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing():
    done = _run("mypy")
    assert done.returncode == 0, f"mypy:\n{done.stdout}{done.stderr}"


def _python_files() -> list[Path]:
    out = []
    for top in ("medic_viz", "benchmarks", "scripts", "tests"):
        out += [p for p in sorted((ROOT / top).rglob("*.py")) if "__pycache__" not in p.parts]
    return out


def test_every_lazy_import_marked_by_hand_says_why():
    """``# noqa: PLC0415`` is the exception to the import policy: it must give its reason."""
    bare = []
    for path in _python_files():
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            m = re.search(r"#\s*noqa:\s*PLC0415(.*)$", line)
            if m and len(m.group(1).strip(" —-:")) < 10:
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "a lazy import without its reason (write `# noqa: PLC0415 — why`):\n" + "\n".join(bare)


def test_the_lazily_imported_modules_are_never_imported_at_module_level_by_the_core():
    """The modules the policy imports lazily (ruff's banned-module-level-imports) are not loaded by
    importing the core: checked from the source, the same rule ruff's TID253 applies."""
    lazy = CONFIG["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-module-level-imports"]
    assert {"captum", "torchvision", "torch._dynamo", "ray", "ipywidgets"} <= set(lazy)
    found = []
    for path in sorted((ROOT / "medic_viz").rglob("*.py")):
        if {"widgets", "__pycache__"} & set(path.parts):
            continue  # the widgets are views built from ipywidgets
        for node in ast.parse(path.read_text()).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names
                      if any(name == m or name.startswith(m + ".") for m in lazy)]
    assert not found, "module-level imports of lazily imported modules:\n" + "\n".join(found)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] in ("tests", "scripts"):  # top-level modules (no package)
        return rel.stem
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ruff_excluded(path: Path, patterns: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(fnmatch.fnmatch(rel, p) or (p.endswith("/") and rel.startswith(p)) for p in patterns)


def _mypy_ignored(module: str, patterns: list[str]) -> bool:
    return any(module == p or (p.endswith(".*") and (module == p[:-2] or module.startswith(p[:-1]))) for p in patterns)


def test_the_phase_2_lists_of_ruff_and_mypy_name_the_same_files():
    """The files not linted yet (ruff's extend-exclude) are the files whose type errors are not
    reported yet (mypy's ignore_errors): one to-do list, kept in two tools' syntax."""
    ruff = CONFIG["tool"]["ruff"]["extend-exclude"]
    mypy = [m for o in CONFIG["tool"]["mypy"]["overrides"] if o.get("ignore_errors") for m in o["module"]]
    python = [p for p in _python_files()]
    only_ruff = [str(p.relative_to(ROOT)) for p in python if _ruff_excluded(p, ruff)
                 and not _mypy_ignored(_module_name(p), mypy)]
    only_mypy = [str(p.relative_to(ROOT)) for p in python if _mypy_ignored(_module_name(p), mypy)
                 and not _ruff_excluded(p, ruff)]
    # lint-clean already but still being typed: none; typed but not linted: none
    assert not only_ruff, f"excluded from ruff but type-checked by mypy: {only_ruff}"
    assert not only_mypy, f"type errors ignored but linted by ruff: {only_mypy}"


def test_the_phase_2_list_matchers_work():
    assert _ruff_excluded(ROOT / "medic_viz" / "widgets" / "apps" / "x.py", ["medic_viz/widgets/"])
    assert _ruff_excluded(ROOT / "medic_viz" / "cli_serve.py", ["medic_viz/cli*.py"])
    assert not _ruff_excluded(ROOT / "medic_viz" / "checks.py", ["medic_viz/cli*.py"])
    assert _mypy_ignored("medic_viz.widgets.apps.x", ["medic_viz.widgets.*"])
    assert _mypy_ignored("medic_viz.widgets", ["medic_viz.widgets.*"])
    assert not _mypy_ignored("medic_viz.widgetsx", ["medic_viz.widgets.*"])
    assert _module_name(ROOT / "tests" / "test_io.py") == "test_io"
    assert _module_name(ROOT / "medic_viz" / "data" / "__init__.py") == "medic_viz.data"
