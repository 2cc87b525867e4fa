"""The run queue shared by separate processes (medic_viz.run_queue): slots and tickets are
``flock``-ed files, so a process that ends — even killed — frees its place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medic_viz.run_queue import RunQueue

ROOT = Path(__file__).resolve().parents[1]

# A process that waits in the queue, prints its positions and "RUNNING" once it has a slot,
# then holds it until killed (or for ``hold`` seconds).
_WORKER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_queue", sys.argv[3])  # not the package: no torch import
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
q = mod.RunQueue(sys.argv[1])
slot = q.wait(on_position=lambda n: print("POS", n, flush=True), poll=0.05)
print("RUNNING", flush=True)
time.sleep(float(sys.argv[2]))
slot.release()
print("DONE", flush=True)
"""


def _worker(directory: Path, hold: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(directory), str(hold),
                             str(ROOT / "medic_viz" / "run_queue.py")], stdout=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def _read_until(proc: subprocess.Popen, word: str, timeout: float = 30) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith(word):
            return lines
    raise AssertionError(f"no {word!r} from the worker within {timeout} s: {lines}")


def _kill(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def test_second_process_waits_at_position_1_and_runs_when_the_first_is_killed(tmp_path):
    RunQueue.create(tmp_path, slots=1)
    first = _worker(tmp_path, hold=60)
    second = None
    try:
        assert _read_until(first, "RUNNING")[-1] == "RUNNING"
        second = _worker(tmp_path, hold=0)
        assert _read_until(second, "POS 1")[-1] == "POS 1"  # it waits, first in line
        q = RunQueue(tmp_path)
        assert q.running() == 1 and q.waiting() == 1
        time.sleep(0.5)
        assert second.poll() is None  # still waiting
        os.killpg(first.pid, signal.SIGKILL)  # the kernel dies: its slot is freed by the OS
        first.wait(timeout=10)
        lines = _read_until(second, "DONE")
        assert "RUNNING" in lines and "POS 0" in lines
        assert q.running() == 0 and q.waiting() == 0
    finally:
        _kill(first, *([second] if second is not None else []))


def test_positions_follow_arrival_order_and_a_killed_waiter_leaves_the_line(tmp_path):
    q = RunQueue.create(tmp_path, slots=1)
    holder = q.try_slot()
    assert holder is not None
    procs = []
    try:
        for expected in (1, 2, 3):
            p = _worker(tmp_path, hold=0)
            procs.append(p)
            assert _read_until(p, "POS")[-1] == f"POS {expected}"
        assert q.waiting() == 3
        os.killpg(procs[1].pid, signal.SIGKILL)  # the second in line closes the tab
        procs[1].wait(timeout=10)
        _read_until(procs[2], "POS 2")  # the third moves up
        assert q.waiting() == 2  # the dead one's ticket was stale and is gone
        holder.release()
        assert "DONE" in _read_until(procs[0], "DONE")[-1]
        assert "DONE" in _read_until(procs[2], "DONE")[-1]
    finally:
        holder.release()
        _kill(*procs)


def test_stale_tickets_are_removed_and_k_slots_run_at_once(tmp_path):
    q = RunQueue.create(tmp_path, slots=2)
    stale = q.enqueue()
    os.close(stale._fd)  # type: ignore[arg-type]  # the lock dies with the file description, as when a process ends
    stale._fd = None
    assert stale.path.exists()
    assert q.waiting() == 0 and not stale.path.exists()
    a, b = q.try_slot(), q.try_slot()
    assert a is not None and b is not None and q.try_slot() is None
    assert q.running() == 2
    a.release()
    assert q.running() == 1
    b.release()


def test_stop_while_waiting_withdraws_the_ticket(tmp_path):
    q = RunQueue.create(tmp_path, slots=1)
    held = q.try_slot()
    stop = threading.Event()
    positions: list[int] = []
    out: list = []
    t = threading.Thread(target=lambda: out.append(q.wait(stop, on_position=positions.append, poll=0.05)))
    t.start()
    deadline = time.monotonic() + 10
    while not positions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert positions == [1] and q.waiting() == 1
    stop.set()
    t.join(10)
    assert out == [None] and q.waiting() == 0
    held.release()
    slot = q.wait(timeout=1)
    assert slot is not None
    slot.release()


def test_bad_queue_directories_say_so(tmp_path):
    with pytest.raises(ValueError, match="not a run queue"):
        RunQueue(tmp_path)
    with pytest.raises(ValueError, match="slots must be"):
        RunQueue.create(tmp_path, slots=0)


def test_a_long_wait_is_announced_again_every_heartbeat(tmp_path):
    q = RunQueue.create(tmp_path, slots=1)
    held = q.try_slot()
    positions: list[int] = []
    assert q.wait(on_position=positions.append, poll=0.05, timeout=0.6, heartbeat=0.2) is None
    held.release()
    assert positions[0] == 1 and len(positions) >= 3 and set(positions) == {1}
