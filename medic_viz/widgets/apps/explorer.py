"""The importance explorer view over an :class:`~medic_viz.widgets.state.ExplorerState`: τ slider,
layer, criterion and reduction; the maps are redrawn from the state's cached analysis."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.widgets.apps.common import HEATMAP, bind, set_quietly, within
from medic_viz.widgets.state import ExplorerState, StateChange

__all__ = ["ExplorerApp", "explorer_app"]

#: Button labels of the criteria (values: :data:`medic_viz.importance.CRITERIA`).
_CRITERION_LABELS = {"both": "both (eq.4)", "activation": "activation (eq.2)", "impact": "impact (eq.3)"}


class ExplorerApp(widgets.VBox):
    """The importance explorer over an :class:`ExplorerState` (see :func:`explorer_app`)."""

    PANELS: tuple[str, ...] = ("difference", "clean", "triggered")

    def __init__(self, state: ExplorerState, *, height: int = 330) -> None:
        if not isinstance(state, ExplorerState):
            raise TypeError(f"explorer_app needs an ExplorerState, got {type(state).__name__}")
        self.state = state
        self._guard: dict = {}
        style = {"description_width": "110px"}
        self.tau = widgets.FloatSlider(value=within(state.tau, 0, 20, 5.0), min=0.0, max=20.0, step=0.25,
                                       description="τ (temperature)", style=style, continuous_update=True)
        self.layer = widgets.Dropdown(options=state.layers, value=state.layer, description="layer", style=style)
        self.criteria = widgets.ToggleButtons(options=[(_CRITERION_LABELS.get(c, c), c) for c in ExplorerState.CRITERIA],
                                              value=state.criteria,
                                              description="criterion", style=style)
        self.reduction = widgets.Dropdown(options=list(ExplorerState.REDUCTIONS), value=state.reduction,
                                          description="over channels", style=style)
        for name in ExplorerState.PARAMS:
            bind(getattr(self, name), state, name, self._guard)
        self.info = widgets.HTML()
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.05, subplot_titles=(
            "activation shift |f(x′) − f(x)|", "importance on the clean input", "importance on the triggered input"))
        for col in (1, 2, 3):
            fig.add_trace(go.Heatmap(z=[[0.0]], **HEATMAP), row=1, col=col)
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
            set_quietly(getattr(self, change.name), change.value, self._guard)
        elif change.kind == "analysis":  # another input: its layers, and the layer kept or reset
            self._guard["syncing"] = True
            try:
                if list(self.layer.options) != self.state.layers:
                    self.layer.options = self.state.layers
                self.layer.value = self.state.layer
            finally:
                self._guard["syncing"] = False
        self.redraw()

    def redraw(self) -> None:
        s = self.state
        difference = s.maps("clean")["difference"]
        clean_imp, triggered_imp = s.importance_map("clean"), s.importance_map("triggered")
        with self.figure.batch_update():
            self.figure.data[0].z = difference
            self.figure.data[1].z = clean_imp
            self.figure.data[2].z = triggered_imp
            criterion = "both-criteria" if s.criteria == "both" else s.criteria
            self.figure.layout.title = f"{s.layer}: {criterion} importance at τ = {s.tau:g}"
        eff_c, eff_t = s.effective_fraction("clean"), s.effective_fraction("triggered")
        self.info.value = (f"Importance is spread over <b>{100 * eff_c:.1f}%</b> of the layer's neurons on the clean "
                           f"input and <b>{100 * eff_t:.1f}%</b> on the triggered one (exp(entropy)/m; 100% = "
                           "uniform, i.e. τ = 0). A larger τ concentrates the cloning on fewer neurons.")


def explorer_app(state: ExplorerState, *, height: int = 330) -> ExplorerApp:
    """The importance explorer for ``state``: τ slider, layer, criterion; maps redrawn from cache."""
    return ExplorerApp(state, height=height)
