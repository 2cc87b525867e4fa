"""Backdoor attacks: trigger objects, poisoned datasets, trojaned-model training.

One module per trigger family (``patch`` BadNet, ``blend``, ``sig``, ``polygon``,
``clean_label``, ``reflection``, ``filter``, ``wanet``, ``composite``, ``adaptive``) on the
:class:`Trigger` base (``base``); ``registry`` knows all ten attacks by name
(:func:`make_trigger`, :func:`trigger_from_config`, :data:`ATTACK_NAMES`, default poison
rates); ``poison`` makes poisoned datasets; ``train`` trains trojaned models
(:func:`train_attack`).
"""

from medic_viz.attacks.adaptive import AdaptiveObjective
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.blend import BlendTrigger
from medic_viz.attacks.clean_label import CleanLabelTrigger, pgd_perturb, poison_clean_label
from medic_viz.attacks.composite import CompositeAttack, CompositeEvaluator, CompositeTrigger, poison_composite
from medic_viz.attacks.filter import INSTAGRAM_FILTERS, FilterTrigger
from medic_viz.attacks.patch import BadNetTrigger, PatchTrigger
from medic_viz.attacks.poison import PoisonedData, poison_dataset
from medic_viz.attacks.polygon import PolygonTrigger
from medic_viz.attacks.reflection import ReflectionTrigger
from medic_viz.attacks.registry import (
    ADVANCED_TRIGGERS,
    ALL_TRIGGERS,
    ATTACK_NAMES,
    ATTACK_SPECS,
    ATTACKS,
    PAPER_ATTACKS,
    AttackSpec,
    any_trigger_from_config,
    attack_evaluator,
    attack_spec,
    build_attack,
    default_rate,
    image_trigger,
    make_any_trigger,
    make_trigger,
    trigger_from_config,
)
from medic_viz.attacks.sig import SIGTrigger
from medic_viz.attacks.train import (
    ATTACK_TRAIN_DEFAULTS,
    TrojanedModel,
    train_adaptive_trojaned_model,
    train_attack,
    train_trojaned_model,
)
from medic_viz.attacks.wanet import WaNetTrigger, poison_wanet
from medic_viz.deprecation import moved_names

__all__ = [
    "Trigger",
    "BadNetTrigger",
    "PatchTrigger",
    "BlendTrigger",
    "SIGTrigger",
    "PolygonTrigger",
    "CleanLabelTrigger",
    "ReflectionTrigger",
    "FilterTrigger",
    "INSTAGRAM_FILTERS",
    "WaNetTrigger",
    "CompositeAttack",
    "CompositeTrigger",
    "CompositeEvaluator",
    "AdaptiveObjective",
    "AttackSpec",
    "ATTACK_SPECS",
    "ATTACK_NAMES",
    "ATTACKS",
    "PAPER_ATTACKS",
    "ALL_TRIGGERS",
    "ADVANCED_TRIGGERS",
    "attack_spec",
    "make_trigger",
    "trigger_from_config",
    "make_any_trigger",
    "any_trigger_from_config",
    "build_attack",
    "default_rate",
    "image_trigger",
    "attack_evaluator",
    "poison_dataset",
    "poison_clean_label",
    "poison_wanet",
    "poison_composite",
    "pgd_perturb",
    "PoisonedData",
    "train_attack",
    "train_trojaned_model",
    "train_adaptive_trojaned_model",
    "TrojanedModel",
    "ATTACK_TRAIN_DEFAULTS",
]

#: ``AVAILABLE_TRIGGERS`` (the demo models' attacks) is :data:`medic_viz.pretrained.DEMO_ATTACKS`.
__getattr__ = moved_names(__name__)
