"""A real browser: JupyterLab on localhost, driven in Debian's headless Chromium by Playwright.

Opens a copy of ``notebooks/03_tune_temperature.ipynb`` (fast mode), runs all cells, presses
Launch in the launcher, checks that the live accuracy/ASR figure gains points, presses Stop,
checks that the run ends, and takes a screenshot of the launcher.

The screenshot goes to pytest's ``tmp_path`` (a normal test run changes no file in the
repository). To refresh the one the README shows, ``docs/screenshots/launcher.png``, run::

    MEDIC_VIZ_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_browser.py

Skipped, with the reason, where ``/usr/bin/chromium`` or Playwright is missing (Playwright's own
browser download is not used; ``scripts/test.sh`` installs Chromium with apt when it can).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_tune_temperature.ipynb"
COMMITTED_SCREENSHOT = ROOT / "docs" / "screenshots" / "launcher.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "medic-viz-browser-test"

_CELLS_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext.session) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  const kernel = panel.sessionContext.session.kernel;
  return {n: cells.length, done: cells.filter(c => c.model.executionCount !== null).length,
          status: kernel ? kernel.status : 'none', errors: errors};
}"""

_POINTS = """el => (el.data || []).filter(t => /clean acc|ASR/.test(t.name || ''))
                               .reduce((n, t) => n + (t.x ? t.x.length : 0), 0)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")
        time.sleep(0.5)


def _poll(fn, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture()
def jupyterlab(tmp_path):
    """A JupyterLab server on a free localhost port, serving a temporary copy of the notebook."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser test needs Debian's headless Chromium at {CHROMIUM} (apt-get install chromium); "
                    "scripts/test.sh installs it when run as root")
    pytest.importorskip("playwright.sync_api", reason="browser test needs playwright (pip install playwright)")
    pytest.importorskip("jupyterlab", reason="browser test needs jupyterlab (pip install -e '.[notebooks]')")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        MEDIC_VIZ_FAST="1", MEDIC_VIZ_EPOCHS="2", TQDM_DISABLE="1", PYTHONHASHSEED="0",
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    env.pop("MEDIC_VIZ_PNG", None)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0", "--allow-root",
        "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=60)
        yield {"url": f"http://127.0.0.1:{port}", "log": tmp_path / "jupyterlab.log", "profile": tmp_path / "chromium"}
    finally:
        # Stop the server and the kernels it started: they share the process group we created for it.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _screenshot_path(tmp_path: Path) -> Path:
    """``docs/screenshots/launcher.png`` when ``MEDIC_VIZ_UPDATE_SCREENSHOT=1``, else a file in ``tmp_path``."""
    if os.environ.get("MEDIC_VIZ_UPDATE_SCREENSHOT", "0") == "1":
        return COMMITTED_SCREENSHOT
    return tmp_path / "launcher.png"


def test_launcher_runs_live_and_stops_in_jupyterlab(jupyterlab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    screenshot = _screenshot_path(tmp_path)

    started = time.monotonic()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(jupyterlab["profile"]), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(f"{jupyterlab['url']}/lab/tree/{NOTEBOOK.name}?token={TOKEN}", timeout=90_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=90_000)
            page.evaluate("async () => { const p = window.jupyterapp.shell.currentWidget; "
                          "await p.context.ready; await p.sessionContext.ready; window.jupyterapp.shell.collapseLeft(); }")
            # Run all, from cleared outputs so that progress is visible in the execution counts.
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            def all_ran():
                state = page.evaluate(_CELLS_STATE)
                if state and state["errors"]:
                    raise AssertionError(f"a notebook cell failed in JupyterLab: {state['errors']}")
                return state and state["done"] == state["n"] and state["status"] == "idle"

            _poll(all_ran, timeout=150, what="Run All to finish")
            launcher = page.locator(".medic-launcher")
            expect(launcher).to_have_count(1)
            launch = launcher.locator("button", has_text="Launch")
            stop = launcher.locator("button", has_text="Stop")
            expect(launch).to_be_enabled(timeout=10_000)
            plot = launcher.locator(".js-plotly-plot").first
            expect(plot).to_be_visible(timeout=10_000)
            points_before = plot.evaluate(_POINTS)
            assert points_before > 0, "the runs made by Run All are not drawn"
            # A long run, so that it is still running when Stop is pressed, with a point every 2 steps.
            for label, value in (("epochs", "200"), ("eval every k steps", "2")):
                box = launcher.locator(".widget-text", has_text=label).locator("input")
                box.fill(value)
                box.press("Enter")
            launch.click()
            expect(stop).to_be_enabled(timeout=10_000)
            # start + a few step evaluations, clean acc and ASR each
            gained = _poll(lambda: plot.evaluate(_POINTS) >= points_before + 12, timeout=60,
                           what="the live accuracy/ASR figure to gain points")
            assert gained
            expect(launcher).to_contain_text("/200", timeout=10_000)  # the progress bar shows the 200-epoch run
            t_stop = time.monotonic()
            stop.click()
            expect(launcher).to_contain_text(": stopped", timeout=10_000)
            stop_seen = time.monotonic() - t_stop
            expect(launch).to_be_enabled(timeout=5_000)
            expect(stop).to_be_disabled(timeout=5_000)
            assert launcher.locator("text=⚠").count() == 0, "the launcher shows an error"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            launcher.screenshot(path=str(screenshot))
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"page screenshot: {tmp_path / 'failure.png'}; server log: {jupyterlab['log']}")
            print(Path(jupyterlab["log"]).read_text()[-4000:])
            raise
        finally:
            context.close()
    assert screenshot.stat().st_size > 10_000
    assert stop_seen < 5.0, f"the browser saw the run end {stop_seen:.1f} s after Stop"
    print(f"browser test: {time.monotonic() - started:.0f} s in all; Stop → 'stopped' shown in {stop_seen:.2f} s; "
          f"screenshot: {screenshot}")
