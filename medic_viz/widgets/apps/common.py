"""What every app view shares: widget ↔ state binding, throttled redraws, errors in red,
and the small helpers that keep a widget's range and the state's value apart."""

from __future__ import annotations

import html
import threading
import time
from typing import Any, Callable

import ipywidgets as widgets

__all__ = ["Throttle", "error_html", "bind", "set_quietly", "within", "HEATMAP"]

#: Style of the importance / activation heatmaps.
HEATMAP = dict(colorscale="Viridis", showscale=False)


def error_html(message: str | None, details: str | None = None) -> str:
    """An error message as red HTML (escaped), with optional collapsible details."""
    if not message:
        return ""
    out = f'<div style="color:#c62828;font-weight:600">⚠ {html.escape(message)}</div>'
    if details:
        out += (f'<details style="color:#c62828"><summary>details</summary>'
                f'<pre style="font-size:11px;white-space:pre-wrap">{html.escape(details)}</pre></details>')
    return out


class Throttle:
    """Call ``draw()`` at most once every ``interval`` seconds, from whichever thread asks.

    :meth:`request` draws now if the last draw is old enough, otherwise schedules one trailing
    draw (so the latest data is always shown). :meth:`flush` draws now. Draws never overlap.
    """

    def __init__(self, draw: Callable[[], None], interval: float = 0.25) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self._draw = draw
        self.interval = float(interval)
        self._lock = threading.RLock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self.draws = 0

    def request(self) -> None:
        with self._lock:
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0:
                self._fire()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        self._fire()

    def _fire(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last = time.monotonic()
            self.draws += 1
            self._draw()


def bind(widget: widgets.ValueWidget, state: Any, name: str, guard: dict) -> None:
    """Widget → state for one parameter (state → widget is done by the app's listener)."""

    def on_change(change: dict) -> None:
        if guard.get("syncing"):
            return
        setattr(state, name, change["new"])

    widget.observe(on_change, names="value")


def set_quietly(widget: widgets.ValueWidget, value: Any, guard: dict) -> None:
    """State → widget without writing back (values outside a slider's range are not forced on it)."""
    lo, hi = getattr(widget, "min", None), getattr(widget, "max", None)
    try:
        if lo is not None and hi is not None and not (lo <= value <= hi):
            return
    except TypeError:
        return
    guard["syncing"] = True
    try:
        if widget.value != value:
            widget.value = value
    finally:
        guard["syncing"] = False


def within(value: Any, lo: float, hi: float, default: Any) -> Any:
    """``value`` if it fits a widget's range, else ``default`` (the state keeps the real value)."""
    try:
        return value if lo <= value <= hi else default
    except TypeError:
        return default

