"""ANP, Adversarial Neuron Pruning (Wu & Wang 2021): learn a mask on every BatchNorm neuron
under adversarial neuron perturbation, then prune every neuron whose mask fell to a fixed
threshold or below.

Defaults — the settings the MEDIC authors ran ANP with (their ``ANP/config.py``), fixed numbers
that need no trigger: noise δ, ξ ∈ [−ε, ε] on each BN neuron's weight and bias, ε = 0.2, one
signed-gradient ascent step; mask loss α·CE(masked) + (1−α)·CE(masked and perturbed), α = 0.2;
mask SGD lr 0.1, momentum 0.9, 2000 iterations of batch 128 (100 epochs of the paper's 2,500
CIFAR-10 images: MEDIC App. E.5); prune m ≤ 0.05. ANP's own repository
(csdongxian/ANP_backdoor) defaults to ε 0.4, lr 0.2, threshold 0.2: ``eps=0.4, lr=0.2,
threshold=0.2`` (this library's defaults before issue 28). What it prunes: every BatchNorm
channel of the model (WRN-16-1: 464 neurons), by zeroing its BN weight (the bias stays, so a
pruned channel outputs its constant bias, as in ANP's code).

Tuned (:mod:`medic_viz.experiments.selection`, the "ANP, threshold tuned" row): the threshold
0.05 … 0.7 (read off one set of learned masks, :meth:`ANP.readout`), then ε 0.2 / 0.4.

The masks are optimised with batch statistics in the BatchNorm layers, as in the ANP reference
code (which trains the masks in train mode): with running statistics instead, perturbations
pile up through the layers and, on a small CNN, ε = 0.4 drives the masked network to chance
and prunes most neurons. The running statistics are never updated, and the pruned model keeps
the teacher's. Known difference, on purpose: the neuron noise is projected back to [−ε, ε]
after its ascent step.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.checks import MAX_SEED, check_number, check_whole
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import ConfiguredDefense, check_fraction, frozen_copy, trainable_copy
from medic_viz.defenses.phases import EventStream, phase_config, phase_steps
from medic_viz.defenses.tunable import Tunable, TuningSpace
from medic_viz.device import resolve_device
from medic_viz.metrics import Evaluator
from medic_viz.training import BatchLoss, Callback, TrainConfig

__all__ = ["ANPConfig", "ANP", "ANPObjective", "prune_by_masks"]


class _PerturbedBN:
    """Replaces a BatchNorm's output by ``BN(x; γ·(m + δ), β·(1 + ξ))`` (running statistics)."""

    def __init__(self, owner: "_MaskedNetwork", module: nn.modules.batchnorm._BatchNorm, index: int) -> None:
        self.owner = owner
        self.module = module
        self.index = index
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...],
              output: torch.Tensor) -> torch.Tensor:
        owner = self.owner
        mask = owner.masks[self.index]
        if owner.perturbed:
            weight = module.weight * (mask + owner.noise[self.index])
            bias = module.bias * (1.0 + owner.noise_bias[self.index])
        else:
            weight = module.weight * mask
            bias = module.bias
        if owner.training and owner.batch_stats:
            # ANP's reference code optimises the masks in train mode: batch statistics (the
            # running statistics are left alone here; the pruned model keeps the teacher's)
            return F.batch_norm(inputs[0], None, None, weight, bias, True, 0.0, module.eps)
        return F.batch_norm(inputs[0], module.running_mean, module.running_var, weight, bias, False, 0.0, module.eps)


class _MaskedNetwork(nn.Module):
    """A frozen copy of the trojaned network with ANP's masks (trainable, one per BN channel)
    and neuron noise on every BatchNorm. In training mode (``batch_stats=True``) the BN layers
    normalise with batch statistics, as ANP's reference code; in eval mode with the running
    statistics, which are never updated."""

    def __init__(self, network: nn.Module, batch_stats: bool = True) -> None:
        super().__init__()
        self.network = network
        self.batch_stats = bool(batch_stats)
        norms = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        norms = [(n, m) for n, m in norms if m.affine and m.track_running_stats]
        if not norms:
            raise ValueError(
                "ANP needs BatchNorm layers with affine weights and running statistics; this model has none"
            )
        self.norm_names = [n for n, _ in norms]
        for q in network.parameters():
            q.requires_grad_(False)
        self.masks = nn.ParameterList([nn.Parameter(torch.ones_like(m.weight)) for _, m in norms])
        self.noise = [torch.zeros_like(m.weight) for _, m in norms]
        self.noise_bias = [torch.zeros_like(m.weight) for _, m in norms]
        self.perturbed = False
        self._hooks = [_PerturbedBN(self, m, i) for i, (_, m) in enumerate(norms)]
        self.train(False)  # like the frozen network it wraps; the training loop switches modes

    def train(self, mode: bool = True) -> "_MaskedNetwork":
        self.training = mode
        self.network.eval()  # BN modules never update their running statistics; the hooks pick the mode
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "_MaskedNetwork":
        out = super()._apply(fn, recurse)
        self.noise = [fn(t) for t in self.noise]
        self.noise_bias = [fn(t) for t in self.noise_bias]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.handle.remove()
        self._hooks = []


class ANPObjective:
    """ANP's mask loss for one batch: ``α·CE(f_m(x)) + (1−α)·CE(f_{m+δ, 1+ξ}(x))`` where the
    neuron noise ``δ, ξ`` is first drawn from U(−ε, ε) and moved ``steps`` signed-gradient
    steps of size ``ε/steps`` up the loss (projected back to [−ε, ε]). ``model`` is the
    masked network; only the masks are parameters. Masks are clipped to [0, 1] before each
    batch (and once more by :class:`ANP` after the last one)."""

    def __init__(self, masked: _MaskedNetwork, eps: float = 0.4, steps: int = 1, alpha: float = 0.2,
                 seed: int = 0) -> None:
        self.model = masked
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha)
        self.generator = torch.Generator().manual_seed(int(seed))

    def parameters(self) -> Iterable[nn.Parameter]:
        return list(self.model.masks.parameters())

    def clip_masks(self) -> None:
        with torch.no_grad():
            for m in self.model.masks:
                m.clamp_(0.0, 1.0)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> None:
        net = self.model
        for i in range(len(net.noise)):
            for store in (net.noise, net.noise_bias):
                r = torch.rand(store[i].shape, generator=self.generator) * 2.0 - 1.0
                store[i] = (r * self.eps).to(store[i].device, store[i].dtype)
        for _ in range(self.steps):
            leaves = [t.detach().requires_grad_(True) for t in net.noise + net.noise_bias]
            k = len(net.noise)
            net.noise, net.noise_bias = leaves[:k], leaves[k:]
            net.perturbed = True
            with torch.enable_grad():
                loss = -F.cross_entropy(net(x).float(), y)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            step = self.eps / self.steps
            moved = [
                (leaf.detach() - step * (torch.zeros_like(leaf) if g is None else g.sign())).clamp_(-self.eps, self.eps)
                for leaf, g in zip(leaves, grads)
            ]
            net.noise, net.noise_bias = moved[:k], moved[k:]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchLoss:
        self.clip_masks()
        net = self.model
        if self.eps > 0:
            self._perturb(x, y)
            net.perturbed = True
            robust = F.cross_entropy(net(x).float(), y)
        else:
            robust = torch.zeros((), device=x.device)
        net.perturbed = False
        natural = F.cross_entropy(net(x).float(), y)
        total = self.alpha * natural + (1.0 - self.alpha) * robust
        return total, {"total": total, "natural": natural, "robust": robust}, {}


@dataclass
class ANPConfig(TrainConfig):
    """Adversarial Neuron Pruning (Wu & Wang 2021). Mask optimisation uses the TrainConfig
    fields; ``iterations`` (if set) replaces ``epochs`` by ``ceil(iterations / batches per
    epoch)``. ``eps``: neuron-noise bound ε; ``steps``: ascent steps; ``alpha``: weight of the
    natural loss; ``threshold``: neurons with mask ≤ threshold are pruned — fixed a priori."""

    epochs: int = 100
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    iterations: int | None = 2000
    eps: float = 0.2
    steps: int = 1
    alpha: float = 0.2
    threshold: float = 0.05
    noise_seed: int = 0

    def validate(self) -> None:
        super().validate()
        if self.iterations is not None:
            check_whole("iterations", self.iterations, 1)  # or None: use epochs
        check_number("eps", self.eps, 0)
        check_whole("steps", self.steps, 1)
        check_fraction(self.alpha, "alpha")
        check_fraction(self.threshold, "threshold")
        check_whole("noise_seed", self.noise_seed, 0, MAX_SEED)

    def mask_epochs(self, n: int) -> int:
        """Epochs of mask optimisation for a clean set of ``n`` images."""
        if self.iterations is None:
            return int(self.epochs)
        return max(1, math.ceil(int(self.iterations) / math.ceil(n / self.batch_size)))


def prune_by_masks(model: nn.Module, norm_names: Sequence[str], masks: Sequence[torch.Tensor],
                   threshold: float) -> dict[str, list[int]]:
    """ANP's pruning, in place: zero the BatchNorm weight of every neuron whose mask value is
    ``<= threshold``. Returns ``{layer: [pruned channels]}``."""
    modules = dict(model.named_modules())
    pruned: dict[str, list[int]] = {}
    with torch.no_grad():
        for name, mask in zip(norm_names, masks):
            idx = torch.nonzero(mask.detach().cpu() <= threshold).flatten()
            if len(idx):
                modules[name].weight[idx.to(modules[name].weight.device)] = 0.0
                pruned[name] = [int(i) for i in idx]
    return pruned


class ANP(ConfiguredDefense):
    """Learn BN-neuron masks under adversarial neuron perturbation, then prune every neuron
    whose mask fell to the fixed threshold or below."""

    name = "anp"
    display_name = "ANP"
    config_class = ANPConfig
    seed_options = ("noise_seed",)
    pinned_defaults = ("eps", "lr", "threshold")  # 0.4, 0.2, 0.2 before issue 28
    tuning = TuningSpace((Tunable.over("threshold", (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)),
                          Tunable.over("eps", (0.2, 0.4))))
    readout_options = ("threshold",)
    config: ANPConfig
    #: the last run's learned masks, by BatchNorm layer (:meth:`readout`)
    last_masks: dict[str, torch.Tensor] | None

    @classmethod
    def epoch_options(cls, epochs: int) -> dict[str, object]:
        """``epochs`` of mask optimisation instead of the fixed number of iterations."""
        return {"epochs": int(epochs), "iterations": None}

    def readout(self, teacher: nn.Module, clean: ImageArrays, **options: Any) -> nn.Module:
        """``teacher`` pruned by the last run's masks at ``threshold=``: what a run with that
        threshold returns (the masks do not depend on it)."""
        masks = getattr(self, "last_masks", None)
        self._check_readout(options, masks)
        assert masks is not None  # _check_readout refused a readout before a run
        threshold = check_fraction(options.get("threshold", self.config.threshold), "threshold")
        model = trainable_copy(teacher, resolve_device(self.config.device))
        prune_by_masks(model, list(masks), list(masks.values()), threshold)
        return model.eval()

    def _run(self, teacher: nn.Module, clean: ImageArrays, device: torch.device, evaluator: Evaluator | None,
             callbacks: Sequence[Callback], stop_event: threading.Event | None,
             label: str) -> tuple[nn.Module, dict, EventStream]:
        cfg = self.config
        self.last_masks = None
        epochs = cfg.mask_epochs(len(clean))
        masked = _MaskedNetwork(frozen_copy(teacher, device)).to(device)
        stream = EventStream(label, callbacks, [epochs], [phase_steps(len(clean), cfg.batch_size, epochs)])
        objective = ANPObjective(masked, cfg.eps, cfg.steps, cfg.alpha, cfg.noise_seed)
        try:
            stream.run(objective, clean, phase_config(cfg, epochs=epochs), evaluator=evaluator, stop_event=stop_event)
            objective.clip_masks()
        finally:
            masked.remove_hooks()
        model = trainable_copy(teacher, device)
        masks = [m.detach().cpu() for m in masked.masks]
        pruned = prune_by_masks(model, masked.norm_names, masks, cfg.threshold)
        model.eval()
        stream.finish(model, evaluator, evaluate=True)
        extra = {
            "mask_epochs": epochs,
            "n_neurons": int(sum(m.numel() for m in masks)),
            "n_pruned": int(sum(len(v) for v in pruned.values())),
            "pruned_neurons": pruned,
        }
        self.last_masks = dict(zip(masked.norm_names, masks))
        return model, extra, stream
