"""Backdoor attacks: trigger objects, poisoned datasets, trojaned-model training."""

from medic_viz.attacks.poison import (
    ATTACK_TRAIN_DEFAULTS,
    PoisonedData,
    TrojanedModel,
    poison_dataset,
    train_trojaned_model,
)
from medic_viz.attacks.triggers import (
    AVAILABLE_TRIGGERS,
    BadNetTrigger,
    BlendTrigger,
    PolygonTrigger,
    SIGTrigger,
    Trigger,
    make_trigger,
    trigger_from_config,
)

__all__ = [
    "Trigger",
    "BadNetTrigger",
    "BlendTrigger",
    "SIGTrigger",
    "PolygonTrigger",
    "AVAILABLE_TRIGGERS",
    "make_trigger",
    "trigger_from_config",
    "poison_dataset",
    "PoisonedData",
    "train_trojaned_model",
    "TrojanedModel",
    "ATTACK_TRAIN_DEFAULTS",
]
