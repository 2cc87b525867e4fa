"""Deprecated: the former one-import home of the figures; import them from :mod:`medic_viz.viz`
(or their own module).

Inside the network and on the input (:mod:`medic_viz.viz.analysis_figures`): :func:`figure2_grid`
(paper Figure 2), :func:`layer_strip`, :func:`neuron_ranking_figure`,
:func:`top_activating_figure`, :func:`attribution_figure`. Experiment summaries from plain row
dicts (:mod:`medic_viz.viz.summary_figures`): :func:`aggregate_rows`, :func:`tau_sweep_figure`
(Figure 4), :func:`lambda_tau_figure` (Figure 6), :func:`tradeoff_figure` (Figure 7),
:func:`defense_comparison_figure` (Figure 5 / Table 1). :func:`export_figure`
(:mod:`medic_viz.viz.export`) writes ``.html`` always and ``.png`` where a renderer works. The
old names still resolve here, with a DeprecationWarning naming the new path.
"""

from medic_viz.deprecation import MOVED, moved_names

__all__ = [name for name in MOVED[__name__] if not name.startswith("_")]
__getattr__ = moved_names(__name__)
