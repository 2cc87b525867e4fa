"""Start and stop a Voilà server that gives every participant their own workbench.

:class:`WorkshopServer` writes the offer (:class:`~medic_viz.serve.config.ServeConfig`), one tiny
notebook per page into ``<run dir>/pages`` (one cell that calls
:func:`medic_viz.widgets.apps.served.serve_page`: the app's logic is the library's) and starts
``voila <run dir>/pages`` in its own process group, so that only those pages are reachable:

- bound to ``127.0.0.1`` unless the host gives another ``ip`` (then a token is required —
  generated when none is given);
- each visitor gets a fresh kernel (Voilà's default), with ``OMP_NUM_THREADS`` and torch threads
  set for fair sharing; Voilà shuts a kernel down when its tab closes (``config/voila.py`` in the
  run directory sets the cookie that request needs), and jupyter_server culls
  kernels idle for ``idle_timeout`` seconds — either way the kernel's seat and run-queue place,
  held with ``flock``, are freed by the operating system;
- no tracebacks in pages (``show_tracebacks=False``), no code cells (``strip_sources``), and the
  front end may not execute code (Voilà's default).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from medic_viz.serve.config import PAGES, SERVE_ENV, ServeConfig

__all__ = ["WorkshopServer", "check_port", "page_notebook", "LOCALHOST"]

LOCALHOST = "127.0.0.1"


def check_port(ip: str, port: int) -> None:
    """ValueError (one line) when ``ip:port`` cannot be listened on (in use, or not this machine's)."""
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"--port {port}: give a port between 1 and 65535")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} is in use on {ip}: choose another with --port") from None
            raise ValueError(f"cannot listen on {ip}:{port} ({exc.strerror or exc}): check --ip and --port") from None


#: Voilà's page sends "shut my kernel down" when its tab closes, with the ``_xsrf`` cookie as the
#: form's token; Voilà's page handler never sets that cookie, so the request is refused (403) and the
#: kernel would live on until culled. Reading ``xsrf_token`` before the kernel starts sets it.
_VOILA_CONFIG = """# Written by medic-viz serve.
def _set_xsrf_cookie(handler, notebook=None, cwd=None):
    handler.xsrf_token  # sets the _xsrf cookie: a closed tab's shutdown request is then accepted
    return None


c.VoilaConfiguration.prelaunch_hook = _set_xsrf_cookie
"""


def page_notebook(page: str) -> dict[str, Any]:
    """The notebook Voilà runs for ``page`` (one of :data:`PAGES`): one code cell, no logic."""
    if page not in PAGES:
        raise ValueError(f"unknown page {page!r}: one of {', '.join(PAGES)}")
    source = ("# Served by `medic-viz serve`: the page is the library's; this cell only shows it.\n"
              "from medic_viz.widgets.apps.served import serve_page\n"
              f"serve_page({page!r})")
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"serve-{page}", "metadata": {},
                   "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


class WorkshopServer:
    """A Voilà server for ``config`` on ``ip:port`` (see the module docstring).

    ``run_dir``: where the offer, queue, seats and pages live (default: a new temporary folder,
    removed by :meth:`stop`). ``log``: a file for Voilà's output (default: inherited).
    ``env``: more environment variables for the server and its kernels.
    """

    def __init__(self, models: dict[str, dict[str, str]], *, ip: str = LOCALHOST, port: int = 8866,
                 token: str | None = None, participants: int = 10, device: str = "cpu", threads: int | None = None,
                 runs: int | None = None, epochs: int = 20, eval_every_steps: int = 0, fast: bool = False,
                 idle_timeout: int = 1800, run_dir: str | Path | None = None, log: Any = None,
                 env: dict[str, str] | None = None) -> None:
        if ip not in (LOCALHOST, "localhost", "::1") and not token:
            token = secrets.token_urlsafe(16)  # a room: never serve without a token
        self.ip, self.port, self.token = ip, int(port), token or ""
        if int(idle_timeout) < 0:
            raise ValueError(f"--idle-timeout must be >= 0 seconds (0 = never), got {idle_timeout}")
        self.idle_timeout = int(idle_timeout)
        self._own_dir = run_dir is None
        self.run_dir = Path(tempfile.mkdtemp(prefix="medic-viz-serve-")) if run_dir is None else Path(run_dir)
        self.config = ServeConfig.create(self.run_dir, models, participants=participants, device=device,
                                         threads=threads, runs=runs, epochs=epochs, eval_every_steps=eval_every_steps,
                                         fast=fast)
        self.pages = self.run_dir / "pages"
        self.pages.mkdir(exist_ok=True)
        for page in PAGES:
            (self.pages / f"{page}.ipynb").write_text(json.dumps(page_notebook(page), indent=1))
        (self.run_dir / "config").mkdir(exist_ok=True)
        (self.run_dir / "config" / "voila.py").write_text(_VOILA_CONFIG)  # Voilà reads only this config
        self._log = log
        self._env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"

    def url(self, page: str = "workbench", **query: str) -> str:
        """The address of ``page`` (with the token when there is one, and ``query``, e.g. model=…)."""
        params = dict(query)
        if self.token:
            params["token"] = self.token
        qs = "&".join(f"{k}={urllib.parse.quote(str(v))}" for k, v in params.items())
        return f"{self.base_url}/voila/render/{page}.ipynb" + (f"?{qs}" if qs else "")

    def command(self) -> list[str]:
        cull = []
        if self.idle_timeout:
            cull = [f"--MappingKernelManager.cull_idle_timeout={self.idle_timeout}",
                    f"--MappingKernelManager.cull_interval={max(5, min(60, self.idle_timeout // 4))}",
                    "--MappingKernelManager.cull_connected=True"]
        return [sys.executable, "-m", "voila", str(self.pages), "--no-browser", f"--Voila.ip={self.ip}",
                f"--Voila.port={self.port}", "--Voila.port_retries=0", f"--Voila.token={self.token}",
                "--VoilaConfiguration.show_tracebacks=False", "--VoilaConfiguration.strip_sources=True",
                "--VoilaConfiguration.file_allowlist=^$",
                f"--Voila.config_file_paths={self.run_dir / 'config'}", *cull]  # ^$: no file is served

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(self.config.threads)
        env.update({SERVE_ENV: str(self.run_dir), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                    "TQDM_DISABLE": "1", "JUPYTER_RUNTIME_DIR": str(self.run_dir / "runtime")})
        env.pop("MEDIC_VIZ_FAST", None)  # the offer says how fast; the host's shell does not
        env.update(self._env)
        return env

    # -- life --------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "WorkshopServer":
        """Start Voilà and wait until it answers; ValueError for a port in use."""
        check_port(self.ip, self.port)
        self.proc = subprocess.Popen(self.command(), env=self.environment(), cwd=self.run_dir,
                                     stdout=self._log, stderr=subprocess.STDOUT if self._log is not None else None,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        probe = f"{self.base_url}/" + (f"?token={self.token}" if self.token else "")  # the page list
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited with status {self.proc.returncode} before it answered")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"voila did not answer at {self.base_url} within {timeout:.0f} s")
            time.sleep(0.3)

    def wait(self) -> int:
        return self.proc.wait() if self.proc is not None else 0

    def stop(self, grace: float = 10.0) -> None:
        """Stop Voilà and every kernel it started (its process group), then remove a temporary run dir."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            _kill_kernels_of(self.run_dir)
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> "WorkshopServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_kernels_of(run_dir: Path) -> None:
    """SIGKILL any process still holding this server's run directory in its environment (a
    kernel that outlived its server's process group), by pid; Linux only, else nothing."""
    marker = f"{SERVE_ENV}={run_dir}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
