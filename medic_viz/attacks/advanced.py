"""Former home of the Clean-Label, Reflection, Filter, WaNet, Composite and adaptive attacks.

They now live one family per module (:mod:`~medic_viz.attacks.clean_label`,
:mod:`~medic_viz.attacks.reflection`, :mod:`~medic_viz.attacks.filter`,
:mod:`~medic_viz.attacks.wanet`, :mod:`~medic_viz.attacks.composite`,
:mod:`~medic_viz.attacks.adaptive`), with one registry (:mod:`~medic_viz.attacks.registry`)
and one trainer (:mod:`~medic_viz.attacks.train`); this module re-exports their names.
"""

from medic_viz.attacks.adaptive import AdaptiveObjective
from medic_viz.attacks.clean_label import CleanLabelTrigger, pgd_perturb, poison_clean_label
from medic_viz.attacks.composite import CompositeAttack, CompositeEvaluator, CompositePoisonedData, poison_composite
from medic_viz.attacks.filter import INSTAGRAM_FILTERS, FilterTrigger
from medic_viz.attacks.reflection import ReflectionTrigger
from medic_viz.attacks.registry import (
    ADVANCED_TRIGGERS,
    ALL_TRIGGERS,
    ATTACKS,
    PAPER_ATTACKS,
    any_trigger_from_config,
    attack_evaluator,
    build_attack,
    default_rate,
    make_any_trigger,
)
from medic_viz.attacks.train import train_adaptive_trojaned_model, train_attack, train_on_poisoned
from medic_viz.attacks.wanet import WaNetPoisonedData, WaNetTrigger, poison_wanet

__all__ = [
    "CleanLabelTrigger",
    "ReflectionTrigger",
    "FilterTrigger",
    "INSTAGRAM_FILTERS",
    "WaNetTrigger",
    "CompositeAttack",
    "CompositeEvaluator",
    "CompositePoisonedData",
    "WaNetPoisonedData",
    "AdaptiveObjective",
    "pgd_perturb",
    "poison_clean_label",
    "poison_composite",
    "poison_wanet",
    "train_on_poisoned",
    "train_adaptive_trojaned_model",
    "train_attack",
    "attack_evaluator",
    "build_attack",
    "default_rate",
    "make_any_trigger",
    "any_trigger_from_config",
    "ADVANCED_TRIGGERS",
    "ALL_TRIGGERS",
    "ATTACKS",
    "PAPER_ATTACKS",
]
