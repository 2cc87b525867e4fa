"""The one registry of attacks: names → attack objects, configs, poisoning and default rates.

=================  ===========================  ===========  ============  =========================
name               object (:func:`make_trigger`)  clean-label  default rate  poisoning needs
=================  ===========================  ===========  ============  =========================
``badnet``         :class:`BadNetTrigger`       no           0.1           -
``blend``          :class:`BlendTrigger`        no           0.1           -
``sig``            :class:`SIGTrigger`          yes          0.08 (*)      -
``polygon``        :class:`PolygonTrigger`      no           0.1           -
``cleanlabel``     :class:`CleanLabelTrigger`   yes          0.08 (*)      a clean surrogate model
``reflection``     :class:`ReflectionTrigger`   no           0.1           -
``filter``         :class:`FilterTrigger`       no           0.1           -
``wanet``          :class:`WaNetTrigger`        no           0.1           - (noise mode)
``composite``      :class:`CompositeAttack`     no           0.1           the data (its classes)
``adaptive``       its trigger (BadNet)         no           0.1           - (a training objective)
=================  ===========================  ===========  ============  =========================

(*) at most 80 % of the target class's share of the data (:data:`CLEAN_LABEL_CAP`): a
clean-label attack may only poison target-class images.

Each row is an :class:`AttackSpec`; :func:`make_trigger` / :func:`trigger_from_config` build
any of them, :func:`build_attack` builds one for a dataset, :func:`default_rate` gives its
poison rate and :func:`attack_evaluator` measures it. The trainer is
:func:`medic_viz.attacks.train.train_attack`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence, Union, cast

import torch
import torch.nn as nn

from medic_viz.attacks.adaptive import AdaptiveObjective
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.blend import BlendTrigger
from medic_viz.attacks.clean_label import CleanLabelTrigger, poison_clean_label
from medic_viz.attacks.composite import CompositeAttack, CompositeEvaluator, CompositeTrigger, poison_composite
from medic_viz.attacks.filter import FilterTrigger
from medic_viz.attacks.patch import BadNetTrigger, PatchTrigger
from medic_viz.attacks.poison import PoisonedData, poison_dataset
from medic_viz.attacks.polygon import PolygonTrigger
from medic_viz.attacks.reflection import ReflectionTrigger
from medic_viz.attacks.sig import SIGTrigger
from medic_viz.attacks.wanet import WaNetTrigger, poison_wanet
from medic_viz.data.arrays import ImageArrays
from medic_viz.deprecation import moved_names
from medic_viz.metrics import Evaluator

__all__ = [
    "Attack",
    "AttackSpec",
    "ATTACK_SPECS",
    "ATTACK_NAMES",
    "DATA_TRIGGER_SPECS",
    "ATTACKS",
    "PAPER_ATTACKS",
    "ALL_TRIGGERS",
    "ADVANCED_TRIGGERS",
    "DEFAULT_RATE",
    "CLEAN_LABEL_RATE",
    "CLEAN_LABEL_CAP",
    "attack_spec",
    "spec_of",
    "make_trigger",
    "trigger_from_config",
    "make_any_trigger",
    "any_trigger_from_config",
    "build_attack",
    "default_rate",
    "check_rate",
    "image_trigger",
    "attack_evaluator",
]

#: What :func:`make_trigger` returns: a trigger, or the composite attack (it needs two images).
Attack = Union[Trigger, CompositeAttack]

#: Default poison rate of dirty-label attacks, and of clean-label ones (before the cap below).
DEFAULT_RATE = 0.1
CLEAN_LABEL_RATE = 0.08
#: A clean-label attack's default rate is at most this share of the target class's images.
CLEAN_LABEL_CAP = 0.8


# ------------------------------------------------------------------------------- poisoners
# One signature for all: (data, attack, target, rate, *, seed, surrogate, device, **train options).
def _poison_trigger(data: ImageArrays, attack: Trigger, target: int, rate: float, *, seed: int = 0,
                    surrogate: nn.Module | None = None, device: Any = "auto") -> PoisonedData:
    return poison_dataset(data, attack, target, rate, seed=seed)


def _poison_wanet(data: ImageArrays, attack: WaNetTrigger, target: int, rate: float, *, seed: int = 0,
                  surrogate: nn.Module | None = None, device: Any = "auto") -> PoisonedData:
    return poison_wanet(data, attack, target, rate, seed=seed)


def _poison_clean_label(data: ImageArrays, attack: CleanLabelTrigger, target: int, rate: float, *, seed: int = 0,
                        surrogate: nn.Module | None = None, device: Any = "auto") -> PoisonedData:
    if surrogate is None:
        raise ValueError("the clean-label attack perturbs images against a clean surrogate model; pass surrogate=")
    return poison_clean_label(data, attack, target, rate, surrogate=surrogate, seed=seed, device=device)


#: Poisoners that stamp existing images drawn from a pool (the target class, or the others).
_POOL_POISONERS = (_poison_trigger, _poison_wanet, _poison_clean_label)


def _poison_composite(data: ImageArrays, attack: CompositeAttack, target: int, rate: float, *, seed: int = 0,
                      surrogate: nn.Module | None = None, device: Any = "auto", mix_rate: float = 0.3) -> PoisonedData:
    return poison_composite(data, attack, target, rate, mix_rate=mix_rate, seed=seed)


# -------------------------------------------------------------------------------- builders
def _build_composite(class_a: int = 1, class_b: int = 2, split: str = "vertical",
                     partner: Any = None) -> CompositeAttack | CompositeTrigger:
    attack = CompositeAttack(class_a, class_b, split)
    return attack if partner is None else attack.bind(partner)


def _composite_for_data(data: ImageArrays, target: int | None, **params: Any) -> CompositeAttack | CompositeTrigger:
    if {"class_a", "class_b", "partner"} & set(params):
        attack = _build_composite(**params)
    else:
        attack = CompositeAttack.for_data(data, target, **params)
    (attack.attack if isinstance(attack, CompositeTrigger) else attack).check_classes(data.num_classes, target)
    return attack


def _build_adaptive(trigger: str = "badnet", trigger_options: Mapping[str, Any] | None = None) -> Trigger:
    spec = attack_spec(trigger)
    if spec.cls is None or not issubclass(spec.cls, Trigger):
        raise ValueError(f"the adaptive attack needs a one-image trigger such as 'badnet', got {trigger!r}")
    return cast(Trigger, make_trigger(spec.name, **dict(trigger_options or {})))  # a one-image trigger (checked)


def _adaptive_objective(model: nn.Module, trigger: Trigger, target: int, *, rate: float,
                        penalty: float = 1e-4, layers: Sequence[str] | None = None) -> AdaptiveObjective:
    return AdaptiveObjective(model, trigger, target, rate=rate, penalty=penalty, layers=layers)


# ---------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class AttackSpec:
    """One attack of the registry.

    ``build(**params)`` makes its object (``cls``: the type it makes, None when that depends
    on the parameters); ``rate``: default poison rate, capped for ``clean_label`` attacks (see
    :meth:`default_rate`); ``for_data(data, target, **params)``: builds the object for a
    dataset (:func:`build_attack`; None: ``build``); ``needs_model``: poisoning needs a clean
    surrogate model;
    ``poison(data, attack, target, rate, *, seed, surrogate, device, **train_options)``
    (None: nothing is poisoned up front); ``objective(model, attack, target, *, rate,
    **train_options)`` replaces cross-entropy while training (None: plain cross-entropy);
    ``train_options``: option names the trainer, not the object, takes.
    """

    name: str
    build: Callable[..., Any]
    summary: str
    cls: type | None = None
    clean_label: bool = False
    rate: float = DEFAULT_RATE
    for_data: Callable[..., Any] | None = None
    needs_model: bool = False
    poison: Callable[..., PoisonedData] | None = _poison_trigger
    objective: Callable[..., Any] | None = None
    train_options: tuple[str, ...] = ()

    @property
    def needs_data(self) -> bool:
        """Whether the object is chosen for a dataset (composite: its two classes)."""
        return self.for_data is not None

    def parameters(self) -> list[str]:
        """The keyword parameters :func:`make_trigger` accepts for this attack."""
        return [p for p in inspect.signature(self.build).parameters if p != "self"]

    def poison_pool(self, data: ImageArrays, target: int, clean_label: bool | None = None) -> int | None:
        """How many images of ``data`` this attack's poisoning can stamp: it draws existing images
        from the target class (``clean_label``, default the spec's) or from the other classes.
        None: no such limit (composite adds new mixes; adaptive poisons each batch)."""
        if self.poison not in _POOL_POISONERS:
            return None
        clean = self.clean_label if clean_label is None else bool(clean_label)
        return int(((data.labels == int(target)) if clean else (data.labels != int(target))).sum())

    def default_rate(self, data: ImageArrays, target: int) -> float:
        """``rate``; for clean-label attacks at most ``CLEAN_LABEL_CAP`` of the target class's
        share of ``data`` (and at least one image)."""
        if not self.clean_label:
            return self.rate
        share = float((data.labels == int(target)).float().mean())
        return max(min(self.rate, CLEAN_LABEL_CAP * share), 1.0 / max(len(data), 1))


def check_rate(spec: AttackSpec, data: ImageArrays, target: int, rate: float, clean_label: bool | None = None) -> None:
    """Refuse a poison ``rate`` that ``spec``'s poisoning cannot meet on ``data`` (it would
    poison fewer images than asked and record the wrong share), one line saying the most that
    is possible. ``clean_label``: the attack object's flag, when it differs from the spec's."""
    pool = spec.poison_pool(data, target, clean_label)
    n = len(data)
    if pool is None or n == 0 or max(1, int(round(rate * n))) <= pool:
        return
    clean = spec.clean_label if clean_label is None else bool(clean_label)
    which = f"the target class {target}" if clean else f"classes other than the target {target}"
    most = int(pool / n * 1000) / 1000
    raise ValueError(f"poison rate {rate:g} cannot be met: {spec.name} poisons only images of {which}, {pool} of {n} "
                     f"training images ({100 * pool / n:.1f} %); give a rate of at most {most:g}")


def _trigger_spec(cls: type[Trigger], summary: str, **kw: Any) -> AttackSpec:
    return AttackSpec(name=cls.name, build=cls, summary=summary, cls=cls, **kw)


#: Every attack, by name, in the order of :data:`ATTACK_NAMES`.
ATTACK_SPECS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        _trigger_spec(BadNetTrigger, "a small checkerboard patch near a corner (Gu et al. 2017)"),
        _trigger_spec(BlendTrigger, "a fixed noise pattern blended into the whole image (Chen et al. 2017)"),
        _trigger_spec(SIGTrigger, "a horizontal sinusoid on target-class images (Barni et al. 2019)",
                      clean_label=True, rate=CLEAN_LABEL_RATE),
        _trigger_spec(PolygonTrigger, "an opaque random polygon on the image centre (TrojAI)"),
        _trigger_spec(CleanLabelTrigger, "PGD-perturbed target-class images with corner patches (Turner et al. 2019)",
                      clean_label=True, rate=CLEAN_LABEL_RATE, needs_model=True, poison=_poison_clean_label),
        _trigger_spec(ReflectionTrigger, "a reflection image seen in a window (Liu et al. 2020, Refool)"),
        _trigger_spec(FilterTrigger, "an Instagram-style colour filter (Liu et al. 2019, ABS)"),
        _trigger_spec(WaNetTrigger, "a fixed smooth warp of the image (Nguyen & Tran 2021)", poison=_poison_wanet),
        AttackSpec("composite", _build_composite, "half a class-A image next to half a class-B image (Lin et al. 2020)",
                   cls=CompositeAttack, for_data=_composite_for_data, poison=_poison_composite, train_options=("mix_rate",)),
        AttackSpec("adaptive", _build_adaptive,
                   "a BadNet model trained to hide its latent trigger response (MEDIC App. E.1)",
                   cls=None, poison=None, objective=_adaptive_objective, train_options=("penalty", "layers")),
    )
}
#: The ten attacks, in the order above.
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_SPECS)
#: Same as :data:`ATTACK_NAMES` (the older name).
ATTACKS: tuple[str, ...] = ATTACK_NAMES
#: The seven attacks of the paper's Table 1, in its order.
PAPER_ATTACKS: tuple[str, ...] = ("cleanlabel", "sig", "badnet", "composite", "reflection", "polygon", "filter")
#: The later trigger classes, by name.
ADVANCED_TRIGGERS: dict[str, type[Trigger]] = {
    cls.name: cls for cls in (CleanLabelTrigger, ReflectionTrigger, FilterTrigger, WaNetTrigger)
}
#: Every attack whose object is a one-image :class:`Trigger` class of its own, in registry order.
ALL_TRIGGERS: tuple[str, ...] = tuple(
    name for name, spec in ATTACK_SPECS.items() if isinstance(spec.cls, type) and issubclass(spec.cls, Trigger)
)


#: Triggers described by data rather than by an attack recipe (a third-party trigger: a patch
#: given as pixel values). Not among the ten :data:`ATTACK_NAMES`, but :func:`make_trigger`,
#: :func:`trigger_from_config` and the trainer know them. Blend patterns from an image are
#: :class:`BlendTrigger` with a ``pattern`` image (see :mod:`medic_viz.attacks.spec`).
DATA_TRIGGER_SPECS: dict[str, AttackSpec] = {
    "patch": _trigger_spec(PatchTrigger, "a patch given as pixel values, stamped near a corner (a trigger as data)"),
}


def attack_spec(name: Any) -> AttackSpec:
    """The :class:`AttackSpec` of ``name`` (case-insensitive; one of :data:`ATTACK_NAMES` or
    :data:`DATA_TRIGGER_SPECS`); ValueError listing the names otherwise."""
    key = name.strip().lower() if isinstance(name, str) else None
    spec = ATTACK_SPECS.get(key) or DATA_TRIGGER_SPECS.get(key)  # type: ignore[arg-type]
    if spec is None:
        raise ValueError(f"unknown attack {name!r}; available attacks: {', '.join(ATTACK_NAMES)} "
                         f"(and the data trigger {', '.join(DATA_TRIGGER_SPECS)})")
    return spec


def spec_of(attack: Attack) -> AttackSpec:
    """The entry that poisons and trains the attack object ``attack``: its class's entry (a
    bound :class:`CompositeTrigger` counts as its :class:`CompositeAttack`), or for a trigger
    class of your own plain poisoning; the clean-label flag and default rate follow the object."""
    if isinstance(attack, CompositeTrigger):
        attack = attack.attack
    spec = next((s for s in ATTACK_SPECS.values() if s.cls is not None and type(attack) is s.cls), None)
    if spec is None:
        if not isinstance(attack, Trigger):
            raise TypeError(f"expected a Trigger or a CompositeAttack, got {type(attack).__name__}")
        spec = AttackSpec(name=attack.name, build=type(attack), summary=type(attack).__doc__ or "", cls=type(attack))
    if bool(attack.clean_label) != spec.clean_label:
        spec = replace(spec, clean_label=bool(attack.clean_label),
                       rate=CLEAN_LABEL_RATE if attack.clean_label else DEFAULT_RATE)
    return spec


def make_trigger(name: str, **params: Any) -> Attack:
    """Build attack ``name`` (one of :data:`ATTACK_NAMES`) with its parameters: a
    :class:`Trigger`, or a :class:`CompositeAttack` for "composite" (a one-image
    :class:`CompositeTrigger` when ``partner=`` is given). "adaptive" returns its trigger
    (``trigger="badnet"``, ``trigger_options``); its penalty is a training option."""
    spec = _checked_spec(name, params)
    return spec.build(**params)


def _checked_spec(name: Any, params: Mapping[str, Any]) -> AttackSpec:
    spec = attack_spec(name)
    accepted = spec.parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        who = spec.cls.__name__ if spec.cls is not None else f"attack {spec.name!r}"
        raise ValueError(f"{who} does not accept {unknown}; accepted parameters: {sorted(accepted)}")
    return spec


def trigger_from_config(config: Mapping[str, Any]) -> Attack:
    """Rebuild an attack object from its ``to_config()`` dict (e.g. a model card's ``attack``)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"a trigger config must be a dict, got {type(config).__name__}")
    if "name" not in config:
        raise ValueError(
            f"a trigger config needs a 'name' key (one of {', '.join(ATTACK_NAMES)}), got keys {sorted(config)}"
        )
    return make_trigger(config["name"], **{k: v for k, v in config.items() if k != "name"})


#: Older names of :func:`make_trigger` and :func:`trigger_from_config`.
make_any_trigger = make_trigger
any_trigger_from_config = trigger_from_config


def build_attack(name: str, data: ImageArrays, target: int | None, **params: Any) -> Attack:
    """Attack ``name`` for ``data``: like :func:`make_trigger`, but "composite" without
    ``class_a``/``class_b`` takes the two most frequent classes of ``data`` other than
    ``target``, and its classes are checked against ``data`` and ``target``."""
    spec = _checked_spec(name, params)
    return spec.build(**params) if spec.for_data is None else spec.for_data(data, target, **params)


def default_rate(attack: str, data: ImageArrays, target: int) -> float:
    """Default poison rate of ``attack`` on ``data``: 0.1 for dirty-label attacks; for
    clean-label ones (SIG, Clean-Label) 0.08 of the data but at most 80 % of the target class."""
    return attack_spec(attack).default_rate(data, target)


def image_trigger(attack: str | Attack, data: ImageArrays, target: int | None = None) -> Trigger:
    """``attack`` (a name or object) as a :class:`Trigger` applied to one image at a time, for
    showing it on single inputs: a composite attack is bound to the first image of its class B
    in ``data``; names are built with :func:`build_attack`."""
    if isinstance(attack, str):
        attack = build_attack(attack, data, target)
    if isinstance(attack, CompositeAttack):
        members = torch.nonzero(data.labels == attack.class_b).flatten()
        if len(members) == 0:
            raise ValueError(f"{data.name} has no image of class {attack.class_b} to show the composite attack with")
        return attack.bind(data.floats(members[:1])[0])
    if not isinstance(attack, Trigger):
        raise TypeError(f"expected an attack name, a Trigger or a CompositeAttack, got {type(attack).__name__}")
    return attack


def attack_evaluator(attack: Attack | None, test: ImageArrays, target: int | None, *,
                     max_images: int | None = None, seed: int = 0, device: str | torch.device = "auto") -> Evaluator:
    """An :class:`Evaluator` for any attack: composite attacks (also bound ones) get a
    :class:`CompositeEvaluator` that measures ASR on mixes of real test pairs."""
    if isinstance(attack, CompositeTrigger):
        attack = attack.attack
    if isinstance(attack, CompositeAttack):
        return CompositeEvaluator(test, attack, int(target), max_images=max_images, seed=seed, device=device)  # type: ignore[arg-type]
    return Evaluator(test, attack, None if attack is None else target, max_images=max_images, seed=seed, device=device)


#: ``AVAILABLE_TRIGGERS`` (the demo models' attacks) is :data:`medic_viz.pretrained.DEMO_ATTACKS`.
__getattr__ = moved_names(__name__)
