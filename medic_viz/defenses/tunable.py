"""What a defence lets the tuning rule choose: its free settings and their order of strength.

Each defence class declares a :class:`TuningSpace` (``ConfiguredDefense.tuning``): one or more
:class:`Tunable` settings, each a tuple of candidate values from the *weakest* to the
*strongest* (the one expected to remove more of a backdoor and cost more clean accuracy). A
value is one option (``Tunable.over("threshold", (0.05, 0.1))``) or a bundle of options that
go together (a learning rate with its schedule). The candidates are the product of the
settings in lexicographic order: the first setting is the most significant, so candidate
``i`` is weaker than candidate ``j > i``.

The rule that picks among candidates is written once, here: :func:`strongest_within_budget`
(the strongest candidate whose clean hold-out accuracy drop is within the budget).
:mod:`medic_viz.experiments.selection` measures the drops on development teachers and applies it
to every method; :func:`medic_viz.defenses.tuning.choose_tau` applies it to MEDIC's τ sweeps.
Nothing here trains or measures.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["Tunable", "TuningSpace", "LR_RECIPES", "lr_recipes", "candidate_label", "strongest_within_budget"]


def strongest_within_budget(drops: Sequence[float], budget: float) -> int:
    """The index of the chosen candidate, ``drops`` being each candidate's clean-accuracy drop
    (reference − candidate, any unit, the budget's), weakest candidate first: the largest index
    whose drop is at most ``budget`` (equality counts); if none is, the smallest drop — the most
    accurate candidate, the strongest of them on a tie — not simply the weakest, whose run is not
    always the most accurate."""
    if len(drops) == 0:
        raise ValueError("no candidates to choose from")
    ok = [i for i, d in enumerate(drops) if d <= budget + 1e-12]
    if ok:
        return max(ok)
    best = min(drops)
    return max(i for i, d in enumerate(drops) if d <= best + 1e-12)


def _label(options: Mapping[str, Any]) -> str:
    parts = []
    for k, v in options.items():
        if isinstance(v, tuple):
            v = "/".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        elif isinstance(v, float):
            v = f"{v:g}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def candidate_label(options: Mapping[str, Any]) -> str:
    """``"lr=0.1 schedule=step"``: how a candidate's options read in a tuning record."""
    return _label(options) or "defaults"


@dataclass(frozen=True)
class Tunable:
    """One free setting: ``name`` and its candidate ``values`` (each a mapping of option name →
    value), weakest first."""

    name: str
    values: tuple[Mapping[str, Any], ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"tunable setting {self.name!r} needs at least one candidate value")
        if any(not isinstance(v, Mapping) or not v for v in self.values):
            raise ValueError(f"each value of {self.name!r} must be a non-empty mapping of option names to values")

    @classmethod
    def over(cls, option: str, values: Sequence[Any]) -> "Tunable":
        """A setting that is one option: ``values`` of ``option``, weakest first."""
        return cls(option, tuple({option: v} for v in values))

    @property
    def options(self) -> tuple[str, ...]:
        """The option names this setting sets (every value's keys, in first-seen order)."""
        seen: dict[str, None] = {}
        for v in self.values:
            seen.update(dict.fromkeys(v))
        return tuple(seen)


@dataclass(frozen=True)
class TuningSpace:
    """A defence's free settings (most significant first); no settings: the defaults only."""

    settings: tuple[Tunable, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [o for s in self.settings for o in s.options]
        if len(set(names)) != len(names):
            raise ValueError(f"two tunable settings set the same option: {sorted(names)}")

    @property
    def options(self) -> tuple[str, ...]:
        """Every option name a candidate may set."""
        return tuple(o for s in self.settings for o in s.options)

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the settings' values as one options dict, weakest first
        (lexicographic: the first setting is the most significant). ``[{}]`` without settings."""
        return [{k: v for value in combo for k, v in value.items()}
                for combo in itertools.product(*(s.values for s in self.settings))]


#: Learning-rate recipes (SGD), weakest first by peak rate: the library's former 0.01 with a
#: cosine schedule, two larger cosine rates, and the MEDIC authors' 0.1 divided by 10 after
#: epochs 2, 20 and 30 (:data:`medic_viz.training.STEP_MILESTONES`).
LR_RECIPES: tuple[Mapping[str, Any], ...] = (
    {"lr": 0.01, "schedule": "cosine"},
    {"lr": 0.02, "schedule": "cosine"},
    {"lr": 0.05, "schedule": "cosine"},
    {"lr": 0.1, "schedule": "step"},
)


def lr_recipes(*peaks: float) -> Tunable:
    """The ``"lr"`` setting over the :data:`LR_RECIPES` whose peak rate is in ``peaks`` (all
    without), weakest first."""
    values = tuple(r for r in LR_RECIPES if not peaks or r["lr"] in peaks)
    return Tunable("lr", values)
