"""Figures of the paper and of the analysis, as pure functions returning ``go.Figure`` (one import
for all of them; each lives in the module of its kind).

Inside the network and on the input (:mod:`medic_viz.viz.analysis_figures`): :func:`figure2_grid`
(paper Figure 2), :func:`layer_strip`, :func:`neuron_ranking_figure`,
:func:`top_activating_figure`, :func:`attribution_figure`. Experiment summaries from plain row
dicts (:mod:`medic_viz.viz.summary_figures`): :func:`aggregate_rows`, :func:`tau_sweep_figure`
(Figure 4), :func:`lambda_tau_figure` (Figure 6), :func:`tradeoff_figure` (Figure 7),
:func:`defense_comparison_figure` (Figure 5 / Table 1). :func:`export_figure`
(:mod:`medic_viz.viz.export`) writes ``.html`` always and ``.png`` where a renderer works.
"""

from medic_viz.viz.analysis_figures import (
    FIGURE2_COLUMNS,
    attribution_figure,
    figure2_grid,
    layer_strip,
    neuron_ranking_figure,
    top_activating_figure,
)
from medic_viz.viz.export import export_figure
from medic_viz.viz.summary_figures import (
    aggregate_rows,
    defense_comparison_figure,
    lambda_tau_figure,
    tau_sweep_figure,
    tradeoff_figure,
)

__all__ = [
    "FIGURE2_COLUMNS",
    "figure2_grid",
    "layer_strip",
    "neuron_ranking_figure",
    "tau_sweep_figure",
    "lambda_tau_figure",
    "tradeoff_figure",
    "defense_comparison_figure",
    "attribution_figure",
    "top_activating_figure",
    "aggregate_rows",
    "export_figure",
]
