"""The adaptive attack of the MEDIC paper (App. E.1, after Tan & Shokri 2020): a trojan
training objective that pulls triggered internal activations onto clean ones.

The trainer that uses it is :func:`medic_viz.attacks.train.train_adaptive_trojaned_model`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.attacks.base import Trigger
from medic_viz.capture import LayerRecorder, resolve_layers

__all__ = ["AdaptiveObjective"]


class AdaptiveObjective:
    """Trojan training that hides the backdoor from cloning (MEDIC App. E.1):
    ``CE(model([x; T(x_p)]), [y; target]) + penalty · Σ_layers mean_p ||f_l(x_p) − f_l(T(x_p))||²``
    where ``x_p`` are the first ``round(rate · B)`` non-target images of the batch (at least
    one when the batch has any) and the distance sums over all neurons of each hooked layer
    (``layers``: names, None = every conv/norm/linear)."""

    def __init__(self, model: nn.Module, trigger: Trigger, target: int, *, rate: float = 0.1,
                 penalty: float = 1e-4, layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.trigger = trigger
        self.target = int(target)
        self.rate = float(rate)
        self.penalty = float(penalty)
        if not (self.penalty >= 0):
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.layers = resolve_layers(model, layers)

    def parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        candidates = torch.nonzero(y != self.target).flatten()
        k = min(len(candidates), max(1, int(round(self.rate * len(x))))) if len(candidates) else 0
        chosen = candidates[:k]
        xt = self.trigger.apply(x[chosen]) if k else x[:0]
        inputs = torch.cat([x, xt])
        labels = torch.cat([y, torch.full((k,), self.target, dtype=y.dtype, device=y.device)])
        with LayerRecorder(self.model, self.layers) as rec:
            logits = self.model(inputs)
            acts = rec.tensors()
        ce = F.cross_entropy(logits.float(), labels)
        per_layer: dict[str, torch.Tensor] = {}
        dist = torch.zeros((), device=x.device)
        if k:
            n = len(x)
            for name, a in zip(self.layers, acts):
                clean_a = a[chosen].float()
                trig_a = a[n : n + k].float()
                term = (clean_a - trig_a).pow(2).reshape(k, -1).sum(1).mean()
                per_layer[name] = term
                dist = dist + term
        total = ce + self.penalty * dist
        return total, {"total": total, "ce": ce, "latent_l2": dist}, per_layer
