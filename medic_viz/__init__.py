"""medic_viz: look inside trojaned image classifiers and remove the backdoor with MEDIC.

Quick tour::

    import medic_viz as mv
    splits = mv.load_dataset()                       # embedded synthetic traffic signs
    teacher, card = mv.load_demo_model("badnet")     # a shipped trojaned small CNN
    trigger = mv.trigger_from_config(card.attack)
    result = mv.medic(teacher, mv.clean_subset(splits.train, 0.05),
                      evaluator=mv.Evaluator(splits.test, trigger, card.target_class))
"""

from medic_viz.attacks import (
    ATTACK_NAMES,
    BadNetTrigger,
    BlendTrigger,
    PolygonTrigger,
    SIGTrigger,
    Trigger,
    attack_evaluator,
    make_trigger,
    poison_dataset,
    train_attack,
    train_trojaned_model,
    trigger_from_config,
)
from medic_viz.capture import ActivationCache, hookable_layers, run_with_cache
from medic_viz.cards import ModelCard
from medic_viz.data import DatasetSplits, ImageArrays, clean_subset, load_dataset
from medic_viz.defenses import Medic, MedicConfig
from medic_viz.defenses.medic import medic
from medic_viz.device import resolve_device
from medic_viz.importance import ImportanceOptions
from medic_viz.io import load_model, save_model
from medic_viz.metrics import BackdoorMetrics, Evaluator, evaluate_backdoor
from medic_viz.models import available_models, build_model
from medic_viz.pretrained import DEMO_ATTACKS, load_demo_model
from medic_viz.stats import LayerStats
from medic_viz.training import TrainConfig, TrainEvent, train

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_dataset",
    "ImageArrays",
    "DatasetSplits",
    "clean_subset",
    "build_model",
    "available_models",
    "Trigger",
    "BadNetTrigger",
    "BlendTrigger",
    "SIGTrigger",
    "PolygonTrigger",
    "ATTACK_NAMES",
    "make_trigger",
    "trigger_from_config",
    "attack_evaluator",
    "poison_dataset",
    "train_attack",
    "train_trojaned_model",
    "hookable_layers",
    "run_with_cache",
    "ActivationCache",
    "ImportanceOptions",
    "LayerStats",
    "Medic",
    "MedicConfig",
    "medic",
    "TrainConfig",
    "TrainEvent",
    "train",
    "Evaluator",
    "BackdoorMetrics",
    "evaluate_backdoor",
    "resolve_device",
    "ModelCard",
    "save_model",
    "load_model",
    "load_demo_model",
    "DEMO_ATTACKS",
]
