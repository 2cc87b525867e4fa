"""Plotly figures: pure functions that read results and return ``go.Figure``."""

from medic_viz.viz.curves import event_rows, training_curves_figure

__all__ = ["training_curves_figure", "event_rows"]
