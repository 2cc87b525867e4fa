"""Backdoor-removal methods on one interface (:class:`Defense`) and one training loop.

One module per method (``medic``, ``finetune``, ``fineprune``, ``nad``, ``mcr``, ``anp``,
``distill`` for KD and scratch training), their shared base (``base``: result, interface,
the configured-defence class, model copies), multi-phase event streams (``phases``), the
registry by name (``registry``) and the choice of τ (``tuning``).
"""

from medic_viz.defenses.anp import ANP, ANPConfig
from medic_viz.defenses.base import ConfiguredDefense, Defense, DefenseResult, fresh_copy, frozen_copy, trainable_copy
from medic_viz.defenses.distill import KDConfig, KnowledgeDistillation, ScratchConfig, ScratchTraining
from medic_viz.defenses.fineprune import FinePruning, FinePruningConfig
from medic_viz.defenses.finetune import FineTuning, FineTuningConfig
from medic_viz.defenses.mcr import MCR, MCRConfig
from medic_viz.defenses.medic import Medic, MedicConfig, MedicObjective  # not the function: defenses.medic is the module
from medic_viz.defenses.nad import NAD, NADConfig
from medic_viz.defenses.registry import (
    DEFENSES,
    DISPLAY_NAMES,
    available_defenses,
    canonical_name,
    defense_class,
    display_name,
    make_defense,
)
from medic_viz.deprecation import moved_names

__all__ = [
    "Defense",
    "DefenseResult",
    "ConfiguredDefense",
    "fresh_copy",
    "frozen_copy",
    "trainable_copy",
    "Medic",
    "MedicConfig",
    "MedicObjective",
    "medic",  # the engine module (calling it runs the function medic_viz.medic, with a DeprecationWarning)
    "FineTuning",
    "FineTuningConfig",
    "FinePruning",
    "FinePruningConfig",
    "NAD",
    "NADConfig",
    "MCR",
    "MCRConfig",
    "ANP",
    "ANPConfig",
    "KnowledgeDistillation",
    "KDConfig",
    "ScratchTraining",
    "ScratchConfig",
    "DEFENSES",
    "DISPLAY_NAMES",
    "available_defenses",
    "canonical_name",
    "defense_class",
    "display_name",
    "make_defense",
]

# compute_layer_stats: medic_viz.stats (medic_viz.deprecation.MOVED)
__getattr__ = moved_names(__name__)
