"""Baseline backdoor-removal methods on MEDIC's interface, event stream and training loop.

Every method here is a :class:`~medic_viz.defenses.base.Defense`: ``run(teacher, clean,
evaluator=, callbacks=, stop_event=)`` leaves the trojaned ``teacher`` untouched, trains only
on the defender's small clean set ``clean`` through :func:`medic_viz.training.train` (each
training phase is an *objective*: fine-tuning, attention distillation, logit distillation,
Bezier-curve training and ANP's mask optimisation alike), and reports one stream of
:class:`~medic_viz.training.TrainEvent` objects: one ``start``, ``epoch`` events numbered across
all of a method's phases, one ``end``. The ``evaluator`` (test data) is used only to *report*
metrics; no method chooses a hyperparameter, a pruning amount or a checkpoint with it — where
a method needs a choice (Fine-pruning's pruning amount, MCR's point on the curve), it makes it
on the clean set, and ANP's pruning threshold is fixed in advance.

Defaults follow the methods' papers (and, where the paper leaves a value open, the code the
MEDIC authors or BackdoorBench ran). Epoch counts in MEDIC's Appendix E.5 (CIFAR-10):
Fine-tune 30, Fine-prune 31, NAD 40, MCR 240, ANP 100, MEDIC 60.

| method (name) | defaults | source |
|---|---|---|
| Fine-tuning (``finetune``) | SGD (Nesterov) lr 0.01, momentum 0.9, wd 5e-4, cosine, batch 64, 30 epochs | Liu et al. 2018 (RAID); epochs: MEDIC App. E.5; optimiser: BackdoorBench ``ft`` |
| Fine-pruning (``fineprune``) | prune last-conv channels by mean clean activation while clean-*subset* accuracy stays within 4 points; then fine-tune 30 epochs as above, pruned channels held at 0 | Liu et al. 2018 (4% drop rule) |
| NAD (``nad``) | teacher: fine-tune 10 epochs; student: 20 epochs of CE + Σ β_k·MSE(A(s_k), A(t_k)), p = 2, β = (500, 1000, 1000) on the last three feature resolutions; SGD lr 0.01, momentum 0.9, wd 1e-4, cosine, batch 64 | Li et al. 2021 (ICLR), code bboylyg/NAD; β, lr: BackdoorBench ``nad`` |
| MCR (``mcr``) | endpoints w₀ (trojaned), w₁ (fine-tuned 30 epochs); Bezier bend trained 100 epochs, SGD lr 0.01, momentum 0.9, wd 5e-4; BN re-estimated per t; t = grid point nearest 0.5 within 2 points of the best endpoint's clean-subset accuracy | Zhao et al. 2020 (ICLR); Garipov et al. 2018; MEDIC reference ``MCR/train.py`` |
| ANP (``anp``) | BN-neuron masks, noise ε = 0.4 (1 ascent step), α = 0.2, mask SGD lr 0.2 momentum 0.9, 2000 iterations of batch 128; prune m ≤ 0.2 (fixed a priori) | Wu & Wang 2021 (NeurIPS), code csdongxian/ANP_backdoor |
| KD (``kd``) | fresh student, CE + T²·KL(t/T ‖ s/T), T = 2; MEDIC's training settings (Adam 1e-2, 60 epochs) | Hinton et al. 2015; MEDIC reference ``main.py``; MEDIC Fig. 3 |
| Scratch (``scratch``) | fresh student, CE on the clean subset, MEDIC's training settings | MEDIC Fig. 3 |

Details and the reasons for each choice: ``docs/baselines.md``.

ANP's masks are optimised with batch statistics in the BatchNorm layers, as in the ANP
reference code (which trains the masks in train mode): with running statistics instead,
perturbations pile up through the layers and, on a small CNN, ε = 0.4 drives the masked network
to chance and prunes most neurons. The running statistics are never updated, and the pruned
model keeps the teacher's.

Known differences from the original code, kept on purpose: ANP's neuron noise is projected
back to [−ε, ε] after its ascent step; MCR uses a cosine learning-rate schedule instead of
Garipov's piecewise-linear one; NAD uses lr 0.01 with a cosine schedule (BackdoorBench) instead
of lr 0.1 divided by 10 every two epochs; KD uses the batch-mean KL divergence (the reference
code averages over classes too, which only rescales w).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from medic_viz.capture import LayerRecorder
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.defenses.base import Defense, DefenseResult, fresh_copy
from medic_viz.metrics import Evaluator, resolve_device
from medic_viz.training import Callback, SupervisedObjective, TrainConfig, TrainEvent, TrainResult, train

__all__ = [
    "FineTuningConfig",
    "FineTuning",
    "FinePruningConfig",
    "FinePruning",
    "NADConfig",
    "NAD",
    "MCRConfig",
    "MCR",
    "ANPConfig",
    "ANP",
    "KDConfig",
    "KnowledgeDistillation",
    "ScratchConfig",
    "ScratchTraining",
    "AttentionDistillationObjective",
    "DistillationObjective",
    "BezierCurve",
    "CurveObjective",
    "ANPObjective",
    "attention_map",
    "attention_layers",
    "last_conv_block",
    "prune_channels",
    "update_bn",
    "DEFENSES",
    "DISPLAY_NAMES",
    "available_defenses",
    "defense_class",
    "make_defense",
]


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


def _train_config(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """The plain :class:`TrainConfig` part of a method's config, with ``changes`` applied."""
    values = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
    values.update(changes)
    return TrainConfig(**values)


def _trainable_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device`` with every parameter trainable (the user's model is untouched)."""
    out = copy.deepcopy(model).to(device)
    for p in out.parameters():
        p.requires_grad_(True)
    out.train()
    return out


def _frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A frozen eval-mode deep copy of ``model`` on ``device``."""
    out = copy.deepcopy(model).to(device).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _steps(n: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n / batch_size) * epochs


@torch.no_grad()
def _accuracy(model: nn.Module, data: ImageArrays, device: torch.device, batch_size: int = 512) -> float:
    """Accuracy of ``model`` (eval mode, no augmentation) on ``data`` — the defender's clean set."""
    was = model.training
    model.eval()
    try:
        hits = 0
        for x, y in iterate_batches(data, batch_size, device=device):
            hits += int((model(x).argmax(1) == y).sum())
        return hits / max(len(data), 1)
    finally:
        model.train(was)


class _EventStream:
    """Joins the events of a method's training phases into one run: one ``start`` (the first
    phase's), ``epoch``/``step`` events numbered across phases, and one ``end`` (from
    :meth:`finish`, which can evaluate the final, possibly post-processed, model)."""

    def __init__(self, label: str, callbacks: Sequence[Callback], epochs: Sequence[int], steps: Sequence[int]) -> None:
        self.label = label
        self.callbacks = list(callbacks)
        self.total_epochs = int(sum(epochs))
        self.total_steps = int(sum(steps))
        self.history: list[TrainEvent] = []
        self.epoch_offset = 0
        self.step_offset = 0
        self.phase = 0
        self.stopped = False
        self.start_time = time.perf_counter()
        self._planned = list(epochs)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start_time

    def _emit(self, event: TrainEvent) -> None:
        self.history.append(event)
        for cb in self.callbacks:
            cb(event)

    def _forward(self, phase: int) -> Callback:
        def callback(event: TrainEvent) -> None:
            if event.kind == "end" or (event.kind == "start" and phase > 0):
                return
            self._emit(
                replace(
                    event,
                    epoch=event.epoch + self.epoch_offset,
                    epochs=self.total_epochs,
                    step=event.step + self.step_offset,
                    total_steps=self.total_steps,
                    seconds=self.seconds,
                    label=self.label,
                )
            )

        return callback

    def run(
        self,
        objective: Any,
        data: ImageArrays,
        config: TrainConfig,
        *,
        evaluator: Evaluator | None,
        stop_event: threading.Event | None,
    ) -> TrainResult:
        """Run one training phase through :func:`train`, forwarding its events."""
        result = train(
            objective,
            data,
            config,
            evaluator=evaluator,
            callbacks=[self._forward(self.phase)],
            stop_event=stop_event,
            label=self.label,
        )
        planned = self._planned[self.phase] if self.phase < len(self._planned) else config.epochs
        self.epoch_offset += planned if not result.stopped else (result.history[-1].epoch if result.history else 0)
        self.step_offset += result.steps
        self.phase += 1
        self.stopped = self.stopped or result.stopped
        return result

    def finish(self, model: nn.Module, evaluator: Evaluator | None, *, evaluate: bool) -> None:
        """Emit the run's ``end`` event; ``evaluate``: measure ``model`` (the one returned)."""
        metrics = evaluator(model) if (evaluate and evaluator is not None) else None
        last_epoch = max([e.epoch for e in self.history if e.kind in ("start", "epoch")], default=0)
        self._emit(
            TrainEvent(
                kind="end",
                epoch=last_epoch,
                epochs=self.total_epochs,
                step=self.step_offset,
                total_steps=self.total_steps,
                clean_acc=None if metrics is None else metrics.clean_acc,
                asr=None if metrics is None else metrics.asr,
                n_clean=0 if metrics is None else metrics.n_clean,
                n_asr=0 if metrics is None else metrics.n_asr,
                seconds=self.seconds,
                stopped=self.stopped,
                label=self.label,
            )
        )


def _check_fraction(value: float, what: str) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise ValueError(f"{what} must lie in [0, 1], got {value!r}")
    return v


class _Baseline(Defense):
    """Shared constructor (a config object and/or keyword overrides) and ``run`` scaffold."""

    config_class: ClassVar[type] = TrainConfig
    display_name: ClassVar[str] = ""

    def __init__(self, config: TrainConfig | None = None, **overrides: object) -> None:
        cls = self.config_class
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"{type(self).__name__} needs a {cls.__name__}, got {type(config).__name__}")
        cfg = config or cls()
        if overrides:
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ValueError(
                    f"unknown {self.display_name or self.name} option(s) {unknown}; options are {sorted(names)}"
                )
            cfg = cls(**{**asdict(cfg), **overrides})
        cfg.validate()
        self.config = cfg

    def default_label(self) -> str:
        return self.display_name or self.name

    def run(
        self,
        teacher: nn.Module,
        clean: ImageArrays,
        *,
        evaluator: Evaluator | None = None,
        callbacks: Sequence[Callback] = (),
        stop_event: threading.Event | None = None,
        label: str = "",
    ) -> DefenseResult:
        """Repair a copy of ``teacher`` (left unchanged) using only the clean set ``clean``."""
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if len(clean) == 0:
            raise ValueError("the clean set is empty; the defender needs some clean training images")
        device = resolve_device(self.config.device)
        model, extra, stream = self._run(teacher, clean, device, evaluator, callbacks, stop_event, label or self.default_label())
        model.eval()
        return DefenseResult(self.name, model, stream.history, stream.stopped, stream.seconds, {**asdict(self.config), **extra})

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):  # pragma: no cover - interface
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------


@dataclass
class FineTuningConfig(TrainConfig):
    """Fine-tune the trojaned model on the clean set (Liu et al. 2018's baseline)."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"


class FineTuning(_Baseline):
    """Plain fine-tuning of a copy of the trojaned model with cross-entropy on the clean set."""

    name = "finetune"
    display_name = "Fine-tuning"
    config_class = FineTuningConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        model = _trainable_copy(teacher, device)
        stream = _EventStream(label, callbacks, [cfg.epochs], [_steps(len(clean), cfg.batch_size, cfg.epochs)])
        stream.run(SupervisedObjective(model), clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        stream.finish(model, evaluator, evaluate=stream.stopped)
        return model, {}, stream


# ----------------------------------------------------------------------------------------------
# Fine-pruning
# ----------------------------------------------------------------------------------------------

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
            raise ValueError(f"layer {layer!r} is not a convolution of this model; convolutions: {[named[i][0] for i in convs]}")
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
    ``layer``: the convolution to prune (None = the last one).
    """

    max_acc_drop: float = 0.04
    prune_step: int = 1
    max_prune_ratio: float = 0.95
    layer: str | None = None
    eval_batch_size: int = 512

    def validate(self) -> None:
        super().validate()
        _check_fraction(self.max_acc_drop, "max_acc_drop")
        _check_fraction(self.max_prune_ratio, "max_prune_ratio")
        if int(self.prune_step) < 1:
            raise ValueError(f"prune_step must be >= 1, got {self.prune_step}")


class FinePruning(_Baseline):
    """Prune the last convolution's least-active channels (chosen and stopped on clean data
    only), then fine-tune with those channels held at zero."""

    name = "fineprune"
    display_name = "Fine-pruning"
    config_class = FinePruningConfig

    @torch.no_grad()
    def channel_activity(self, model: nn.Module, clean: ImageArrays, device: torch.device) -> tuple[str, str | None, torch.Tensor]:
        """``(conv, norm, mean activation per channel)`` over the clean set: the block's output
        after a ReLU, averaged over images and positions (eval mode, no augmentation)."""
        conv_name, norm_name = last_conv_block(model, self.config.layer)
        watched = norm_name or conv_name
        total: torch.Tensor | None = None
        count = 0
        was = model.training
        model.eval()
        try:
            with LayerRecorder(model, [watched]) as rec:
                for x, _ in iterate_batches(clean, self.config.eval_batch_size, device=device):
                    rec.clear()
                    model(x)
                    act = rec.tensors()[0].float().clamp_min(0)
                    s = act.sum(dim=[0] + list(range(2, act.ndim)))
                    total = s if total is None else total + s
                    count += act[:, 0].numel()
        finally:
            model.train(was)
        if total is None:
            raise ValueError("the clean set is empty; Fine-pruning ranks channels on clean images")
        return conv_name, norm_name, total / count

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        model = _trainable_copy(teacher, device)
        conv_name, norm_name, activity = self.channel_activity(model, clean, device)
        order = torch.argsort(activity.cpu(), stable=True)
        channels = int(activity.numel())
        watched = dict(model.named_modules())[norm_name or conv_name]
        base_acc = _accuracy(model, clean, device, cfg.eval_batch_size)
        limit = int(math.floor(cfg.max_prune_ratio * channels))
        pruned = 0
        accs: list[float] = [base_acc]
        masker = _ChannelMask(watched, channels, device)
        try:
            k = 0
            while k + cfg.prune_step <= min(limit, channels - 1):
                if stop_event is not None and stop_event.is_set():
                    break
                k += cfg.prune_step
                masker.mask.fill_(1.0)
                masker.mask[order[:k].to(device)] = 0.0
                acc = _accuracy(model, clean, device, cfg.eval_batch_size)
                if acc < base_acc - cfg.max_acc_drop:
                    break
                pruned = k
                accs.append(acc)
        finally:
            masker.remove()
        removed = order[:pruned].tolist()
        prune_channels(model, conv_name, norm_name, removed)
        stream = _EventStream(label, callbacks, [cfg.epochs], [_steps(len(clean), cfg.batch_size, cfg.epochs)])
        target = dict(model.named_modules())[norm_name or conv_name]
        params = [p for p in (target.weight, getattr(target, "bias", None)) if p is not None]
        guard = _ZeroGrad(params, removed) if removed else None
        try:
            stream.run(SupervisedObjective(model), clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        finally:
            if guard is not None:
                guard.remove()
        stream.finish(model, evaluator, evaluate=stream.stopped)
        extra = {
            "pruned_layer": norm_name or conv_name,
            "pruned_channels": sorted(int(c) for c in removed),
            "n_pruned": len(removed),
            "n_channels": channels,
            "clean_subset_acc_unpruned": base_acc,
            "clean_subset_acc_pruned": accs[-1],
        }
        return model, extra, stream


# ----------------------------------------------------------------------------------------------
# NAD
# ----------------------------------------------------------------------------------------------


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """NAD/AT attention map of a feature map ``(B, C, H, W)``: ``Σ_c |f_c|^p``, divided by its
    L2 norm over the positions. Returns ``(B, 1, H, W)``."""
    if features.ndim != 4:
        raise ValueError(f"attention maps need (B, C, H, W) feature maps, got shape {tuple(features.shape)}")
    am = features.float().abs().pow(p).sum(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(am, dim=(2, 3), keepdim=True)
    return am / (norm + eps)


def _flat_children(module: nn.Module, prefix: str = "") -> Iterable[tuple[str, nn.Module]]:
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            yield from _flat_children(child, full + ".")
        else:
            yield full, child


@torch.no_grad()
def attention_layers(model: nn.Module, example: torch.Tensor, count: int = 3) -> list[str]:
    """NAD's layers: the last module at each of the model's last ``count`` feature-map
    resolutions (e.g. WRN's three groups, ResNet's ``layer2..layer4``, SmallCNN's ``relu1``,
    ``relu2``, ``relu4``). Modules are the model's children, with ``nn.Sequential`` containers
    opened; outputs of 1x1 spatial size are skipped. ``example``: one input batch."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and name not in seen:
                seen.add(name)
                calls.append((name, tuple(output.shape)))

        return hook

    try:
        for name, child in _flat_children(model):
            handles.append(child.register_forward_hook(hook_for(name)))
        was = model.training
        model.eval()
        try:
            model(example)
        finally:
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    groups: list[tuple[tuple[int, int], str]] = []
    for name, shape in calls:
        if len(shape) != 4 or shape[2] * shape[3] <= 1:
            continue
        size = (shape[2], shape[3])
        if groups and groups[-1][0] == size:
            groups[-1] = (size, name)
        else:
            groups.append((size, name))
    if len(groups) < count:
        raise ValueError(
            f"NAD needs {count} feature-map resolutions but this model has {len(groups)} "
            f"({[g[1] for g in groups]}); pass layers=(...) with {count} module names, or fewer betas"
        )
    return [name for _, name in groups[-count:]]


class AttentionDistillationObjective:
    """NAD's loss: ``CE(student) + Σ_k β_k · MSE(A(student_k), A(teacher_k))``; ``model`` is the student."""

    def __init__(self, student: nn.Module, teacher: nn.Module, layers: Sequence[str], betas: Sequence[float], p: float = 2.0) -> None:
        if len(layers) != len(betas):
            raise ValueError(f"one beta per attention layer: {len(layers)} layers but {len(betas)} betas")
        self.model = student
        self.teacher = teacher
        self.layers = list(layers)
        self.betas = [float(b) for b in betas]
        self.p = float(p)

    def parameters(self) -> Iterable[nn.Parameter]:
        return [q for q in self.model.parameters() if q.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor):
        self.teacher.eval()
        with torch.no_grad(), LayerRecorder(self.teacher, self.layers) as t_rec:
            self.teacher(x)
            t_feats = [t.detach() for t in t_rec.tensors()]
        with LayerRecorder(self.model, self.layers) as s_rec:
            logits = self.model(x)
            s_feats = s_rec.tensors()
        ce = F.cross_entropy(logits.float(), y)
        per_layer: dict[str, torch.Tensor] = {}
        at = torch.zeros((), device=x.device)
        for name, beta, s, t in zip(self.layers, self.betas, s_feats, t_feats):
            term = F.mse_loss(attention_map(s, self.p), attention_map(t, self.p))
            per_layer[name] = term
            at = at + beta * term
        total = ce + at
        return total, {"total": total, "ce": ce, "at": at}, per_layer


@dataclass
class NADConfig(TrainConfig):
    """Neural Attention Distillation (Li et al. 2021). ``teacher_epochs``: fine-tuning of the
    trojaned model into the NAD teacher. ``betas``: attention-loss weights of the ``layers``
    (None = :func:`attention_layers` with ``len(betas)`` resolutions). ``p``: attention power."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    teacher_epochs: int = 10
    betas: tuple[float, ...] = (500.0, 1000.0, 1000.0)
    p: float = 2.0
    layers: tuple[str, ...] | None = None

    def validate(self) -> None:
        super().validate()
        if int(self.teacher_epochs) < 1:
            raise ValueError(f"teacher_epochs must be >= 1 (NAD fine-tunes its teacher first), got {self.teacher_epochs}")
        if not self.betas or any(not (float(b) >= 0) for b in self.betas):
            raise ValueError(f"betas must be a non-empty sequence of numbers >= 0, got {self.betas!r}")
        if not (float(self.p) > 0):
            raise ValueError(f"p must be > 0, got {self.p}")
        if self.layers is not None and len(self.layers) != len(self.betas):
            raise ValueError(f"give one beta per layer: {len(self.layers)} layers, {len(self.betas)} betas")


def _fine_tune_then(cfg, first_epochs, teacher, clean, device, evaluator, callbacks, stop_event, label):
    """Phase 1 of the two-phase defences (NAD's teacher, MCR's endpoint): fine-tune a copy of
    ``teacher`` on ``clean`` for ``first_epochs``, on an event stream that also announces
    phase 2 (``cfg.epochs``). Returns ``(stream, fine-tuned copy)``."""
    n = len(clean)
    stream = _EventStream(
        label,
        callbacks,
        [first_epochs, cfg.epochs],
        [_steps(n, cfg.batch_size, first_epochs), _steps(n, cfg.batch_size, cfg.epochs)],
    )
    tuned = _trainable_copy(teacher, device)
    stream.run(
        SupervisedObjective(tuned), clean, _train_config(cfg, epochs=first_epochs),
        evaluator=evaluator, stop_event=stop_event,
    )
    return stream, tuned


class NAD(_Baseline):
    """Fine-tune a teacher, then distil its attention maps into the trojaned model."""

    name = "nad"
    display_name = "NAD"
    config_class = NADConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        n = len(clean)
        stream, nad_teacher = _fine_tune_then(
            cfg, cfg.teacher_epochs, teacher, clean, device, evaluator, callbacks, stop_event, label
        )
        student = _trainable_copy(teacher, device)
        layers = list(cfg.layers) if cfg.layers is not None else attention_layers(
            student, clean.floats(torch.arange(min(2, n)), device), len(cfg.betas)
        )
        if not stream.stopped:
            nad_teacher.eval()
            for q in nad_teacher.parameters():
                q.requires_grad_(False)
            objective = AttentionDistillationObjective(student, nad_teacher, layers, cfg.betas, cfg.p)
            stream.run(objective, clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        stream.finish(student, evaluator, evaluate=stream.stopped)
        return student, {"attention_layers": layers}, stream


# ----------------------------------------------------------------------------------------------
# MCR
# ----------------------------------------------------------------------------------------------


def _bezier_coefficients(t: float) -> tuple[float, float, float]:
    return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t**2


class BezierCurve(nn.Module):
    """A quadratic Bezier curve of weights between two models of the same structure:
    ``φ(t) = (1−t)² w₀ + 2t(1−t) θ + t² w₁`` with trainable bend ``θ`` (initialised at the
    midpoint) and fixed endpoints. ``forward(x)`` runs the network at ``t = eval_t``; its
    norm-layer statistics are those of ``base`` (use :meth:`model_at` for a proper model)."""

    def __init__(self, start: nn.Module, end: nn.Module, eval_t: float = 0.5) -> None:
        super().__init__()
        start_params = dict(start.named_parameters())
        end_params = dict(end.named_parameters())
        if list(start_params) != list(end_params) or any(start_params[k].shape != end_params[k].shape for k in start_params):
            raise ValueError("the curve's endpoints must have the same structure (same parameter names and shapes)")
        self.base = copy.deepcopy(start)
        for q in self.base.parameters():
            q.requires_grad_(False)
        self.names = list(start_params)
        self.bend = nn.ParameterList(
            [nn.Parameter(((start_params[k].detach() + end_params[k].detach()) / 2).clone()) for k in self.names]
        )
        for i, k in enumerate(self.names):
            self.register_buffer(f"start_{i}", start_params[k].detach().clone())
            self.register_buffer(f"end_{i}", end_params[k].detach().clone())
        self.eval_t = float(eval_t)

    def weights_at(self, t: float) -> dict[str, torch.Tensor]:
        """Parameter name → ``φ(t)`` (differentiable in the bend)."""
        a, b, c = _bezier_coefficients(float(t))
        return {
            k: a * getattr(self, f"start_{i}") + b * self.bend[i] + c * getattr(self, f"end_{i}")
            for i, k in enumerate(self.names)
        }

    def forward(self, x: torch.Tensor, t: float | None = None) -> torch.Tensor:
        return functional_call(self.base, self.weights_at(self.eval_t if t is None else t), (x,))

    @torch.no_grad()
    def model_at(self, t: float, clean: ImageArrays | None = None, *, batch_size: int = 256) -> nn.Module:
        """A plain model with the weights ``φ(t)``; with ``clean``, its norm-layer statistics are
        re-estimated on it (:func:`update_bn`)."""
        model = copy.deepcopy(self.base)
        for name, value in self.weights_at(t).items():
            model.get_parameter(name).copy_(value.detach())
        for q in model.parameters():
            q.requires_grad_(True)
        if clean is not None:
            update_bn(model, clean, batch_size=batch_size)
        return model.eval()


@torch.no_grad()
def update_bn(model: nn.Module, data: ImageArrays, *, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics over ``data`` (train-mode forward
    passes, no augmentation), each batch weighted by its size as in Garipov et al.'s
    ``update_bn``: the running mean is the exact mean over ``data``. Other parameters are
    untouched."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    was = model.training
    try:
        for m in norms:
            m.reset_running_stats()
        model.train()
        seen = 0
        for x, _ in iterate_batches(data, batch_size, device=device):
            b = len(x)
            for m in norms:
                m.momentum = b / (seen + b)
            model(x)
            seen += b
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was)


class CurveObjective:
    """Cross-entropy of the curve's network at a random ``t ~ U(0, 1)`` per batch (drawn from
    its own generator, so the run is reproducible); ``model`` is the :class:`BezierCurve`."""

    def __init__(self, curve: BezierCurve, seed: int = 0) -> None:
        self.model = curve
        self.generator = torch.Generator().manual_seed(int(seed))

    def parameters(self) -> Iterable[nn.Parameter]:
        return list(self.model.bend.parameters())

    def loss(self, x: torch.Tensor, y: torch.Tensor):
        t = float(torch.rand((), generator=self.generator))
        logits = self.model(x, t=t)
        ce = F.cross_entropy(logits.float(), y)
        return ce, {"ce": ce}, {}


@dataclass
class MCRConfig(TrainConfig):
    """Mode Connectivity Repair (Zhao et al. 2020). Curve training uses the TrainConfig fields
    (``epochs`` = curve epochs); ``endpoint_epochs``: fine-tuning of the second endpoint with
    the same optimiser. ``t``: fixed point on the curve, or None to choose it on the clean set
    from ``t_grid`` (closest to 0.5 with clean-subset accuracy within ``max_acc_drop`` of the
    better endpoint)."""

    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    endpoint_epochs: int = 30
    t: float | None = None
    t_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    max_acc_drop: float = 0.02
    curve_seed: int = 0

    def validate(self) -> None:
        super().validate()
        if int(self.endpoint_epochs) < 1:
            raise ValueError(f"endpoint_epochs must be >= 1, got {self.endpoint_epochs}")
        if self.t is not None:
            _check_fraction(self.t, "t")
        if not self.t_grid:
            raise ValueError("t_grid must hold at least one value in [0, 1]")
        for v in self.t_grid:
            _check_fraction(v, "every t_grid value")
        _check_fraction(self.max_acc_drop, "max_acc_drop")


def choose_t(accuracies: dict[float, float], start_acc: float, end_acc: float, max_acc_drop: float) -> float:
    """MCR's point on the curve, from clean-set accuracies only: the grid ``t`` closest to 0.5
    (farthest from both backdoored endpoints) whose accuracy is at least
    ``max(start_acc, end_acc) − max_acc_drop``; if none qualifies, the most accurate ``t``."""
    floor = max(start_acc, end_acc) - max_acc_drop
    ok = [t for t, a in accuracies.items() if a >= floor]
    if ok:
        return min(ok, key=lambda t: (abs(t - 0.5), -accuracies[t], t))
    return max(accuracies, key=lambda t: (accuracies[t], -abs(t - 0.5)))


class MCR(_Baseline):
    """Fine-tune an endpoint, train a Bezier curve to it from the trojaned model, and return
    the model at the curve point chosen on clean data."""

    name = "mcr"
    display_name = "MCR"
    config_class = MCRConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        start = _frozen_copy(teacher, device)
        stream, end = _fine_tune_then(
            cfg, cfg.endpoint_epochs, teacher, clean, device, evaluator, callbacks, stop_event, label
        )
        if stream.stopped:
            stream.finish(end, evaluator, evaluate=True)
            return end, {"t": 1.0, "stage_stopped": "endpoint"}, stream
        curve = BezierCurve(start, end.eval()).to(device)
        stream.run(CurveObjective(curve, cfg.curve_seed), clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        start_acc = _accuracy(start, clean, device)
        end_acc = _accuracy(end, clean, device)
        if cfg.t is not None:
            t = float(cfg.t)
            accs = {t: _accuracy(curve.model_at(t, clean), clean, device)}
        else:
            accs = {float(t): _accuracy(curve.model_at(float(t), clean), clean, device) for t in cfg.t_grid}
            t = choose_t(accs, start_acc, end_acc, cfg.max_acc_drop)
        model = curve.model_at(t, clean)
        stream.finish(model, evaluator, evaluate=True)
        extra = {
            "t": t,
            "clean_subset_acc_by_t": {f"{k:g}": v for k, v in sorted(accs.items())},
            "clean_subset_acc_start": start_acc,
            "clean_subset_acc_end": end_acc,
        }
        return model, extra, stream


# ----------------------------------------------------------------------------------------------
# ANP
# ----------------------------------------------------------------------------------------------


class _PerturbedBN:
    """Replaces a BatchNorm's output by ``BN(x; γ·(m + δ), β·(1 + ξ))`` (running statistics)."""

    def __init__(self, owner: "_MaskedNetwork", module: nn.modules.batchnorm._BatchNorm, index: int) -> None:
        self.owner = owner
        self.module = module
        self.index = index
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
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

    def _apply(self, fn, recurse=True):
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

    def __init__(self, masked: _MaskedNetwork, eps: float = 0.4, steps: int = 1, alpha: float = 0.2, seed: int = 0) -> None:
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

    def loss(self, x: torch.Tensor, y: torch.Tensor):
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
    lr: float = 0.2
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    iterations: int | None = 2000
    eps: float = 0.4
    steps: int = 1
    alpha: float = 0.2
    threshold: float = 0.2
    noise_seed: int = 0

    def validate(self) -> None:
        super().validate()
        if self.iterations is not None and int(self.iterations) < 1:
            raise ValueError(f"iterations must be >= 1 or None (use epochs), got {self.iterations}")
        if not (float(self.eps) >= 0):
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        _check_fraction(self.alpha, "alpha")
        _check_fraction(self.threshold, "threshold")

    def mask_epochs(self, n: int) -> int:
        """Epochs of mask optimisation for a clean set of ``n`` images."""
        if self.iterations is None:
            return int(self.epochs)
        return max(1, math.ceil(int(self.iterations) / math.ceil(n / self.batch_size)))


def prune_by_masks(model: nn.Module, norm_names: Sequence[str], masks: Sequence[torch.Tensor], threshold: float) -> dict[str, list[int]]:
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


class ANP(_Baseline):
    """Learn BN-neuron masks under adversarial neuron perturbation, then prune every neuron
    whose mask fell to the fixed threshold or below."""

    name = "anp"
    display_name = "ANP"
    config_class = ANPConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        epochs = cfg.mask_epochs(len(clean))
        masked = _MaskedNetwork(_frozen_copy(teacher, device)).to(device)
        stream = _EventStream(label, callbacks, [epochs], [_steps(len(clean), cfg.batch_size, epochs)])
        objective = ANPObjective(masked, cfg.eps, cfg.steps, cfg.alpha, cfg.noise_seed)
        try:
            stream.run(objective, clean, _train_config(cfg, epochs=epochs), evaluator=evaluator, stop_event=stop_event)
            objective.clip_masks()
        finally:
            masked.remove_hooks()
        model = _trainable_copy(teacher, device)
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


# ----------------------------------------------------------------------------------------------
# Knowledge distillation and training from scratch (MEDIC's Figure 3 comparisons)
# ----------------------------------------------------------------------------------------------


class DistillationObjective:
    """Logit distillation: ``CE(s, y) + w · T² · KL(softmax(t/T) ‖ softmax(s/T))`` (batch mean);
    ``model`` is the student, the teacher is frozen in eval mode."""

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = 2.0, weight: float = 1.0, ce_weight: float = 1.0) -> None:
        self.model = student
        self.teacher = teacher
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.ce_weight = float(ce_weight)

    def parameters(self) -> Iterable[nn.Parameter]:
        return [q for q in self.model.parameters() if q.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor):
        self.teacher.eval()
        with torch.no_grad():
            t_logits = self.teacher(x).float()
        s_logits = self.model(x).float()
        T = self.temperature
        kd = F.kl_div(F.log_softmax(s_logits / T, dim=1), F.softmax(t_logits / T, dim=1), reduction="batchmean") * (T * T)
        ce = F.cross_entropy(s_logits, y)
        total = self.ce_weight * ce + self.weight * kd
        return total, {"total": total, "ce": ce, "kd": kd}, {}


@dataclass
class KDConfig(TrainConfig):
    """Knowledge distillation on logits into a fresh student, with MEDIC's training settings.
    ``temperature`` T, ``kd_weight`` w, ``ce_weight`` of the label loss, ``student_seed``."""

    temperature: float = 2.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    student_seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not (float(self.temperature) > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (float(self.kd_weight) >= 0 and float(self.ce_weight) >= 0):
            raise ValueError("kd_weight and ce_weight must be >= 0")


class KnowledgeDistillation(_Baseline):
    """Distil the trojaned model's logits into a freshly initialised copy."""

    name = "kd"
    display_name = "KD (logits)"
    config_class = KDConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        student = fresh_copy(teacher, seed=cfg.student_seed).to(device)
        frozen = _frozen_copy(teacher, device)
        stream = _EventStream(label, callbacks, [cfg.epochs], [_steps(len(clean), cfg.batch_size, cfg.epochs)])
        objective = DistillationObjective(student, frozen, cfg.temperature, cfg.kd_weight, cfg.ce_weight)
        stream.run(objective, clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        stream.finish(student, evaluator, evaluate=stream.stopped)
        return student, {}, stream


@dataclass
class ScratchConfig(TrainConfig):
    """Train a fresh model of the same structure on the clean set only (MEDIC's settings)."""

    student_seed: int = 0


class ScratchTraining(_Baseline):
    """Training from scratch on the clean subset: the trojaned model only lends its structure."""

    name = "scratch"
    display_name = "Scratch"
    config_class = ScratchConfig

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        student = fresh_copy(teacher, seed=cfg.student_seed).to(device)
        stream = _EventStream(label, callbacks, [cfg.epochs], [_steps(len(clean), cfg.batch_size, cfg.epochs)])
        stream.run(SupervisedObjective(student), clean, _train_config(cfg), evaluator=evaluator, stop_event=stop_event)
        stream.finish(student, evaluator, evaluate=stream.stopped)
        return student, {}, stream


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------


def _medic_class() -> type:
    from medic_viz.defenses.medic import Medic

    return Medic


#: Method name → Defense class (MEDIC included). Names are those of the ``--methods`` option.
DEFENSES: dict[str, type] = {
    "finetune": FineTuning,
    "fineprune": FinePruning,
    "nad": NAD,
    "mcr": MCR,
    "anp": ANP,
    "kd": KnowledgeDistillation,
    "scratch": ScratchTraining,
    "medic": _medic_class(),
}

#: Method name → name shown in tables and figures.
DISPLAY_NAMES: dict[str, str] = {
    "finetune": "Fine-tuning",
    "fineprune": "Fine-pruning",
    "nad": "NAD",
    "mcr": "MCR",
    "anp": "ANP",
    "kd": "KD",
    "scratch": "Scratch",
    "medic": "MEDIC",
}

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


def _canonical(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a defence name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in DEFENSES:
        raise ValueError(f"unknown defence {name!r}; available: {', '.join(DEFENSES)}")
    return key


def defense_class(name: str) -> type:
    """The Defense class for a method name (aliases such as "fine-tuning", "fp" accepted)."""
    return DEFENSES[_canonical(name)]


def make_defense(name: str, **options: object) -> Defense:
    """Build a defence by name with keyword options of its config (e.g.
    ``make_defense("nad", epochs=5)``, ``make_defense("medic", tau=3)``)."""
    return defense_class(name)(**options)
