"""The Ray executor's start-up (security issue, defect class 8): a start-up failure is one line
(exit status 2 from ``compare``) and nothing the executor started outlives it — not even a
process Ray spawned that was orphaned half-way; under an address-space limit (``ulimit -v``)
too small for Ray the executor refuses before starting anything."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import numpy as np
import pytest

from medic_viz.experiments.executors import Executor, ExecutorStartError

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _fake_ray(tmp_path: Path) -> types.ModuleType:
    """A ``ray`` whose ``init`` starts a process that orphans a grandchild (as a dying raylet
    leaves its RuntimeEnvAgent behind), keeps a child running, then fails with two lines."""
    fake = types.ModuleType("ray")
    pids = tmp_path / "pids"

    def init(**options: object) -> None:
        grandchild = (f"import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
                      f"'import time; time.sleep(120)']); open({str(pids)!r}, 'a').write(f'{{p.pid}}\\n')")
        subprocess.run([sys.executable, "-c", grandchild], check=True)  # exits: its child is orphaned
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(pids, "a") as f:
            f.write(f"{child.pid}\n")
        raise RuntimeError("The current node timed out during startup.\nThis could happen because ...")

    fake.is_initialized = lambda: False  # type: ignore[attr-defined]
    fake.init = init  # type: ignore[attr-defined]
    fake.shutdown = lambda: None  # type: ignore[attr-defined]
    return fake


def test_a_ray_start_failure_is_one_line_and_kills_what_it_spawned(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(tmp_path))
    with pytest.raises(ExecutorStartError) as info:
        with Executor("ray", 1, None, False):
            pass
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not start Ray (") and "--executor local" in message
    assert "timed out during startup" in message
    assert isinstance(info.value, OSError)  # an environment error: compare prints it as one line, exit 2
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "processes spawned by a failed ray.init are still running"


def _limit_address_space(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_compare_with_ray_under_a_small_memory_limit_is_refused_in_one_line(tmp_path):
    pytest.importorskip("ray")
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y_train=np.arange(64) % 4,
             x_test=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), y_test=np.arange(32) % 4)
    mark = uuid.uuid4().hex
    env = {**os.environ, "MEDIC_VIZ_TEST_MARK": mark, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medic_viz.cli", "compare", "--executor", "ray", "--dataset", str(data),
           "--attacks", "badnet", "--methods", "finetune", "--seeds", "1", "--max-train", "64", "--max-test", "32",
           "--epochs", "1", "--attack-epochs", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    try:
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=50,
                             preexec_fn=_limit_address_space(5 * 2**30))
    finally:
        left = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("MEDIC_VIZ_TEST_MARK") == mark:
                    left.append(proc)
            except (psutil.Error, OSError):
                continue
        for proc in left:
            proc.kill()
    assert not left, f"processes outlived compare: {[p.pid for p in left]}"
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1, out.stderr[-3000:]
    assert errors[0].startswith("medic-viz compare: error: could not start Ray")
    assert "ulimit -v" in errors[0] and "--executor local" in errors[0]
    assert not (tmp_path / "out" / "teachers").exists() or not any((tmp_path / "out" / "teachers").iterdir())
