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
- :func:`workbench_app` → :class:`WorkbenchApp`: the three composed in one layout around one
  τ and λ, the picked input followed live through every run (its prediction at each
  evaluation), and its Figure-2 columns under the repaired model next to the trojaned model's.

Each app is an ``ipywidgets.VBox`` with its parts as attributes (``app.tau``, ``app.launch_button``,
``app.figure`` …) so that tests and notebooks can drive it with ``.value`` and ``.click()``.
"""

from medic_viz.widgets.apps.common import Throttle, error_html
from medic_viz.widgets.apps.explorer import ExplorerApp, explorer_app
from medic_viz.widgets.apps.launcher import LauncherApp, launcher_app
from medic_viz.widgets.apps.picker import PickerApp, picker_app
from medic_viz.widgets.apps.renderer import use_notebook_renderer
from medic_viz.widgets.apps.workbench import WorkbenchApp, workbench_app

__all__ = [
    "Throttle",
    "LauncherApp",
    "ExplorerApp",
    "PickerApp",
    "WorkbenchApp",
    "launcher_app",
    "explorer_app",
    "picker_app",
    "workbench_app",
    "error_html",
    "use_notebook_renderer",
]
