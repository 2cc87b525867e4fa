"""The shell entry points under benchmarks/ reach the command line they mean to call.

A broken invocation in these scripts only shows after an hour of set-up on a real machine, so
the cheap paths run here against a file that is not a dataset: the command must get as far as
reading the dataset and refuse it in one line (not fail on its own arguments).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("budget", [{"QUICK": "1"}, {"BUDGET": "cpu"}])
def test_run_table1_reaches_the_dataset_check(tmp_path: Path, budget: dict[str, str]) -> None:
    not_a_dataset = tmp_path / "gtsrb32.npz"
    not_a_dataset.write_bytes(b"not an npz")
    env = {**os.environ, "PYTHON": sys.executable, "DATA": str(not_a_dataset), "OUT": str(tmp_path / "out"),
           "DEVICE": "cpu", **budget}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_table1.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert "unrecognized arguments" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert "not an npz archive" in done.stderr, done.stderr
    assert not list(tmp_path.glob("out*")), "a refused grid leaves no output folder"
