"""Pure state objects behind the interactive apps: no ipywidgets, no IPython, testable in plain Python.

Each state holds parameters and results and tells *listeners* what changed: a view registers
``state.add_listener(fn)`` and redraws when ``fn(change)`` is called with a :class:`StateChange`.
Scripts and tests drive the same objects directly: set ``state.tau = 10``, call
``state.launch()``, ``state.stop()``, ``state.wait()``.

One module per concept:

- :mod:`~medic_viz.widgets.state.observable`: listeners and the one parameter mechanism
  (:class:`Param`, validated on set);
- :mod:`~medic_viz.widgets.state.runs`: :class:`RunRecord`, a run in a background thread;
- :mod:`~medic_viz.widgets.state.run_settings`: :class:`SharedSettings`, the one
  :class:`medic_viz.run_settings.RunSettings` of a session (τ or share, λ, layers, epochs …) that
  the launcher, workbench, explorer and picker read instead of copying it, and run labels;
- :mod:`~medic_viz.widgets.state.launcher`: :class:`LauncherState`, defence runs (MEDIC or a
  baseline of :mod:`medic_viz.defenses`) with live events and several runs kept;
- :mod:`~medic_viz.widgets.state.explorer`: :class:`ExplorerState`, τ, layer, criterion and
  channel reduction over one cached :class:`medic_viz.analysis.InputAnalysis`;
- :mod:`~medic_viz.widgets.state.picker`: :class:`PickerState`, a gallery of clean test images
  (or one's own image, decoded by :func:`medic_viz.data.images.to_image_tensor`, or model), the
  chosen trigger and layer, and the Figure-2 panels of the chosen input;
- :mod:`~medic_viz.widgets.state.workbench`: :class:`WorkbenchState`, the three composed over
  one shared settings (one τ and λ), runs that follow the picked input, and the repaired model's
  view of it.
"""

from medic_viz.widgets.state.explorer import ExplorerState
from medic_viz.widgets.state.launcher import DEVICE_CHOICES, LAYER_CHOICES, TAU_MODES, LauncherState, method_choices, run_label
from medic_viz.widgets.state.observable import Listener, Observable, Param, Parameterized, StateChange
from medic_viz.widgets.state.picker import PickerState, default_triggers, figure2_panels
from medic_viz.widgets.state.run_settings import SharedSettings
from medic_viz.widgets.state.runs import RUN_STATUSES, RunRecord
from medic_viz.widgets.state.workbench import WorkbenchState

__all__ = [
    "StateChange",
    "Listener",
    "Observable",
    "Param",
    "Parameterized",
    "RUN_STATUSES",
    "DEVICE_CHOICES",
    "TAU_MODES",
    "LAYER_CHOICES",
    "method_choices",
    "RunRecord",
    "SharedSettings",
    "LauncherState",
    "ExplorerState",
    "PickerState",
    "WorkbenchState",
    "default_triggers",
    "figure2_panels",
    "run_label",
]
