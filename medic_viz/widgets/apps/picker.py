"""The input picker view over a :class:`~medic_viz.widgets.state.PickerState`: a gallery of clean
test images, one's own image (upload) or model (folder path), trigger, layer and τ, and the
Figure-2 panels of the choice."""

from __future__ import annotations

import html
import io
from typing import Callable

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from medic_viz.widgets.apps.common import HEATMAP, bind, error_html, set_quietly, within
from medic_viz.widgets.state import PickerState, StateChange

__all__ = ["PickerApp", "picker_app"]


def _png(image_hwc: np.ndarray, scale: int = 2) -> bytes:
    a = np.asarray(image_hwc)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    img = Image.fromarray(a)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgb255(image_hwc: np.ndarray) -> np.ndarray:
    a = np.round(np.clip(np.asarray(image_hwc, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


class PickerApp(widgets.VBox):
    """The input picker over a :class:`PickerState` (see :func:`picker_app`).

    ``host_files=False`` (a served app, ``medic-viz serve``): no model path field and no Load
    model button — a participant cannot make the kernel open a path on the host's disk (their
    own image upload stays)."""

    MAP_PANELS: tuple[tuple[str, str], ...] = (
        ("clean", "activation, clean"), ("triggered_act", "activation, triggered"),
        ("difference", "difference"), ("activation", "importance: activation (eq.2)"),
        ("impact", "importance: impact (eq.3)"), ("combined", "importance: both (eq.4)"),
    )

    def __init__(self, state: PickerState, *, height: int = 480, thumbnail_px: int = 64,
                 host_files: bool = True) -> None:
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
        self.tau = widgets.FloatSlider(value=within(state.tau, 0, 20, 5.0), min=0.0, max=20.0, step=0.5,
                                       description="τ", style=style)
        for name in ("trigger_name", "layer", "tau"):
            bind(getattr(self, name), state, name, self._guard)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
        self.upload.observe(self._on_upload, names="value")
        self.model_path = widgets.Text(placeholder="folder saved by medic_viz.save_model", description="model",
                                       style=style)
        self.load_model_button = widgets.Button(description="Load model", icon="upload")
        self.host_files = bool(host_files)
        if self.host_files:
            self.load_model_button.on_click(
                lambda _b: self._guarded(lambda: self.state.load_model(self.model_path.value)))
        else:
            self.model_path.disabled = self.load_model_button.disabled = True
        self.error = widgets.HTML()
        self.caption = widgets.HTML()
        fig = make_subplots(rows=2, cols=4, horizontal_spacing=0.03, vertical_spacing=0.12,
                            subplot_titles=("input x", "triggered x′") + tuple(t for _, t in self.MAP_PANELS))
        fig.add_trace(go.Image(z=np.zeros((2, 2, 3), np.uint8)), row=1, col=1)
        fig.add_trace(go.Image(z=np.zeros((2, 2, 3), np.uint8)), row=1, col=2)
        for k in range(len(self.MAP_PANELS)):
            fig.add_trace(go.Heatmap(z=[[0.0]], **HEATMAP), row=1 + (k + 2) // 4, col=1 + (k + 2) % 4)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=50, b=10), template="plotly_white")
        self.figure = go.FigureWidget(fig)
        super().__init__([
            self.gallery,
            widgets.HBox([self.trigger_name, self.layer, self.tau]),
            widgets.HBox([self.upload, self.model_path, self.load_model_button] if self.host_files else [self.upload]),
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
        except Exception as exc:  # noqa: BLE001 - user input (a bad file, a wrong model): shown, not raised into the UI
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
                set_quietly(getattr(self, name), getattr(self.state, name), self._guard)
        elif change.name in ("trigger_name", "layer", "tau"):
            set_quietly(getattr(self, change.name), change.value, self._guard)
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
