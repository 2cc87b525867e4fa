"""Executors of a grid's tasks — no scheduler of our own:

* ``"local"``: tasks one after another in this process, or ``workers`` > 1 in one
  :class:`concurrent.futures.ProcessPoolExecutor` (spawned processes, kept for the whole grid
  so that each keeps its dataset cache, torch threads split between them);
* ``"ray"``: each task is a Ray task (``num_gpus=1`` when the cluster has GPUs and the cells
  do not ask for the CPU) on the cluster of ``ray.init(address=...)``; needs
  ``pip install 'medic-viz[ray]'``. Workers must see the dataset path and have medic_viz
  installed.

A task is ``(key, function, args)``; its outcome reaches ``on_result(key, value)`` or
``on_error(key, exception, traceback text)`` as it arrives. A failing task never stops the others.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable, Sequence

from medic_viz.resources import threads_per_worker

__all__ = ["Task", "EXECUTORS", "Executor", "import_ray"]

#: The executors :class:`Executor` knows.
EXECUTORS: tuple[str, ...] = ("local", "ray")

Task = tuple[str, Callable[..., Any], tuple]


def _exit_when_orphaned(parent: int) -> None:
    """Poll (daemon thread) until the process that started this worker is gone, then exit:
    a worker never outlives the grid, even if the grid's process was killed with SIGKILL."""
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_init(threads: int, parent: int) -> None:
    import signal
    import threading

    import torch

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
        self._pool = None
        self._ray = None
        self._started_ray = False
        #: torch threads of each pool worker (None: no pool): cores we may use ÷ workers
        self.threads: int | None = None

    def __enter__(self) -> "Executor":
        if self.executor == "local" and self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.threads = threads_per_worker(self.workers)  # workers × threads ≤ the cores we may use
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=(self.threads, os.getpid()))
        elif self.executor == "ray":
            ray = import_ray()
            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
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
        if self._started_ray and self._ray is not None:
            self._ray.shutdown()
        self._ray = None

    def _terminate_workers(self) -> None:
        """Terminate (then kill) every worker process of the pool and wait for them."""
        assert self._pool is not None
        processes = list(getattr(self._pool, "_processes", {}).values())  # no public API before Python 3.14
        for proc in processes:
            proc.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    def run(self, tasks: Sequence[Task], on_result: Callable[[str, Any], None],
            on_error: Callable[[str, BaseException, str], None]) -> None:
        """Run ``tasks``; report each outcome to ``on_result`` or ``on_error`` as it arrives."""
        if not tasks:
            return
        if self._pool is not None:
            from concurrent.futures import as_completed

            futures = {self._pool.submit(fn, *args): key for key, fn, args in tasks}
            for fut in as_completed(futures):
                key = futures[fut]
                try:
                    value = fut.result()
                except Exception as exc:
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
                    remote_fns[fn] = ray.remote(num_gpus=num_gpus, num_cpus=1, max_retries=0)(fn)
                refs[remote_fns[fn].remote(*args)] = key
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    key = refs.pop(ref)
                    try:
                        value = ray.get(ref)
                    except Exception as exc:
                        on_error(key, exc, "".join(traceback.format_exception(exc)))
                    else:
                        on_result(key, value)
            return
        for key, fn, args in tasks:
            try:
                value = fn(*args)
            except Exception as exc:  # a failed cell must not stop the grid
                on_error(key, exc, traceback.format_exc())
            else:
                on_result(key, value)


def import_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray executor needs Ray: pip install 'medic-viz[ray]' (or pip install 'ray>=2.9'), "
            "or use --executor local"
        ) from None
    return ray
