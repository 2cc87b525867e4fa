"""The one training loop: every defence, the attack trainer, the CLI, the widgets and the
benchmarks run through :func:`train`.

What varies between them is an :class:`Objective` (the model being trained, its parameters,
and a loss for a batch). The loop does batching on the device, augmentation, the optimiser and
schedule, mixed precision on CUDA, evaluation, progress bars, stop requests and NaN checks,
and reports what happens as :class:`TrainEvent` objects to any number of callbacks.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch
import torch.nn as nn

from medic_viz.checks import MAX_SEED, check_number, check_whole
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.device import resolve_device
from medic_viz.finite import check_finite_model
from medic_viz.metrics import BackdoorMetrics, Evaluator
from medic_viz.train_checkpoint import TrainCheckpoint

__all__ = [
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "Objective",
    "BatchLoss",
    "SupervisedObjective",
    "NonFiniteLossError",
    "Callback",
    "train",
    "resolve_channels_last",
    "SCHEDULES",
    "STEP_MILESTONES",
    "lr_factor",
]

#: Learning-rate schedules of :class:`TrainConfig` (see :func:`lr_factor`).
SCHEDULES: tuple[str, ...] = ("cosine", "constant", "step", "piecewise")
#: Epochs after which the ``"step"`` schedule divides the learning rate by 10 (NAD's code, which
#: the MEDIC authors' Fine-tuning, Fine-pruning and NAD runs use).
STEP_MILESTONES: tuple[int, ...] = (2, 20, 30)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped instead of going on with garbage."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by every defence and the attack trainer.

    Defaults are MEDIC's (paper appendix D): Adam, lr 1e-2, weight decay 1e-4, cosine
    schedule to 0 over 60 epochs, batch 64, augmentation on.

    ``amp``: bf16 autocast on CUDA. ``cpu_bf16``: bf16 autocast on the CPU too — about 1.4×
    faster steps on CPUs with native bf16 (AVX512-BF16, AMX; BENCHMARKS.md §4), with bf16's
    rounding as on CUDA, so off by default; ignored (with a warning) on CPUs without it.
    ``schedule``: how the learning rate moves over the epochs (:func:`lr_factor`): ``"cosine"`` to
    0, ``"constant"``, ``"step"`` (÷10 after epochs 2, 20 and 30) or ``"piecewise"`` (flat for the
    first half, linear down to 1 % at 90 %, then flat: Garipov et al.'s curve schedule).
    ``erase``: Cutout on top of the dataset's augmentation — one square of this fraction of the
    image side per training image set to its mean colour (:class:`~medic_viz.data.arrays.Augmentation`;
    0 = off, the default; ignored without ``augment``).
    ``channels_last``: train in the channels-last memory format (``True``/``False``, or
    ``"auto"``: on CPU and CUDA for models with 2-D convolutions, where it is faster —
    BENCHMARKS.md §4); the returned model is in the usual contiguous format either way.
    """

    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    augment: bool = True
    erase: float = 0.0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    eval_every: int = 1
    eval_every_steps: int | None = None
    progress: bool = True
    channels_last: bool | str = "auto"
    cpu_bf16: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges (ValueError naming the setting); called on construction."""
        check_whole("epochs", self.epochs, 1)
        check_whole("batch_size", self.batch_size, 1)
        check_whole("seed", self.seed, 0, MAX_SEED)
        check_whole("eval_every", self.eval_every, 0)
        if self.eval_every_steps is not None:
            check_whole("eval_every_steps", self.eval_every_steps, 0)
        check_number("lr", self.lr, 0, low_open=True)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("erase", self.erase, 0, 1, high_open=True)
        check_number("momentum", self.momentum, 0, 1, high_open=True)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {self.schedule!r}")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be True, False or 'auto', got {self.channels_last!r}")
        if self.cpu_bf16 not in (True, False):
            raise ValueError(f"cpu_bf16 must be True or False, got {self.cpu_bf16!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class TrainEvent:
    """What happened in training so far. ``kind``: "start" (before the first step, with the
    starting model's metrics), "step" (every ``eval_every_steps``), "epoch" (end of an epoch),
    "end" (after the last step or a stop). Losses are means since the previous event;
    accuracies are fractions in [0, 1] with the image counts used; ``seconds`` since start.
    ``holdout_acc``: accuracy on clean images held out of training (``train(holdout=…)``), the
    one measure a defender without test data or the trigger has of what the training costs."""

    kind: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    layer_losses: dict[str, float] = field(default_factory=dict)
    clean_acc: float | None = None
    asr: float | None = None
    n_clean: int = 0
    n_asr: int = 0
    holdout_acc: float | None = None
    n_holdout: int = 0
    lr: float = 0.0
    seconds: float = 0.0
    stopped: bool = False
    label: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


Callback = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """The trained model (as it is at the end or at the stop), its events and wall time."""

    model: nn.Module
    history: list[TrainEvent]
    stopped: bool
    seconds: float
    steps: int

    @property
    def epoch_events(self) -> list[TrainEvent]:
        return [e for e in self.history if e.kind in ("start", "epoch")]


#: What an objective's ``loss`` returns for one batch: (total loss, named loss terms, per-layer terms).
BatchLoss = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


class Objective(Protocol):
    """A training objective: ``model`` is what is trained and evaluated."""

    model: nn.Module

    def parameters(self) -> Iterable[nn.Parameter]: ...

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchLoss:
        """Return (total loss, named loss terms, per-layer terms) for one batch."""
        ...


class SupervisedObjective:
    """Plain cross-entropy training of ``model`` (attack training, fine-tuning, scratch)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchLoss:
        ce = nn.functional.cross_entropy(self.model(x), y)
        return ce, {"ce": ce}, {}

    def checkpoint_state(self) -> dict:
        """No state beyond the model's: resumable (:class:`~medic_viz.train_checkpoint.TrainCheckpoint`)."""
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        """Nothing to restore."""


def resolve_channels_last(setting: bool | str, model: nn.Module, device: torch.device) -> bool:
    """Whether to run ``model`` in the channels-last format: ``setting`` if a bool; ``"auto"``:
    on CPU and CUDA when the model has a 2-D convolution."""
    if setting is True or setting is False:
        return setting
    return device.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in model.modules())


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check); warns when it does not."""
    try:
        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        ok = False
    if not ok:
        warnings.warn("cpu_bf16=True but this CPU has no native bf16 support: training in float32", RuntimeWarning, stacklevel=3)
    return ok


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of 0-based ``epoch`` of ``epochs`` as a multiple of the initial one.

    ``"cosine"``: ``(1 + cos(π·epoch/epochs)) / 2``; ``"constant"``: 1; ``"step"``: ``0.1 ** k``
    with ``k`` the number of :data:`STEP_MILESTONES` ≤ ``epoch`` (NAD's ``adjust_learning_rate``);
    ``"piecewise"``: with ``a = (epoch + 1) / epochs``, 1 for ``a ≤ 0.5``, ``1 − 0.99·(a − 0.5)/0.4``
    up to ``a ≤ 0.9``, then 0.01 (Garipov et al.'s ``learning_rate_schedule``, MCR's curves)."""
    if schedule == "cosine":
        return (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0
    if schedule == "step":
        return 0.1 ** sum(1 for m in STEP_MILESTONES if epoch >= m)
    if schedule == "piecewise":
        a = (epoch + 1) / epochs
        return 1.0 if a <= 0.5 else (1.0 - (a - 0.5) / 0.4 * 0.99 if a <= 0.9 else 0.01)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}")


def _progress_bar(total: int, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    # tqdm.auto: a notebook bar in Jupyter (ipywidgets), a text bar elsewhere, chosen when it is first imported
    from tqdm.auto import tqdm  # noqa: PLC0415 — chooses its bar on import: at the first run, not with the package

    return tqdm(total=total, desc=label or "training", unit="step", leave=False)


def train(
    objective: Objective,
    data: ImageArrays,
    config: TrainConfig | None = None,
    *,
    evaluator: Evaluator | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    label: str = "",
    holdout: Evaluator | None = None,
    checkpoint: TrainCheckpoint | None = None,
) -> TrainResult:
    """Train ``objective.model`` on ``data`` and return it with the event history.

    ``evaluator`` (test data, the attack) and ``holdout`` (clean images not in ``data``, clean
    accuracy only) are measured at every evaluated event (``eval_every`` / ``eval_every_steps``).

    Stops early (returning the model as it is, ``stopped=True``) within one batch of
    ``stop_event`` being set. Raises :class:`NonFiniteLossError` if the loss becomes NaN/inf
    and :class:`~medic_viz.finite.NonFiniteModelError` if the final weights are (a non-finite
    model is never returned as a result).
    Callback exceptions propagate (a broken consumer should not fail silently).

    ``checkpoint``: resume from it when its file exists and save the run's state to it after
    every epoch (:mod:`medic_viz.train_checkpoint`; the caller removes it when the result is
    stored). Callbacks see only the events of the epochs run in this call; the result's history
    has them all. Only objectives with ``checkpoint_state()`` / ``load_checkpoint_state(state)``
    can be resumed (ValueError otherwise: state of their own would be lost).
    """
    cfg = config or TrainConfig()
    cfg.validate()
    if len(data) == 0:
        raise ValueError(f"{data.name}: the training set is empty")
    device = resolve_device(cfg.device)
    model = objective.model.to(device)
    channels_last = resolve_channels_last(cfg.channels_last, model, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = list(objective.parameters())
    if not params:
        raise ValueError("the objective has no trainable parameters")
    optimizer = _make_optimizer(params, cfg)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    elif cfg.schedule in ("step", "piecewise"):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg.schedule, e, cfg.epochs))
    else:
        scheduler = None
    use_amp = bool(cfg.amp) and (device.type == "cuda" or (device.type == "cpu" and cfg.cpu_bf16 and _cpu_has_bf16()))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    images_on_device = data.images.to(device)
    augmentation = replace(data.augmentation, erase=cfg.erase) if cfg.erase else None

    history: list[TrainEvent] = []
    start_time = time.perf_counter()
    step = 0
    stopped = False
    first_epoch = 1
    fingerprint = _fingerprint(objective, data, cfg, label) if checkpoint is not None else {}
    if checkpoint is not None:
        if not callable(getattr(objective, "checkpoint_state", None)):
            raise ValueError(f"{type(objective).__name__} cannot be resumed from a checkpoint (it keeps state of "
                             "its own and has no checkpoint_state()); train without checkpoint=")
        saved = checkpoint.load(fingerprint, sum(p.numel() * p.element_size() for p in params)
                                + sum(b.numel() * b.element_size() for b in model.buffers()))
        if saved is not None:
            step, history = _restore(saved, objective, model, params, optimizer, scheduler, generator, device)
            first_epoch = int(saved["epoch"]) + 1
            start_time -= float(saved["seconds"])

    def emit(kind: str, epoch: int, sums: dict, layer_sums: dict, count: int, evaluate: bool) -> None:
        metrics: BackdoorMetrics | None = evaluator(model) if (evaluate and evaluator is not None) else None
        held: BackdoorMetrics | None = holdout(model) if (evaluate and holdout is not None) else None
        ev = TrainEvent(
            kind=kind,
            epoch=epoch,
            epochs=cfg.epochs,
            step=step,
            total_steps=total_steps,
            losses={k: float(v) / max(count, 1) for k, v in sums.items()},
            layer_losses={k: float(v) / max(count, 1) for k, v in layer_sums.items()},
            clean_acc=None if metrics is None else metrics.clean_acc,
            asr=None if metrics is None else metrics.asr,
            n_clean=0 if metrics is None else metrics.n_clean,
            n_asr=0 if metrics is None else metrics.n_asr,
            holdout_acc=None if held is None else held.clean_acc,
            n_holdout=0 if held is None else held.n_clean,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - start_time,
            stopped=stopped,
            label=label,
        )
        history.append(ev)
        for cb in callbacks:
            cb(ev)

    bar = _progress_bar(total_steps, cfg.progress, label)
    try:
        if first_epoch == 1:
            emit("start", 0, {}, {}, 0, evaluate=cfg.eval_every > 0)
        for epoch in range(first_epoch, cfg.epochs + 1):
            model.train()
            sums: dict[str, torch.Tensor] = {}
            layer_sums: dict[str, torch.Tensor] = {}
            count = 0
            win_sums: dict[str, torch.Tensor] = {}
            win_layers: dict[str, torch.Tensor] = {}
            win_count = 0
            for x, y in iterate_batches(
                data,
                cfg.batch_size,
                shuffle=True,
                generator=generator,
                device=device,
                augment=cfg.augment,
                images_on_device=images_on_device,
                augmentation=augmentation,
            ):
                if stop_event is not None and stop_event.is_set():
                    stopped = True
                    break
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    total, terms, layer_terms = objective.loss(x, y)
                if not bool(torch.isfinite(total.detach())):
                    shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                    raise NonFiniteLossError(
                        f"loss became {float(total.detach()):.4g} at epoch {epoch}, step {step + 1} ({shown}); "
                        "training stopped. Try a lower learning rate (--lr), a smaller τ or λ, or amp=False."
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                step += 1
                count += 1
                win_count += 1
                for store in (sums, win_sums):
                    for k, v in terms.items():
                        store[k] = store.get(k, 0.0) + v.detach().float()
                for store in (layer_sums, win_layers):
                    for k, v in layer_terms.items():
                        store[k] = store.get(k, 0.0) + v.detach().float()
                if bar is not None:
                    bar.update(1)
                if cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
                    emit("step", epoch - 1, win_sums, win_layers, win_count, evaluate=True)
                    win_sums, win_layers, win_count = {}, {}, 0
            if stopped:
                break
            if scheduler is not None:
                scheduler.step()
            evaluate = cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs)
            emit("epoch", epoch, sums, layer_sums, count, evaluate=evaluate)
            if checkpoint is not None:
                checkpoint.save(_state(epoch, step, history, time.perf_counter() - start_time, objective, model,
                                       params, optimizer, scheduler, generator, device), fingerprint)
            if bar is not None:
                last = history[-1]
                post = {k: f"{v:.3f}" for k, v in last.losses.items()}
                if last.clean_acc is not None:
                    post["acc"] = f"{last.clean_acc:.3f}"
                if last.asr is not None:
                    post["asr"] = f"{last.asr:.3f}"
                bar.set_postfix(post, refresh=False)
        done_epoch = history[-1].epoch if history else 0
        emit("end", done_epoch, {}, {}, 0, evaluate=stopped and (evaluator is not None or holdout is not None))
    finally:
        if bar is not None:
            bar.close()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    model.eval()
    check_finite_model(model, f"the trained model{f' ({label})' if label else ''}",
                       "Training diverged: try a lower learning rate (--lr), a smaller τ or λ, or amp=False")
    return TrainResult(model, history, stopped, time.perf_counter() - start_time, step)


def _fingerprint(objective: Objective, data: ImageArrays, cfg: TrainConfig, label: str) -> dict:
    """What identifies a run for :class:`~medic_viz.train_checkpoint.TrainCheckpoint`: the
    settings (not the device or the bar), the data (name, size, content digest, augmentation),
    the label, the objective and the model's state names and shapes; the checkpoint adds the
    method's own settings (:meth:`~medic_viz.train_checkpoint.TrainCheckpoint.for_run`)."""
    settings = {k: v for k, v in cfg.as_dict().items() if k not in ("device", "progress")}
    shapes = {k: list(v.shape) for k, v in objective.model.state_dict().items()}
    return {"settings": settings, "data": [data.name, len(data), data.digest(), repr(data.augmentation)], "label": label,
            "objective": type(objective).__name__, "model": shapes}


def _state(epoch: int, step: int, history: list[TrainEvent], seconds: float, objective: Objective, model: nn.Module,
           params: list, optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator,
           device: torch.device) -> dict:
    """The run's state at the end of ``epoch`` (see :mod:`medic_viz.train_checkpoint`)."""
    return {
        "epoch": epoch, "step": step, "seconds": seconds,
        "history": [e.as_dict() for e in history],
        "model": model.state_dict(),
        "params": [p.detach() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "objective": objective.checkpoint_state(),  # type: ignore[attr-defined]
    }


def _restore(saved: dict, objective: Objective, model: nn.Module, params: list, optimizer: torch.optim.Optimizer,
             scheduler: Any, generator: torch.Generator, device: torch.device) -> tuple[int, list[TrainEvent]]:
    """Put ``saved`` (:func:`_state`) back into the run's objects; returns (step, history)."""
    model.load_state_dict(saved["model"])
    if len(saved["params"]) != len(params):
        raise ValueError(f"the checkpoint holds {len(saved['params'])} trainable tensors, the run {len(params)}; "
                         "delete it to train from the start")
    with torch.no_grad():
        for p, value in zip(params, saved["params"]):
            p.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["cpu_rng"])
    if device.type == "cuda" and saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    objective.load_checkpoint_state(saved["objective"])  # type: ignore[attr-defined]
    return int(saved["step"]), [TrainEvent(**e) for e in saved["history"]]
