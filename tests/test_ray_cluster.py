"""A grid on a real Ray cluster: a head and a worker node started as separate processes with the
``ray`` CLI, ``medic-viz compare --executor ray --address`` pointed at the head, and the worker
node killed (SIGKILL to every process of it, as a machine that dies) while it runs a cell. The
grid must still finish with every cell — Ray runs the lost cell again on the head
(``executors.RAY_TASK_RETRIES``) — and the same command run again must resume with no cell lost
or duplicated.

Loopback only. ``ray start --node-ip-address 127.0.0.1`` is not enough: Ray replaces a loopback
address by the host's routable one (``services.resolve_ip_for_localhost``) and its servers
listen on every interface. So the cluster runs in a private network namespace
(``unshare --user --map-root-user --net --uts --pid --mount``) whose only interface is ``lo``
and whose host name is ``localhost``: Ray finds no other address there, every server listens
on 127.0.0.1, and nothing outside can reach it; it also has its own ports, so no other Ray on
the machine is in the way. The
namespace has its own PID space, so killing its first process (a small reaper that holds it)
makes the kernel kill every process of the cluster; the test skips where such a namespace
cannot be made. Each node has its own short ``--temp-dir`` under /tmp (Ray's Unix socket paths
must stay under 107 bytes, which pytest's tmp_path can exceed).

Recent Ray releases (2.60 here) turn token authentication on for a new cluster when a token
exists (``~/.ray/auth_token``); the test uses one of its own: ``RAY_AUTH_MODE=token`` and a
fresh ``RAY_AUTH_TOKEN`` in the environment of the head, the worker and every ``compare``, so
the user's token file is neither read nor written (``RAY_AUTH_MODE=disabled`` would turn
authentication off; ``RAY_AUTH_TOKEN_PATH`` names a token file).

``ray stop`` is never used: it stops every Ray process of the user on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from medic_viz.experiments.executors import RAY_TASK_RETRIES, Executor
from medic_viz.experiments.grid import CellSpec

if TYPE_CHECKING:
    from psutil import Process

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = Path(sys.executable).with_name("ray")
PORT = 6379  # the namespace has its own ports: no clash with any other Ray on the machine
ADDRESS = f"127.0.0.1:{PORT}"
MARK = "MEDIC_VIZ_RAY_CLUSTER_TEST"



def _namespace_tools() -> str | None:
    """Why the cluster cannot run in a private network namespace here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / iproute2)"
    if not RAY_CLI.exists():
        return f"no ray CLI next to {sys.executable}"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--uts", "--pid", "--fork", "--mount",
                            "--mount-proc", "sh", "-c", "hostname localhost && ip link set lo up"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot make a private network namespace: {probe.stderr.strip()[:200]}"
    return None


#: PID 1 of the namespace: names the host ``localhost``, brings ``lo`` up, then reaps orphans (a killed raylet's
#: workers…) until killed.
_INIT = ("import os, socket, subprocess, time\n"
         "socket.sethostname('localhost')\n"  # where Ray finds no route out, it resolves the host name
         "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
         "print(os.getpid(), flush=True)\n"
         "while True:\n"
         "    try:\n"
         "        os.wait()\n"
         "    except ChildProcessError:\n"
         "        time.sleep(0.2)\n")


class _Namespace:
    """A network + PID namespace whose PID 1 is :data:`_INIT`; :meth:`cmd` runs a command in it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--net", "--uts", "--pid", "--fork", "--mount", "--mount-proc",
             "--kill-child", sys.executable, "-c", _INIT],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.init: Process | None = None
        ready = self.holder.stdout.readline().strip()  # "1" once lo is up; "" if it failed
        children = psutil.Process(self.holder.pid).children()
        if ready != "1" or len(children) != 1:
            self.kill()
            raise RuntimeError("the namespace did not start")
        self.init = children[0]

    def cmd(self, *argv: str) -> list[str]:
        assert self.init is not None
        return ["nsenter", f"--target={self.init.pid}", "--user", "--net", "--uts", "--pid", "--mount", "--", *argv]

    def kill(self) -> None:
        """Kill PID 1 of the namespace: the kernel kills every process in it."""
        if self.init is not None:
            try:
                self.init.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait(timeout=10)


def _processes_of(mark: str, paths: list[str]) -> list[Process]:
    """Live processes of this test's cluster: our mark in their environment, or one of our Ray
    temp dirs on their command line."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK) == mark or any(p in " ".join(proc.cmdline()) for p in paths):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _node(pgid: int) -> list[Process]:
    """The processes of the node that ``ray start`` started in process group ``pgid``: that group
    (GCS, raylet, agents…) and their descendants (the raylet puts each worker process in a
    group of its own)."""
    found: dict[int, Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                for p in [proc, *proc.children(recursive=True)]:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        found[p.pid] = p
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def _title(proc: Process) -> str:
    try:
        return " ".join(proc.cmdline()).strip()
    except (psutil.Error, OSError):
        return ""


def _kill_node(pgid: int) -> list[Process]:
    """SIGKILL every process of the node (as a machine that dies), and wait for them."""
    procs = _node(pgid)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGSTOP)  # nothing of the node acts (or restarts a worker) meanwhile
        except psutil.Error:
            pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return _wait_gone(procs, 10)


def _wait_gone(procs: list[Process], timeout: float) -> list[Process]:
    """Wait until every process has exited (a zombie counts as gone); returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_ray_tasks_run_again_when_their_node_dies_never_when_they_raise(monkeypatch):
    """What the cluster test below relies on, without a cluster: every task is declared with
    Ray's ``max_retries`` (system failures: its worker process or node died) and without
    ``retry_exceptions`` (an exception is the task's outcome, reported once)."""
    declared: list[dict] = []
    fake = types.ModuleType("ray")

    def remote(**options: object):
        declared.append(options)
        return lambda fn: types.SimpleNamespace(remote=lambda *args: (fn, args))

    fake.is_initialized = lambda: True  # type: ignore[attr-defined]
    fake.cluster_resources = lambda: {"CPU": 2.0}  # type: ignore[attr-defined]
    fake.remote = remote  # type: ignore[attr-defined]
    fake.wait = lambda refs, num_returns: (refs[:num_returns], refs[num_returns:])  # type: ignore[attr-defined]
    fake.get = lambda ref: ref[0](*ref[1])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)

    def double(x: int) -> int:
        return 2 * x

    def fail(x: int) -> int:
        raise ValueError(f"bad cell {x}")

    results: dict[str, object] = {}
    errors: dict[str, str] = {}
    with Executor("ray", 1, ADDRESS, False) as pool:
        pool.run([("a", double, (1,)), ("b", fail, (2,)), ("c", double, (3,))], results.__setitem__,
                 lambda key, exc, tb: errors.__setitem__(key, str(exc)))
    assert results == {"a": 2, "c": 6} and errors == {"b": "bad cell 2"}
    assert RAY_TASK_RETRIES >= 1
    assert declared == [{"num_gpus": 0, "num_cpus": 1, "max_retries": RAY_TASK_RETRIES}] * 2


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_grid_on_a_two_node_cluster_survives_losing_the_worker_node(tmp_path):
    reason = _namespace_tools()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("ray")
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({MARK: mark, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                # less to start at once: Ray gives a node a fixed 30 s to register (node.py), which
                # a loaded machine misses when every Ray process imports Python at the same time
                "RAY_enable_worker_prestart": "0"})
    # Ray's socket paths (TEMP/session_<date>_<pid>/sockets/plasma_store) must stay under the
    # 107-byte AF_UNIX limit: short temp dirs of our own, not pytest's long tmp_path
    head_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    worker_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    out = tmp_path / "grid"
    compare = [sys.executable, "-m", "medic_viz.cli", "compare", "--executor", "ray", "--address", ADDRESS,
               "--dataset", "signs", "--model", "small_cnn", "--attacks", "badnet", "--methods", "finetune,scratch,kd",
               "--seeds", "2", "--max-train", "200", "--max-test", "100", "--epochs", "1", "--attack-epochs", "1",
               "--device", "cpu", "--out", str(out)]
    ns: _Namespace | None = None
    worker_pgid = None
    t0 = time.monotonic()
    stamps: dict[str, float] = {}

    def stamp(what: str) -> None:
        stamps[what] = round(time.monotonic() - t0, 1)

    try:
        ns = _Namespace(env)
        common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                  "--include-log-monitor=false"]
        head = subprocess.Popen(ns.cmd(str(RAY_CLI), "start", "--head", "--port", str(PORT), "--include-dashboard=false",
                                       "--temp-dir", head_tmp, *common),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and head.poll() is None:  # the worker node may join once the GCS is up
            if any(p.name() == "raylet" for p in _node(head.pid)):
                break
            time.sleep(0.2)
        worker = subprocess.Popen(ns.cmd(str(RAY_CLI), "start", "--address", ADDRESS, "--temp-dir", worker_tmp, *common),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)  # its own process group: the worker node, and only it
        worker_pgid = worker.pid
        head_log, _ = head.communicate(timeout=90)
        assert head.returncode == 0, head_log[-3000:]
        stamp("head up")
        worker_log, _ = worker.communicate(timeout=90)
        assert worker.returncode == 0, worker_log[-3000:]
        raylets = [p for p in _node(worker_pgid) if p.name() == "raylet"]
        assert len(raylets) == 1, "the worker node's raylet is not in its process group"
        assert "--node_ip_address=127.0.0.1" in raylets[0].cmdline(), raylets[0].cmdline()
        stamp("worker node up")

        def keys() -> list[str]:
            return [json.loads(line)["cell_id"] for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]

        log1 = tmp_path / "compare1.log"
        with log1.open("w") as fh:
            run1 = subprocess.Popen(ns.cmd(*compare), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            killed_while = None
            deadline = time.monotonic() + 90
            seen: set[str] = set()
            while killed_while is None and run1.poll() is None and time.monotonic() < deadline:
                titles = {_title(p) for p in _node(worker_pgid)}
                seen |= titles
                running = [t for t in titles if t.startswith("ray::run_cell")]
                if running:  # the worker node holds a cell: lose the whole node
                    killed_while = running[0]
                    assert not _kill_node(worker_pgid), "the worker node outlived its SIGKILL"
                    break
                time.sleep(0.05)
            assert killed_while is not None, (f"the worker node never ran a cell (its processes: {sorted(seen)}):\n"
                                              + log1.read_text()[-3000:])
            stamp("worker node killed")
            rows_at_kill = len(keys()) if (out / "runs.jsonl").exists() else 0
            assert rows_at_kill < 6, "the grid was over before the worker node was killed"
            rc1 = run1.wait(timeout=max(10.0, 200 - (time.monotonic() - t0)))  # within the 240 s bound
            stamp("grid done")
        text1 = log1.read_text()
        head_alive = [p for p in _processes_of(mark, [head_tmp]) if p.name() in ("raylet", "gcs_server")]
        assert len(head_alive) == 2, "killing the worker node touched the head"

        grid = json.loads((out / "grid.json").read_text())

        expected = {CellSpec.from_dict(d).cell_id for d in grid}
        assert len(expected) == 6

        assert rc1 == 0, f"the grid did not finish after losing the worker node (exit {rc1}):\n{text1[-4000:]}"
        assert sorted(keys()) == sorted(expected), text1[-4000:]  # every cell, each once
        assert not (out / "errors.jsonl").exists(), (out / "errors.jsonl").read_text()

        run2 = subprocess.run(ns.cmd(*compare), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=max(10.0, 225 - (time.monotonic() - t0)),
                              start_new_session=True)
        text2 = run2.stdout + run2.stderr
        stamp("rerun done")
        assert run2.returncode == 0, text2[-3000:]
        assert "resume: 6 of 6 cells already" in text2 and "0 cell(s) computed, 6 reused, 0 failed" in text2, text2[-3000:]
        assert sorted(keys()) == sorted(expected)  # nothing lost, nothing appended twice
    finally:
        if worker_pgid is not None:
            _kill_node(worker_pgid)
        if ns is not None:
            ns.kill()  # head, worker node, drivers: everything in the namespace
        left = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = _processes_of(mark, [head_tmp, worker_tmp])
            if not left:
                break
            time.sleep(0.2)
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)
        stamp("cleaned up")
        print(f"seconds since the start: {stamps}")
    assert not left, f"processes of the test's Ray cluster outlived it: {[(p.pid, p.name()) for p in left]}"
