"""Packaging: pyproject and environment.yml agree; the console script and README commands exist."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _pyproject_requirements() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = set(data["project"]["dependencies"])
    for extra in data["project"]["optional-dependencies"].values():
        reqs |= set(extra)
    return {r.replace(" ", "") for r in reqs}


def _environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_items, in_pip = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if in_pip:
            m = re.match(r"^\s*-\s+(.+)$", line)
            if not m or len(line) - len(line.lstrip()) < 6:
                break
            pip_items.append(m.group(1).strip())
    return {r.replace(" ", "") for r in pip_items if not r.startswith("-e")}


def test_environment_yml_matches_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert py, "no requirements parsed from pyproject.toml"
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_user_fixed_packages_are_declared():
    names = {re.split(r"[<>=!~\[]", r)[0].lower() for r in _pyproject_requirements()}
    for pkg in ("torch", "torchvision", "jupyterlab", "ipywidgets", "plotly", "captum", "numpy", "pytest", "nbval"):
        assert pkg in names, pkg


def test_console_script_and_readme_commands():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["medic-viz"] == "medic_viz.cli:main"
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_top_level_layout():
    for name in ("medic_viz", "notebooks", "tests", "environment.yml", "pyproject.toml", "README.md", "benchmarks"):
        assert (ROOT / name).exists(), name
