"""Poisoned datasets and trojaned-model training (all-to-one backdoors).

Dirty-label triggers (BadNet, Blend, Polygon): ``rate`` · N training images drawn from the
non-target classes get the trigger and the target label. Clean-label triggers (SIG): the
images are drawn from the target class itself and keep their label, so ``rate`` is capped at
the target class's share of the data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.attacks.triggers import Trigger
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.metrics import BackdoorMetrics, Evaluator, evaluate_backdoor, resolve_device
from medic_viz.training import Callback, SupervisedObjective, TrainConfig, TrainEvent, train

__all__ = [
    "PoisonedData",
    "poison_dataset",
    "ATTACK_TRAIN_DEFAULTS",
    "TrojanedModel",
    "train_trojaned_model",
]


@dataclass
class PoisonedData:
    """The poisoned training set and which of its images carry the trigger."""

    data: ImageArrays
    poisoned_indices: torch.Tensor
    target: int
    trigger: Trigger

    @property
    def n_poisoned(self) -> int:
        return int(len(self.poisoned_indices))


def poison_dataset(data: ImageArrays, trigger: Trigger, target: int, rate: float = 0.1, *, seed: int = 0) -> PoisonedData:
    """Stamp ``trigger`` on ``rate`` · len(data) images (chosen by ``seed``) and relabel them
    ``target`` (dirty-label) or keep their label (clean-label triggers, drawn from the target
    class). Returns a new :class:`ImageArrays`; ``data`` is unchanged."""
    if not (0 <= int(target) < data.num_classes):
        raise ValueError(f"target class {target} is out of range for {data.num_classes} classes (0..{data.num_classes - 1})")
    if not (0.0 < rate < 1.0):
        raise ValueError(f"poison rate must be in (0, 1), got {rate}; 0.1 (10%) is the usual BadNet setting")
    target = int(target)
    g = torch.Generator().manual_seed(int(seed))
    n_wanted = max(1, int(round(rate * len(data))))
    if trigger.clean_label:
        pool = torch.nonzero(data.labels == target).flatten()
    else:
        pool = torch.nonzero(data.labels != target).flatten()
    if len(pool) == 0:
        raise ValueError(f"no images available to poison for target {target} ({'clean' if trigger.clean_label else 'dirty'}-label)")
    n = min(n_wanted, len(pool))
    chosen = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
    images = data.images.clone()
    labels = data.labels.clone()
    stamped = trigger.apply(data.floats(chosen))
    images[chosen] = (stamped.clamp(0, 1) * 255).round().to(torch.uint8)
    if not trigger.clean_label:
        labels[chosen] = target
    out = replace(data, images=images, labels=labels, name=f"{data.name}+{trigger.name}")
    return PoisonedData(out, chosen, target, trigger)


#: Training settings for making trojaned (and clean reference) models on small data.
ATTACK_TRAIN_DEFAULTS = dict(epochs=20, batch_size=128, optimizer="adam", lr=2e-3, weight_decay=1e-4, schedule="cosine")


@dataclass
class TrojanedModel:
    """A model trained on poisoned data, with its card-ready description and test metrics."""

    model: nn.Module
    architecture: str
    arch_kwargs: dict
    trigger: Trigger | None
    target: int | None
    rate: float | None
    metrics: BackdoorMetrics
    history: list[TrainEvent]
    seconds: float

    def card(self, splits: DatasetSplits, dataset: str, notes: str = ""):
        """A :class:`medic_viz.io.ModelCard` describing this model."""
        from medic_viz.io import ModelCard

        cfg = getattr(self.model, "zoo_config", {})
        return ModelCard(
            architecture=self.architecture,
            num_classes=splits.num_classes,
            input_size=splits.image_shape[-1],
            in_channels=splits.image_shape[0],
            arch_kwargs=dict(self.arch_kwargs),
            classes=list(splits.classes),
            normalize=None if not cfg.get("normalize") else {"mean": cfg["normalize"][0], "std": cfg["normalize"][1]},
            dataset=dataset,
            attack=None if self.trigger is None else self.trigger.to_config(),
            target_class=self.target,
            poison_rate=self.rate,
            metrics={**self.metrics.as_dict(), "train_seconds": round(self.seconds, 2)},
            history=[e.as_dict() for e in self.history if e.kind in ("start", "epoch")],
            notes=notes,
        )


def train_trojaned_model(
    splits: DatasetSplits,
    trigger: Trigger | None,
    *,
    target: int = 0,
    rate: float = 0.1,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """Train ``architecture`` on ``splits.train`` poisoned with ``trigger`` (None = a clean
    model) and measure clean accuracy and ASR on the whole test set.

    Live curves during training use at most ``eval_max_images`` test images; the final
    metrics use all of them.
    """
    from medic_viz.models.zoo import build_model

    cfg = config or TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "seed": seed})
    arch_kwargs = dict(arch_kwargs or {})
    train_data = splits.train
    if trigger is not None:
        train_data = poison_dataset(splits.train, trigger, target, rate, seed=seed).data
    torch.manual_seed(seed)
    c, h, _ = splits.image_shape
    model = build_model(architecture, splits.num_classes, in_channels=c, input_size=h, **arch_kwargs)
    device = resolve_device(cfg.device)
    live = Evaluator(
        splits.test,
        trigger,
        None if trigger is None else target,
        max_images=eval_max_images,
        device=device,
    )
    label = f"{architecture} + {trigger.name if trigger else 'clean'}"
    result = train(SupervisedObjective(model), train_data, cfg, evaluator=live, callbacks=callbacks, stop_event=stop_event, label=label)
    metrics = evaluate_backdoor(result.model, splits.test, trigger, None if trigger is None else target, device=device)
    return TrojanedModel(
        model=result.model,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        trigger=trigger,
        target=None if trigger is None else target,
        rate=None if trigger is None else rate,
        metrics=metrics,
        history=result.history,
        seconds=result.seconds,
    )
