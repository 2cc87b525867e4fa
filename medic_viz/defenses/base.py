"""What every defence shares: the result type, the run interface, the configured-defence base
class (MEDIC and every baseline), and the copies a defence makes of the user's model.

A defence never changes the model it is given: it trains a *trainable* copy (fine-tuning
methods), a *fresh* copy of the same structure (MEDIC, KD, scratch training), and reads a
*frozen* copy where it needs the trojaned model as a fixed reference.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import torch
import torch.nn as nn

from medic_viz.capture import eval_mode
from medic_viz.checks import check_number
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.defenses.tunable import TuningSpace
from medic_viz.device import resolve_device
from medic_viz.metrics import Evaluator
from medic_viz.train_checkpoint import TrainCheckpoint
from medic_viz.training import Callback, TrainConfig, TrainEvent

__all__ = [
    "DefenseResult",
    "Defense",
    "ConfiguredDefense",
    "fresh_copy",
    "frozen_copy",
    "trainable_copy",
    "freeze",
    "clean_set_accuracy",
    "check_fraction",
]


@dataclass
class DefenseResult:
    """A repaired model, its event history and how the run went."""

    method: str
    model: nn.Module
    history: list[TrainEvent]
    stopped: bool
    seconds: float
    config: dict = field(default_factory=dict)

    def history_dicts(self) -> list[dict]:
        return [e.as_dict() for e in self.history]


class Defense:
    """Interface of a backdoor-removal method.

    ``run(teacher, clean, evaluator=..., callbacks=..., stop_event=...)`` takes the trojaned
    model (left unchanged) and the defender's small clean set, and returns a
    :class:`DefenseResult`. Events reach ``callbacks`` as the run goes; ``stop_event`` ends
    it within one batch. ``evaluator`` is only used to *report* metrics, never to choose
    hyperparameters or checkpoints.

    ``name``: the method's key in :data:`medic_viz.defenses.registry.DEFENSES`;
    ``display_name``: how tables, figures and event labels call it.
    """

    name: str = "defense"
    display_name: str = ""
    #: Whether ``run(..., checkpoint=TrainCheckpoint(path))`` can save the run every epoch and go
    #: on from it after an interruption (:mod:`medic_viz.train_checkpoint`).
    resumable: ClassVar[bool] = False

    def run(
        self,
        teacher: nn.Module,
        clean: ImageArrays,
        *,
        evaluator: Evaluator | None = None,
        callbacks: Sequence[Callback] = (),
        stop_event: threading.Event | None = None,
    ) -> DefenseResult:  # pragma: no cover - interface
        raise NotImplementedError


class _RunOutcome(Protocol):
    """What :meth:`ConfiguredDefense._run` returns beside the model: an object with the run's
    ``history``, ``stopped`` and ``seconds`` (a :class:`~medic_viz.training.TrainResult` or a
    :class:`~medic_viz.defenses.phases.EventStream`)."""

    @property
    def history(self) -> list[TrainEvent]: ...
    @property
    def stopped(self) -> bool: ...
    @property
    def seconds(self) -> float: ...


class ConfiguredDefense(Defense):
    """A defence driven by a config dataclass (a :class:`TrainConfig` subclass).

    Construction: ``Method(config)`` or ``Method(**overrides)`` or both (the overrides replace
    fields of ``config``); unknown option names and invalid values raise ``ValueError``, a
    config of the wrong class ``TypeError``. The config is validated once, here.

    ``run`` checks its inputs, resolves the device and calls the method's
    ``_run(teacher, clean, device, evaluator, callbacks, stop_event, label, **options)``,
    which returns ``(model, extra config entries, outcome)``; the returned model is put in
    eval mode and the result's ``config`` is the method's config plus the extra entries
    (what the run chose: pruned channels, the curve point …).
    """

    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    #: Options besides ``seed`` that take a run's seed where one seed drives the whole run (a
    #: grid cell: :func:`medic_viz.experiments.method_options`), e.g. a fresh student's init.
    seed_options: ClassVar[tuple[str, ...]] = ()
    #: The run settings (:class:`medic_viz.run_settings.RunSettings` fields) only this method
    #: uses, beside those every method takes (epochs, fraction, device, seed, batch size, lr …):
    #: what the CLI, the launcher and the grid pass it and what they tell it ignores.
    run_settings: ClassVar[tuple[str, ...]] = ()
    #: Config fields whose defaults :meth:`pinned_options` writes out (defaults that changed since
    #: results were recorded under the older ones: a grid cell's id then changes with them).
    pinned_defaults: ClassVar[tuple[str, ...]] = ()
    #: What a grid cell's recorded options mean for a field they leave out, where that is not the
    #: config's current default (:meth:`cell_run_options`; MEDIC: ε, pinned unless it is 1e-5).
    unpinned_values: ClassVar[dict[str, object]] = {}
    #: The method's free settings and their order of strength, for the one tuning rule
    #: (:mod:`medic_viz.experiments.selection`); empty: the defaults are used as they are.
    tuning: ClassVar[TuningSpace] = TuningSpace()
    #: Options a finished run can be read out at again without training (:meth:`readout`).
    readout_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def epoch_options(cls, epochs: int) -> dict[str, object]:
        """One training budget of ``epochs`` mapped onto this method's phases (the main phase
        gets ``epochs``; a method with more phases says what the others get)."""
        return {"epochs": int(epochs)}

    @classmethod
    def pinned_options(cls, options: Mapping[str, object]) -> dict[str, object]:
        """``options`` with the defaults a result depends on written out, so that a grid cell's
        id changes when such a default does (a resumed grid never reuses a run made under other
        defaults). The base class writes out the fields named in :attr:`pinned_defaults` that
        ``options`` does not give."""
        opts = dict(options)
        defaults = cls.config_class()
        for name in cls.pinned_defaults:
            opts.setdefault(name, getattr(defaults, name))
        return opts

    @classmethod
    def cell_run_options(cls, options: Mapping[str, object]) -> dict[str, object]:
        """The options a grid cell recorded with ``options`` (:meth:`pinned_options`) runs with:
        ``options`` over :attr:`unpinned_values`, so a value left out when pinned is run, not the
        config's default of the day."""
        return {**cls.unpinned_values, **options}

    def readout(self, teacher: nn.Module, clean: ImageArrays, **options: Any) -> nn.Module:
        """The model the last :meth:`run` (of ``teacher`` on ``clean``) would have returned had its
        :attr:`readout_options` been ``options`` — without training again (MCR's point on its
        curve, ANP's pruning threshold). ``ValueError`` for another option, or before a run."""
        raise ValueError(f"{self.display_name or self.name} has no option that a finished run can be read out at; "
                         "run it again with the other options")

    def _check_readout(self, options: Mapping[str, Any], state: object) -> None:
        unknown = sorted(set(options) - set(self.readout_options))
        if unknown:
            raise ValueError(f"{self.display_name} reads a finished run out only at {list(self.readout_options)}, "
                             f"not {unknown}; run it again with those options")
        if state is None:
            raise ValueError(f"{self.display_name} has not run yet: call run() before readout()")

    def __init__(self, config: TrainConfig | None = None, **overrides: object) -> None:
        cls = self.config_class
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"{type(self).__name__} needs a {cls.__name__}, got {type(config).__name__}")
        if overrides:
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ValueError(
                    f"unknown {self.display_name or self.name} option(s) {unknown}; options are {sorted(names)}"
                )
            base = asdict(config) if config is not None else {}
            cfg = cls(**{**base, **overrides})  # validated by the dataclass's __post_init__
        elif config is None:
            cfg = cls()  # validated by __post_init__
        else:
            cfg = config
            cfg.validate()  # the caller may have changed its fields since it was built
        self.config = cfg

    def _run_identity(self) -> dict[str, Any]:
        """The config's fields that make one run differ from another (not where or how fast it
        runs: the device, the progress bar, the fused/compiled loss)."""
        return {k: v for k, v in asdict(self.config).items() if k not in ("device", "progress", "fused")}

    def default_label(self) -> str:
        """The label of the run's events when ``run`` is given none."""
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
        checkpoint: TrainCheckpoint | None = None,
    ) -> DefenseResult:
        """Repair a copy of ``teacher`` (left unchanged) using only the clean set ``clean``.
        ``checkpoint``: save the run every epoch and go on from it (only a :attr:`resumable`
        method; ValueError otherwise)."""
        return self._checked_run(teacher, clean, evaluator=evaluator, callbacks=callbacks, stop_event=stop_event, label=label,
                                 checkpoint=checkpoint)

    def _checked_run(
        self,
        teacher: nn.Module,
        clean: ImageArrays,
        *,
        evaluator: Evaluator | None,
        callbacks: Sequence[Callback],
        stop_event: threading.Event | None,
        label: str,
        **options: Any,
    ) -> DefenseResult:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if len(clean) == 0:
            raise ValueError("the clean set is empty; the defender needs some clean training images")
        if options.get("checkpoint") is not None and not self.resumable:
            raise ValueError(f"{self.display_name or self.name} cannot go on from a checkpoint; run it without checkpoint=")
        if options.get("checkpoint", 0) is None:
            del options["checkpoint"]  # a method that cannot resume takes no such argument
        elif "checkpoint" in options:  # tied to every setting of the method, not only the training ones
            options["checkpoint"] = options["checkpoint"].for_run({"method": self.name, "config": self._run_identity()})
        device = resolve_device(self.config.device)
        model, extra, outcome = self._run(
            teacher, clean, device, evaluator, callbacks, stop_event, label or self.default_label(), **options
        )
        model.eval()
        return DefenseResult(self.name, model, outcome.history, outcome.stopped, outcome.seconds,
                             {**asdict(self.config), **extra})

    def _run(
        self,
        teacher: nn.Module,
        clean: ImageArrays,
        device: torch.device,
        evaluator: Evaluator | None,
        callbacks: Sequence[Callback],
        stop_event: threading.Event | None,
        label: str,
    ) -> tuple[nn.Module, dict, _RunOutcome]:  # pragma: no cover - interface
        raise NotImplementedError


# ------------------------------------------------------------------------------------- copies


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with no parameter requiring gradients, in place; returns it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def frozen_copy(model: nn.Module, device: str | torch.device) -> nn.Module:
    """A frozen eval-mode deep copy of ``model`` on ``device`` (the reference a defence reads:
    MEDIC's and KD's teacher, MCR's start point, ANP's masked network). ``model`` is untouched."""
    return freeze(copy.deepcopy(model).to(device))


def trainable_copy(model: nn.Module, device: str | torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device`` in train mode with every parameter trainable
    (what the fine-tuning methods change). ``model`` is untouched."""
    out = copy.deepcopy(model).to(device)
    for p in out.parameters():
        p.requires_grad_(True)
    out.train()
    return out


def fresh_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with the same structure and freshly initialised weights.

    Every submodule with ``reset_parameters`` (conv, linear, norm layers) is re-initialised
    with torch's default scheme under ``seed``; norm running statistics are reset. Works for
    any user ``nn.Module`` built from such layers. ``model`` itself is untouched.
    """
    student = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        for module in student.modules():
            reset_stats = getattr(module, "reset_running_stats", None)
            if reset_stats is not None:
                reset_stats()
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    finally:
        torch.random.set_rng_state(state)
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    return student


# ------------------------------------------------------------------------------------ helpers


@torch.no_grad()
def clean_set_accuracy(model: nn.Module, data: ImageArrays, device: torch.device, batch_size: int = 512) -> float:
    """Accuracy (fraction) of ``model`` on ``data`` — the defender's clean set — in eval mode,
    no augmentation; the model's mode is restored. What methods that must choose something
    (Fine-pruning's stopping point, MCR's curve point) choose it with."""
    with eval_mode(model):
        hits = 0
        for x, y in iterate_batches(data, batch_size, device=device):
            hits += int((model(x).argmax(1) == y).sum())
        return hits / max(len(data), 1)


def check_fraction(value: object, what: str) -> float:
    """``value`` as a float in [0, 1] (a number, not a string or bool), or ``ValueError``
    naming ``what`` (:func:`medic_viz.checks.check_number`)."""
    return check_number(what, value, 0.0, 1.0)
