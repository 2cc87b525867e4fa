"""Interactive apps for JupyterLab.

The state objects (:class:`LauncherState`, :class:`ExplorerState`, :class:`PickerState`, and
:class:`WorkbenchState` composing the three) hold all the logic and import no ipywidgets; the
views in :mod:`medic_viz.widgets.apps` (``launcher_app``, ``explorer_app``, ``picker_app``,
``workbench_app``) are thin ipywidgets/FigureWidget layers over them and need the
``notebooks`` extra.
"""

from medic_viz.widgets.state import ExplorerState, LauncherState, PickerState, RunRecord, WorkbenchState

__all__ = ["LauncherState", "ExplorerState", "PickerState", "WorkbenchState", "RunRecord"]
