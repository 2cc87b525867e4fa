"""Backdoor-removal methods on one interface (:class:`Defense`) and one training loop."""

from medic_viz.defenses.base import Defense, DefenseResult, fresh_copy
from medic_viz.defenses.baselines import (
    ANP,
    DEFENSES,
    MCR,
    NAD,
    FinePruning,
    FineTuning,
    KnowledgeDistillation,
    ScratchTraining,
    available_defenses,
    make_defense,
)
from medic_viz.defenses.medic import Medic, MedicConfig, MedicObjective, compute_layer_stats, medic

__all__ = [
    "Defense",
    "DefenseResult",
    "fresh_copy",
    "Medic",
    "MedicConfig",
    "MedicObjective",
    "compute_layer_stats",
    "medic",
    "FineTuning",
    "FinePruning",
    "NAD",
    "MCR",
    "ANP",
    "KnowledgeDistillation",
    "ScratchTraining",
    "DEFENSES",
    "available_defenses",
    "make_defense",
]
