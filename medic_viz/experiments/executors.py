"""Executors of a grid's tasks — no scheduler of our own:

* ``"local"``: tasks one after another in this process, or ``workers`` > 1 in one
  :class:`concurrent.futures.ProcessPoolExecutor` (spawned processes, kept for the whole grid
  so that each keeps its dataset cache, torch threads split between them);
* ``"ray"``: each task is a Ray task (``num_gpus=1`` when the cluster has GPUs and the cells
  do not ask for the CPU) on the cluster of ``ray.init(address=...)``; needs
  ``pip install 'medic-viz[ray]'``. Workers must see the dataset path and have medic_viz
  installed. A task whose worker process or node dies (a lost machine, a kill) runs again
  elsewhere, up to :data:`RAY_TASK_RETRIES` times; an exception raised by the task is not
  retried: it is the task's outcome.

A task is ``(key, function, args)``; its outcome reaches ``on_result(key, value)`` or
``on_error(key, exception, traceback text)`` as it arrives. A failing task never stops the others.

Starting a local Ray instance is checked: under an address-space limit (``ulimit -v``) below
:data:`MIN_RAY_ADDRESS_SPACE` it is refused before anything starts, under a larger one its
object store is kept small (Ray's default maps 30 % of the RAM into every Ray process, past such
a limit); a failed ``ray.init`` is :class:`ExecutorStartError` (one line) and every process it
spawned — orphans included — is killed, as is anything a finished Ray instance left behind.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from typing import Any, Callable, Sequence

import torch

from medic_viz.resources import threads_per_worker

__all__ = ["Task", "EXECUTORS", "Executor", "ExecutorStartError", "MIN_RAY_ADDRESS_SPACE", "RAY_TASK_RETRIES",
           "import_ray"]

#: The executors :class:`Executor` knows.
EXECUTORS: tuple[str, ...] = ("local", "ray")

Task = tuple[str, Callable[..., Any], tuple]

#: Smallest address-space limit (``ulimit -v``) under which a local Ray instance is started.
#: Measured (Ray 2.60, torch 2.x, Linux x86-64): a Ray worker that imports torch needs about
#: 5 GB of address space; at 4 GB workers fail to import torch, below that Ray's servers cannot
#: create their threads. A tighter limit is refused with one line instead of a hang or a crash.
MIN_RAY_ADDRESS_SPACE = 6 * 2**30

#: How many times Ray runs a task again when its worker process or its node dies (Ray's
#: ``max_retries``: system failures only; an exception the task raises is never retried). A
#: task is a pure function of its arguments that returns its result to this process, so a rerun
#: gives the same row and nothing is written twice; a task that kills its worker every time
#: (a crash, the kernel's OOM killer) is given up after 1 + this many tries and reported.
RAY_TASK_RETRIES = 2

#: Object store of a local Ray instance started under an address-space limit (every Ray
#: process maps the whole store; a grid's task arguments are models of a few MB).
LIMITED_OBJECT_STORE = 256 * 2**20


class ExecutorStartError(OSError):
    """The executor could not start (Ray under a memory limit, a cluster that did not answer…);
    an environment error, reported as one line saying what to do."""


def _exit_when_orphaned(parent: int) -> None:
    """Poll (daemon thread) until the process that started this worker is gone, then exit:
    a worker never outlives the grid, even if the grid's process was killed with SIGKILL."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_init(threads: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    torch.set_num_threads(max(1, int(threads)))


class Executor:
    """Runs (key, function, args) tasks and reports each outcome as it arrives: in this
    process, in one process pool kept for the whole grid (so workers keep their dataset
    cache), or as Ray tasks. Use as a context manager."""

    def __init__(self, executor: str, workers: int, address: str | None, gpu_per_task: bool) -> None:
        self.executor = executor
        self.workers = int(workers)
        self.address = address
        self.gpu_per_task = gpu_per_task
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._ray: Any = None
        self._started_ray = False
        self._reaper: _Descendants | None = None
        #: torch threads of each pool worker (None: no pool): cores we may use ÷ workers
        self.threads: int | None = None

    def __enter__(self) -> "Executor":
        if self.executor == "local" and self.workers > 1:
            self.threads = threads_per_worker(self.workers)  # workers × threads ≤ the cores we may use
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(self.threads, os.getpid()))
        elif self.executor == "ray":
            ray = import_ray()
            if not ray.is_initialized():
                reaper = _Descendants()
                try:
                    _start_ray(ray, self.address)
                except BaseException:
                    reaper.kill_new()  # what a half-started instance spawned, orphans included
                    raise
                self._reaper = reaper
                self._started_ray = True
            self._ray = ray
        elif self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._pool is not None:
            if exc_type is not None:  # an error, Ctrl-C or SIGTERM: stop the workers now, not after their task
                self._terminate_workers()
            else:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        try:
            if self._started_ray and self._ray is not None:
                self._ray.shutdown()
        finally:
            self._ray = None
            if self._reaper is not None:  # whatever the instance left behind (an orphaned agent…)
                self._reaper.kill_new()
                self._reaper = None

    def _terminate_workers(self) -> None:
        """Terminate (then kill) every worker process of the pool and wait for them."""
        assert self._pool is not None
        processes = list(getattr(self._pool, "_processes", {}).values())  # no public API before Python 3.14
        for proc in processes:
            proc.terminate()
        manager = getattr(self._pool, "_executor_manager_thread", None)  # None before the first submit
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        # Wait for the pool's manager thread (it sees the dead workers and closes its wakeup pipe):
        # Python 3.11's exit hook writes to that pipe, and raced with the close after a SIGTERM
        # ("Exception ignored ... OSError: [Errno 9] Bad file descriptor" on an otherwise clean exit).
        if manager is not None:
            manager.join(timeout=10)

    def run(self, tasks: Sequence[Task], on_result: Callable[[str, Any], None],
            on_error: Callable[[str, BaseException, str], None]) -> None:
        """Run ``tasks``; report each outcome to ``on_result`` or ``on_error`` as it arrives."""
        if not tasks:
            return
        if self._pool is not None:
            futures = {self._pool.submit(fn, *args): key for key, fn, args in tasks}
            for fut in concurrent.futures.as_completed(futures):
                key = futures[fut]
                try:
                    value = fut.result()
                except Exception as exc:  # noqa: BLE001 - a task's failure is its outcome, reported; the others go on
                    on_error(key, exc, "".join(traceback.format_exception(exc)))
                else:
                    on_result(key, value)
            return
        if self._ray is not None:
            ray = self._ray
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            num_gpus = 1 if (has_gpu and self.gpu_per_task) else 0
            remote_fns: dict[Callable, Any] = {}
            refs = {}
            for key, fn, args in tasks:
                if fn not in remote_fns:
                    remote_fns[fn] = ray.remote(num_gpus=num_gpus, num_cpus=1, max_retries=RAY_TASK_RETRIES)(fn)
                refs[remote_fns[fn].remote(*args)] = key
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    key = refs.pop(ref)
                    try:
                        value = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task's failure is its outcome, reported; the others go on
                        on_error(key, exc, "".join(traceback.format_exception(exc)))
                    else:
                        on_result(key, value)
            return
        for key, fn, args in tasks:
            try:
                value = fn(*args)
            except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the grid: reported, the others go on
                on_error(key, exc, traceback.format_exc())
            else:
                on_result(key, value)


def _address_space_limit() -> int | None:
    """This process's address-space limit (``ulimit -v``) in bytes, or None when unlimited."""
    try:
        import resource  # noqa: PLC0415 — POSIX only: absent on Windows, where there is no limit to read
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def _start_ray(ray: Any, address: str | None) -> None:
    """``ray.init`` on ``address`` (None: ``RAY_ADDRESS`` or a new local instance), checked:
    :class:`ExecutorStartError` (one line) when it cannot start; the caller kills what it spawned."""
    options: dict[str, Any] = dict(address=address, include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.WARNING)
    if address is None and not os.environ.get("RAY_ADDRESS"):  # a local instance: its processes share our limits
        limit = _address_space_limit()
        if limit is not None:
            if limit < MIN_RAY_ADDRESS_SPACE:
                raise ExecutorStartError(
                    f"could not start Ray: the address-space limit (ulimit -v {limit // 1024}) is below the "
                    f"{MIN_RAY_ADDRESS_SPACE // 2**30} GiB a Ray worker needs; run with --executor local, or raise "
                    f"the limit (ulimit -v {MIN_RAY_ADDRESS_SPACE // 1024} or more)"
                )
            options["object_store_memory"] = LIMITED_OBJECT_STORE
    try:
        ray.init(**options)
    except BaseException as exc:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - a half-started instance; the caller kills its processes
            pass
        if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: unwinds as it is
            raise
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ExecutorStartError(
            f"could not start Ray ({text}); run with --executor local, or raise the memory limit (ulimit -v) "
            "if one is set"
        ) from exc


class _Descendants:
    """The processes this process starts from now on, even those orphaned on the way (Linux:
    this process becomes their subreaper); :meth:`kill_new` terminates (then kills) and reaps
    every descendant that was not there at construction, and restores the subreaper setting."""

    _SET, _GET = 36, 37  # prctl(PR_SET_CHILD_SUBREAPER / PR_GET_CHILD_SUBREAPER)

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:  # cannot list processes: Ray's own shutdown is all there is
            self._psutil = None
            return
        self._psutil = psutil
        self._subreaper = self._prctl_subreaper()
        self._before = {p.pid for p in psutil.Process().children(recursive=True)}

    def _prctl_subreaper(self) -> int | None:
        """Make this process the subreaper of its descendants; returns the previous setting."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            old = ctypes.c_int(0)
            if libc.prctl(self._GET, ctypes.byref(old), 0, 0, 0) != 0 or libc.prctl(self._SET, 1, 0, 0, 0) != 0:
                return None
            return old.value
        except (OSError, AttributeError):  # not Linux
            return None

    def kill_new(self) -> None:
        psutil = self._psutil
        if psutil is None:
            return
        new = [p for p in psutil.Process().children(recursive=True) if p.pid not in self._before]
        for proc in new:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(new, timeout=3)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=3)
        if self._subreaper is not None:
            ctypes.CDLL(None).prctl(self._SET, self._subreaper, 0, 0, 0)
            self._subreaper = None


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray executor needs Ray: pip install 'medic-viz[ray]' (or pip install 'ray>=2.9'), "
            "or use --executor local"
        ) from None
    return ray
