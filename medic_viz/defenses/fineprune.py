"""Fine-pruning (Liu et al. 2018): prune the last convolution's least-active channels, chosen
and stopped on clean data only, then fine-tune with those channels held at zero.

Defaults: rank the last convolution's channels by their mean activation on the clean subset,
read after the first norm layer that follows it and a ReLU; prune them (zero that norm layer's
weight and bias, or the filters if there is none) in increasing order while the clean-*subset*
accuracy stays within 4 points of the unpruned model's (at most 95% of the channels), or
exactly ``prune_ratio`` of them; then fine-tune as :mod:`~medic_viz.defenses.finetune` for 30
epochs. Source: Liu et al. 2018 (the 4% drop rule); MEDIC App. E.5 (31 epochs); the MEDIC
authors' code prunes a fixed 32 of WRN's 64 final channels (``prune_ratio=0.5``).

What it really prunes (:func:`last_conv_block`): in a plain CNN (SmallCNN, VGG) the last
Conv-BN-ReLU block's channels. In WRN (pre-activation) the first norm after the last
convolution is the top-level ``bn1``, *after* the last residual sum: the pruned channels are
whole channels of the final feature map ``relu(bn1(·))``, skip path included — what the MEDIC
authors' ``prune.py`` masks on the pooled features. In a post-activation ResNet it is the last
block's ``bn2``, before the sum, and in a pre-activation ResNet (no norm follows) the last
convolution's filters: the residual branch only, the skip path is kept.

Tuned (:mod:`medic_viz.experiments.selection`): ``prune_ratio`` 0.25 / 0.5 / 0.75 / 0.9, then
the learning rate (0.01 cosine, 0.1 stepped), weakest first.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.capture import LayerRecorder, eval_mode
from medic_viz.checks import check_whole
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.defenses.base import ConfiguredDefense, check_fraction, clean_set_accuracy, trainable_copy
from medic_viz.defenses.finetune import FineTuningConfig
from medic_viz.defenses.phases import EventStream, run_single_phase
from medic_viz.defenses.tunable import Tunable, TuningSpace, lr_recipes
from medic_viz.metrics import Evaluator
from medic_viz.training import Callback, SupervisedObjective

__all__ = ["FinePruningConfig", "FinePruning", "last_conv_block", "prune_channels"]

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def last_conv_block(model: nn.Module, layer: str | None = None) -> tuple[str, str | None]:
    """``(conv name, norm name or None)`` of the convolution whose channels Fine-pruning prunes.

    ``layer=None``: the last convolution in module order, with the first norm layer after it
    (before any other convolution) that has one feature per conv channel. ``layer`` may name a
    convolution explicitly. Raises ``ValueError`` when the model has no convolution.
    """
    named = list(model.named_modules())
    convs = [i for i, (_, m) in enumerate(named) if isinstance(m, _CONV_TYPES)]
    if not convs:
        raise ValueError("Fine-pruning needs a convolutional model; this one has no nn.Conv layer")
    if layer is None:
        index = convs[-1]
    else:
        matches = [i for i in convs if named[i][0] == layer]
        if not matches:
            raise ValueError(f"layer {layer!r} is not a convolution of this model; convolutions: "
                             f"{[named[i][0] for i in convs]}")
        index = matches[0]
    conv_name, conv = named[index]
    for name, module in named[index + 1 :]:
        if isinstance(module, _CONV_TYPES):
            break
        if isinstance(module, _NORM_TYPES):
            width = getattr(module, "num_features", None) or getattr(module, "num_channels", None)
            if width == conv.out_channels and getattr(module, "weight", None) is not None:
                return conv_name, name
    return conv_name, None


def prune_channels(model: nn.Module, conv_name: str, norm_name: str | None, channels: Sequence[int]) -> None:
    """Remove ``channels`` of a conv block in place: zero the norm layer's weight and bias for
    them (so the block outputs exactly 0 there), or the conv's filters (and bias) if no norm
    layer follows. Works on plain parameters (no reparametrisation is left behind)."""
    modules = dict(model.named_modules())
    idx = torch.as_tensor(list(channels), dtype=torch.long)
    if idx.numel() == 0:
        return
    with torch.no_grad():
        target = modules[norm_name] if norm_name is not None else modules[conv_name]
        target.weight[idx] = 0.0
        if getattr(target, "bias", None) is not None:
            target.bias[idx] = 0.0


class _ChannelMask:
    """Forward hook multiplying a module's output channels by a 0/1 mask (pruning preview)."""

    def __init__(self, module: nn.Module, channels: int, device: torch.device) -> None:
        self.mask = torch.ones(channels, device=device)
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (output.ndim - 2)
        return output * self.mask.to(output.dtype).reshape(shape)

    def remove(self) -> None:
        self.handle.remove()


class _ZeroGrad:
    """Keeps pruned entries of parameters at zero during fine-tuning by zeroing their gradients
    (weight decay of a zero weight is zero, so SGD and Adam leave them at 0)."""

    def __init__(self, params: Sequence[nn.Parameter], channels: Sequence[int]) -> None:
        self.handles = []
        for p in params:
            keep = torch.ones_like(p)
            keep[torch.as_tensor(list(channels), dtype=torch.long)] = 0.0
            self.handles.append(p.register_hook(lambda g, keep=keep: g * keep))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class FinePruningConfig(FineTuningConfig):
    """Fine-pruning (Liu et al. 2018): prune dormant last-conv channels, then fine-tune.

    ``max_acc_drop``: stop pruning before clean-*subset* accuracy falls more than this
    (fraction, 0.04 = 4 points) below the unpruned model's. ``prune_step``: channels removed
    per step. ``max_prune_ratio``: never prune more than this share of the channels.
    ``prune_ratio``: prune exactly ``floor(prune_ratio · channels)`` of the least-active
    channels (at most all but one) instead of stopping by accuracy (None: the accuracy rule).
    ``layer``: the convolution to prune (None = the last one).
    """

    max_acc_drop: float = 0.04
    prune_step: int = 1
    max_prune_ratio: float = 0.95
    prune_ratio: float | None = None
    layer: str | None = None
    eval_batch_size: int = 512

    def validate(self) -> None:
        super().validate()
        if self.prune_ratio is not None:
            check_fraction(self.prune_ratio, "prune_ratio")
        check_fraction(self.max_acc_drop, "max_acc_drop")
        check_fraction(self.max_prune_ratio, "max_prune_ratio")
        check_whole("prune_step", self.prune_step, 1)
        check_whole("eval_batch_size", self.eval_batch_size, 1)


class FinePruning(ConfiguredDefense):
    """Prune the last convolution's least-active channels (chosen and stopped on clean data
    only), then fine-tune with those channels held at zero."""

    name = "fineprune"
    display_name = "Fine-pruning"
    config_class = FinePruningConfig
    tuning = TuningSpace((Tunable.over("prune_ratio", (0.25, 0.5, 0.75, 0.9)), lr_recipes(0.01, 0.1)))
    config: FinePruningConfig

    @torch.no_grad()
    def channel_activity(self, model: nn.Module, clean: ImageArrays,
                         device: torch.device) -> tuple[str, str | None, torch.Tensor]:
        """``(conv, norm, mean activation per channel)`` over the clean set: the norm layer's
        output (the conv's without one) after a ReLU, averaged over images and positions (eval
        mode, no augmentation)."""
        conv_name, norm_name = last_conv_block(model, self.config.layer)
        watched = norm_name or conv_name
        total: torch.Tensor | None = None
        count = 0
        with eval_mode(model), LayerRecorder(model, [watched]) as rec:
            for x, _ in iterate_batches(clean, self.config.eval_batch_size, device=device):
                rec.clear()
                model(x)
                act = rec.tensors()[0].float().clamp_min(0)
                s = act.sum(dim=[0] + list(range(2, act.ndim)))
                total = s if total is None else total + s
                count += act[:, 0].numel()
        if total is None:
            raise ValueError("the clean set is empty; Fine-pruning ranks channels on clean images")
        return conv_name, norm_name, total / count

    def _run(self, teacher: nn.Module, clean: ImageArrays, device: torch.device, evaluator: Evaluator | None,
             callbacks: Sequence[Callback], stop_event: threading.Event | None,
             label: str) -> tuple[nn.Module, dict, EventStream]:
        cfg = self.config
        model = trainable_copy(teacher, device)
        conv_name, norm_name, activity = self.channel_activity(model, clean, device)
        order = torch.argsort(activity.cpu(), stable=True)
        channels = int(activity.numel())
        watched = dict(model.named_modules())[norm_name or conv_name]
        base_acc = clean_set_accuracy(model, clean, device, cfg.eval_batch_size)
        limit = int(math.floor(cfg.max_prune_ratio * channels))
        pruned = 0
        accs: list[float] = [base_acc]
        masker = _ChannelMask(watched, channels, device)
        try:
            if cfg.prune_ratio is not None:  # a fixed share of the channels: no stop by accuracy
                pruned = min(int(math.floor(cfg.prune_ratio * channels)), channels - 1)
                masker.mask[order[:pruned].to(device)] = 0.0
                accs.append(clean_set_accuracy(model, clean, device, cfg.eval_batch_size))
            k = 0
            while cfg.prune_ratio is None and k + cfg.prune_step <= min(limit, channels - 1):
                if stop_event is not None and stop_event.is_set():
                    break
                k += cfg.prune_step
                masker.mask.fill_(1.0)
                masker.mask[order[:k].to(device)] = 0.0
                acc = clean_set_accuracy(model, clean, device, cfg.eval_batch_size)
                if acc < base_acc - cfg.max_acc_drop:
                    break
                pruned = k
                accs.append(acc)
        finally:
            masker.remove()
        removed = order[:pruned].tolist()
        prune_channels(model, conv_name, norm_name, removed)
        target = dict(model.named_modules())[norm_name or conv_name]
        params = [p for p in (target.weight, getattr(target, "bias", None)) if p is not None]
        guard = _ZeroGrad(params, removed) if removed else None
        try:
            stream = run_single_phase(
                SupervisedObjective(model), clean, cfg,
                label=label, callbacks=callbacks, evaluator=evaluator, stop_event=stop_event,
            )
        finally:
            if guard is not None:
                guard.remove()
        extra = {
            "pruned_layer": norm_name or conv_name,
            "pruned_channels": sorted(int(c) for c in removed),
            "n_pruned": len(removed),
            "n_channels": channels,
            "clean_subset_acc_unpruned": base_acc,
            "clean_subset_acc_pruned": accs[-1],
        }
        return model, extra, stream
