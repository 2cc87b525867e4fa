"""Look inside a trojaned model: what a trigger does to its neurons, and the importance MEDIC gives them.

- :mod:`~medic_viz.analysis.per_input`: the paper's Figure 2 for one input
  (:func:`analyze_input` → :class:`InputAnalysis`, :func:`reduce_channels`);
- :mod:`~medic_viz.analysis.examples`: which input to look at (:func:`find_flipping_image`);
- :mod:`~medic_viz.analysis.ranking`: over many inputs, the channels a trigger shifts most with
  their clean importance (:func:`rank_compromised_neurons` → :class:`NeuronRanking`,
  :func:`top_activating_images`);
- :mod:`~medic_viz.analysis.claim`: the paper's claim ("compromised neurons are unimportant on
  clean inputs") as a test that can fail (:func:`compromised_importance_statistic`);
- :mod:`~medic_viz.analysis.transfer`: why one cloning keeps a backdoor and another does not —
  the compromised neurons' place and share of the cloning weight (:func:`compromised_neurons`,
  :func:`weight_share`, :func:`centre_share`) and how much of the teacher's trigger response a
  clone kept (:func:`trigger_transfer` → :class:`TriggerTransfer`), and at which layer triggered
  inputs already look like the target class (:func:`target_readout` → :class:`TargetReadout`);
- :mod:`~medic_viz.analysis.sharpness`: how sharp each criterion (eq.(2), (3), (4)) is on clean
  data at a run's τ, and its weight on a set of neurons (:func:`criteria_sharpness` →
  :class:`CriteriaSharpness`).

Layer statistics (μ, σ per channel) come from :mod:`medic_viz.stats`; nothing here depends on
the defences.
"""

from medic_viz.analysis._common import CRITERIA
from medic_viz.analysis.claim import (
    CompromisedStatistic,
    compromised_count,
    compromised_importance_statistic,
    spearman,
)
from medic_viz.analysis.examples import find_flipping_image
from medic_viz.analysis.per_input import (
    MAP_KEYS,
    REDUCTIONS,
    InputAnalysis,
    Prediction,
    analyze_input,
    reduce_channels,
)
from medic_viz.analysis.ranking import NeuronRanking, rank_compromised_neurons, top_activating_images
from medic_viz.analysis.sharpness import SHARPNESS_CRITERIA, CriteriaSharpness, criteria_sharpness
from medic_viz.analysis.transfer import (
    TargetReadout,
    TriggerTransfer,
    centre_share,
    compromised_neurons,
    target_readout,
    trigger_transfer,
    weight_share,
)

__all__ = [
    "SHARPNESS_CRITERIA",
    "CriteriaSharpness",
    "criteria_sharpness",
    "REDUCTIONS",
    "MAP_KEYS",
    "CRITERIA",
    "Prediction",
    "InputAnalysis",
    "analyze_input",
    "reduce_channels",
    "find_flipping_image",
    "NeuronRanking",
    "rank_compromised_neurons",
    "top_activating_images",
    "CompromisedStatistic",
    "compromised_importance_statistic",
    "compromised_count",
    "spearman",
    "compromised_neurons",
    "weight_share",
    "centre_share",
    "TriggerTransfer",
    "trigger_transfer",
    "TargetReadout",
    "target_readout",
]
