"""The launcher's state: defence runs (MEDIC or a baseline) in a background thread.

One run at a time, with a stop event; every training event is appended to the run's
:class:`~medic_viz.widgets.state.runs.RunRecord` and announced to listeners *from the training
thread* (views must throttle their redraws). Runs are kept, each labelled with its method (and
for MEDIC how τ was set — a share calibrated per layer or one global τ — λ, and the layer set
when it is not the default), with its status, error message and resulting model/history.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any, Mapping, cast

import torch
import torch.nn as nn

from medic_viz.attacks.base import Trigger
from medic_viz.calibration import validate_share
from medic_viz.capture import resolve_layers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits, ImageArrays, clean_subset
from medic_viz.defenses.base import ConfiguredDefense, DefenseResult
from medic_viz.defenses.medic import DEFAULT_LAM, DEFAULT_LAYERS, DEFAULT_SHARE, DEFAULT_TAU, MedicConfig, preview_layer_taus
from medic_viz.defenses.registry import DISPLAY_NAMES, MAIN_METHOD, make_defense
from medic_viz.device import resolve_device
from medic_viz.importer import open_model_folder
from medic_viz.metrics import BackdoorMetrics, Evaluator, evaluate_backdoor
from medic_viz.pipeline import trigger_of
from medic_viz.pretrained import load_demo_model
from medic_viz.probe import InputProbe, ProbeReading
from medic_viz.resources import PeakMemory
from medic_viz.run_queue import RunQueue, Slot
from medic_viz.run_settings import RunSettings, ignored_settings, settings_label, unused_settings
from medic_viz.training import TrainEvent
from medic_viz.widgets.state.observable import Parameterized, StateChange
from medic_viz.widgets.state.run_settings import (
    DEVICE_CHOICES,
    LAYER_CHOICES,
    TAU_MODES,
    SettingAttribute,
    SharedSettings,
    layers_text,
    method_choices,
    method_key,
    run_label,
)
from medic_viz.widgets.state.runs import RunRecord

__all__ = ["DEVICE_CHOICES", "TAU_MODES", "LAYER_CHOICES", "method_choices", "run_label", "layers_text", "LauncherState"]

#: How a run reports, which the launcher sets: ``options=`` and ``baseline_options=`` must not
#: repeat these nor the options the run's settings give (:meth:`RunSettings.option_names`).
_REPORTING = frozenset({"progress", "eval_every"})


def ignored_note(method: str) -> str | None:
    """What a run of ``method`` says of the settings it ignores (``"τ, share, layers and λ are
    MEDIC settings: NAD ignores them"``), None when it ignores none."""
    ignored = ignored_settings(method)
    if ignored is None:
        return None
    return f"{ignored[0]} are {ignored[1]} settings: {DISPLAY_NAMES.get(method, method)} ignores them"


class LauncherState(Parameterized):
    """Backdoor-removal runs (MEDIC or a baseline) on a trojaned ``teacher`` from the clean
    data of ``splits``, in a background thread, with live events and several runs kept for
    comparison.

    Parameters (attributes; setting one validates it and notifies listeners) are the run
    settings an app offers (:meth:`RunSettings.controls`, held in :attr:`settings`, which a
    workbench shares with its picker and explorer): ``method``
    (``"medic"`` or a baseline of :func:`method_choices`; aliases such as ``"Fine-tuning"``
    are stored as the canonical name), and for MEDIC only (its class's ``run_settings``):

    - ``tau_mode`` (:data:`TAU_MODES`): ``"share"`` — τ calibrated per layer on the clean data so
      that each layer's weights match ``share`` of its neurons, the library's default
      (:class:`~medic_viz.defenses.medic.MedicConfig`); ``"global"`` — ``tau`` for every layer,
      the paper's way;
    - ``tau`` (≥ 0; used in ``"global"`` mode), ``share`` (in (0, 1], default
      :data:`~medic_viz.defenses.medic.DEFAULT_SHARE` = 1 %; used in ``"share"`` mode);
    - ``layers``: the hooked layers, a preset of :data:`LAYER_CHOICES` (default ``"auto"``) or a
      list of the teacher's module names (kept as a tuple);
    - ``lam`` (≥ 0);

    then ``epochs`` (≥ 1), ``fraction`` (share of the training set used as the defender's clean
    data, in (0, 1]), ``device`` (one of :data:`DEVICE_CHOICES` or a torch device string),
    ``eval_every_steps`` (None/0 = evaluate once per epoch; k = also every k steps, for
    smoother live curves).

    The constructor's ``tau_mode`` defaults to ``"global"`` when ``tau=`` is given (a caller who
    names a τ means it, as before) and to ``"share"`` otherwise; giving both ``tau=`` and
    ``share=`` needs ``tau_mode=``. Setting ``tau`` later does not change the mode.

    An invalid value is kept (a view never loses what was typed) and its one-line message is
    put in :attr:`problems`; :meth:`launch` then records a run with status ``"error"`` and that
    message instead of starting one — counting only what the run uses
    (:func:`medic_viz.run_settings.used_settings`): the MEDIC settings for MEDIC runs, and of
    ``tau``/``share`` the one its ``tau_mode`` uses.

    A baseline gets ``epochs`` as one budget spread over its phases as in
    :func:`medic_viz.experiments.method_options`: NAD fine-tunes its teacher ``epochs // 2``
    epochs (at least 1) and then trains ``epochs``; MCR trains its endpoint and its curve
    ``epochs`` each; ANP optimises its masks ``epochs`` epochs instead of 2000 iterations.

    Other settings: ``trigger``/``target`` (to measure ASR; None = clean accuracy only),
    ``batch_size`` and ``lr`` (None = the method's default: 64 and Adam 1e-2 for MEDIC),
    ``seed`` (clean-subset and training seed, and the method's seeded parts such as a fresh
    student's init), all three run settings too (an invalid one raises ``ValueError``),
    ``eval_images`` (live curves use this many test
    images; None = all), ``final_eval`` (measure a finished run's model on the whole test
    set), ``options`` (further :class:`~medic_viz.defenses.medic.MedicConfig` fields, for
    MEDIC runs), ``baseline_options`` (``{method: {config field: value}}`` for baseline runs,
    e.g. ``{"anp": {"iterations": 2000}}``), ``probe`` (an :class:`~medic_viz.probe.InputProbe`:
    the input each new run follows; its student's predictions on it are recorded with every
    evaluation in :attr:`RunRecord.readings`; None = none; may be changed between runs),
    ``queue`` (a :class:`~medic_viz.run_queue.RunQueue` shared with other processes, as
    ``medic-viz serve`` gives each participant's kernel: a launched run first waits there for a
    place — :attr:`RunRecord.queue_position` says where it stands, and listeners are told
    ``"queue"`` with the position, 0 when it starts — and Stop while it waits withdraws it;
    None = train at once, as in a notebook).

    :meth:`launch` never raises for bad settings: the run is recorded with status ``"error"``
    and the message, so a view shows it. Only one run at a time (launching while one runs
    raises ``RuntimeError``).
    """

    KIND = "launcher"
    DEFER_ERRORS = True
    SHARED = RunSettings.controls()  # every control a parameter: one more field, one more parameter

    seed = SettingAttribute()
    batch_size = SettingAttribute()
    lr = SettingAttribute()

    def __init__(
        self,
        teacher: nn.Module,
        splits: DatasetSplits,
        *,
        trigger: Trigger | None = None,
        target: int | None = None,
        method: str = MAIN_METHOD,
        tau_mode: str | None = None,
        tau: float | None = None,
        share: float | None = None,
        layers: Any = DEFAULT_LAYERS,
        lam: float = DEFAULT_LAM,
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
        probe: InputProbe | None = None,
        queue: RunQueue | None = None,
    ) -> None:
        super().__init__()
        if queue is not None and not isinstance(queue, RunQueue):
            raise TypeError(f"queue must be a medic_viz.run_queue.RunQueue or None, got {type(queue).__name__}")
        self.queue = queue
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
        #: The run settings: this launcher's parameters and seed, batch size and lr (a
        #: workbench's picker and explorer read τ here too).
        self._share(SharedSettings(model=teacher))
        self.settings.set(seed=seed, batch_size=batch_size, lr=lr)  # no control: an invalid one raises
        self.eval_images = None if eval_images is None else int(eval_images)
        self.final_eval = bool(final_eval)
        self.options = dict(options or {})
        self.baseline_options = self._check_baseline_options(baseline_options)
        self.baseline: BackdoorMetrics | None = None
        self.probe = probe
        tau_mode = RunSettings.tau_mode_for(tau, share, tau_mode)
        self._init_params(method=method, tau_mode=tau_mode, tau=DEFAULT_TAU if tau is None else tau,
                          share=DEFAULT_SHARE if share is None else share, layers=layers, lam=lam, epochs=epochs,
                          fraction=fraction, device=device, eval_every_steps=eval_every_steps)
        self._tau_previews: dict[tuple, dict[str, float]] = {}
        self._preview_lock = threading.Lock()
        self._runs: list[RunRecord] = []
        self._lock = threading.RLock()
        self._clean_cache: dict[tuple[float, int], ImageArrays] = {}
        self._evaluators: dict[str, Evaluator] = {}

    @classmethod
    def from_demo(cls, name: str = "badnet", **settings: Any) -> "LauncherState":
        """A launcher on a shipped demo model (:func:`medic_viz.pretrained.load_demo_model`),
        its dataset, trigger and target; ``settings`` as in the constructor."""
        teacher, card = load_demo_model(name)
        trigger, target = trigger_of(card)
        splits = load_dataset(card.dataset or "signs", size=card.input_size)
        return cls(teacher, splits, trigger=cast(Trigger | None, trigger), target=target, **settings)  # not composite

    @property
    def probe(self) -> InputProbe | None:
        """The input each new run follows (None = none); a run keeps the one it started with."""
        return self._probe

    @probe.setter
    def probe(self, probe: InputProbe | None) -> None:
        if probe is not None and not isinstance(probe, InputProbe):
            raise TypeError(f"probe must be a medic_viz.probe.InputProbe or None, got {type(probe).__name__}")
        self._probe = probe

    @classmethod
    def from_folder(cls, folder: str | Path, *, dataset: str | Path | None = None, data_root: str | Path | None = None,
                    trust_arch_code: str | None = None, **settings: Any) -> "LauncherState":
        """A launcher on a model folder (from ``medic-viz import`` or ``attack``): its dataset
        (``dataset``, else the card's), and its trigger and target when the card records them —
        without them the runs show clean accuracy only (ASR cannot be measured). See
        :func:`medic_viz.importer.open_model_folder`."""
        opened = open_model_folder(folder, dataset=dataset, data_root=data_root, trust_arch_code=trust_arch_code)
        return cls(opened.model, opened.splits, trigger=opened.trigger, target=opened.target, **settings)

    @staticmethod
    def _check_baseline_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, opts in (options or {}).items():
            key = method_key(name)
            if key is None or key == MAIN_METHOD:
                main = f" (give {DISPLAY_NAMES[MAIN_METHOD]}'s options with options=)" if key == MAIN_METHOD else ""
                raise ValueError(f"baseline_options keys must be baseline names {method_choices()[1:]}, got {name!r}"
                                 + main)
            if not isinstance(opts, Mapping):
                raise TypeError(f"baseline_options[{name!r}] must be a dict of config fields, got {type(opts).__name__}")
            LauncherState._check_repeats(key, opts, f"baseline_options[{name!r}]")
            out[key] = dict(opts)
        return out

    @staticmethod
    def _check_repeats(method: str, options: Mapping[str, Any], where: str) -> None:
        clash = (RunSettings.option_names(method) | _REPORTING) & set(options)
        if clash:
            raise ValueError(f"{where} must not repeat launcher settings {sorted(clash)}; set them on the state")

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
    def asr_note(self) -> str | None:
        """Why the runs show no ASR (no trigger known), for a view to say; None when they do."""
        if self.trigger is not None:
            return None
        return "no trigger known (the model card records none): ASR cannot be measured, runs show clean accuracy only"

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

    def _defense(self, params: Mapping[str, Any]) -> tuple[ConfiguredDefense, float, str | None]:
        """The defence the (already validated) settings describe, the clean fraction, and a
        note on the settings; ``ValueError`` with the message of an invalid setting."""
        self.check_params(["method"])
        method = params["method"]
        used = [n for n in self.PARAMS if n not in self._unused(params)]
        self.check_params(used)
        # What the run uses is valid (checked when set): the settings as in ``params``, not checked again.
        settings = self.settings.settings.with_checked(**{n: params[n] for n in used})
        opts = settings.to_defense_options(method)
        opts.update(progress=False, eval_every=1)
        opts.update(self._further_options(method))
        return make_defense(method, **opts), params["fraction"], ignored_note(method)

    @staticmethod
    def _unused(params: Mapping[str, Any]) -> frozenset[str]:
        """The parameters a run with ``params`` does not use (their problems do not count)."""
        return frozenset(unused_settings(params["method"], params))

    def _further_options(self, method: str) -> dict[str, Any]:
        """``options=`` (the main method's) or ``baseline_options=[method]``, checked not to
        repeat what the settings give."""
        if method == MAIN_METHOD:
            self._check_repeats(method, self.options, "options=")
            return dict(self.options)
        return dict(self.baseline_options.get(method, {}))

    def _label(self, params: Mapping[str, Any]) -> str:
        return settings_label(params["method"], params)

    def calibrated_taus(self, layers: Any = None, *, share: float | None = None) -> dict[str, float]:
        """``{layer: τ}`` that a MEDIC run in ``"share"`` mode calibrates with the current settings
        (``share``: the parameter unless given; ``layers``: the ``layers`` parameter unless given —
        any of the teacher's hookable layers may be asked for, a layer's τ depends on that layer
        alone), computed as the run computes it
        (:func:`~medic_viz.defenses.medic.preview_layer_taus`: teacher and the same clean images,
        no training; well under a second for the demo models) and cached. Raises ``ValueError``
        for settings it needs that are invalid."""
        params = self.params
        self.check_params(n for n in ("share", "layers", "fraction", "device") if n != "share" or share is None)
        self._further_options(MAIN_METHOD)
        share = validate_share(params["share"] if share is None else share)
        names = tuple(resolve_layers(self.teacher, params["layers"] if layers is None else layers,
                                     input_shape=self.splits.train.image_shape))
        settings: dict[str, Any] = {"share": share, "layers": list(names), "seed": self.seed, "device": params["device"],
                                    "progress": False, **self.options}
        if self.batch_size is not None:
            settings["batch_size"] = self.batch_size
        key = (share, names, params["fraction"], self.seed, str(resolve_device(params["device"])), self.batch_size,
               repr(sorted(self.options.items())))
        with self._preview_lock:
            if key not in self._tau_previews:
                config = MedicConfig(**settings)
                if len(self._tau_previews) >= 32:
                    self._tau_previews.pop(next(iter(self._tau_previews)))
                self._tau_previews[key] = preview_layer_taus(self.teacher, self._clean(params["fraction"]), config)
            return dict(self._tau_previews[key])

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
            label = self._label(params)
            record = RunRecord(index=len(self._runs), label=self._unique_label(label), params=params,
                               probe=self._probe)
            try:
                defense, fraction, record.note = self._defense(params)
                failure = None
            except Exception as exc:  # noqa: BLE001 - launch never raises for bad settings: the record says what failed
                record._record_error(exc)
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

    def _on_event(self, record: RunRecord, event: TrainEvent, probed: "_ProbedEvaluator | None" = None) -> None:
        reading = probed.take() if probed is not None and event.clean_acc is not None else None
        record._append(event, reading)
        self._notify(StateChange("event", run=record, event=event))

    def _queued(self, record: RunRecord, position: int) -> None:
        record.queue_position = position or None
        self._notify(StateChange("queue", run=record, value=position))

    def _wait_in_queue(self, record: RunRecord) -> Slot | None:
        """A place in :attr:`queue` for ``record`` (None when it was stopped while waiting)."""
        record.queue_position = 1  # shown as waiting until the queue says otherwise
        waited = record.queued_since = time.perf_counter()
        queue = cast(RunQueue, self.queue)  # called only when there is one
        slot = queue.wait(record._stop_event, on_position=lambda n: self._queued(record, n))
        record.queued_seconds = time.perf_counter() - waited
        record.queue_position = None
        record.started_at = time.perf_counter()  # a run's time is its training time
        return slot

    def _run(self, record: RunRecord, defense: ConfiguredDefense, fraction: float) -> None:
        status = "error"
        slot = None
        try:
            if self.queue is not None:
                slot = self._wait_in_queue(record)
                if slot is None:
                    status = "stopped"
                    return
            device = resolve_device(defense.config.device)
            with PeakMemory(device) as memory:
                clean = self._clean(fraction)
                evaluator = self._evaluator(device)
                if self.baseline is None:
                    self.baseline = evaluator(copy.deepcopy(self.teacher).to(device))
                probed = None if record.probe is None else _ProbedEvaluator(evaluator, record.probe)
                result = defense.run(
                    self.teacher, clean, evaluator=evaluator if probed is None else cast(Evaluator, probed),  # it evaluates too
                    callbacks=[lambda ev: self._on_event(record, ev, probed)],
                    stop_event=record._stop_event, label=record.label,
                )
                record.result = result
                status = "stopped" if result.stopped else "done"
                if status == "done" and self.final_eval and not record._stop_event.is_set():
                    record.after = evaluate_backdoor(result.model, self.splits.test, self.trigger, self.target, device=device)
            record.peak_memory = memory.as_dict()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the view
            record._record_error(exc)
            status = "error"
        finally:
            if slot is not None:
                slot.release()
            self._finish(record, status)

    def _finish(self, record: RunRecord, status: str) -> None:
        record._end(status)
        try:
            self._notify(StateChange("status", run=record, value=status))
        finally:
            record._release()  # after the listeners: wait() returns once views know the run ended

    def __repr__(self) -> str:
        p = self.params
        sharp = f"share={p['share']}" if p["tau_mode"] == "share" else f"τ={p['tau']}"
        return (f"LauncherState(method={p['method']!r}, {sharp}, λ={p['lam']}, layers={layers_text(p['layers'])}, "
                f"epochs={p['epochs']}, fraction={p['fraction']}, device={p['device']!r}, "
                f"{len(self._runs)} run(s){', running' if self.running else ''})")


class _ProbedEvaluator:
    """An evaluator that also reads a probe on the model it evaluates; the reading is taken by
    the event the evaluation belongs to (training calls the evaluator, then emits the event,
    in the same thread). Other attributes are the wrapped evaluator's."""

    def __init__(self, evaluator: Evaluator, probe: InputProbe) -> None:
        self._evaluator = evaluator
        self._probe = probe
        self._pending: ProbeReading | None = None

    def __call__(self, model: nn.Module) -> BackdoorMetrics:
        metrics = self._evaluator(model)
        self._pending = self._probe(model)
        return metrics

    def take(self) -> ProbeReading | None:
        reading, self._pending = self._pending, None
        return reading

    def __getattr__(self, name: str) -> Any:
        return getattr(self._evaluator, name)
