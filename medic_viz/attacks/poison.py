"""Poisoned datasets for trigger attacks (all-to-one backdoors).

Dirty-label triggers (BadNet, Blend, Polygon, ...): ``rate`` · N training images drawn from the
non-target classes get the trigger and the target label. Clean-label triggers (SIG): the
images are drawn from the target class itself and keep their label, so ``rate`` is capped at
the target class's share of the data. Attacks that poison differently have their own
functions next to their trigger (``poison_clean_label``, ``poison_wanet``,
``poison_composite``); training on poisoned data is :mod:`medic_viz.attacks.train`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from medic_viz.attacks.base import Trigger
from medic_viz.data.arrays import ImageArrays
from medic_viz.deprecation import moved_names

__all__ = ["PoisonedData", "poison_dataset"]

#: Names that moved to :mod:`medic_viz.attacks.train`; still importable from here, with a warning.
__getattr__ = moved_names(__name__)



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
        raise ValueError(f"no images available to poison for target {target} "
                         f"({'clean' if trigger.clean_label else 'dirty'}-label)")
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


