"""The workbench view over a :class:`~medic_viz.widgets.state.WorkbenchState`: the picker, the
explorer and the launcher views composed in one layout around one τ and λ (runs use that τ on
every layer, or — the default — calibrate τ per layer, as the hint under the τ slider says for
the picked layer), the picked input followed live through every run, and its Figure-2 columns
under the repaired model next to the trojaned model's.

Every redraw that follows a run happens off the kernel's thread (training thread or a throttle
timer); the τ slider redraws the maps from the cached analyses only.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.defenses.medic import DEFAULT_LAM
from medic_viz.run_settings import method_settings
from medic_viz.viz.style import PALETTE
from medic_viz.widgets.apps.common import HEATMAP, Throttle, bind, error_html, set_quietly, within
from medic_viz.widgets.apps.explorer import ExplorerApp
from medic_viz.widgets.apps.launcher import LauncherApp
from medic_viz.widgets.apps.picker import PickerApp, _rgb255
from medic_viz.widgets.state import RunRecord, StateChange, WorkbenchState
from medic_viz.widgets.state.run_settings import layers_text

__all__ = ["WorkbenchApp", "workbench_app"]

#: Columns of the before/after figure: (key of figure2_panels, title).
_COMPARE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "input x"), ("triggered", "triggered x′"), ("clean", "activation, x"),
    ("triggered_act", "activation, x′"), ("difference", "difference |x′ − x|"), ("combined", "importance (eq.4)"),
)
_GOOD, _BAD = "#2e7d32", "#c62828"
#: Launcher parameters the τ hint depends on.
_HINT_PARAMS = frozenset({"method", "tau_mode", "share", "layers", "fraction", "device"})


def _section(title: str) -> widgets.HTML:
    return widgets.HTML(f"<h3 style='margin:14px 0 4px 0'>{html.escape(title)}</h3>")


def _pred_cell(name: str, probability: float, good: bool) -> str:
    color = _GOOD if good else _BAD
    return f"<td style='color:{color};font-weight:600'>{html.escape(name)} {100 * probability:.0f}%</td>"


class WorkbenchApp(widgets.VBox):
    """The workbench over a :class:`WorkbenchState` (see :func:`workbench_app`).

    Parts (for tests and notebooks): ``tau``, ``lam`` (the shared sliders), ``tau_hint`` (which τ
    runs use on the picked layer), ``picker_view``,
    ``explorer_view``, ``launcher_view`` (the composed apps; ``launch_button``, ``stop_button``,
    ``figure`` are the launcher's), ``probe_html`` and ``probe_figure`` (the picked input, live),
    ``compare_button``, ``compare_status`` and ``compare_figure`` (before / after), and
    ``folder_path``, ``open_button``, ``folder_status`` (open another model folder:
    :meth:`WorkbenchState.open_folder`, then every part is rebuilt on the new state).

    ``host_files=False`` (a served app, ``medic-viz serve``): no model folder field, no Open
    button and no model path in the picker — a participant cannot make the kernel open a path
    on the host's disk.
    """

    def __init__(self, state: WorkbenchState, *, max_redraws_per_second: float = 4.0, width: int = 1100,
                 host_files: bool = True) -> None:
        if not isinstance(state, WorkbenchState):
            raise TypeError(f"workbench_app needs a WorkbenchState, got {type(state).__name__}")
        self._max_redraws_per_second = float(max_redraws_per_second)
        self._width = int(width)
        self.folder_path = widgets.Text(value="" if state.folder is None else str(state.folder),
                                        placeholder="a model folder from medic-viz import or attack",
                                        description="model folder", style={"description_width": "95px"},
                                        layout=widgets.Layout(width="520px"))
        self.open_button = widgets.Button(description="Open", icon="folder-open",
                                          tooltip="open this model folder (its card's dataset and trigger) here")
        self.host_files = bool(host_files)
        if self.host_files:
            self.open_button.on_click(self._on_open)
        else:
            self.folder_path.disabled = self.open_button.disabled = True
        self.folder_status = widgets.HTML()
        self.opener = self._classed(widgets.HBox([self.folder_path, self.open_button, self.folder_status]),
                                    "medic-open-folder")
        super().__init__([])
        self.add_class("medic-workbench")
        self._attach(state)

    def _attach(self, state: WorkbenchState) -> None:
        """Build every part on ``state`` and listen to it."""
        max_redraws_per_second, width = self._max_redraws_per_second, self._width
        self.state = state
        self._guard: dict = {}
        curves_width = max(500, width - 380)
        self.picker_view = PickerApp(state.picker, height=400, host_files=self.host_files)
        self.explorer_view = ExplorerApp(state.explorer, height=260)
        self.launcher_view = LauncherApp(state.launcher, max_redraws_per_second=max_redraws_per_second, height=380,
                                         width=curves_width)
        lv, pv, ev = self.launcher_view, self.picker_view, self.explorer_view
        # Wider maps than the apps' own (their subplot titles need the room), the title above them.
        pv.figure.layout.width = ev.figure.layout.width = min(width, 900)
        ev.figure.layout.margin.t = 70
        self.launch_button, self.stop_button, self.figure = lv.launch_button, lv.stop_button, lv.figure
        style = {"description_width": "120px"}
        self.tau = widgets.FloatSlider(value=within(state.tau, 0, 20, 5.0), min=0.0, max=20.0, step=0.25,
                                       description="τ (temperature)", style=style, continuous_update=True,
                                       layout=widgets.Layout(width="380px"))
        self.lam = widgets.FloatSlider(value=within(state.lam, 0, 50, DEFAULT_LAM), min=0.0, max=50.0, step=0.5,
                                       description="λ (cloning weight)", style=style,
                                       layout=widgets.Layout(width="380px"))
        bind(self.tau, state, "tau", self._guard)
        bind(self.lam, state, "lam", self._guard)
        self.tau_hint = widgets.HTML()

        # the picked input, live
        self.probe_html = widgets.HTML(layout=widgets.Layout(width="370px"))
        probe = go.Figure()
        probe.update_layout(template="plotly_white", height=230, width=370, margin=dict(l=45, r=10, t=40, b=35),
                            showlegend=False, uirevision="keep", title=dict(font=dict(size=12)))
        probe.update_yaxes(range=[-3, 103], title_text="%")
        probe.update_xaxes(title_text="epoch")
        self.probe_figure = go.FigureWidget(probe)
        self._probe_keys: list[tuple[int, str]] = []

        # before / after
        self.compare_button = widgets.Button(description="Compare", icon="columns",
                                             tooltip="the picked input under the latest run's model (a stopped run too)")
        self.compare_button.on_click(self._on_compare)
        self.compare_status = widgets.HTML()
        fig = make_subplots(rows=2, cols=len(_COMPARE_COLUMNS), horizontal_spacing=0.02, vertical_spacing=0.14,
                            column_titles=[t for _, t in _COMPARE_COLUMNS])
        for row in (1, 2):
            for col, (key, _t) in enumerate(_COMPARE_COLUMNS, start=1):
                trace = go.Image(z=np.zeros((2, 2, 3), np.uint8)) if key in ("image", "triggered") else \
                    go.Heatmap(z=[[0.0]], **HEATMAP)
                fig.add_trace(trace, row=row, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(height=380, width=width, margin=dict(l=10, r=10, t=70, b=10), template="plotly_white")
        fig.update_annotations(font_size=12)
        self._column_titles = [dict(a.to_plotly_json()) for a in fig.layout.annotations]
        self._row_tops = [fig.layout.yaxis.domain[1], fig.layout[f"yaxis{len(_COMPARE_COLUMNS) + 1}"].domain[1]]
        self.compare_figure = go.FigureWidget(fig)
        self._compare_lock = threading.RLock()
        self._comparing = False

        self.header = widgets.HTML()
        shared = widgets.HTML("<i>λ here is the one Launch uses, and so is τ when runs use one global τ (step 3); "
                              "moving τ recomputes the maps from the cached activations (the model does not run "
                              "again).</i>")
        settings = widgets.HBox([widgets.VBox([lv.method, lv.tau_mode, lv.share, lv.fraction, lv.method_note]),
                                 widgets.VBox([lv.layers, lv.epochs, lv.device, lv.eval_every_steps, lv.tau_note])])
        buttons = widgets.HBox([lv.launch_button, lv.stop_button, lv.clear_button, lv.progress])
        self.children = [
            self.header, *([self.opener] if self.host_files else []),
            _section("1 · Pick an input"),
            self._classed(pv.gallery, "medic-gallery"), widgets.HBox([pv.trigger_name, pv.upload]), pv.error,
            _section("2 · Look inside it"),
            widgets.HBox([self.tau, self.lam, pv.layer]), self.tau_hint, shared, pv.caption, pv.figure,
            widgets.HBox([ev.criteria, ev.reduction]), ev.info, ev.figure,
            _section("3 · Repair the model and watch the input heal"),
            settings, self._classed(buttons, "medic-run-buttons"), lv.status, lv.error,
            self._classed(widgets.HBox([self._classed(widgets.Box([lv.figure]), "medic-curves"),
                                        self._classed(widgets.VBox([self.probe_html, self.probe_figure]), "medic-probe")]),
                          "medic-live"),
            lv.runs_table,
            _section("4 · Before and after: the picked input in the trojaned and the repaired model"),
            self._classed(widgets.VBox([widgets.HBox([self.compare_button, self.compare_status]), self.compare_figure]),
                          "medic-compare"),
        ]
        self.probe_throttle = Throttle(self.redraw_probe, 1.0 / max_redraws_per_second)
        state.add_listener(self._on_state)
        state.launcher.add_listener(self._on_launcher)
        state.picker.add_listener(self._on_picker)
        self.redraw()

    def _detach(self) -> None:
        """Stop listening to the current state (before another one is attached)."""
        s = self.state
        for source, listener in ((s, self._on_state), (s.launcher, self._on_launcher), (s.picker, self._on_picker)):
            try:
                source.remove_listener(listener)
            except ValueError:
                pass

    def open_folder(self, folder: Any = None) -> bool:
        """Open the model folder ``folder`` (default: the text in ``folder_path``) with the
        current settings (:meth:`WorkbenchState.open_folder`) and show it; returns whether it
        opened. A folder that does not open is reported in one line in ``folder_status`` and
        the current model stays."""
        if not self.host_files:
            raise PermissionError("this workbench does not open model folders (served with host_files=False)")
        path = self.folder_path.value if folder is None else str(folder)
        self.folder_status.value = "<i>opening …</i>"
        try:
            state = self.state.open_folder(path)
        except Exception as exc:  # noqa: BLE001 - user input: a wrong path, weights that do not fit …; shown, not raised
            self.folder_status.value = error_html(" ".join(f"{type(exc).__name__}: {exc}".split()))
            return False
        self._detach()
        self._attach(state)
        self.folder_path.value = str(state.folder)
        self.folder_status.value = ""
        return True

    def _on_open(self, _button: Any = None) -> None:
        self.open_folder()

    @staticmethod
    def _classed(box: widgets.Box, name: str) -> widgets.Box:
        box.add_class(name)  # for the browser test's selectors
        return box

    def __repr__(self) -> str:
        return f"[MEDIC workbench: {len(self.state.runs)} run(s); run the notebook in Jupyter to use it]"

    # -- events -------------------------------------------------------------------------------
    def _on_state(self, change: StateChange) -> None:
        if change.kind == "param" and change.name in ("tau", "lam"):
            set_quietly(getattr(self, change.name), change.value, self._guard)
            if change.name == "tau":
                self.redraw_compare()
                self.redraw_tau_hint()
        elif change.kind == "compare":
            self.redraw_compare()

    def _on_launcher(self, change: StateChange) -> None:
        if change.kind == "param" and change.name in _HINT_PARAMS:
            self.redraw_tau_hint()
        elif change.kind == "event":
            self.probe_throttle.request()
        elif change.kind in ("launch", "status", "clear"):
            self.probe_throttle.flush()
            self.compare_button.disabled = self._comparing or self.state.launcher.running

    def _on_picker(self, change: StateChange) -> None:
        if change.kind == "param" and change.name in ("choice", "trigger_name", "layer", "model"):
            self.redraw_header()
            self.redraw_compare()
            if change.name in ("layer", "model"):
                self.redraw_tau_hint()
            if change.name != "layer":
                self.probe_throttle.flush()

    def _on_compare(self, _button: Any = None) -> None:
        """Analyse the picked input under the latest run's model in a background thread (the
        model statistics take a moment); the figure is redrawn when it is ready."""
        self.compare_status.value = "<i>analysing the picked input under the repaired model …</i>"
        self._comparing = True
        self.compare_button.disabled = True

        def work() -> None:
            try:
                run = self.state.compare()
                self.compare_status.value = ""
                del run
            except Exception as exc:  # noqa: BLE001 - no run with a model yet, a run still running …
                self.compare_status.value = error_html(f"{type(exc).__name__}: {exc}")
            finally:
                self._comparing = False
                self.compare_button.disabled = self.state.launcher.running

        threading.Thread(target=work, name="medic-viz-compare", daemon=True).start()

    # -- drawing ------------------------------------------------------------------------------
    def redraw(self) -> None:
        self.redraw_header()
        self.redraw_tau_hint()
        self.redraw_probe()
        self.redraw_compare()
        self.compare_button.disabled = self.state.launcher.running

    def redraw_header(self) -> None:
        s = self.state
        p, launcher = s.picker, s.launcher
        teacher = type(p.model).__name__
        card = s.card
        if card is not None:
            teacher = f"{card.architecture}" + (f" trojaned with {card.attack.get('name')}" if card.attack else "")
        if s.folder is not None:
            teacher += f" from {s.folder.name}/"
        target = "" if launcher.target is None else (
            f"; its backdoor sends triggered inputs to <b>{html.escape(p.class_name(launcher.target))}</b>"
            " (ASR = share of triggered test images classified so)")
        self.header.value = (f"<b>MEDIC workbench</b>: {html.escape(teacher)} on {html.escape(p.data.name)} "
                             f"({p.data.num_classes} classes){target}. Pick an input, look inside it, repair "
                             "the model, and follow the input through the run.")

    def redraw_tau_hint(self) -> None:
        """Which τ a run uses on the picked layer: the calibrated one (the default, computed once
        and cached) or the slider's; and whether the run's layer set clones this layer at all."""
        s = self.state
        layer = s.picker.layer
        launcher = s.launcher
        if "tau_mode" not in method_settings(launcher.method):  # the method has no τ to calibrate
            self.tau_hint.value = ""
            return
        try:
            cloned = layer in s.run_layer_names()
            calibrated = s.calibrated_tau(layer)
        except Exception as exc:  # noqa: BLE001 - an invalid share / layers / fraction: shown here, and at launch
            self.tau_hint.value = (f"<span style='font-size:12px;color:{_BAD}'>per-layer τ unavailable: "
                                   f"{html.escape(str(exc))}</span>")
            return
        name = html.escape(layer)
        sets = html.escape(layers_text(s.run_layers))
        if s.tau_mode == "global":
            text = (f"Runs use this τ = {s.tau:g} on every cloned layer (one global τ); the per-layer default would "
                    f"use τ = {calibrated:.3g} on {name}.")
        else:
            text = (f"Runs calibrate τ per layer (share {100 * s.share:g} %): the per-layer default uses "
                    f"τ = {calibrated:.3g} on {name}; the slider only draws the maps.")
        if not cloned:
            text += f" Runs do not clone {name} (layers = {sets})."
        self.tau_hint.value = f"<span style='font-size:12px'>{text}</span>"

    def redraw_probe(self) -> None:
        """The picked input's predictions: the trojaned model's, then each run's latest (text),
        and P(true class) on the clean and triggered input at every evaluation (figure)."""
        s = self.state
        probe, before = s.probe, s.before
        name = probe.class_name
        rows = ["<tr><th></th><th>epoch</th><th>clean x</th><th>triggered x′</th></tr>"]
        if before is not None:
            rows.append("<tr><td>trojaned</td><td></td>"
                        + _pred_cell(name(before.clean.label), before.clean.probability, before.clean.label == probe.label)
                        + _pred_cell(name(before.triggered.label), before.triggered.probability,
                                     before.triggered.label == probe.label) + "</tr>")
        runs = [r for r in s.runs if r.probe is not None]
        for r in runs:
            assert r.probe is not None  # (runs keeps the runs with a probe)
            last = r.latest_reading
            color = PALETTE[r.index % len(PALETTE)]
            follows = "" if r.probe.name == probe.name and r.probe.label == probe.label else \
                f"<br><i style='font-size:11px'>followed {html.escape(r.probe.name)}</i>"
            label = f"<span style='color:{color}'>■</span> {html.escape(r.label)}{follows}"
            if last is None:
                rows.append(f"<tr><td>{label}</td><td></td><td colspan=2><i>{html.escape(r.status)}</i></td></tr>")
                continue
            x, reading = last
            rn = r.probe.class_name
            rows.append(f"<tr><td>{label}</td><td>{x:.1f}</td>"
                        + _pred_cell(rn(reading.clean.label), reading.clean.probability,
                                     reading.clean.label == r.probe.label)
                        + _pred_cell(rn(reading.triggered.label), reading.triggered.probability,
                                     reading.triggered.label == r.probe.label) + "</tr>")
        self.probe_html.value = (
            f"<div style='font-size:12px'><b>The picked input</b>: {html.escape(probe.name)}, true class "
            f"<b>{html.escape(name(probe.label))}</b>, trigger {html.escape(probe.trigger.name)}"
            f"<table style='font-size:12px'>{''.join(rows)}</table></div>")
        keys = [(id(r), which) for r in runs for which in ("clean", "triggered")]
        if keys != self._probe_keys:
            traces = []
            for r in runs:
                color = PALETTE[r.index % len(PALETTE)]
                for which, dash in (("clean", "solid"), ("triggered", "dash")):
                    traces.append(go.Scatter(x=[], y=[], mode="lines+markers", line=dict(color=color, dash=dash),
                                             name=f"{r.label}: {which}", marker=dict(size=4),
                                             hovertemplate=f"epoch %{{x:.2f}}<br>%{{y:.1f}}%<extra>{html.escape(r.label)}"
                                                           f" ({which})</extra>"))
            self.probe_figure.data = ()
            if traces:
                self.probe_figure.add_traces(traces)
            self._probe_keys = keys
        with self.probe_figure.batch_update():
            for i, r in enumerate(runs):
                curve = r.probe_curve()
                for j, which in enumerate(("clean", "triggered")):
                    trace = self.probe_figure.data[2 * i + j]
                    if len(trace.x or ()) != len(curve["x"]):
                        trace.x, trace.y = curve["x"], curve[which]
            shapes = []
            if before is not None:
                for which, dash in (("clean", "dot"), ("triggered", "dashdot")):
                    y = 100 * before.probability(which, probe.label)
                    shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=y, y1=y,
                                       line=dict(color="grey", width=1, dash=dash)))
            self.probe_figure.layout.shapes = shapes
            self.probe_figure.layout.title.text = (f"P({name(probe.label)}) on x (solid) and x′ (dashed); "
                                                   "grey: trojaned")

    def redraw_compare(self) -> None:
        """The before/after figure at the current layer and τ (from cached analyses)."""
        with self._compare_lock:
            s = self.state
            try:
                c = s.comparison()
            except Exception as exc:  # noqa: BLE001 - a repaired model the picker's images do not fit …
                self.compare_status.value = error_html(f"{type(exc).__name__}: {exc}")
                return
            rows = [("trojaned", c["trojaned"]), ("repaired", c["repaired"])]
            run: RunRecord | None = c["run"]
            annotations = list(self._column_titles)
            # One colour range per column group over both rows, so that a path that fades shows as fainter.
            ranges = {}
            for group, keys in (("act", ("clean", "triggered_act")), ("difference", ("difference",)),
                                ("combined", ("combined",))):
                values = [np.asarray(p[k], dtype=float) for _, p in rows if p is not None for k in keys]
                ranges[group] = (min(float(np.nanmin(v)) for v in values), max(float(np.nanmax(v)) for v in values))
            with self.compare_figure.batch_update():
                for r, (kind, panels) in enumerate(rows):
                    for k, (key, _t) in enumerate(_COMPARE_COLUMNS):
                        trace = self.compare_figure.data[r * len(_COMPARE_COLUMNS) + k]
                        if panels is None:
                            trace.z = np.full((2, 2, 3), 255, np.uint8) if key in ("image", "triggered") else [[None]]
                        elif key in ("image", "triggered"):
                            trace.z = _rgb255(panels[key])
                        else:
                            lo, hi = ranges["act" if key in ("clean", "triggered_act") else key]
                            trace.update(z=panels[key], zmin=lo, zmax=hi)
                    if panels is None:
                        text = ("<b>repaired</b>: when a run ends, its model's view of the input appears here "
                                "(Compare shows a stopped run's)")
                    else:
                        (cn, cp), (tn, tp) = panels["clean_pred"], panels["triggered_pred"]
                        if kind == "trojaned":
                            who = "trojaned model"
                        else:
                            assert run is not None  # the repaired row's panels come from its run
                            who = f"repaired: {run.label} ({run.status})"
                        text = (f"<b>{html.escape(who)}</b>: x → {html.escape(cn)} {100 * cp:.0f}%, "
                                f"x′ → {html.escape(tn)} {100 * tp:.0f}%")
                    top = self._row_tops[r] + (0.09 if r == 0 else 0.015)  # row 1: above the column titles
                    annotations.append(dict(text=text, x=0, xref="paper", xanchor="left", y=top, yref="paper",
                                            yanchor="bottom", showarrow=False, font=dict(size=12)))
                self.compare_figure.layout.annotations = annotations
                self.compare_figure.layout.title = dict(
                    text=f"layer {s.picker.layer}, τ = {s.tau:g}", x=0.99, xanchor="right", font=dict(size=12))


def workbench_app(state: WorkbenchState, *, max_redraws_per_second: float = 4.0, width: int = 1100,
                  host_files: bool = True) -> WorkbenchApp:
    """The workbench for ``state``: pick an input, look inside it at τ, launch runs with that τ
    and λ, follow the input live, and see it under the repaired model (``width`` in pixels;
    ``host_files=False``: no field that opens a path on the host, for ``medic-viz serve``)."""
    return WorkbenchApp(state, max_redraws_per_second=max_redraws_per_second, width=width, host_files=host_files)
