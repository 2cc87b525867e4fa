"""Legacy import path of the baseline defences: a thin re-export, kept so that
``from medic_viz.defenses.baselines import ...`` goes on working.

The methods now live one per module — :mod:`~medic_viz.defenses.finetune`,
:mod:`~medic_viz.defenses.fineprune`, :mod:`~medic_viz.defenses.nad`,
:mod:`~medic_viz.defenses.mcr`, :mod:`~medic_viz.defenses.anp`,
:mod:`~medic_viz.defenses.distill` (KD and scratch training) — on the shared base in
:mod:`~medic_viz.defenses.base`, and the registry (``DEFENSES``, ``make_defense`` …) in
:mod:`~medic_viz.defenses.registry`. New code should import from there or from
:mod:`medic_viz.defenses`.
"""

from medic_viz.defenses.anp import ANP, ANPConfig, ANPObjective, prune_by_masks
from medic_viz.defenses.anp import _MaskedNetwork  # noqa: F401  (private; older tests import it from here)
from medic_viz.defenses.distill import DistillationObjective, KDConfig, KnowledgeDistillation, ScratchConfig, ScratchTraining
from medic_viz.defenses.fineprune import FinePruning, FinePruningConfig, last_conv_block, prune_channels
from medic_viz.defenses.finetune import FineTuning, FineTuningConfig
from medic_viz.defenses.mcr import MCR, BezierCurve, CurveObjective, MCRConfig, choose_t, update_bn
from medic_viz.defenses.nad import NAD, AttentionDistillationObjective, NADConfig, attention_layers, attention_map
from medic_viz.defenses.registry import (
    DEFENSES,
    DISPLAY_NAMES,
    available_defenses,
    defense_class,
    make_defense,
)
from medic_viz.defenses.registry import _canonical  # noqa: F401  (private; older code imports it from here)

__all__ = [
    "FineTuningConfig",
    "FineTuning",
    "FinePruningConfig",
    "FinePruning",
    "NADConfig",
    "NAD",
    "MCRConfig",
    "MCR",
    "ANPConfig",
    "ANP",
    "KDConfig",
    "KnowledgeDistillation",
    "ScratchConfig",
    "ScratchTraining",
    "AttentionDistillationObjective",
    "DistillationObjective",
    "BezierCurve",
    "CurveObjective",
    "ANPObjective",
    "attention_map",
    "attention_layers",
    "last_conv_block",
    "prune_channels",
    "prune_by_masks",
    "choose_t",
    "update_bn",
    "DEFENSES",
    "DISPLAY_NAMES",
    "available_defenses",
    "defense_class",
    "make_defense",
]
