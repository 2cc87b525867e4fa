"""The tutorial notebooks: committed in good shape, and every one runs top to bottom under
``pytest --nbval-lax`` in fast mode (MEDIC_VIZ_FAST=1: few epochs, few images) on the CPU.

nbval runs in a subprocess so that its environment (fast mode, reference answers for the
workshop's check cells, no progress bars) is set here and not left to the caller.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_which_neurons.ipynb", "03_tune_temperature.ipynb", "04_compare_defenses.ipynb",
            "05_workshop.ipynb", "06_workbench.ipynb", "07_your_model.ipynb"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_tutorial_notebooks_are_there():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_in_good_shape(path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    source = "".join(first["source"])
    # First code cell: the parameters, read from the environment (fast mode for CI).
    assert "parameters" in first.get("metadata", {}).get("tags", []), f"{path.name}: first code cell not tagged"
    assert 'os.environ.get("MEDIC_VIZ_FAST"' in source
    # Committed with outputs (readable on GitHub), none of them an error, no stray widget state.
    assert all(c.get("execution_count") for c in code), f"{path.name}: not executed top to bottom"
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed with an error output: {errors[0].get('ename')}"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: widget state committed (plotly.js inside)"
    assert path.stat().st_size < 3_000_000, f"{path.name}: {path.stat().st_size} bytes, too large to commit"
    # Thin over the library: no training loops written in a notebook.
    all_code = "\n".join("".join(c["source"]) for c in code)
    assert ".backward(" not in all_code and "optimizer.step" not in all_code


def _nbval_env() -> dict:
    env = dict(os.environ)
    env.update(MEDIC_VIZ_FAST="1", MEDIC_VIZ_SOLUTIONS="1", TQDM_DISABLE="1", PYTHONHASHSEED="0")
    env.pop("MEDIC_VIZ_PNG", None)
    env.pop("MEDIC_VIZ_EPOCHS", None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_nbval(path, tmp_path):
    pytest.importorskip("nbval")
    cmd = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
        "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT), str(path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_nbval_env(), capture_output=True, text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"nbval failed on {path.name}:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
