"""``medic-viz serve`` in a real browser: two visitors at once, each with their own kernel.

A Voilà server on a free 127.0.0.1 port (fast settings, one run at a time so that the queue
shows), two browser contexts (two participants, no shared cookies) in Debian's headless
Chromium driven by Playwright:

1. both open the workbench (no code cells on the page), each picks a different gallery sign;
2. A launches a long run: A's curves gain points; B launches: B's page says "waiting: position 1
   in the queue" and B's curves stay empty — each page shows only its own run and its own sign;
3. A closes the tab: Voilà shuts A's kernel down, the operating system frees A's seat and run
   slot, and B's run starts and keeps gaining points, still following B's sign;
4. the server and every kernel are stopped (process group, then any kernel left) in ``finally``.

Skipped, with the reason, where ``/usr/bin/chromium``, Playwright or Voilà is missing.
``MEDIC_VIZ_UPDATE_SCREENSHOT=1`` also writes docs/screenshots/served_workbench.png (B's page).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from _support import free_port, poll
from medic_viz.serve import WorkshopServer, resolve_models

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Two visitors in one headless browser: neither page may be treated as a background tab (no
    # animation frames there, so plotly would not draw it); real participants each have their own.
    "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]
SCREENSHOT = ROOT / "docs" / "screenshots" / "served_workbench.png"
_POINTS = """el => (el.data || []).filter(t => /clean acc|ASR/.test(t.name || ''))
                               .reduce((n, t) => n + (t.x ? t.x.length : 0), 0)"""
_RUN_TRACES = """el => (el.data || []).filter(t => /clean acc/.test(t.name || '')).map(t => t.name)"""


@pytest.fixture()
def server(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"browser test needs Debian's headless Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="browser test needs playwright (pip install playwright)")
    pytest.importorskip("voila", reason="medic-viz serve needs voila (pip install -e '.[serve]')")

    log = (tmp_path / "voila.log").open("w")
    srv = WorkshopServer(resolve_models(["badnet", "polygon"]), port=free_port(), participants=3, device="cpu",
                         threads=1, runs=1, epochs=2, eval_every_steps=2, fast=True, idle_timeout=0,
                         run_dir=tmp_path / "run", log=log,
                         env={"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    try:
        srv.start(timeout=90)
        yield srv
    finally:
        srv.stop()
        log.close()


def _visit(context, url: str):
    page = context.new_page()
    page.goto(url, wait_until="commit", timeout=60_000)
    return page


def _drawn(bench) -> bool:
    """The workbench's live figures are drawn with their own layout (their titles are there)."""
    try:
        bench.locator(".medic-curves").get_by_text("clean acc").first.wait_for(timeout=15_000)
        bench.locator(".medic-probe .js-plotly-plot").get_by_text("on x").first.wait_for(timeout=5_000)
        return True
    except Exception:  # noqa: BLE001 - a blank figure: see _bench
        return False


def _bench(page, timeout_ms: int = 150_000):
    """The workbench once its figures are drawn. anywidget gives each plotly figure 2 s to load
    plotly.js in the page; a browser starved of CPU (this 2-core machine running the server, two
    kernels and the browser) can miss that and leave a figure blank — then the page is reloaded
    once, as a participant would (a new kernel; the old one is shut down when the page unloads)."""
    for attempt in range(2):
        page.wait_for_selector(".medic-workbench", timeout=timeout_ms)
        bench = page.locator(".medic-workbench")
        if _drawn(bench):
            return bench
        print(f"blank figure on attempt {attempt + 1}: reloading the page")
        page.reload(wait_until="commit", timeout=60_000)
    raise AssertionError("the workbench's figures stayed blank after a reload")


def test_two_visitors_each_see_their_own_run_and_a_closed_tab_frees_its_place(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    config = server.config
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        a_ctx = browser.new_context(viewport={"width": 1300, "height": 2600})
        b_ctx = browser.new_context(viewport={"width": 1300, "height": 2600})
        pages = {}
        try:
            # Both arrive at once (their kernels start side by side).
            pages["A"] = _visit(a_ctx, server.url("workbench"))
            pages["B"] = _visit(b_ctx, server.url("workbench", model="badnet"))
            a, b = _bench(pages["A"]), _bench(pages["B"])
            for page in pages.values():
                assert page.locator(".jp-InputArea, .jp-Cell-inputWrapper").count() == 0, "code is shown"
                assert page.locator("text=Traceback").count() == 0
            poll(lambda: config.occupied() == 2, 20, "two seats taken")
            # Each picks a sign: A the fourth of the gallery, B the sixth.
            for bench, k in ((a, 3), (b, 5)):
                bench.locator(".medic-gallery button").nth(k).click()
                expect(bench.locator(".medic-probe")).to_contain_text(f"gallery image {k}", timeout=30_000)
            for bench in (a, b):
                for label, value in (("epochs", "200"), ("eval every k steps", "2")):
                    box = bench.locator(".widget-text", has_text=label).locator("input")
                    box.fill(value)
                    box.press("Enter")
            curves = {k: bench.locator(".medic-curves .js-plotly-plot") for k, bench in (("A", a), ("B", b))}
            launch = {k: bench.locator(".medic-run-buttons button", has_text="Launch") for k, bench in (("A", a), ("B", b))}
            # A launches and trains; then B launches and waits for the one place.
            launch["A"].click()
            poll(lambda: curves["A"].evaluate(_POINTS) >= 6, 90, "A's curves to gain points")
            launch["B"].click()
            expect(b).to_contain_text("waiting: position 1 in the queue", timeout=30_000)
            pages["B"].wait_for_timeout(2000)
            assert curves["B"].evaluate(_POINTS) == 0, "B's curves grew while B was waiting"
            assert len(curves["A"].evaluate(_RUN_TRACES)) == 1 and len(curves["B"].evaluate(_RUN_TRACES)) <= 1
            assert "gallery image 3" in a.locator(".medic-probe").inner_text()
            assert "gallery image 5" in b.locator(".medic-probe").inner_text()
            assert "gallery image 3" not in b.inner_text() and "gallery image 5" not in a.inner_text()
            # A closes the tab: the kernel is shut down, its seat and its run's place are freed …
            t_close = time.monotonic()
            pages["A"].close(run_before_unload=True)
            poll(lambda: config.occupied() == 1, 30, "A's seat to be freed")
            # … and B's run starts and keeps going, on B's sign.
            poll(lambda: curves["B"].evaluate(_POINTS) >= 6, 90, "B's run to start and gain points")
            started_after = time.monotonic() - t_close
            first = curves["B"].evaluate(_POINTS)
            poll(lambda: curves["B"].evaluate(_POINTS) > first, 60, "B's run to continue")
            assert len(curves["B"].evaluate(_RUN_TRACES)) == 1, "B sees another participant's run"
            assert "gallery image 5" in b.locator(".medic-probe").inner_text()
            assert config.queue.running() == 1 and config.queue.waiting() == 0
            assert b.locator("text=⚠").count() == 0, "B's workbench shows an error"
            shot = SCREENSHOT if os.environ.get("MEDIC_VIZ_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
            shot.parent.mkdir(parents=True, exist_ok=True)
            pages["B"].screenshot(path=str(shot), full_page=True)
            b.locator(".medic-run-buttons button", has_text="Stop").click()
            expect(b).to_contain_text(": stopped", timeout=15_000)
        except Exception:
            for name, page in pages.items():
                try:
                    print(name, page.locator(".medic-curves .js-plotly-plot").evaluate(
                        "el => (el.data || []).map(t => [t.name, t.x ? t.x.length : null])", timeout=5_000))
                except Exception:  # noqa: BLE001
                    pass
                try:
                    page.screenshot(path=str(tmp_path / f"failure-{name}.png"), full_page=True, timeout=10_000)
                except Exception:  # noqa: BLE001 - a closed tab has no picture
                    pass
            print(f"screenshots in {tmp_path}; voila log:\n" + (tmp_path / "voila.log").read_text()[-4000:])
            raise
        finally:
            a_ctx.close()
            b_ctx.close()
            browser.close()
    took = time.monotonic() - started
    print(f"two-visitor serve test: {took:.0f} s in all; B's run started {started_after:.1f} s after A closed the tab")
    assert took < 300
