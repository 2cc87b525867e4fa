"""What a run may use and what it used: CPU threads and peak memory.

- :func:`available_cpus`: the cores this process may actually run on — its CPU affinity
  (``os.sched_getaffinity``) and, in a container, the cgroup CPU quota — not the machine's count.
- :func:`threads_per_worker`: torch threads for each of ``workers`` processes sharing them, so
  that ``workers × threads ≤ cores`` (two runs with two threads each on two cores thrash).
- :func:`use_available_cpus`: set torch's thread count to the available cores, unless the user
  fixed it with ``OMP_NUM_THREADS``.
- :class:`PeakMemory`: the peak resident memory of the process (CPU) and the peak memory
  allocated by torch on a CUDA device while a piece of work runs, in MiB.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

import torch

__all__ = ["available_cpus", "threads_per_worker", "use_available_cpus", "PeakMemory"]


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) quota, if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup quota (rounded up), ≥ 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes on ``cpus`` cores (default: the available
    ones): ``cpus // workers``, at least 1 — so that ``workers × threads ≤ cpus`` whenever
    ``workers ≤ cpus``."""
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cpus = available_cpus() if cpus is None else int(cpus)
    return max(1, cpus // int(workers))


def use_available_cpus(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: :func:`available_cpus`) unless
    ``OMP_NUM_THREADS`` is set (the user's choice wins). Returns the thread count in effect."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    n = available_cpus() if threads is None else max(1, int(threads))
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


_active_lock = threading.Lock()
_active = 0


def _read_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the process's peak-RSS mark (Linux ≥ 4.0: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _read_hwm_kib() is not None


def _maxrss_mib() -> float | None:
    try:
        import resource  # noqa: PLC0415 — POSIX only: absent on Windows (the ImportError is handled)
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Context manager measuring peak memory while its block runs.

    ``peak_rss_mb``: the process's peak resident set size (MiB). It covers just the block
    (``rss_scope == "run"``) when the peak mark could be reset at the start — on Linux, when no
    other :class:`PeakMemory` is active in the process — and else the whole process so far
    (``"process"``). ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` on ``device`` during
    the block (reset at the start under the same condition), None off CUDA.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.peak_rss_mb: float | None = None
        self.rss_scope = "process"
        self.cuda_peak_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        global _active
        with _active_lock:
            alone = _active == 0
            _active += 1
        if alone and _reset_hwm():
            self.rss_scope = "run"
        if self._cuda and alone:
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        with _active_lock:
            _active -= 1
        hwm = _read_hwm_kib()
        if hwm is not None:
            self.peak_rss_mb = hwm / 1024
        else:
            self.peak_rss_mb = _maxrss_mib()
            self.rss_scope = "process"
        if self._cuda:
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20

    @property
    def _cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda" and torch.cuda.is_available()

    def as_dict(self) -> dict:
        """``{"peak_rss_mb", "rss_scope", "cuda_peak_mb"}`` rounded to 0.1 MiB."""
        r = lambda v: None if v is None else round(float(v), 1)  # noqa: E731
        return {"peak_rss_mb": r(self.peak_rss_mb), "rss_scope": self.rss_scope, "cuda_peak_mb": r(self.cuda_peak_mb)}
