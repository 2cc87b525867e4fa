"""Training trojaned (and clean reference) models for any attack of the registry.

One trainer, :func:`train_attack`: it builds the attack (:func:`~medic_viz.attacks.registry.build_attack`),
poisons the training set as that attack needs (its :class:`~medic_viz.attacks.registry.AttackSpec`;
the clean-label attack first trains a clean surrogate unless given one), trains a fresh model on
the one training loop (:func:`medic_viz.training.train`) and measures clean accuracy and ASR on
the whole test set (:func:`~medic_viz.attacks.registry.attack_evaluator`).
:func:`train_trojaned_model` and :func:`train_adaptive_trojaned_model` are the same trainer
called with an attack object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from medic_viz.attacks.base import Trigger
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.registry import Attack, AttackSpec, attack_evaluator, attack_spec, build_attack, check_rate, spec_of
from medic_viz.cards import ModelCard
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.data_identity import dataset_record
from medic_viz.device import resolve_device
from medic_viz.metrics import BackdoorMetrics
from medic_viz.models.zoo import build_model
from medic_viz.train_checkpoint import TrainCheckpoint
from medic_viz.training import Callback, SupervisedObjective, TrainConfig, TrainEvent, train

__all__ = [
    "ATTACK_TRAIN_DEFAULTS",
    "TrojanedModel",
    "train_attack",
    "train_trojaned_model",
    "train_adaptive_trojaned_model",
    "train_on_poisoned",
]

#: Training settings for making trojaned (and clean reference) models on small data.
ATTACK_TRAIN_DEFAULTS: dict[str, Any] = dict(epochs=20, batch_size=128, optimizer="adam", lr=2e-3, weight_decay=1e-4,
                                             schedule="cosine")


@dataclass
class TrojanedModel:
    """A model trained on poisoned data, with its card-ready description and test metrics.

    ``trigger``: the attack object (a :class:`CompositeAttack` for "composite"; the inner
    trigger for "adaptive"), None for a clean model. ``rate``: the share of the training images
    that were poisoned (the real one where existing images are stamped; the rate asked for
    otherwise)."""

    model: nn.Module
    architecture: str
    arch_kwargs: dict
    trigger: Attack | None
    target: int | None
    rate: float | None
    metrics: BackdoorMetrics
    history: list[TrainEvent]
    seconds: float

    def card(self, splits: DatasetSplits, dataset: str, notes: str = "") -> ModelCard:
        """A :class:`medic_viz.cards.ModelCard` describing this model (``dataset``: a name, or a file
        recorded by its resolved path and SHA-256)."""
        data = dataset_record(dataset)

        cfg = getattr(self.model, "zoo_config", {})
        return ModelCard(
            architecture=self.architecture,
            num_classes=splits.num_classes,
            input_size=splits.image_shape[-1],
            in_channels=splits.image_shape[0],
            arch_kwargs=dict(self.arch_kwargs),
            classes=list(splits.classes),
            normalize=None if not cfg.get("normalize") else {"mean": cfg["normalize"][0], "std": cfg["normalize"][1]},
            dataset=data["dataset"],
            dataset_sha256=data["dataset_sha256"],
            attack=None if self.trigger is None else self.trigger.to_config(),
            target_class=self.target,
            poison_rate=self.rate,
            metrics={**self.metrics.as_dict(), "train_seconds": round(self.seconds, 2)},
            history=[e.as_dict() for e in self.history if e.kind in ("start", "epoch")],
            notes=notes,
        )


def train_on_poisoned(
    splits: DatasetSplits,
    train_data: ImageArrays,
    attack: Attack | None,
    *,
    target: int | None,
    rate: float | None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    objective_factory: Callable[[nn.Module], Any] | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
    checkpoint: TrainCheckpoint | None = None,
) -> TrojanedModel:
    """Train a fresh ``architecture`` on an already poisoned ``train_data`` and measure it on
    ``splits.test`` (clean accuracy and the attack's ASR). ``objective_factory(model)`` may
    replace plain cross-entropy (the adaptive attack does). Live curves use at most
    ``eval_max_images`` test images; the final metrics use all of them. ``checkpoint``: resume
    from / save to it every epoch (:func:`medic_viz.training.train`)."""
    cfg = config or TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "seed": seed})
    arch_kwargs = dict(arch_kwargs or {})
    torch.manual_seed(seed)
    c, h, _ = splits.image_shape
    model = build_model(architecture, splits.num_classes, in_channels=c, input_size=h, **arch_kwargs)
    device = resolve_device(cfg.device)
    live = attack_evaluator(attack, splits.test, target, max_images=eval_max_images, device=device)
    objective = objective_factory(model) if objective_factory is not None else SupervisedObjective(model)
    label = f"{architecture} + {attack.name if attack is not None else 'clean'}"
    result = train(objective, train_data, cfg, evaluator=live, callbacks=callbacks, stop_event=stop_event, label=label,
                   checkpoint=checkpoint)
    metrics: BackdoorMetrics = attack_evaluator(attack, splits.test, target, device=device)(result.model)
    return TrojanedModel(
        model=result.model,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        trigger=attack,
        target=None if attack is None else target,
        rate=None if attack is None else rate,
        metrics=metrics,
        history=result.history,
        seconds=result.seconds,
    )


def train_attack(
    attack: str | Attack | None,
    splits: DatasetSplits,
    *,
    target: int = 0,
    rate: float | None = None,
    options: Mapping[str, Any] | None = None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
    checkpoint: TrainCheckpoint | None = None,
) -> TrojanedModel:
    """Train a model trojaned with ``attack``: a name of
    :data:`~medic_viz.attacks.registry.ATTACK_NAMES` (built for ``splits.train`` with
    ``options``: the object's parameters plus its training options, e.g. ``mix_rate`` for
    "composite", ``penalty``/``layers`` for "adaptive"), an attack object, or None for a clean
    model.

    ``rate`` None: the attack's default (:func:`~medic_viz.attacks.registry.default_rate`); a rate
    the attack cannot meet (a clean-label attack stamps only target-class images) is refused with
    ValueError before any training (:func:`~medic_viz.attacks.registry.check_rate`). The
    clean-label attack perturbs against ``surrogate``, or against a clean model trained here
    first with the same ``config``. The result's ``trigger`` is the attack object and its
    metrics come from :func:`~medic_viz.attacks.registry.attack_evaluator`.
    """
    opts = dict(options or {})
    if attack is None:
        if opts:
            raise ValueError(f"a clean model takes no attack options, got {sorted(opts)}")
        return train_on_poisoned(splits, splits.train, None, target=None, rate=None, architecture=architecture,
                                 arch_kwargs=arch_kwargs, config=config, seed=seed, callbacks=callbacks,
                                 stop_event=stop_event, eval_max_images=eval_max_images, checkpoint=checkpoint)
    if not (0 <= int(target) < splits.num_classes):
        raise ValueError(f"target class {target} is out of range for {splits.num_classes} classes")
    target = int(target)
    if isinstance(attack, str):
        spec = attack_spec(attack)
        train_options = {k: opts.pop(k) for k in spec.train_options if k in opts}
        attack = build_attack(spec.name, splits.train, target, **opts)
    else:
        spec = spec_of(attack)
        train_options = {k: opts.pop(k) for k in spec.train_options if k in opts}
        if opts:
            raise ValueError(f"options {sorted(opts)} are not training options of {spec.name!r} "
                             f"({list(spec.train_options)}); set the others on the attack object")
    return _train(spec, attack, splits, target=target, rate=rate, train_options=train_options,
                  architecture=architecture, arch_kwargs=arch_kwargs, config=config, seed=seed, surrogate=surrogate,
                  callbacks=callbacks, stop_event=stop_event, eval_max_images=eval_max_images, checkpoint=checkpoint)


def _train(spec: AttackSpec, attack: Attack, splits: DatasetSplits, *, target: int, rate: float | None,
           train_options: Mapping[str, Any], architecture: str, arch_kwargs: dict | None, config: TrainConfig | None,
           seed: int, surrogate: nn.Module | None, callbacks: Sequence[Callback], stop_event: threading.Event | None,
           eval_max_images: int | None, checkpoint: TrainCheckpoint | None = None) -> TrojanedModel:
    """Poison as ``spec`` says, then :func:`train_on_poisoned`."""
    rate = spec.default_rate(splits.train, target) if rate is None else float(rate)
    check_rate(spec, splits.train, target, rate, getattr(attack, "clean_label", None))  # before any training
    common = dict(architecture=architecture, arch_kwargs=arch_kwargs, config=config, stop_event=stop_event,
                  eval_max_images=eval_max_images)
    if spec.needs_model and surrogate is None:
        surrogate = train_on_poisoned(splits, splits.train, None, target=None, rate=None, seed=seed + 7919,
                                      **common).model  # type: ignore[arg-type]
    train_data, share = splits.train, rate
    if spec.poison is not None:
        device = resolve_device(config.device if config is not None else "auto")
        poisoned = spec.poison(splits.train, attack, target, rate, seed=seed, surrogate=surrogate, device=device,
                               **train_options)
        train_data = poisoned.data
        if spec.poison_pool(splits.train, target) is not None:  # the real share of images stamped
            share = poisoned.n_poisoned / len(splits.train)
    factory = None
    if spec.objective is not None:
        def factory(model: nn.Module) -> Any:
            return spec.objective(model, attack, target, rate=rate, **train_options)  # type: ignore[misc]
    return train_on_poisoned(splits, train_data, attack, target=target, rate=share, seed=seed, objective_factory=factory,
                             callbacks=callbacks, checkpoint=checkpoint, **common)  # type: ignore[arg-type]


def train_trojaned_model(
    splits: DatasetSplits,
    trigger: Attack | None,
    *,
    target: int = 0,
    rate: float | None = None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """Train ``architecture`` on ``splits.train`` poisoned with ``trigger`` (an attack object;
    None = a clean model) and measure clean accuracy and ASR on the whole test set:
    :func:`train_attack` with the arguments in this order. ``rate`` None: the attack's default."""
    return train_attack(trigger, splits, target=target, rate=rate, architecture=architecture, arch_kwargs=arch_kwargs,
                        config=config, seed=seed, callbacks=callbacks, stop_event=stop_event,
                        eval_max_images=eval_max_images)


def train_adaptive_trojaned_model(
    splits: DatasetSplits,
    trigger: Trigger | None = None,
    *,
    target: int = 0,
    rate: float = 0.1,
    penalty: float = 1e-4,
    layers: Sequence[str] | None = None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """The adaptive attack of App. E.1: train on clean data where each batch gets ``rate`` ·
    B triggered copies labelled ``target`` and the
    :class:`~medic_viz.attacks.adaptive.AdaptiveObjective` latent penalty (``penalty`` = 1e-4
    in the paper). ``trigger`` defaults to a BadNet patch."""
    if not (0 <= int(target) < splits.num_classes):
        raise ValueError(f"target class {target} is out of range for {splits.num_classes} classes")
    return _train(attack_spec("adaptive"), trigger or BadNetTrigger(), splits, target=int(target), rate=rate,
                  train_options={"penalty": penalty, "layers": layers}, architecture=architecture,
                  arch_kwargs=arch_kwargs, config=config, seed=seed, surrogate=None, callbacks=callbacks,
                  stop_event=stop_event, eval_max_images=eval_max_images)
