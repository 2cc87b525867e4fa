"""The backdoor-removal launcher view over a :class:`~medic_viz.widgets.state.LauncherState`:
method and settings (for MEDIC: how τ is set — calibrated per layer to a share, the default, or
one global τ — the share, τ, λ and the hooked layers), Launch / Stop / Clear, a progress bar,
live overlaid curves of every run, and a table of the runs with the τ each used."""

from __future__ import annotations

import html
import threading
from typing import Any, cast

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.defenses.medic import DEFAULT_LAM
from medic_viz.defenses.registry import DISPLAY_NAMES
from medic_viz.run_settings import ignored_settings, unused_settings
from medic_viz.stats import DEFAULT_EPS_MEDIC
from medic_viz.viz.style import PALETTE
from medic_viz.widgets.apps.common import Throttle, bind, error_html, set_quietly, within
from medic_viz.widgets.state import DEVICE_CHOICES, LauncherState, RunRecord, StateChange, method_choices
from medic_viz.widgets.state.run_settings import LAYER_CHOICES, TAU_MODES, layers_text

__all__ = ["LauncherApp", "launcher_app"]

_LOSS_DASH = {"total": "solid", "ce": "dot", "clone": "dashdot"}
#: Range of the share slider (a share of each layer's neurons) and its step.
SHARE_RANGE: tuple[float, float, float] = (0.0025, 0.10, 0.0025)
_TAU_MODE_LABELS = {"share": "per layer, to a share (default)", "global": "one global τ (the paper's)"}
_LAYER_LABELS = {
    "auto": "auto: default (conv+bn-inner)",
    "conv+bn": "conv+bn: the authors' command",
    "conv+bn+linear": "conv+bn+linear: the paper's text",
    "all": "all (= conv+bn+linear)",
    "conv+bn-last": "conv+bn-last: without the last stage",
    "conv+bn-inner": "conv+bn-inner: without first and last",
    "conv+bn-inner-res": "conv+bn-inner-res: … and the last resolution",
}


def layer_options(current: object = None) -> list[tuple[str, object]]:
    """``(label, value)`` pairs of the layers dropdown: every preset, and ``current`` when it is a
    tuple of module names."""
    options: list[tuple[str, object]] = [(_LAYER_LABELS.get(p, p), p) for p in LAYER_CHOICES]
    if isinstance(current, tuple):
        options.append((f"modules: {layers_text(current)}", current))
    return options


def set_choice(widget: widgets.ValueWidget, value: object, guard: dict, options: list | None = None) -> None:
    """State → a dropdown / toggle without writing back (``options``: offer these first); a
    value it does not offer is not forced on it."""
    guard["syncing"] = True
    try:
        if options is not None and list(widget.options) != options:
            widget.options = options  # may move the value: not written back (syncing)
        offered = [o[1] if isinstance(o, tuple) else o for o in widget.options]
        if value in offered and widget.value != value:
            widget.value = value
    finally:
        guard["syncing"] = False


class LauncherApp(widgets.VBox):
    """The backdoor-removal launcher over a :class:`LauncherState` (see :func:`launcher_app`).

    One widget per launcher parameter (a run setting an app offers,
    :meth:`medic_viz.run_settings.RunSettings.controls`), named after it and bound to it; a
    setting the chosen method does not use is greyed out.
    """

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
                                       value=p["method"] if p["method"] in methods else methods[0],
                                       description="method", style=style, layout=wide)
        note = widgets.Layout(width="380px")  # notes wrap: they do not squeeze the sliders
        self.method_note = widgets.HTML(value="", layout=note)
        self.tau_mode = widgets.Dropdown(options=[(_TAU_MODE_LABELS[m], m) for m in TAU_MODES],
                                         value=p["tau_mode"] if p["tau_mode"] in TAU_MODES else "share",
                                         description="τ set", style=style, layout=wide,
                                         tooltip="per layer: τ calibrated so that each layer's weights match a share of "
                                                 "its neurons; one global τ: the τ slider for every layer")
        lo, hi, step = SHARE_RANGE
        self.share = widgets.FloatSlider(value=within(p["share"], lo, hi, 0.01), min=lo, max=hi, step=step,
                                         readout_format=".2%", description="share per layer", style=style,
                                         layout=wide, continuous_update=False)
        self.tau = widgets.FloatSlider(value=within(p["tau"], 0, 20, 5.0), min=0.0, max=20.0, step=0.5,
                                       description="τ (temperature)", style=style, layout=wide)
        self.layers = widgets.Dropdown(options=layer_options(p["layers"]),
                                       value=p["layers"] if "layers" not in state.problems else "auto",
                                       description="layers", style=style, layout=wide)
        self.tau_note = widgets.HTML(value="", layout=note)
        self.lam = widgets.FloatSlider(value=within(p["lam"], 0, 50, DEFAULT_LAM), min=0.0, max=50.0, step=0.5,
                                       description="λ (cloning weight)", style=style, layout=wide)
        self.epochs = widgets.BoundedIntText(value=within(p["epochs"], 1, 1000, 20), min=1, max=1000,
                                             description="epochs", style=style, layout=widgets.Layout(width="260px"))
        self.fraction = widgets.FloatSlider(value=within(p["fraction"], 0.01, 1.0, 0.05), min=0.01, max=1.0, step=0.01,
                                            readout_format=".0%", description="clean data", style=style, layout=wide)
        self.holdout_fraction = widgets.FloatSlider(
            value=within(p["holdout_fraction"], 0.0, 0.5, 0.0), min=0.0, max=0.5, step=0.05, readout_format=".0%",
            description="clean hold-out", style=style, layout=wide, continuous_update=False,
            tooltip="MEDIC: clean images kept out of training; the clone's accuracy on them (dotted) against the "
                    "teacher's, with clean data alone (0 = off)")
        devices = list(DEVICE_CHOICES) + ([p["device"]] if p["device"] not in DEVICE_CHOICES else [])
        self.device = widgets.Dropdown(options=devices, value=p["device"], description="device", style=style,
                                       layout=widgets.Layout(width="260px"))
        self.eval_every_steps = widgets.BoundedIntText(value=int(p["eval_every_steps"] or 0), min=0, max=100000,
                                                       description="eval every k steps", style=style,
                                                       layout=widgets.Layout(width="260px"),
                                                       tooltip="0 = once per epoch")
        for name in LauncherState.PARAMS:
            bind(getattr(self, name), state, name, self._guard)
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
            "clean acc (solid), ASR (dashed), hold-out (dotted), %", "losses: total, CE (dotted), clone (dash-dot)"))
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
            widgets.VBox([self.method, self.tau_mode, self.share, self.tau, self.lam, self.fraction]),
            widgets.VBox([self.layers, self.epochs, self.device, self.eval_every_steps, self.holdout_fraction,
                          self.method_note, self.tau_note]),
        ])
        buttons = widgets.HBox([self.launch_button, self.stop_button, self.clear_button, self.progress])
        super().__init__([controls, buttons, self.status, self.error, self.figure, self.runs_table])
        self.add_class("medic-launcher")
        state.add_listener(self._on_state)
        self._show_method()
        self.redraw()

    def __repr__(self) -> str:  # the text shown where widgets do not render (e.g. GitHub)
        return f"[MEDIC launcher: {len(self.state.runs)} run(s); run the notebook in Jupyter to use it]"

    # -- events -------------------------------------------------------------------------------
    def _on_launch(self, _button: Any = None) -> None:
        self.error.value = ""
        try:
            self.state.launch()
        except Exception as exc:  # noqa: BLE001 - e.g. a run already in progress: shown in the view
            self.error.value = error_html(f"{type(exc).__name__}: {exc}")

    def _show_method(self) -> None:
        """The settings the run would not use are greyed out (a baseline's note names those it
        ignores, MEDIC's); of τ and the share only the one the τ mode uses is enabled."""
        params = self.state.params
        method, mode = params["method"], params["tau_mode"]
        unused = set(unused_settings(method, params))
        for name in LauncherState.PARAMS:
            getattr(self, name).disabled = name in unused
        ignored = ignored_settings(method)
        self.method_note.value = ("" if ignored is None else
                                  f"<i>{html.escape(ignored[0])} apply to {html.escape(ignored[1])} only: "
                                  f"{html.escape(DISPLAY_NAMES.get(method, str(method)))} ignores them</i>")
        if "tau_mode" in unused:
            self.tau_note.value = ""
        elif mode == "share":
            self.tau_note.value = ("<i>τ is calibrated per layer on the clean data so that each layer's weights match "
                                   "this share of its neurons (the default); the runs table shows the τ used</i>")
        else:
            self.tau_note.value = ("<i>one τ for every layer (the paper's way; it used τ = 5 at ε = 1e-5 — runs here "
                                   f"use ε = {DEFAULT_EPS_MEDIC:g}, where a τ weights neurons more softly: on WRN-16-1 τ = 7 "
                                   "here matches about as many as τ = 5 there)</i>")

    def _on_state(self, change: StateChange) -> None:
        if change.kind == "param":
            if change.name in LauncherState.PARAMS:
                value = change.value
                if change.name == "eval_every_steps":
                    value = int(value or 0) if _is_number(value) else value
                if change.name in ("method", "tau_mode"):
                    self._show_method()
                widget = getattr(self, change.name)
                if isinstance(widget, widgets.Dropdown):
                    options = None
                    if change.name == "layers" and isinstance(value, tuple) and "layers" not in self.state.problems:
                        options = layer_options(value)  # module names: offered while they are chosen
                    set_choice(widget, value, self._guard, options)  # unknown: reported at launch
                    return
                set_quietly(widget, value, self._guard)
        elif change.kind == "event":
            self.throttle.request()
        else:  # launch, status, clear: show at once
            self.throttle.flush()

    # -- drawing ------------------------------------------------------------------------------
    def _ensure_trace(self, run: RunRecord, key: str, color: str) -> int:
        tkey = (run.index, key)
        if tkey not in self._traces:
            if key in ("acc", "asr", "holdout"):
                trace = go.Scatter(x=[], y=[], mode="lines+markers", legendgroup=run.label,
                                   name=f"{run.label}: {_CURVE_NAMES[key]}",
                                   line=dict(color=color, dash=_CURVE_DASH[key]),
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
            for run in runs:
                color = PALETTE[run.index % len(PALETTE)]
                curve = run.curve()
                updates.append((self._ensure_trace(run, "acc", color), curve["x"], curve["clean_acc"]))
                if state.trigger is not None:
                    updates.append((self._ensure_trace(run, "asr", color), curve["x"], curve["asr"]))
                held = run.holdout_curve()
                if held["x"]:
                    updates.append((self._ensure_trace(run, "holdout", color), held["x"], held["holdout_acc"]))
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
                self.progress.description = "waiting" if shown.waiting else shown.status
                text = shown.summary().removeprefix(shown.label + ": ")
                self.status.value = f"<b>{html.escape(shown.label)}</b>: {html.escape(text)}"
            if state.asr_note:
                self.status.value += f"<br><i>{html.escape(state.asr_note)}</i>"
            self.error.value = error_html(latest.error, latest.traceback) if latest is not None and latest.error else ""
            self.runs_table.value = _runs_table(runs)


#: The launcher's curves per run: clean accuracy on the test images (solid), ASR (dashed), and
#: accuracy on the clean hold-out the run kept out of training (dotted; MEDIC's ``holdout_fraction``).
_CURVE_NAMES = {"acc": "clean acc", "asr": "ASR", "holdout": "clean hold-out acc"}
_CURVE_DASH = {"acc": "solid", "asr": "dash", "holdout": "dot"}

_IDLE = "<i>no run yet: choose a method and its settings, then Launch</i>"


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False



def _runs_table(runs: list[RunRecord]) -> str:
    if not runs:
        return ""
    rows = []
    for r in runs:
        last = r.latest_metrics
        acc = "—" if last is None else f"{100 * cast(float, last.clean_acc):.1f}%"  # latest_metrics: it has one
        asr = "—" if last is None or last.asr is None else f"{100 * last.asr:.1f}%"
        color = {"error": "#c62828", "stopped": "#ef6c00", "done": "#2e7d32"}.get(r.status, "#1565c0")
        mem = "—" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f} MiB"
        taus = r.layer_taus
        tau = "—" if r.tau_text is None else html.escape(r.tau_text)
        tip = "" if not taus else html.escape(", ".join(f"{n}: {t:.3g}" for n, t in taus.items()), quote=True)
        rows.append(f"<tr><td>{html.escape(r.label)}</td><td style='color:{color}'>{r.status}</td>"
                    f"<td>{r.params['epochs']}</td><td>{acc}</td><td>{asr}</td><td title=\"{tip}\">{tau}</td>"
                    f"<td>{r.seconds:.1f} s</td><td>{mem}</td></tr>")
    head = ("<tr><th>run</th><th>status</th><th>epochs</th><th>clean acc (live)</th><th>ASR (live)</th>"
            "<th>τ used</th><th>time</th><th>peak memory</th></tr>")
    return f"<table style='font-size:12px'>{head}{''.join(rows)}</table>"


def launcher_app(
    state: LauncherState, *, max_redraws_per_second: float = 4.0, height: int = 420, width: int = 1000
) -> LauncherApp:
    """The launcher for ``state``: method and settings, Launch/Stop, progress, live overlaid
    curves (figure ``width`` × ``height`` pixels)."""
    return LauncherApp(state, max_redraws_per_second=max_redraws_per_second, height=height, width=width)
