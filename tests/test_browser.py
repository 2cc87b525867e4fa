"""A real browser: JupyterLab on localhost, driven in Debian's headless Chromium by Playwright.

The launcher: opens a copy of ``notebooks/03_tune_temperature.ipynb`` (fast mode), runs all
cells, presses Launch in the launcher, checks that the live accuracy/ASR figure gains points,
presses Stop, checks that the run ends, and takes a screenshot of the launcher.

The workbench: opens a copy of ``notebooks/06_workbench.ipynb``, runs all cells, picks a sign
in the gallery, presses Launch, checks that the curves gain points and that the picked sign's
prediction changes beside them, presses Stop, then Compare (the stopped run's model on the
sign), and takes a screenshot of the workbench.

Screenshots go to pytest's ``tmp_path`` (a normal test run changes no file in the repository).
To refresh the ones the README shows, ``docs/screenshots/launcher.png`` and
``docs/screenshots/workbench.png``, run::

    MEDIC_VIZ_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_browser.py

With that variable the workbench notebook runs with its full settings (not fast mode: two real
20-epoch runs, a few minutes on a CPU) and the screenshot is taken after Run All, so that the
README shows curves at real accuracies.

Skipped, with the reason, where ``/usr/bin/chromium`` or Playwright is missing (Playwright's own
browser download is not used; ``scripts/test.sh`` installs Chromium with apt when it can).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _support import free_port, poll

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_tune_temperature.ipynb"
COMMITTED_SCREENSHOT = ROOT / "docs" / "screenshots" / "launcher.png"
WORKBENCH = ROOT / "notebooks" / "06_workbench.ipynb"
WORKBENCH_SCREENSHOT = ROOT / "docs" / "screenshots" / "workbench.png"
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


def _updating_screenshots() -> bool:
    return os.environ.get("MEDIC_VIZ_UPDATE_SCREENSHOT", "0") == "1"


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"browser test needs Debian's headless Chromium at {CHROMIUM} (apt-get install chromium); "
                    "scripts/test.sh installs it when run as root")
    pytest.importorskip("playwright.sync_api", reason="browser test needs playwright (pip install playwright)")
    pytest.importorskip("jupyterlab", reason="browser test needs jupyterlab (pip install -e '.[notebooks]')")


@pytest.fixture()
def jupyterlab(tmp_path):
    """A JupyterLab server serving a temporary copy of the launcher notebook (fast mode, 2 epochs)."""
    _require_browser()
    yield from _jupyterlab(tmp_path, NOTEBOOK, {"MEDIC_VIZ_FAST": "1", "MEDIC_VIZ_EPOCHS": "2"})


@pytest.fixture()
def workbench_lab(tmp_path):
    """A JupyterLab server serving a temporary copy of the workbench notebook: fast mode, or its
    full settings when the screenshot is being refreshed."""
    _require_browser()
    settings = {"MEDIC_VIZ_FAST": None, "MEDIC_VIZ_EPOCHS": None} if _updating_screenshots() else \
        {"MEDIC_VIZ_FAST": "1", "MEDIC_VIZ_EPOCHS": "2"}
    yield from _jupyterlab(tmp_path, WORKBENCH, settings)


def _jupyterlab(tmp_path: Path, notebook: Path, settings: dict):
    """A JupyterLab server on a free localhost port, serving a temporary copy of ``notebook``;
    ``settings``: environment variables for its kernels (None = unset). Its kernels import this
    checkout's medic_viz."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(notebook, work / notebook.name)
    port = free_port()
    env = dict(os.environ)
    env.update(
        TQDM_DISABLE="1", PYTHONHASHSEED="0",
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    # No "official Jupyter news?" toast over the widgets in the screenshots.
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    for key, value in settings.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
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


def _screenshot_path(tmp_path: Path, committed: Path = COMMITTED_SCREENSHOT) -> Path:
    """``committed`` (in docs/screenshots) when ``MEDIC_VIZ_UPDATE_SCREENSHOT=1``, else a file in ``tmp_path``."""
    if _updating_screenshots():
        return committed
    return tmp_path / committed.name


def _open_and_run_all(page, url: str, name: str, timeout: float) -> None:
    """Open notebook ``name`` in JupyterLab, clear its outputs, Run All, and wait until every
    cell ran (an error output fails at once)."""
    page.goto(f"{url}/lab/tree/{name}?token={TOKEN}", timeout=90_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=90_000)
    page.evaluate("async () => { const p = window.jupyterapp.shell.currentWidget; "
                  "await p.context.ready; await p.sessionContext.ready; window.jupyterapp.shell.collapseLeft(); }")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def all_ran():
        state = page.evaluate(_CELLS_STATE)
        if state and state["errors"]:
            raise AssertionError(f"a notebook cell failed in JupyterLab: {state['errors']}")
        return state and state["done"] == state["n"] and state["status"] == "idle"

    poll(all_ran, timeout=timeout, what="Run All to finish")


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
            # Run all, from cleared outputs so that progress is visible in the execution counts.
            _open_and_run_all(page, jupyterlab["url"], NOTEBOOK.name, timeout=150)
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
            gained = poll(lambda: plot.evaluate(_POINTS) >= points_before + 12, timeout=60,
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


def _shoot(page, element, path: Path) -> None:
    """A screenshot of ``element`` scrolled to the top of the notebook, with its plots drawn."""
    element.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1500)  # plotly redraws after the scroll
    path.parent.mkdir(parents=True, exist_ok=True)
    element.screenshot(path=str(path))


_PROBE_POINTS = """el => (el.data || []).reduce((n, t) => n + (t.x ? t.x.length : 0), 0)"""


def test_workbench_follows_the_picked_input_live_in_jupyterlab(workbench_lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    screenshot = _screenshot_path(tmp_path, WORKBENCH_SCREENSHOT)
    real = _updating_screenshots()
    started = time.monotonic()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(workbench_lab["profile"]), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 3000},  # the whole workbench on screen (JupyterLab draws only what is)
        )
        page = context.pages[0] if context.pages else context.new_page()
        try:
            _open_and_run_all(page, workbench_lab["url"], WORKBENCH.name, timeout=1200 if real else 300)
            bench = page.locator(".medic-workbench")
            expect(bench).to_have_count(1)
            curves = bench.locator(".medic-curves .js-plotly-plot")
            probe = bench.locator(".medic-probe")
            probe_plot = probe.locator(".js-plotly-plot")
            compare = bench.locator(".medic-compare")
            expect(curves).to_be_visible(timeout=10_000)
            assert curves.evaluate(_POINTS) > 0, "the runs made by Run All are not drawn"
            expect(probe).to_contain_text("τ=0", timeout=10_000)  # both runs of the notebook are listed
            if real:  # the README's picture: the notebook's two real runs, before any click
                _shoot(page, bench, screenshot)
            # Pick the fourth sign of the gallery: the panel beside the curves follows it.
            bench.locator(".medic-gallery button").nth(3).click()  # (the buttons carry the class names)
            expect(probe).to_contain_text("gallery image 3", timeout=20_000)
            picked = probe.inner_text().split("true class")[1].split(",")[0].strip()
            expect(compare).to_contain_text("trojaned model: x →", timeout=10_000)
            # A long run with a point every 2 steps, so that it still runs when Stop is pressed.
            for label, value in (("epochs", "200"), ("eval every k steps", "2")):
                box = bench.locator(".widget-text", has_text=label).locator("input")
                box.fill(value)
                box.press("Enter")
            launch = bench.locator(".medic-run-buttons button", has_text="Launch")
            stop = bench.locator(".medic-run-buttons button", has_text="Stop")
            points_before, probe_before = curves.evaluate(_POINTS), probe_plot.evaluate(_PROBE_POINTS)
            launch.click()
            expect(stop).to_be_enabled(timeout=10_000)
            poll(lambda: curves.evaluate(_POINTS) >= points_before + 12, timeout=90,
                  what="the live accuracy/ASR figure to gain points")
            poll(lambda: probe_plot.evaluate(_PROBE_POINTS) >= probe_before + 6, timeout=60,
                  what="the picked input's probabilities to gain points")
            def new_row() -> str:  # the new run's line: "<run> | 1.2 (epoch) | <class> 40% | <class> 38%"
                text = probe.locator("tr").last.inner_text()
                return text if "#2" in text and "%" in text else ""

            first = poll(new_row, timeout=30, what="the new run's prediction on the picked input")
            changed = poll(lambda: new_row() != first and new_row(), timeout=60,
                            what="the picked input's prediction to change")
            t_stop = time.monotonic()
            stop.click()
            expect(bench).to_contain_text(": stopped", timeout=10_000)
            stop_seen = time.monotonic() - t_stop
            expect(launch).to_be_enabled(timeout=5_000)
            compare.locator("button", has_text="Compare").click()
            expect(compare).to_contain_text("(stopped)", timeout=60_000)
            assert bench.locator("text=⚠").count() == 0, "the workbench shows an error"
            if not real:
                _shoot(page, bench, screenshot)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"page screenshot: {tmp_path / 'failure.png'}; server log: {workbench_lab['log']}")
            print(Path(workbench_lab["log"]).read_text()[-4000:])
            raise
        finally:
            context.close()
    assert screenshot.stat().st_size > 10_000
    assert stop_seen < 5.0, f"the browser saw the run end {stop_seen:.1f} s after Stop"
    print(f"workbench browser test: {time.monotonic() - started:.0f} s in all; picked {picked!r}; "
          f"prediction {first!r} → {changed!r}; Stop → 'stopped' shown in {stop_seen:.2f} s; screenshot: {screenshot}")
