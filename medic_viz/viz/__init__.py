"""Plotly figures: pure functions that read results and return ``go.Figure``; :data:`PALETTE`, the
series colours every figure and widget shares."""

from medic_viz.viz.analysis_figures import (
    FIGURE2_COLUMNS,
    attribution_figure,
    figure2_grid,
    layer_strip,
    neuron_ranking_figure,
    top_activating_figure,
)
from medic_viz.viz.curves import event_rows, grid_curves_figure, training_curves_figure
from medic_viz.viz.export import export_figure
from medic_viz.viz.report import removal_figure
from medic_viz.viz.style import PALETTE
from medic_viz.viz.summary_figures import (
    aggregate_rows,
    data_amount_figure,
    defense_comparison_figure,
    lambda_tau_figure,
    per_run_scatter_figure,
    removal_accuracy_figure,
    tau_panels_figure,
    tau_sweep_figure,
    tradeoff_figure,
)

__all__ = [
    "PALETTE",
    "training_curves_figure",
    "event_rows",
    "grid_curves_figure",
    "FIGURE2_COLUMNS",
    "aggregate_rows",
    "data_amount_figure",
    "attribution_figure",
    "defense_comparison_figure",
    "export_figure",
    "figure2_grid",
    "lambda_tau_figure",
    "layer_strip",
    "neuron_ranking_figure",
    "tau_panels_figure",
    "tau_sweep_figure",
    "top_activating_figure",
    "tradeoff_figure",
    "removal_figure",
    "removal_accuracy_figure",
    "per_run_scatter_figure",
]
