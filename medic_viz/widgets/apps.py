"""Thin ipywidgets + plotly ``FigureWidget`` views over the state objects of
:mod:`medic_viz.widgets.state` (all logic lives there).

- :func:`launcher_app` → :class:`LauncherApp`: method (MEDIC or a baseline), τ, λ, epochs,
  clean-data fraction, device and evaluation interval; Launch / Stop / Clear; a progress bar;
  live clean accuracy, ASR and losses of every run overlaid (one colour per run, labelled with
  its method, and τ and λ for MEDIC); errors in red.
  Training events arrive from the training thread; redraws are batched
  (``fig.batch_update()``) and throttled to at most ``max_redraws_per_second``.
- :func:`explorer_app` → :class:`ExplorerApp`: τ slider, layer, criterion and reduction over a
  cached input analysis; the maps are redrawn from the cache.
- :func:`picker_app` → :class:`PickerApp`: a gallery of clean test images, one's own image
  (upload) or model (folder path), trigger, layer and τ; the Figure-2 panels of the choice.

Each app is an ``ipywidgets.VBox`` with its parts as attributes (``app.tau``, ``app.launch_button``,
``app.figure`` …) so that tests and notebooks can drive it with ``.value`` and ``.click()``.
"""

from __future__ import annotations

import html
import io
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.defenses.baselines import DISPLAY_NAMES
from medic_viz.widgets.state import (
    DEVICE_CHOICES,
    ExplorerState,
    LauncherState,
    PickerState,
    RunRecord,
    StateChange,
    method_choices,
)

__all__ = [
    "Throttle",
    "LauncherApp",
    "ExplorerApp",
    "PickerApp",
    "launcher_app",
    "explorer_app",
    "picker_app",
    "error_html",
    "use_notebook_renderer",
]

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
_LOSS_DASH = {"total": "solid", "ce": "dot", "clone": "dashdot"}


def error_html(message: str | None, details: str | None = None) -> str:
    """An error message as red HTML (escaped), with optional collapsible details."""
    if not message:
        return ""
    out = f'<div style="color:#c62828;font-weight:600">⚠ {html.escape(message)}</div>'
    if details:
        out += (f'<details style="color:#c62828"><summary>details</summary>'
                f'<pre style="font-size:11px;white-space:pre-wrap">{html.escape(details)}</pre></details>')
    return out


def use_notebook_renderer(png: bool = False) -> str:
    """Set plotly's default renderer for notebooks and return its name.

    ``"plotly_mimetype"``: interactive figures in JupyterLab/VS Code (small outputs, no plotly.js
    copied into the notebook). With ``png=True`` each figure also carries a static PNG in the
    same output, so a notebook committed with outputs reads on GitHub (which draws no
    JavaScript). PNGs need kaleido and a Chrome/Chromium (``/usr/bin/chromium`` is used when
    ``BROWSER_PATH`` is unset); where they cannot be made a warning says why and figures stay
    interactive only.
    """
    import plotly.io as pio

    name = "plotly_mimetype"
    if png:
        if "BROWSER_PATH" not in os.environ:
            for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
                if Path(candidate).exists():
                    os.environ["BROWSER_PATH"] = candidate
                    break
        try:
            pio.to_image(go.Figure(), format="png", width=10, height=10)
            name = "plotly_mimetype+png"
            pio.renderers["png"].width = 1000  # figures without a width of their own (plotly's default: 700)
        except Exception as exc:  # noqa: BLE001 - any renderer failure means "no PNG here"
            warnings.warn(f"static PNGs are off ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''});"
                          " install kaleido and Chromium to embed them", RuntimeWarning, stacklevel=2)
    pio.renderers.default = name
    return name


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


def _bind(widget: widgets.ValueWidget, state: Any, name: str, guard: dict) -> None:
    """Widget → state for one parameter (state → widget is done by the app's listener)."""

    def on_change(change: dict) -> None:
        if guard.get("syncing"):
            return
        setattr(state, name, change["new"])

    widget.observe(on_change, names="value")


def _set_quietly(widget: widgets.ValueWidget, value: Any, guard: dict) -> None:
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


# ------------------------------------------------------------------------------------------
# launcher
# ------------------------------------------------------------------------------------------


class LauncherApp(widgets.VBox):
    """The backdoor-removal launcher over a :class:`LauncherState` (see :func:`launcher_app`)."""

    def __init__(self, state: LauncherState, *, max_redraws_per_second: float = 4.0, height: int = 420,
                 width: int = 1000) -> None:
        if not isinstance(state, LauncherState):
            raise TypeError(f"launcher_app needs a LauncherState, got {type(state).__name__}")
        if max_redraws_per_second <= 0:
            raise ValueError(f"max_redraws_per_second must be > 0, got {max_redraws_per_second}")
        self.state = state
        self._guard: dict = {}
        p = state.params
        style = {"description_width": "150px"}
        wide = widgets.Layout(width="380px")
        methods = method_choices()
        self.method = widgets.Dropdown(options=[(DISPLAY_NAMES.get(m, m), m) for m in methods],
                                       value=p["method"] if p["method"] in methods else "medic",
                                       description="method", style=style, layout=wide)
        self.method_note = widgets.HTML(value="")
        self.tau = widgets.FloatSlider(value=_in(p["tau"], 0, 20, 5.0), min=0.0, max=20.0, step=0.5,
                                       description="τ (temperature)", style=style, layout=wide)
        self.lam = widgets.FloatSlider(value=_in(p["lam"], 0, 50, 10.0), min=0.0, max=50.0, step=0.5,
                                       description="λ (cloning weight)", style=style, layout=wide)
        self.epochs = widgets.BoundedIntText(value=_in(p["epochs"], 1, 1000, 20), min=1, max=1000,
                                             description="epochs", style=style, layout=widgets.Layout(width="260px"))
        self.fraction = widgets.FloatSlider(value=_in(p["fraction"], 0.01, 1.0, 0.05), min=0.01, max=1.0, step=0.01,
                                            readout_format=".0%", description="clean data", style=style, layout=wide)
        devices = list(DEVICE_CHOICES) + ([p["device"]] if p["device"] not in DEVICE_CHOICES else [])
        self.device = widgets.Dropdown(options=devices, value=p["device"], description="device", style=style,
                                       layout=widgets.Layout(width="260px"))
        self.eval_every_steps = widgets.BoundedIntText(value=int(p["eval_every_steps"] or 0), min=0, max=100000,
                                                       description="eval every k steps", style=style,
                                                       layout=widgets.Layout(width="260px"),
                                                       tooltip="0 = once per epoch")
        for name in LauncherState.PARAMS:
            _bind(getattr(self, name), state, name, self._guard)
        self.launch_button = widgets.Button(description="Launch", button_style="success", icon="play",
                                            tooltip="start a run with these settings")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                          tooltip="end the run after the current batch")
        self.clear_button = widgets.Button(description="Clear runs", icon="trash", tooltip="forget finished runs")
        self.launch_button.on_click(self._on_launch)
        self.stop_button.on_click(lambda _b: self.state.stop())
        self.clear_button.on_click(lambda _b: self.state.clear())
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="idle", style={"description_width": "60px"},
                                            layout=widgets.Layout(width="380px"))
        self.status = widgets.HTML(value=_IDLE)
        self.error = widgets.HTML(value="")
        self.runs_table = widgets.HTML(value="")
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
            "clean acc (solid), ASR (dashed), %", "losses: total, CE (dotted), clone (dash-dot)"))
        fig.update_yaxes(range=[-2, 102], row=1, col=1)
        fig.update_yaxes(type="log", row=1, col=2)
        fig.update_xaxes(title_text="epoch")
        fig.update_layout(template="plotly_white", height=height, width=width, margin=dict(l=50, r=20, t=40, b=40),
                          legend=dict(font=dict(size=11)), uirevision="keep")
        fig.update_annotations(font_size=13)  # the subplot titles
        self.figure = go.FigureWidget(fig)
        self._traces: dict[tuple[int, str], int] = {}
        self._baseline_drawn = False
        self._draw_lock = threading.RLock()
        self.throttle = Throttle(self.redraw, 1.0 / max_redraws_per_second)
        controls = widgets.HBox([
            widgets.VBox([self.method, self.tau, self.lam, self.fraction]),
            widgets.VBox([self.epochs, self.device, self.eval_every_steps, self.method_note]),
        ])
        buttons = widgets.HBox([self.launch_button, self.stop_button, self.clear_button, self.progress])
        super().__init__([controls, buttons, self.status, self.error, self.figure, self.runs_table])
        self.add_class("medic-launcher")
        state.add_listener(self._on_state)
        self._show_method(p["method"])
        self.redraw()

    def __repr__(self) -> str:  # the text shown where widgets do not render (e.g. GitHub)
        return f"[MEDIC launcher: {len(self.state.runs)} run(s); run the notebook in Jupyter to use it]"

    # -- events -------------------------------------------------------------------------------
    def _on_launch(self, _button: Any = None) -> None:
        self.error.value = ""
        try:
            self.state.launch()
        except Exception as exc:  # e.g. a run already in progress
            self.error.value = error_html(f"{type(exc).__name__}: {exc}")

    def _show_method(self, method: Any) -> None:
        """τ and λ are MEDIC's: greyed out, with a note, for a baseline."""
        baseline = method != "medic"
        self.tau.disabled = self.lam.disabled = baseline
        self.method_note.value = (f"<i>τ and λ apply to MEDIC only: {html.escape(DISPLAY_NAMES.get(method, str(method)))}"
                                  " ignores them</i>" if baseline else "")

    def _on_state(self, change: StateChange) -> None:
        if change.kind == "param":
            if change.name in LauncherState.PARAMS:
                value = change.value
                if change.name == "eval_every_steps":
                    value = int(value or 0) if _is_number(value) else value
                if change.name == "method":
                    self._show_method(value)
                    if value not in method_choices():  # an unknown name: reported at launch
                        return
                _set_quietly(getattr(self, change.name), value, self._guard)
        elif change.kind == "event":
            self.throttle.request()
        else:  # launch, status, clear: show at once
            self.throttle.flush()

    # -- drawing ------------------------------------------------------------------------------
    def _ensure_trace(self, run: RunRecord, key: str, color: str) -> int:
        tkey = (run.index, key)
        if tkey not in self._traces:
            if key in ("acc", "asr"):
                trace = go.Scatter(x=[], y=[], mode="lines+markers", legendgroup=run.label,
                                   name=f"{run.label}: {'clean acc' if key == 'acc' else 'ASR'}",
                                   line=dict(color=color, dash="solid" if key == "acc" else "dash"),
                                   hovertemplate="epoch %{x:.2f}<br>%{y:.1f}%<extra>" + run.label + "</extra>")
                self.figure.add_trace(trace, row=1, col=1)
            else:
                name = key.removeprefix("loss:")
                trace = go.Scatter(x=[], y=[], mode="lines", legendgroup=run.label, name=f"{run.label}: {name}",
                                   showlegend=False, line=dict(color=color, dash=_LOSS_DASH.get(name, "longdash")))
                self.figure.add_trace(trace, row=1, col=2)
            self._traces[tkey] = len(self.figure.data) - 1
        return self._traces[tkey]

    def redraw(self) -> None:
        """Bring every widget up to date with the state (safe from any thread)."""
        with self._draw_lock:
            state = self.state
            runs = state.runs
            keep = {r.index for r in runs}
            if any(idx not in keep for idx, _ in self._traces):
                self.figure.data = ()
                self._traces = {}
            # 1. create missing traces (outside batch_update), 2. update all data in one message
            updates: list[tuple[int, list[float], list[float]]] = []
            for i, run in enumerate(runs):
                color = _PALETTE[run.index % len(_PALETTE)]
                curve = run.curve()
                updates.append((self._ensure_trace(run, "acc", color), curve["x"], curve["clean_acc"]))
                if state.trigger is not None:
                    updates.append((self._ensure_trace(run, "asr", color), curve["x"], curve["asr"]))
                for name, (xs, ys) in sorted(run.loss_curves().items()):
                    updates.append((self._ensure_trace(run, "loss:" + name, color), xs, ys))
            baseline = state.baseline
            with self.figure.batch_update():
                for idx, xs, ys in updates:
                    trace = self.figure.data[idx]
                    if len(trace.x or ()) != len(xs):
                        trace.x, trace.y = xs, ys
            if baseline is not None and not self._baseline_drawn:  # add_hline cannot run inside batch_update
                self._baseline_drawn = True
                self.figure.add_hline(y=100 * baseline.clean_acc, line=dict(color="grey", dash="dot"), row=1,
                                      col=1, annotation_text="trojaned: clean acc", annotation_position="top left")
                if baseline.asr is not None:
                    self.figure.add_hline(y=100 * baseline.asr, line=dict(color="grey", dash="dot"), row=1, col=1,
                                          annotation_text="trojaned: ASR", annotation_position="bottom right")
            current = state.current
            latest = state.latest
            self.launch_button.disabled = current is not None
            self.stop_button.disabled = current is None
            shown = current or latest
            if shown is None:
                self.progress.value, self.progress.description = 0, "idle"
                self.status.value = _IDLE
            else:
                step, total = shown.progress
                self.progress.max = max(total, 1)
                self.progress.value = min(step, self.progress.max)
                self.progress.bar_style = {"running": "info", "done": "success", "stopped": "warning",
                                           "error": "danger"}.get(shown.status, "")
                self.progress.description = shown.status
                text = shown.summary().removeprefix(shown.label + ": ")
                self.status.value = f"<b>{html.escape(shown.label)}</b>: {html.escape(text)}"
            self.error.value = error_html(latest.error, latest.traceback) if latest is not None and latest.error else ""
            self.runs_table.value = _runs_table(runs)


_IDLE = "<i>no run yet: choose a method and its settings, then Launch</i>"


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _in(value: Any, lo: float, hi: float, default: Any) -> Any:
    """``value`` if it fits a widget's range, else ``default`` (the state keeps the real value)."""
    try:
        return value if lo <= value <= hi else default
    except TypeError:
        return default


def _runs_table(runs: list[RunRecord]) -> str:
    if not runs:
        return ""
    rows = []
    for r in runs:
        last = r.latest_metrics
        acc = "—" if last is None else f"{100 * last.clean_acc:.1f}%"
        asr = "—" if last is None or last.asr is None else f"{100 * last.asr:.1f}%"
        color = {"error": "#c62828", "stopped": "#ef6c00", "done": "#2e7d32"}.get(r.status, "#1565c0")
        rows.append(f"<tr><td>{html.escape(r.label)}</td><td style='color:{color}'>{r.status}</td>"
                    f"<td>{r.params['epochs']}</td><td>{acc}</td><td>{asr}</td><td>{r.seconds:.1f} s</td></tr>")
    head = ("<tr><th>run</th><th>status</th><th>epochs</th><th>clean acc (live)</th><th>ASR (live)</th>"
            "<th>time</th></tr>")
    return f"<table style='font-size:12px'>{head}{''.join(rows)}</table>"


def launcher_app(
    state: LauncherState, *, max_redraws_per_second: float = 4.0, height: int = 420, width: int = 1000
) -> LauncherApp:
    """The launcher for ``state``: method and settings, Launch/Stop, progress, live overlaid
    curves (figure ``width`` × ``height`` pixels)."""
    return LauncherApp(state, max_redraws_per_second=max_redraws_per_second, height=height, width=width)


# ------------------------------------------------------------------------------------------
# importance explorer
# ------------------------------------------------------------------------------------------

_HEAT = dict(colorscale="Viridis", showscale=False)


class ExplorerApp(widgets.VBox):
    """The importance explorer over an :class:`ExplorerState` (see :func:`explorer_app`)."""

    PANELS: tuple[str, ...] = ("difference", "clean", "triggered")

    def __init__(self, state: ExplorerState, *, height: int = 330) -> None:
        if not isinstance(state, ExplorerState):
            raise TypeError(f"explorer_app needs an ExplorerState, got {type(state).__name__}")
        self.state = state
        self._guard: dict = {}
        style = {"description_width": "110px"}
        self.tau = widgets.FloatSlider(value=_in(state.tau, 0, 20, 5.0), min=0.0, max=20.0, step=0.25,
                                       description="τ (temperature)", style=style, continuous_update=True)
        self.layer = widgets.Dropdown(options=state.layers, value=state.layer, description="layer", style=style)
        self.criteria = widgets.ToggleButtons(options=list(ExplorerState.CRITERIA), value=state.criteria,
                                              description="criterion", style=style)
        self.reduction = widgets.Dropdown(options=list(ExplorerState.REDUCTIONS), value=state.reduction,
                                          description="over channels", style=style)
        for name in ExplorerState.PARAMS:
            _bind(getattr(self, name), state, name, self._guard)
        self.info = widgets.HTML()
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.05, subplot_titles=(
            "activation shift |f(x′) − f(x)|", "importance on the clean input", "importance on the triggered input"))
        for col in (1, 2, 3):
            fig.add_trace(go.Heatmap(z=[[0.0]], **_HEAT), row=1, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
        self.figure = go.FigureWidget(fig)
        super().__init__([widgets.HBox([self.tau, self.layer]), widgets.HBox([self.criteria, self.reduction]),
                          self.info, self.figure])
        state.add_listener(self._on_state)
        self.redraw()

    def __repr__(self) -> str:
        return f"[importance explorer on {self.state.layer}; run the notebook in Jupyter to use it]"

    def _on_state(self, change: StateChange) -> None:
        if change.kind == "param" and change.name in ExplorerState.PARAMS:
            _set_quietly(getattr(self, change.name), change.value, self._guard)
        self.redraw()

    def redraw(self) -> None:
        s = self.state
        difference = s.maps("clean")["difference"]
        clean_imp, triggered_imp = s.importance_map("clean"), s.importance_map("triggered")
        with self.figure.batch_update():
            self.figure.data[0].z = difference
            self.figure.data[1].z = clean_imp
            self.figure.data[2].z = triggered_imp
            self.figure.layout.title = f"{s.layer}: {s.criteria} importance at τ = {s.tau:g}"
        eff_c, eff_t = s.effective_fraction("clean"), s.effective_fraction("triggered")
        self.info.value = (f"Importance is spread over <b>{100 * eff_c:.1f}%</b> of the layer's neurons on the clean "
                           f"input and <b>{100 * eff_t:.1f}%</b> on the triggered one (exp(entropy)/m; 100% = "
                           "uniform, i.e. τ = 0). A larger τ concentrates the cloning on fewer neurons.")


def explorer_app(state: ExplorerState, *, height: int = 330) -> ExplorerApp:
    """The importance explorer for ``state``: τ slider, layer, criterion; maps redrawn from cache."""
    return ExplorerApp(state, height=height)


# ------------------------------------------------------------------------------------------
# input picker
# ------------------------------------------------------------------------------------------


def _png(image_hwc: np.ndarray, scale: int = 2) -> bytes:
    from PIL import Image

    a = np.asarray(image_hwc)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    img = Image.fromarray(a)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgb255(image_hwc: np.ndarray) -> np.ndarray:
    a = np.round(np.clip(np.asarray(image_hwc, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


class PickerApp(widgets.VBox):
    """The input picker over a :class:`PickerState` (see :func:`picker_app`)."""

    MAP_PANELS: tuple[tuple[str, str], ...] = (
        ("clean", "activation, clean"), ("triggered_act", "activation, triggered"),
        ("difference", "difference"), ("activation", "importance: activation (eq.2)"),
        ("impact", "importance: impact (eq.3)"), ("combined", "importance: combined (eq.4)"),
    )

    def __init__(self, state: PickerState, *, height: int = 480, thumbnail_px: int = 64) -> None:
        if not isinstance(state, PickerState):
            raise TypeError(f"picker_app needs a PickerState, got {type(state).__name__}")
        self.state = state
        self._guard: dict = {}
        self.gallery_buttons: list[widgets.Button] = []
        cells = []
        for i, (img, label) in enumerate(zip(state.gallery_images(), state.gallery_labels())):
            button = widgets.Button(description=label, layout=widgets.Layout(width=f"{thumbnail_px + 16}px"),
                                    tooltip=f"show gallery image {i} ({label})")
            button.on_click(lambda _b, i=i: self._guarded(lambda: self.state.choose(i)))
            self.gallery_buttons.append(button)
            thumb = widgets.Image(value=_png(img), format="png",
                                  layout=widgets.Layout(width=f"{thumbnail_px}px", height=f"{thumbnail_px}px"))
            cells.append(widgets.VBox([thumb, button], layout=widgets.Layout(align_items="center")))
        self.gallery = widgets.HBox(cells, layout=widgets.Layout(flex_flow="row wrap"))
        style = {"description_width": "70px"}
        self.trigger_name = widgets.Dropdown(options=list(state.triggers), value=state.trigger_name,
                                             description="trigger", style=style)
        self.layer = widgets.Dropdown(options=state.layers, value=state.layer, description="layer", style=style)
        self.tau = widgets.FloatSlider(value=_in(state.tau, 0, 20, 5.0), min=0.0, max=20.0, step=0.5,
                                       description="τ", style=style)
        for name in ("trigger_name", "layer", "tau"):
            _bind(getattr(self, name), state, name, self._guard)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
        self.upload.observe(self._on_upload, names="value")
        self.model_path = widgets.Text(placeholder="folder saved by medic_viz.save_model", description="model",
                                       style=style)
        self.load_model_button = widgets.Button(description="Load model", icon="upload")
        self.load_model_button.on_click(lambda _b: self._guarded(lambda: self.state.load_model(self.model_path.value)))
        self.error = widgets.HTML()
        self.caption = widgets.HTML()
        fig = make_subplots(rows=2, cols=4, horizontal_spacing=0.03, vertical_spacing=0.12,
                            subplot_titles=("input x", "triggered x′") + tuple(t for _, t in self.MAP_PANELS))
        fig.add_trace(go.Image(z=np.zeros((2, 2, 3), np.uint8)), row=1, col=1)
        fig.add_trace(go.Image(z=np.zeros((2, 2, 3), np.uint8)), row=1, col=2)
        for k in range(len(self.MAP_PANELS)):
            fig.add_trace(go.Heatmap(z=[[0.0]], **_HEAT), row=1 + (k + 2) // 4, col=1 + (k + 2) % 4)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=50, b=10), template="plotly_white")
        self.figure = go.FigureWidget(fig)
        super().__init__([
            self.gallery,
            widgets.HBox([self.trigger_name, self.layer, self.tau]),
            widgets.HBox([self.upload, self.model_path, self.load_model_button]),
            self.error, self.caption, self.figure,
        ])
        state.add_listener(self._on_state)
        self.redraw()

    def __repr__(self) -> str:
        return f"[input picker: {len(self.state.gallery)} gallery images; run the notebook in Jupyter to use it]"

    def _guarded(self, action: Callable[[], None]) -> None:
        self.error.value = ""
        try:
            action()
        except Exception as exc:  # user input (a bad file, a wrong model): show it, do not raise into the UI
            self.error.value = error_html(f"{type(exc).__name__}: {exc}")

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, (tuple, list)) else next(iter(files.values()))
        self._guarded(lambda: self.state.load_image(bytes(item["content"])))

    def _on_state(self, change: StateChange) -> None:
        if change.kind != "param":
            return
        if change.name == "model":
            self.trigger_name.options = list(self.state.triggers)
            self.layer.options = self.state.layers
            for name in ("trigger_name", "layer"):
                _set_quietly(getattr(self, name), getattr(self.state, name), self._guard)
        elif change.name in ("trigger_name", "layer", "tau"):
            _set_quietly(getattr(self, change.name), change.value, self._guard)
        self._guarded(self.redraw)

    def redraw(self) -> None:
        s = self.state
        p = s.panels()
        for i, button in enumerate(self.gallery_buttons):
            button.button_style = "info" if i == s.choice else ""
        with self.figure.batch_update():
            self.figure.data[0].z = _rgb255(p["image"])
            self.figure.data[1].z = _rgb255(p["triggered"])
            for k, (key, _title) in enumerate(self.MAP_PANELS):
                self.figure.data[2 + k].z = p[key]
        (cn, cp), (tn, tp) = p["clean_pred"], p["triggered_pred"]
        source = "your image" if s.choice == PickerState.CUSTOM else f"gallery image {s.choice}"
        self.caption.value = (f"{html.escape(source)}, true class <b>{html.escape(p['label'])}</b>. The model says "
                              f"<b>{html.escape(cn)}</b> ({100 * cp:.0f}%) on x and <b>{html.escape(tn)}</b> "
                              f"({100 * tp:.0f}%) with the {html.escape(s.trigger_name)} trigger. "
                              f"Layer {html.escape(s.layer)}, τ = {s.tau:g}.")


def picker_app(state: PickerState, *, height: int = 480, thumbnail_px: int = 64) -> PickerApp:
    """The input picker for ``state``: gallery, upload, model path, trigger/layer/τ, Figure-2 panels."""
    return PickerApp(state, height=height, thumbnail_px=thumbnail_px)
