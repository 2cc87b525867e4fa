"""Pure state objects behind the interactive apps: no ipywidgets, no IPython, testable in plain Python.

Each state holds parameters and results and tells *listeners* what changed (the pattern of
mpl-interactions' controller): a view registers ``state.add_listener(fn)`` and redraws when
``fn(change)`` is called with a :class:`StateChange`. Scripts and tests drive the same objects
directly: set ``state.tau = 10``, call ``state.launch()``, ``state.stop()``, ``state.wait()``.

- :class:`LauncherState`: defence runs (MEDIC or a baseline of
  :mod:`medic_viz.defenses.baselines`) in a background thread (one at a time) with a stop
  event; every training event is appended to the run's history and announced to listeners
  *from the training thread* (views must throttle their redraws). Runs are kept, each labelled
  with its method (and τ, λ for MEDIC), with its status, error message, and resulting
  model/history.
- :class:`ExplorerState`: τ, layer, criterion and channel reduction over one cached
  :class:`medic_viz.analysis.InputAnalysis`; maps are recomputed from the cache, never by
  running the model again.
- :class:`PickerState`: a gallery of clean test images (or one's own image or model), the
  chosen trigger and layer, and the Figure-2 panels of the chosen input.
"""

from __future__ import annotations

import copy
import io
import math
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.attacks.triggers import AVAILABLE_TRIGGERS, Trigger, make_trigger
from medic_viz.data.arrays import DatasetSplits, ImageArrays, clean_subset
from medic_viz.defenses.base import Defense, DefenseResult
from medic_viz.defenses.baselines import DISPLAY_NAMES, available_defenses, defense_class, make_defense
from medic_viz.defenses.medic import compute_layer_stats
from medic_viz.importance import LayerStats, validate_tau
from medic_viz.metrics import BackdoorMetrics, Evaluator, evaluate_backdoor, resolve_device
from medic_viz.training import TrainEvent

__all__ = [
    "StateChange",
    "Listener",
    "Observable",
    "RUN_STATUSES",
    "DEVICE_CHOICES",
    "method_choices",
    "RunRecord",
    "LauncherState",
    "ExplorerState",
    "PickerState",
    "run_label",
]

#: Statuses of a :class:`RunRecord`, in the order a run can go through them.
RUN_STATUSES: tuple[str, ...] = ("running", "done", "stopped", "error")
#: Device choices offered by the launcher ("auto" = CUDA, else MPS, else CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Launcher settings that ``options=`` / ``baseline_options=`` must not repeat.
_LAUNCHER_SETTINGS = frozenset({"tau", "lam", "epochs", "device", "eval_every_steps", "batch_size", "lr", "seed",
                                "progress", "eval_every"})


def method_choices() -> list[str]:
    """Method names the launcher runs, MEDIC first, then the baselines (``"finetune"``, ``"nad"`` …)."""
    names = available_defenses()
    return ["medic"] + [n for n in names if n != "medic"]


def _method_key(method: Any) -> str | None:
    """The canonical method name (aliases such as ``"Fine-tuning"`` accepted), None if unknown."""
    try:
        return defense_class(method).name
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# listeners
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChange:
    """What changed in a state object.

    ``kind``: ``"param"`` (``name`` set to ``value``), ``"launch"`` (a run was added),
    ``"event"`` (``event`` appended to ``run``), ``"status"`` (``run`` ended: done, stopped or
    error), ``"clear"`` (finished runs removed), ``"analysis"`` (a new input was analysed).
    """

    kind: str
    name: str | None = None
    value: Any = None
    run: "RunRecord | None" = None
    event: TrainEvent | None = None


Listener = Callable[[StateChange], None]


class Observable:
    """Listener registry. A listener that raises does not break the state (or a training run):
    the error is kept in ``listener_errors`` (text with traceback) and a warning is issued."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._listener_lock = threading.Lock()
        self.listener_errors: list[str] = []

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener(change)`` on every change; returns it (usable as a decorator)."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {type(listener).__name__}")
        with self._listener_lock:
            self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        with self._listener_lock:
            if listener not in self._listeners:
                raise ValueError("this listener is not registered")
            self._listeners.remove(listener)

    def _notify(self, change: StateChange) -> None:
        with self._listener_lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(change)
            except Exception as exc:  # a broken view must not kill the run; keep the error visible
                self.listener_errors.append(f"{getattr(fn, '__qualname__', fn)!s}: {traceback.format_exc()}")
                warnings.warn(f"listener {getattr(fn, '__qualname__', fn)!s} raised {type(exc).__name__}: {exc}",
                              RuntimeWarning, stacklevel=2)


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got bool")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


# ------------------------------------------------------------------------------------------
# launcher
# ------------------------------------------------------------------------------------------


def run_label(tau: Any, lam: Any, method: str = "medic") -> str:
    """The label of a run: ``"MEDIC τ=5 λ=10"`` for MEDIC, the method's display name for a
    baseline (``"NAD"``, ``"Fine-tuning"``: τ and λ do not apply); an unknown method as given."""

    def fmt(v: Any) -> str:
        try:
            return f"{float(v):g}"
        except (TypeError, ValueError):
            return repr(v)

    key = _method_key(method)
    if key is None:
        return str(method)
    if key != "medic":
        return DISPLAY_NAMES.get(key, key)
    return f"MEDIC τ={fmt(tau)} λ={fmt(lam)}"


@dataclass(eq=False)
class RunRecord:
    """One defence run started by :class:`LauncherState`.

    ``label``: ``"MEDIC τ=5 λ=10"`` or a baseline's name such as ``"NAD"`` (``" #2"`` …
    appended when the same label ran before); ``params``: the launcher settings it ran with;
    ``note``: a remark on those settings (a baseline ignores τ and λ), or None;
    ``status``: one of :data:`RUN_STATUSES`;
    ``events``: :class:`TrainEvent` objects in order; ``error``: ``"Type: message"`` if the run
    raised (``traceback`` has the details); ``result``: the :class:`DefenseResult` (model and
    history) once it ended without error; ``after``: clean accuracy / ASR of the final model on
    the whole test set (runs that finished, not stopped ones); times are ``time.perf_counter()``.
    """

    index: int
    label: str
    params: dict[str, Any]
    note: str | None = None
    status: str = "running"
    events: list[TrainEvent] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    result: DefenseResult | None = None
    after: BackdoorMetrics | None = None
    started_at: float = field(default_factory=time.perf_counter)
    ended_at: float | None = None
    stop_requested_at: float | None = None
    _stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _new_event: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def model(self) -> nn.Module | None:
        """The repaired model (None until the run ended without error)."""
        return None if self.result is None else self.result.model

    @property
    def history(self) -> list[TrainEvent]:
        return list(self.events)

    @property
    def seconds(self) -> float:
        """Wall time so far (or in total once ended)."""
        return (self.ended_at if self.ended_at is not None else time.perf_counter()) - self.started_at

    @property
    def stop_latency(self) -> float | None:
        """Seconds from the stop request to the end of the run (None if not stopped by request)."""
        if self.stop_requested_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.stop_requested_at

    @property
    def progress(self) -> tuple[int, int]:
        """``(steps done, total steps)`` from the latest event (``(0, 0)`` before the first)."""
        for ev in reversed(self.events):
            return ev.step, ev.total_steps
        return 0, 0

    @property
    def latest_metrics(self) -> TrainEvent | None:
        """The latest event that carries clean accuracy (and ASR if a trigger is known)."""
        for ev in reversed(self.events):
            if ev.clean_acc is not None:
                return ev
        return None

    def stop(self) -> None:
        """Ask the run to end (within one training batch)."""
        if self.stop_requested_at is None and self.running:
            self.stop_requested_at = time.perf_counter()
        self._stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended (True) or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)

    def wait_for_event(self, kind: str | None = None, timeout: float | None = None) -> TrainEvent | None:
        """Block until the run emits an event (of ``kind`` if given: "start", "step", "epoch",
        "end") after this call, and return it; None if the run ended or ``timeout`` passed first."""
        if kind is not None and kind not in ("start", "step", "epoch", "end"):
            raise ValueError(f"kind must be None, 'start', 'step', 'epoch' or 'end', got {kind!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._new_event:
            seen = len(self.events)
            while True:
                for ev in self.events[seen:]:
                    if kind is None or ev.kind == kind:
                        return ev
                seen = len(self.events)
                if self._done.is_set():
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._new_event.wait(left)

    def _append(self, event: TrainEvent) -> None:
        with self._new_event:
            self.events.append(event)
            self._new_event.notify_all()

    def _wake(self) -> None:
        with self._new_event:
            self._new_event.notify_all()

    def curve(self) -> dict[str, list[float]]:
        """Live metrics: ``{"x": epochs (fractional), "clean_acc": [%], "asr": [% or NaN]}``."""
        xs, acc, asr = [], [], []
        for ev in list(self.events):
            if ev.clean_acc is None:
                continue
            xs.append(_epoch_x(ev))
            acc.append(100.0 * ev.clean_acc)
            asr.append(float("nan") if ev.asr is None else 100.0 * ev.asr)
        return {"x": xs, "clean_acc": acc, "asr": asr}

    def loss_curves(self) -> dict[str, tuple[list[float], list[float]]]:
        """``{loss name: (epochs, values)}``: means since the previous step event when the run
        evaluates every k steps, else per-epoch means (mixing the two would draw a sawtooth)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        events = list(self.events)
        kind = "step" if any(ev.kind == "step" for ev in events) else "epoch"
        for ev in events:
            if ev.kind != kind:
                continue
            for k, v in ev.losses.items():
                xs, ys = out.setdefault(k, ([], []))
                xs.append(_epoch_x(ev))
                ys.append(float(v))
        return out

    def summary(self) -> str:
        """One line: label, status, latest metrics, time, the note and the error if any."""
        parts = [f"{self.label}: {self.status}"]
        last = self.latest_metrics
        if last is not None:
            asr = "" if last.asr is None else f", ASR {100 * last.asr:.1f}%"
            parts.append(f"epoch {_epoch_x(last):.2f}/{last.epochs}: clean acc {100 * last.clean_acc:.1f}%{asr}")
        if self.after is not None:
            parts.append(f"whole test set: {self.after}")
        parts.append(f"{self.seconds:.1f} s")
        if self.note:
            parts.append(self.note)
        if self.error:
            parts.append(self.error)
        return " | ".join(parts)


def _epoch_x(ev: TrainEvent) -> float:
    if ev.total_steps:
        return ev.epochs * ev.step / ev.total_steps
    return float(ev.epoch)


class _Param:
    """A notifying state parameter (stored in ``obj._params``; a change calls listeners)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._params[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj._set_param(self.name, value)


class LauncherState(Observable):
    """Backdoor-removal runs (MEDIC or a baseline) on a trojaned ``teacher`` from the clean
    data of ``splits``, in a background thread, with live events and several runs kept for
    comparison.

    Parameters (attributes; setting one notifies listeners; they are checked at launch):
    ``method`` (one of :func:`method_choices`, i.e. ``"medic"`` or a name of
    :func:`medic_viz.defenses.baselines.available_defenses`; aliases such as ``"Fine-tuning"``
    are stored under their canonical name), ``tau`` (τ ≥ 0) and ``lam`` (λ ≥ 0) — MEDIC's
    settings, ignored by the baselines (their runs carry a ``note`` saying so) —, ``epochs``
    (≥ 1), ``fraction`` (share of the training set used as the defender's clean data, in
    (0, 1]), ``device`` (one of :data:`DEVICE_CHOICES` or a torch device string),
    ``eval_every_steps`` (None/0 = evaluate once per epoch; k = also every k steps, for
    smoother live curves).

    A baseline gets ``epochs`` as one budget spread over its phases as in
    :func:`medic_viz.experiments.method_options`: NAD fine-tunes its teacher ``epochs // 2``
    epochs (at least 1) and then trains ``epochs``; MCR trains its endpoint and its curve
    ``epochs`` each; ANP optimises its masks ``epochs`` epochs instead of 2000 iterations.

    Other settings: ``trigger``/``target`` (to measure ASR; None = clean accuracy only),
    ``batch_size`` and ``lr`` (None = the method's default: 64 and Adam 1e-2 for MEDIC),
    ``seed`` (clean-subset and training seed), ``eval_images`` (live curves use this many test
    images; None = all), ``final_eval`` (measure a finished run's model on the whole test
    set), ``options`` (further :class:`~medic_viz.defenses.medic.MedicConfig` fields, for
    MEDIC runs), ``baseline_options`` (``{method: {config field: value}}`` for baseline runs,
    e.g. ``{"anp": {"iterations": 2000}}``).

    :meth:`launch` never raises for bad settings: the run is recorded with status ``"error"``
    and the message, so a view shows it. Only one run at a time (launching while one runs
    raises ``RuntimeError``).
    """

    method = _Param()
    tau = _Param()
    lam = _Param()
    epochs = _Param()
    fraction = _Param()
    device = _Param()
    eval_every_steps = _Param()

    PARAMS: tuple[str, ...] = ("method", "tau", "lam", "epochs", "fraction", "device", "eval_every_steps")

    def __init__(
        self,
        teacher: nn.Module,
        splits: DatasetSplits,
        *,
        trigger: Trigger | None = None,
        target: int | None = None,
        method: str = "medic",
        tau: float = 5.0,
        lam: float = 10.0,
        epochs: int = 20,
        fraction: float = 0.05,
        device: str = "auto",
        eval_every_steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        eval_images: int | None = 500,
        final_eval: bool = True,
        options: Mapping[str, Any] | None = None,
        baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if not isinstance(splits, DatasetSplits):
            raise TypeError(
                f"splits must be DatasetSplits (e.g. medic_viz.load_dataset('signs')), got {type(splits).__name__}"
            )
        if (trigger is None) != (target is None):
            raise ValueError("give both trigger= and target= to follow the ASR, or neither")
        if trigger is not None and not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a medic_viz Trigger, got {type(trigger).__name__}")
        if eval_images is not None and int(eval_images) < 1:
            raise ValueError(f"eval_images must be >= 1 or None (all), got {eval_images}")
        self.teacher = teacher
        self.splits = splits
        self.trigger = trigger
        self.target = None if target is None else int(target)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be >= 1 or None (the method's default), got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.lr = None if lr is None else _float(lr, "lr")
        self.seed = int(seed)
        self.eval_images = None if eval_images is None else int(eval_images)
        self.final_eval = bool(final_eval)
        self.options = dict(options or {})
        self.baseline_options = self._check_baseline_options(baseline_options)
        self.baseline: BackdoorMetrics | None = None
        self._params: dict[str, Any] = {}
        for name, value in (("method", _method_key(method) or method), ("tau", tau), ("lam", lam),
                            ("epochs", epochs), ("fraction", fraction), ("device", device),
                            ("eval_every_steps", eval_every_steps)):
            self._params[name] = value
        self._runs: list[RunRecord] = []
        self._lock = threading.RLock()
        self._clean_cache: dict[tuple[float, int], ImageArrays] = {}
        self._evaluators: dict[str, Evaluator] = {}

    @classmethod
    def from_demo(cls, name: str = "badnet", **settings: Any) -> "LauncherState":
        """A launcher on a shipped demo model (:func:`medic_viz.pretrained.load_demo_model`),
        its dataset, trigger and target; ``settings`` as in the constructor."""
        from medic_viz.data import load_dataset
        from medic_viz.pretrained import load_demo_model
        from medic_viz.pipeline import trigger_of

        teacher, card = load_demo_model(name)
        trigger, target = trigger_of(card)
        splits = load_dataset(card.dataset or "signs", size=card.input_size)
        return cls(teacher, splits, trigger=trigger, target=target, **settings)

    @staticmethod
    def _check_baseline_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, opts in (options or {}).items():
            key = _method_key(name)
            if key is None or key == "medic":
                raise ValueError(f"baseline_options keys must be baseline names {method_choices()[1:]}, got {name!r}"
                                 + (" (give MEDIC's options with options=)" if key == "medic" else ""))
            if not isinstance(opts, Mapping):
                raise TypeError(f"baseline_options[{name!r}] must be a dict of config fields, got {type(opts).__name__}")
            clash = _LAUNCHER_SETTINGS & set(opts)
            if clash:
                raise ValueError(f"baseline_options[{name!r}] must not repeat launcher settings {sorted(clash)}; "
                                 "set them on the state")
            out[key] = dict(opts)
        return out

    # -- parameters ---------------------------------------------------------------------------
    def _set_param(self, name: str, value: Any) -> None:
        if name == "method":
            value = _method_key(value) or value  # canonical name; an unknown one is reported at launch
        if self._params.get(name) == value and type(self._params.get(name)) is type(value):
            return
        self._params[name] = value
        self._notify(StateChange("param", name=name, value=value))

    def set(self, **params: Any) -> None:
        """Set several parameters at once (each notifies)."""
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise ValueError(f"unknown launcher parameter(s) {sorted(unknown)}; parameters are {list(self.PARAMS)}")
        for k, v in params.items():
            setattr(self, k, v)

    @property
    def params(self) -> dict[str, Any]:
        """The current parameters as a dict."""
        return dict(self._params)

    # -- runs ---------------------------------------------------------------------------------
    @property
    def runs(self) -> list[RunRecord]:
        """All runs, oldest first (a copy of the list)."""
        with self._lock:
            return list(self._runs)

    @property
    def current(self) -> RunRecord | None:
        """The run in progress, if any."""
        with self._lock:
            for r in reversed(self._runs):
                if r.running:
                    return r
        return None

    @property
    def running(self) -> bool:
        return self.current is not None

    @property
    def latest(self) -> RunRecord | None:
        with self._lock:
            return self._runs[-1] if self._runs else None

    @property
    def result(self) -> DefenseResult | None:
        """The result (model, history) of the latest run that produced one (done or stopped)."""
        with self._lock:
            for r in reversed(self._runs):
                if r.result is not None:
                    return r.result
        return None

    @property
    def model(self) -> nn.Module | None:
        """The repaired model of the latest run that produced one."""
        res = self.result
        return None if res is None else res.model

    def _defense(self, params: Mapping[str, Any]) -> tuple[Defense, float, str | None]:
        """The defence the settings describe, the clean fraction, and a note on the settings."""
        method = _method_key(params["method"])
        if method is None:
            raise ValueError(f"unknown method {params['method']!r}; choose one of {method_choices()}")
        fraction = _float(params["fraction"], "fraction")
        if not (0.0 < fraction <= 1.0):
            raise ValueError(f"fraction (share of the training set used as clean data) must be in (0, 1], got {fraction}")
        epochs = params["epochs"]
        if isinstance(epochs, bool) or not float(epochs).is_integer():
            raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
        every = params["eval_every_steps"]
        if every in (None, 0):
            every = None
        elif isinstance(every, bool) or not float(every).is_integer() or int(every) < 0:
            raise ValueError(f"eval_every_steps must be None/0 (per epoch) or a positive whole number, got {every!r}")
        device = str(params["device"])
        resolve_device(device)  # raises ValueError naming what is available
        common: dict[str, Any] = {"epochs": int(epochs), "device": device, "progress": False, "eval_every": 1,
                                  "eval_every_steps": None if every is None else int(every)}
        if self.batch_size is not None:
            common["batch_size"] = self.batch_size
        if self.lr is not None:
            common["lr"] = self.lr
        if method == "medic":
            clash = _LAUNCHER_SETTINGS & set(self.options)
            if clash:
                raise ValueError(f"options= must not repeat launcher settings {sorted(clash)}; set them on the state")
            defense = make_defense("medic", tau=_float(params["tau"], "tau"), lam=_float(params["lam"], "lam"),
                                   seed=self.seed, **common, **self.options)
            return defense, fraction, None
        from medic_viz.experiments import method_options

        opts = method_options(method, epochs=int(epochs), seed=self.seed, device=device)
        opts.update(common)
        opts.update(self.baseline_options.get(method, {}))
        note = f"τ and λ are MEDIC settings: {DISPLAY_NAMES.get(method, method)} ignores them"
        return make_defense(method, **opts), fraction, note

    def _unique_label(self, label: str) -> str:
        same = sum(1 for r in self._runs if r.label == label or r.label.startswith(label + " #"))
        return label if same == 0 else f"{label} #{same + 1}"

    def launch(self) -> RunRecord:
        """Start a run of ``method`` with the current parameters in a background thread; returns its record.

        Settings errors give a record with status ``"error"`` (no thread). Raises
        ``RuntimeError`` if a run is already in progress.
        """
        with self._lock:  # listeners are called outside the lock (a view may redraw from another thread)
            if self.current is not None:
                raise RuntimeError(f"a run is in progress ({self.current.label}); stop it or wait for it first")
            params = self.params
            label = run_label(params["tau"], params["lam"], params["method"])
            record = RunRecord(index=len(self._runs), label=self._unique_label(label), params=params)
            try:
                defense, fraction, record.note = self._defense(params)
                failure = None
            except Exception as exc:
                self._fail(record, exc)
                record.status = "error"  # recorded as ended before anyone can see it running
                failure = exc
            self._runs.append(record)
        self._notify(StateChange("launch", run=record))
        if failure is not None:
            self._finish(record, "error")
            return record
        thread = threading.Thread(target=self._run, args=(record, defense, fraction),
                                  name=f"medic-viz-run-{record.index}", daemon=True)
        record._thread = thread
        thread.start()
        return record

    def stop(self) -> RunRecord | None:
        """Ask the run in progress to end (within one batch); returns it (None if none runs)."""
        run = self.current
        if run is not None:
            run.stop()
        return run

    def wait(self, timeout: float | None = None) -> RunRecord | None:
        """Wait for the run in progress to end; returns the latest run (None if there was none).

        Raises ``TimeoutError`` if it still runs after ``timeout`` seconds.
        """
        run = self.current
        if run is not None and not run.wait(timeout):
            raise TimeoutError(f"run {run.label} still in progress after {timeout} s")
        return self.latest

    def clear(self) -> None:
        """Forget all finished runs (a run in progress is kept)."""
        with self._lock:
            self._runs = [r for r in self._runs if r.running]
        self._notify(StateChange("clear"))

    # -- the background job -------------------------------------------------------------------
    def _clean(self, fraction: float) -> ImageArrays:
        key = (fraction, self.seed)
        if key not in self._clean_cache:
            self._clean_cache[key] = clean_subset(self.splits.train, fraction, self.seed)
        return self._clean_cache[key]

    def _evaluator(self, device: torch.device) -> Evaluator:
        key = str(device)
        if key not in self._evaluators:
            self._evaluators[key] = Evaluator(self.splits.test, self.trigger, self.target,
                                              max_images=self.eval_images, seed=self.seed, device=device)
        return self._evaluators[key]

    def _on_event(self, record: RunRecord, event: TrainEvent) -> None:
        record._append(event)
        self._notify(StateChange("event", run=record, event=event))

    def _run(self, record: RunRecord, defense: Defense, fraction: float) -> None:
        status = "error"
        try:
            device = resolve_device(defense.config.device)
            clean = self._clean(fraction)
            evaluator = self._evaluator(device)
            if self.baseline is None:
                self.baseline = evaluator(copy.deepcopy(self.teacher).to(device))
            result = defense.run(
                self.teacher, clean, evaluator=evaluator, callbacks=[lambda ev: self._on_event(record, ev)],
                stop_event=record._stop_event, label=record.label,
            )
            record.result = result
            status = "stopped" if result.stopped else "done"
            if status == "done" and self.final_eval and not record._stop_event.is_set():
                record.after = evaluate_backdoor(result.model, self.splits.test, self.trigger, self.target, device=device)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the view
            self._fail(record, exc)
            status = "error"
        finally:
            self._finish(record, status)

    @staticmethod
    def _fail(record: RunRecord, exc: BaseException) -> None:
        record.error = f"{type(exc).__name__}: {exc}"
        record.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def _finish(self, record: RunRecord, status: str) -> None:
        record.ended_at = time.perf_counter()
        record.status = status
        try:
            self._notify(StateChange("status", run=record, value=status))
        finally:
            record._done.set()  # after the listeners: wait() returns once views know the run ended
            record._wake()

    def __repr__(self) -> str:
        p = self.params
        return (f"LauncherState(method={p['method']!r}, τ={p['tau']}, λ={p['lam']}, epochs={p['epochs']}, fraction={p['fraction']}, "
                f"device={p['device']!r}, {len(self._runs)} run(s){', running' if self.running else ''})")


# ------------------------------------------------------------------------------------------
# importance explorer
# ------------------------------------------------------------------------------------------

_CRITERIA = ("combined", "activation", "impact")
_REDUCTIONS = ("mean_abs", "max_abs", "mean", "max")


class _ParamAttributes(Observable):
    """Parameters named in ``PARAMS`` (stored in ``self._params``) read and written as
    attributes; writing one goes through ``self.set(...)``, which validates and notifies."""

    PARAMS: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).PARAMS:
            self.set(**{name: value})
        else:
            super().__setattr__(name, value)

    def _check(self, name: str, value: Any) -> Any:  # pragma: no cover - each state defines it
        raise NotImplementedError

    def set(self, **params: Any) -> None:
        """Set parameters (validated first, all or none), then notify once per changed one."""
        checked = {k: self._check(k, v) for k, v in params.items()}
        changed = [k for k, v in checked.items() if self._params[k] != v]
        self._params.update(checked)
        for k in changed:
            self._notify(StateChange("param", name=k, value=checked[k]))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)


class ExplorerState(_ParamAttributes):
    """τ / layer / criterion / reduction over one :class:`medic_viz.analysis.InputAnalysis`.

    Nothing here runs the model: :meth:`maps` and :meth:`importance_map` read the analysis'
    cache. Parameters: ``tau`` (≥ 0), ``layer`` (one of ``layers``), ``criteria``
    (``"combined"`` eq.4, ``"activation"`` eq.2, ``"impact"`` eq.3), ``reduction`` over
    channels (``"mean_abs"``, ``"max_abs"``, ``"mean"``, ``"max"``). Setting one validates it
    (``ValueError``) and notifies listeners.
    """

    PARAMS: tuple[str, ...] = ("tau", "layer", "criteria", "reduction")
    CRITERIA: tuple[str, ...] = _CRITERIA
    REDUCTIONS: tuple[str, ...] = _REDUCTIONS

    def __init__(
        self,
        analysis: Any,
        *,
        tau: float = 5.0,
        layer: str | None = None,
        criteria: str = "combined",
        reduction: str = "mean_abs",
    ) -> None:
        super().__init__()
        for attr in ("importance", "maps", "layers"):
            if not hasattr(analysis, attr):
                raise TypeError(
                    "analysis must be a medic_viz.analysis.InputAnalysis (from analyze_input(...)), "
                    f"got {type(analysis).__name__}"
                )
        self.analysis = analysis
        default_layer = (getattr(analysis, "map_layers", None) or analysis.layers)[-1] if layer is None else layer
        self._params: dict[str, Any] = {}
        self._params["tau"] = self._check("tau", tau)
        self._params["layer"] = self._check("layer", default_layer)
        self._params["criteria"] = self._check("criteria", criteria)
        self._params["reduction"] = self._check("reduction", reduction)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        image: torch.Tensor,
        trigger: Trigger,
        label: int,
        *,
        stats: Mapping[str, LayerStats] | ImageArrays,
        layers: Iterable[str] | None = None,
        class_names: Sequence[str] | None = None,
        **params: Any,
    ) -> "ExplorerState":
        """Analyse one input (:func:`medic_viz.analysis.analyze_input`) and explore it."""
        from medic_viz.analysis import analyze_input

        analysis = analyze_input(model, image, trigger, label, stats=stats, layers=layers, class_names=class_names)
        return cls(analysis, **params)

    def _check(self, name: str, value: Any) -> Any:
        if name == "tau":
            return validate_tau(value)
        if name == "layer":
            if value not in self.analysis.layers:
                raise ValueError(f"layer {value!r} was not analysed; choose one of {list(self.analysis.layers)[:12]}")
            return value
        if name == "criteria":
            key = "combined" if value == "both" else value
            if key not in _CRITERIA:
                raise ValueError(f"criteria must be one of {_CRITERIA}, got {value!r}")
            return key
        if name == "reduction":
            if value not in _REDUCTIONS:
                raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {value!r}")
            return value
        raise ValueError(f"unknown explorer parameter {name!r}; parameters are {list(self.PARAMS)}")

    @property
    def layers(self) -> list[str]:
        return list(self.analysis.layers)

    def maps(self, which: str = "clean") -> dict[str, np.ndarray]:
        """Figure-2 maps of the current layer at the current τ and reduction (from the cache):
        ``clean``, ``triggered``, ``difference``, ``activation``, ``impact``, ``combined``."""
        return self.analysis.maps(self.layer, self.tau, self.reduction, which=which)

    def importance_map(self, which: str = "clean") -> np.ndarray:
        """The selected criterion's importance map of the current layer for the ``which`` input."""
        return self.maps(which)[self.criteria]

    def importance(self, which: str = "clean") -> torch.Tensor:
        """The selected criterion's importance of every neuron of the current layer (sums to 1)."""
        return self.analysis.importance(self.tau, self.criteria, which=which, layers=[self.layer])[self.layer]

    def effective_fraction(self, which: str = "clean") -> float:
        """How spread the importance is: ``exp(entropy) / m`` of the current layer's ``m`` weights.

        1 = uniform (τ = 0, plain cloning); small = a few neurons take all the weight.
        """
        w = self.importance(which).detach().double().flatten()
        w = w / w.sum()
        nz = w[w > 0]
        entropy = float(-(nz * nz.log()).sum())
        return math.exp(entropy) / w.numel()

    def __repr__(self) -> str:
        return f"ExplorerState({self.params})"


# ------------------------------------------------------------------------------------------
# input picker
# ------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class PickerState(_ParamAttributes):
    """Choose an input (a gallery image of ``data`` or one's own) and a trigger and layer; get
    the Figure-2 analysis of it (:func:`medic_viz.analysis.analyze_input`).

    ``data``: clean images to pick from (usually the test split); ``trigger``/``target``: the
    model's attack if known (listed first as ``"model: <name>"``); ``triggers``: extra
    ``{name: Trigger}`` to try (default: every built-in trigger with its default settings);
    ``stats``: layer statistics (default: estimated from ``stats_images`` images of ``data``);
    ``gallery_per_class`` images of each class, at most ``gallery_size`` in all.

    Parameters (setting one notifies): ``choice`` (gallery position, or ``-1`` for a loaded
    image), ``trigger_name``, ``layer``, ``tau``. :attr:`analysis` is recomputed only when the
    image, trigger or model changes (one forward/backward pass of two images), never for a
    layer or τ change.
    """

    PARAMS: tuple[str, ...] = ("choice", "trigger_name", "layer", "tau")
    CUSTOM = -1

    def __init__(
        self,
        model: nn.Module,
        data: ImageArrays,
        *,
        trigger: Trigger | None = None,
        target: int | None = None,
        triggers: Mapping[str, Trigger] | None = None,
        stats: Mapping[str, LayerStats] | None = None,
        stats_images: int = 500,
        layers: Iterable[str] | None = None,
        layer: str | None = None,
        tau: float = 5.0,
        gallery_per_class: int = 1,
        gallery_size: int = 12,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(data, ImageArrays):
            raise TypeError(f"data must be ImageArrays (e.g. splits.test), got {type(data).__name__}")
        if int(gallery_per_class) < 1 or int(gallery_size) < 1:
            raise ValueError("gallery_per_class and gallery_size must be >= 1")
        self.data = data
        self.target = None if target is None else int(target)
        self.stats_images = int(stats_images)
        self.seed = int(seed)
        self._layers_wanted = None if layers is None else list(layers)
        self.triggers: dict[str, Trigger] = {}
        if trigger is not None:
            if not isinstance(trigger, Trigger):
                raise TypeError(f"trigger must be a medic_viz Trigger, got {type(trigger).__name__}")
            self.triggers[f"model: {trigger.name}"] = trigger
        for name, trig in (triggers if triggers is not None else {n: make_trigger(n) for n in AVAILABLE_TRIGGERS}).items():
            if not isinstance(trig, Trigger):
                raise TypeError(f"triggers[{name!r}] must be a medic_viz Trigger, got {type(trig).__name__}")
            self.triggers.setdefault(str(name), trig)
        if not self.triggers:
            raise ValueError("no trigger to show: pass trigger= or triggers=")
        self.gallery: list[int] = self._gallery(int(gallery_per_class), int(gallery_size))
        self.model = model.eval()
        self.stats: dict[str, LayerStats] = dict(stats) if stats is not None else self._estimate_stats()
        self._custom: tuple[torch.Tensor, int] | None = None
        self._analysis: Any = None
        self._analysis_key: tuple | None = None
        self._version = 0
        self._params: dict[str, Any] = {"choice": 0, "trigger_name": next(iter(self.triggers)), "layer": None,
                                        "tau": validate_tau(tau)}
        names = self.layers
        self._params["layer"] = self._check_layer(layer if layer is not None else self._default_layer(names))

    # -- setup --------------------------------------------------------------------------------
    def _gallery(self, per_class: int, size: int) -> list[int]:
        labels = self.data.labels
        picked: list[int] = []
        for k in range(per_class):
            for c in range(self.data.num_classes):
                idx = torch.nonzero(labels == c).flatten()
                if len(idx) > k:
                    picked.append(int(idx[k]))
        if not picked:
            raise ValueError("the data has no images to show")
        return picked[:size]

    def _estimate_stats(self) -> dict[str, LayerStats]:
        n = min(self.stats_images, len(self.data))
        sample = clean_subset(self.data, n / len(self.data), self.seed) if n < len(self.data) else self.data
        return compute_layer_stats(self.model, sample, self._layers_wanted, device=_model_device(self.model))

    @staticmethod
    def _default_layer(names: Sequence[str]) -> str:
        return names[len(names) // 2]

    @property
    def layers(self) -> list[str]:
        """Analysed layers (those with statistics)."""
        return list(self.stats)

    def _check_layer(self, layer: Any) -> str:
        if layer not in self.stats:
            raise ValueError(f"layer {layer!r} has no statistics; choose one of {self.layers[:12]}")
        return layer

    # -- parameters ---------------------------------------------------------------------------
    def _check(self, name: str, value: Any) -> Any:
        if name == "choice":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"choice must be a gallery position (int), got {type(value).__name__}")
            value = int(value)
            if value == self.CUSTOM:
                if self._custom is None:
                    raise ValueError("no image of your own is loaded yet; call load_image(...) first")
                return value
            if not 0 <= value < len(self.gallery):
                raise ValueError(f"choice must be a gallery position in 0..{len(self.gallery) - 1} (or -1 for a loaded image), got {value}")
            return value
        if name == "trigger_name":
            if value not in self.triggers:
                raise ValueError(f"unknown trigger {value!r}; choose one of {list(self.triggers)}")
            return value
        if name == "layer":
            return self._check_layer(value)
        if name == "tau":
            return validate_tau(value)
        raise ValueError(f"unknown picker parameter {name!r}; parameters are {list(self.PARAMS)}")

    def choose(self, position: int) -> None:
        """Show gallery image ``position``."""
        self.set(choice=position)

    # -- inputs -------------------------------------------------------------------------------
    @property
    def trigger(self) -> Trigger:
        return self.triggers[self.trigger_name]

    @property
    def image(self) -> torch.Tensor:
        """The chosen input, float ``(C, H, W)`` in [0, 1]."""
        if self.choice == self.CUSTOM and self._custom is not None:
            return self._custom[0]
        return self.data.floats(torch.tensor([self.gallery[self.choice]]))[0]

    @property
    def label(self) -> int:
        """The true class of the chosen input (a loaded image: the label given, or the model's prediction)."""
        if self.choice == self.CUSTOM and self._custom is not None:
            return self._custom[1]
        return int(self.data.labels[self.gallery[self.choice]])

    def class_name(self, label: int) -> str:
        classes = self.data.classes
        return classes[label] if 0 <= label < len(classes) else str(label)

    def gallery_images(self) -> list[np.ndarray]:
        """Gallery thumbnails as uint8 ``(H, W, C)`` arrays, in gallery order."""
        imgs = self.data.images[torch.tensor(self.gallery)]
        return [im.permute(1, 2, 0).numpy() for im in imgs]

    def gallery_labels(self) -> list[str]:
        return [self.class_name(int(self.data.labels[i])) for i in self.gallery]

    def load_image(self, source: Any, label: int | None = None) -> None:
        """Use one's own image: a file path, PNG/JPEG bytes, a PIL image, a uint8 or float
        array ``(H, W, C)``/``(H, W)``, or a float tensor ``(C, H, W)`` in [0, 1]. It is converted
        to the data's channels and size. ``label``: its true class (default: the model's
        prediction, since a user's image has none). Selects it (``choice = -1``)."""
        image = _to_image_tensor(source, self.data.image_shape)
        if label is None:
            with torch.no_grad():
                was = self.model.training
                self.model.eval()
                try:
                    label = int(self.model(image.unsqueeze(0).to(_model_device(self.model))).argmax(1))
                finally:
                    self.model.train(was)
        elif isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < self.data.num_classes:
            raise ValueError(f"label must be a class id in 0..{self.data.num_classes - 1}, got {label!r}")
        self._custom = (image, int(label))
        self._version += 1
        if self.choice == self.CUSTOM:
            self._notify(StateChange("param", name="choice", value=self.CUSTOM))
        else:
            self.set(choice=self.CUSTOM)

    def load_model(self, source: nn.Module | str | Path) -> None:
        """Use another model: an ``nn.Module``, or a folder / ``card.json`` saved by
        :func:`medic_viz.io.save_model`. Its card's trigger (if any) is added to the choices and
        selected; layer statistics are re-estimated on ``data``."""
        card = None
        if isinstance(source, (str, Path)):
            from medic_viz.io import load_model

            model, card = load_model(source)
        elif isinstance(source, nn.Module):
            model = source
        else:
            raise TypeError(f"load_model takes an nn.Module or a model folder path, got {type(source).__name__}")
        x = self.data.floats(torch.arange(1), _model_device(model))
        try:
            with torch.no_grad():
                was = model.training
                model.eval()
                out = model(x)
                model.train(was)
        except RuntimeError as exc:
            raise ValueError(f"this model cannot run on the picker's images {tuple(x.shape[1:])}: {exc}") from exc
        if out.shape[1] != self.data.num_classes:
            raise ValueError(f"the model outputs {out.shape[1]} classes but the data has {self.data.num_classes}")
        self.model = model.eval()
        self.stats = self._estimate_stats()
        self._version += 1
        if card is not None and card.attack:
            from medic_viz.attacks.triggers import trigger_from_config

            name = f"model: {card.attack.get('name', 'trigger')}"
            self.triggers[name] = trigger_from_config(card.attack)
            self.target = card.target_class
            self._params["trigger_name"] = name
        if self._params["layer"] not in self.stats:
            self._params["layer"] = self._default_layer(self.layers)
        self._notify(StateChange("param", name="model", value=model))

    # -- outputs ------------------------------------------------------------------------------
    @property
    def analysis(self) -> Any:
        """The :class:`InputAnalysis` of the chosen input and trigger (cached)."""
        key = (self.choice, self.trigger_name, self._version)
        if self._analysis is None or self._analysis_key != key:
            from medic_viz.analysis import analyze_input

            self._analysis = analyze_input(self.model, self.image, self.trigger, self.label, stats=self.stats,
                                           class_names=self.data.classes)
            self._analysis_key = key
            self._notify(StateChange("analysis", value=self._analysis))
        return self._analysis

    def panels(self, reduction: str = "mean_abs") -> dict[str, Any]:
        """Everything Figure 2 shows for the current choice: ``image`` and ``triggered`` float
        ``(H, W, C)`` arrays, the maps of :meth:`InputAnalysis.maps` for ``layer`` at ``tau``
        (``clean``, ``triggered_act``, ``difference``, ``activation``, ``impact``, ``combined``),
        and ``clean_pred`` / ``triggered_pred`` as ``(class name, probability)``."""
        a = self.analysis
        maps = a.maps(self.layer, self.tau, reduction)
        pc, pt = a.predictions["clean"], a.predictions["triggered"]
        return {
            "image": a.image.permute(1, 2, 0).numpy(),
            "triggered": a.triggered_image.clamp(0, 1).permute(1, 2, 0).numpy(),
            "clean": maps["clean"],
            "triggered_act": maps["triggered"],
            "difference": maps["difference"],
            "activation": maps["activation"],
            "impact": maps["impact"],
            "combined": maps["combined"],
            "label": self.class_name(a.label),
            "clean_pred": (self.class_name(pc.label), pc.probability),
            "triggered_pred": (self.class_name(pt.label), pt.probability),
        }

    def __repr__(self) -> str:
        return f"PickerState({self.params}, {len(self.gallery)} gallery images)"


def _to_image_tensor(source: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """A user's image as float ``(C, H, W)`` in [0, 1] with the data's channels and size."""
    from PIL import Image

    c, h, w = shape
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        pil = Image.open(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            pil = Image.open(io.BytesIO(bytes(source)))
        except Exception as exc:
            raise ValueError(f"could not read the image bytes ({exc}); give a PNG or JPEG file") from None
    elif isinstance(source, Image.Image):
        pil = source
    elif isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be (C, H, W) with 1 or 3 channels, got {tuple(t.shape)}")
        arr = t.permute(1, 2, 0).numpy()
        pil = _array_to_pil(arr)
    elif isinstance(source, np.ndarray):
        pil = _array_to_pil(source)
    else:
        raise TypeError(
            f"cannot read an image from {type(source).__name__}; give a path, bytes, a PIL image, an array or a tensor"
        )
    pil = pil.convert("RGB" if c == 3 else "L")
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _array_to_pil(arr: np.ndarray) -> Any:
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 1), got shape {np.asarray(arr).shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ValueError("the image array contains NaN or infinite values")
        if f.min() < 0 or f.max() > 1:
            raise ValueError(f"a float image must be in [0, 1], got values in [{f.min():.3g}, {f.max():.3g}]")
        a = np.round(f * 255).astype(np.uint8)
    return Image.fromarray(a)
