"""The one map of defences by name, and building a defence from its name.

Every method is a :class:`~medic_viz.defenses.base.ConfiguredDefense`: ``run(teacher, clean,
evaluator=, callbacks=, stop_event=)`` leaves the trojaned ``teacher`` untouched, trains only
on the defender's small clean set through :func:`medic_viz.training.train`, and reports one
stream of :class:`~medic_viz.training.TrainEvent` objects. The ``evaluator`` (test data) only
*reports* metrics; where a method needs a choice (Fine-pruning's pruning amount, MCR's point on
the curve when not fixed) it makes it on the clean set, and ANP's pruning threshold is fixed in
advance. Each class declares its free settings in order of strength (``tuning``), which the one
tuning rule (:mod:`medic_viz.experiments.selection`) reads through :func:`tuning_space`.

| name | class (module) | epochs by default (MEDIC App. E.5, CIFAR-10) |
|---|---|---|
| ``finetune`` | :class:`FineTuning` (``finetune``) | 30 |
| ``fineprune`` | :class:`FinePruning` (``fineprune``) | 30 after pruning |
| ``nad`` | :class:`NAD` (``nad``) | 10 + 30 |
| ``mcr`` | :class:`MCR` (``mcr``) | 30 + 100 |
| ``anp`` | :class:`ANP` (``anp``) | 2000 mask iterations (100 epochs of 2,500 images) |
| ``kd`` | :class:`KnowledgeDistillation` (``distill``) | 60 |
| ``scratch`` | :class:`ScratchTraining` (``distill``) | 60 |
| ``medic`` | :class:`Medic` (``medic``) | 60 |

Defaults and their sources: each module's docstring and ``docs/baselines.md``. A method's
key and the name shown in tables, figures and event labels are read from its class
(``name``, ``display_name``); nothing here repeats them.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from medic_viz.defenses.anp import ANP
from medic_viz.defenses.base import ConfiguredDefense
from medic_viz.defenses.distill import KnowledgeDistillation, ScratchTraining
from medic_viz.defenses.fineprune import FinePruning
from medic_viz.defenses.finetune import FineTuning
from medic_viz.defenses.mcr import MCR
from medic_viz.defenses.medic import Medic
from medic_viz.defenses.nad import NAD
from medic_viz.defenses.tunable import TuningSpace
from medic_viz.deprecation import moved_names

__all__ = [
    "DEFENSES",
    "DISPLAY_NAMES",
    "MAIN_METHOD",
    "available_defenses",
    "canonical_name",
    "defense_class",
    "display_name",
    "make_defense",
    "tuning_space",
]

_METHODS: tuple[type[ConfiguredDefense], ...] = (
    FineTuning,
    FinePruning,
    NAD,
    MCR,
    ANP,
    KnowledgeDistillation,
    ScratchTraining,
    Medic,
)

#: Method name → Defense class (MEDIC included). Names are those of the ``--methods`` option.
DEFENSES: dict[str, type[ConfiguredDefense]] = {cls.name: cls for cls in _METHODS}

#: The method this toolkit is about: the one the grid's ablations sweep and its ``medic=`` options configure.
MAIN_METHOD: str = Medic.name


class _DisplayNames(Mapping[str, str]):
    """Method name → ``display_name`` of its class in :data:`DEFENSES`, read on access."""

    def __getitem__(self, name: str) -> str:
        return DEFENSES[name].display_name

    def __iter__(self) -> Iterator[str]:
        return iter(DEFENSES)

    def __len__(self) -> int:
        return len(DEFENSES)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Method name → name shown in tables, figures and event labels (read from the classes).
DISPLAY_NAMES: Mapping[str, str] = _DisplayNames()

_ALIASES = {
    "ft": "finetune",
    "finetuning": "finetune",
    "fp": "fineprune",
    "finepruning": "fineprune",
    "distillation": "kd",
    "knowledgedistillation": "kd",
    "fromscratch": "scratch",
    "scratchtraining": "scratch",
}


def available_defenses() -> list[str]:
    """Names accepted by :func:`make_defense`."""
    return list(DEFENSES)


def canonical_name(name: object) -> str:
    """The :data:`DEFENSES` key for ``name``; case, ``-``, ``_`` and spaces are ignored and
    aliases such as ``"Fine-tuning"`` or ``"fp"`` accepted. ``ValueError`` lists the names."""
    if not isinstance(name, str):
        raise TypeError(f"a defence name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in DEFENSES:
        raise ValueError(f"unknown defence {name!r}; available: {', '.join(DEFENSES)}")
    return key


def defense_class(name: str) -> type[ConfiguredDefense]:
    """The Defense class for a method name (aliases such as "fine-tuning", "fp" accepted)."""
    return DEFENSES[canonical_name(name)]


def display_name(name: str) -> str:
    """The name tables and figures show for a method name (aliases accepted)."""
    return defense_class(name).display_name


def make_defense(name: str, **options: Any) -> ConfiguredDefense:
    """Build a defence by name with keyword options of its config (e.g.
    ``make_defense("nad", epochs=5)``, ``make_defense("medic", tau=3)``)."""
    return defense_class(name)(**options)


def tuning_space(name: str) -> TuningSpace:
    """The free settings of a method (aliases accepted) and their order of strength, as its class
    declares them (``ConfiguredDefense.tuning``); an empty space for a method with none."""
    return defense_class(name).tuning


#: ``_canonical`` (private, used before :func:`canonical_name` was public) still resolves, with a warning.
__getattr__ = moved_names(__name__)
