"""The pages ``medic-viz serve`` gives each participant: the workbench and the workshop.

Each page is one call, :func:`serve_page`, in a notebook the server writes (Voilà shows its
output, never its code). In the participant's own kernel it:

1. reads the host's offer (:class:`~medic_viz.serve.config.ServeConfig`, from ``$MEDIC_VIZ_SERVE_DIR``);
2. takes a seat — when every seat is taken it shows a "full, try again later" page and builds
   nothing (no model is loaded, the machine stays fast for those already in);
3. sets torch's threads to the host's share of the cores;
4. opens the model named by ``?model=`` (else the first offered) — only models the host offered,
   by name: a menu to switch, no path field, no folder browsing (``host_files=False``);
5. builds the app with the server's run queue, so that Launch waits for a free place.

Any failure is a clear message in the page, never a traceback.
"""

from __future__ import annotations

import html
import os
import threading
from typing import Any, cast

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from medic_viz.importer import open_model_folder
from medic_viz.serve.config import PAGES, ServeConfig
from medic_viz.widgets.apps.common import error_html
from medic_viz.widgets.apps.workbench import workbench_app
from medic_viz.widgets.apps.workshop import workshop_app
from medic_viz.widgets.state.launcher import LauncherState
from medic_viz.widgets.state.workbench import WorkbenchState
from medic_viz.workshop import WorkshopExercises

__all__ = ["serve_page", "ServedPage", "full_page"]

#: The seat this kernel holds (kept for the kernel's life; the OS frees it when the kernel ends).
_SEAT: Any = None


def _message(title: str, body: str, color: str = "#1565c0") -> widgets.HTML:
    return widgets.HTML(f"<div class='medic-served-message' style='max-width:760px;margin:40px auto;padding:24px;"
                        f"border:2px solid {color};border-radius:8px;font-size:15px'>"
                        f"<h2 style='color:{color};margin-top:0'>{html.escape(title)}</h2>{body}</div>")


def full_page(config: ServeConfig) -> widgets.HTML:
    """The page a visitor gets when every seat is taken."""
    return _message("This workshop is full — please try again in a few minutes",
                    f"<p>All {config.participants} places are in use. A place frees up as soon as someone closes "
                    "their tab. Reload this page to try again.</p>", color="#ef6c00")


class ServedPage(widgets.VBox):
    """A served page (``page``: ``"workbench"`` or ``"workshop"``) on ``config``'s models: a menu
    of the offered model names above the app; ``body`` holds the app (``app``) or a message.
    ``defer``: build the app only once the browser drew a first figure (or after ``wait`` s), see
    :meth:`_defer`; else at once."""

    def __init__(self, page: str, config: ServeConfig, model: str | None = None, notice: str = "", *,
                 defer: bool = False, wait: float = 20.0) -> None:
        if page not in PAGES:
            raise ValueError(f"unknown page {page!r}: one of {', '.join(PAGES)}")
        self.page, self.config = page, config
        self.app: Any = None
        self.models = widgets.Dropdown(options=list(config.models), value=model, description="model",
                                       style={"description_width": "50px"})
        self.status = widgets.HTML(notice)
        self.body = widgets.VBox()
        other = "workshop" if page == "workbench" else "workbench"
        links = widgets.HTML(f"<span style='font-size:13px'>Also here: <a href='{other}.ipynb' target='_blank'>"
                             f"the {other}</a> ({html.escape(PAGES[other])})</span>")
        header = widgets.HBox([self.models, self.status, links], layout=widgets.Layout(align_items="center"))
        header.add_class("medic-served-header")
        super().__init__([header, self.body])
        self.add_class("medic-served")
        self.models.observe(self._on_model, names="value")
        self._first = threading.Lock()
        self._pending = model
        if model is not None and not defer:
            self.show(model)
        elif model is not None:
            self._defer(wait)

    def _defer(self, wait: float) -> None:
        """Build the app once this page's browser has drawn a first plot (else after ``wait`` s).

        Voilà runs the page's cell before the browser connects; the browser then creates every
        widget at once, and anywidget (plotly's FigureWidget) gives each figure 2 s to load its
        code — on a busy machine the first load of plotly.js takes longer and those figures never
        draw. A tiny figure shown first loads that code; the app's figures come after it."""
        warm = go.FigureWidget(layout=dict(width=40, height=40, margin=dict(l=0, r=0, t=0, b=0),
                                           xaxis=dict(visible=False), yaxis=dict(visible=False)))
        warm._view_count = 0  # count the views the browser makes of it
        self._warm = warm
        self.body.children = [widgets.HTML(f"<i>opening {html.escape(str(self._pending))} …</i>"), warm]
        warm.observe(lambda change: self._build_pending() if (change["new"] or 0) >= 1 else None,
                     names="_view_count")
        timer = threading.Timer(wait, self._build_pending)
        timer.daemon = True
        timer.start()

    def _build_pending(self) -> None:
        if not self._first.acquire(blocking=False):
            return  # built (or building) already
        threading.Thread(target=self.show, args=(self._pending,), name="medic-viz-serve-build", daemon=True).start()

    def _on_model(self, change: dict) -> None:
        if change["new"] is not None and change["new"] != change["old"]:
            self.show(change["new"])

    def _running(self) -> bool:
        state = getattr(self.app, "state", None)
        launcher = getattr(state, "launcher", None) or getattr(self.app, "launcher", None)
        return bool(launcher is not None and launcher.running)

    def show(self, name: str) -> bool:
        """Open the offered model ``name`` here (refused while a run of this page runs)."""
        if name not in self.config.models:
            self.status.value = error_html(f"unknown model {name[:60]!r}: this workshop offers "
                                           f"{', '.join(self.config.models)}")
            return False
        if self._running():
            self.status.value = error_html("a run is in progress: stop it before switching models")
            return False
        self.status.value = f"<i>opening {html.escape(name)} …</i>"
        try:
            app = build_app(self.page, self.config, name)
        except Exception as exc:  # noqa: BLE001 - the host's folder may not open: say so in the page
            self.status.value = error_html(f"{name} does not open: {type(exc).__name__}: {exc}")
            return False
        self.app = app
        self.body.children = [app]
        self.status.value = ""
        return True


def _settings(config: ServeConfig) -> dict[str, Any]:
    settings: dict[str, Any] = dict(epochs=config.epochs, device=config.device, queue=config.queue,
                                    eval_every_steps=config.eval_every_steps or None)
    if config.fast:
        settings["eval_images"] = 200
    return settings


def build_app(page: str, config: ServeConfig, name: str) -> widgets.Widget:
    """The app of ``page`` on the offered model ``name`` (no host paths reachable from it)."""
    entry = config.models[name]
    if page == "workbench":
        extra: dict[str, Any] = dict(stats_images=200, gallery_size=8) if config.fast else {}
        if "demo" in entry:
            state = WorkbenchState.from_demo(entry["demo"], **extra, **_settings(config))
        else:
            state = WorkbenchState.from_folder(entry["folder"], **extra, **_settings(config))
        app = workbench_app(state, host_files=False)
        app.launcher_view.device.options = [config.device]
        app.launcher_view.device.disabled = True
        return app
    images = 300 if config.fast else 1000
    if "demo" in entry:
        exercises = WorkshopExercises.from_demo(entry["demo"], images=images)
        launcher = LauncherState.from_demo(entry["demo"], **_settings(config))
    else:
        opened = open_model_folder(entry["folder"])
        target = cast(int, opened.target)  # the card's target, passed on as before
        exercises = WorkshopExercises(opened.model, opened.splits, opened.trigger, target, images=images)
        launcher = LauncherState.from_folder(entry["folder"], **_settings(config))
    return workshop_app(exercises, launcher, fast=config.fast)


def serve_page(page: str, run_dir: str | None = None) -> widgets.Widget:
    """The participant's page (see the module docstring); returns the widget to show."""
    global _SEAT
    try:
        config = ServeConfig.load(run_dir)
    except ValueError as exc:
        return _message("This page is served by `medic-viz serve`", f"<p>{html.escape(str(exc))}</p>", "#c62828")
    try:
        if _SEAT is None:
            _SEAT = config.take_seat()
            if _SEAT is None:
                return full_page(config)
        torch.set_num_threads(max(1, int(config.threads)))
        notice, model = "", None
        try:
            model = config.model_name(os.environ.get("QUERY_STRING"))
        except ValueError as exc:
            notice = error_html(f"{exc}; choose one in the menu")
        return ServedPage(page, config, model, notice, defer=True)
    except Exception as exc:  # noqa: BLE001 - never a traceback in a participant's page
        return _message("Something went wrong", f"<p>{html.escape(f'{type(exc).__name__}: {exc}')}</p>"
                        "<p>Reload the page; if it happens again, tell the host.</p>", "#c62828")
