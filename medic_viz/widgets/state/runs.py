"""Records of background training runs: status, live events, result, stop and wait.

A :class:`RunRecord` is filled from a training thread (events appended as they come) and read
from any other (a view, a test): :meth:`RunRecord.stop` asks the run to end within one batch,
:meth:`RunRecord.wait` and :meth:`RunRecord.wait_for_event` block until something happened.
The launcher (:mod:`medic_viz.widgets.state.launcher`) creates them and runs the thread.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, cast

import torch.nn as nn

from medic_viz.defenses.base import DefenseResult
from medic_viz.metrics import BackdoorMetrics
from medic_viz.probe import InputProbe, ProbeReading
from medic_viz.run_settings import method_settings
from medic_viz.training import TrainEvent

__all__ = ["RUN_STATUSES", "RunRecord", "tau_range_text"]

#: Statuses of a :class:`RunRecord`, in the order a run can go through them.
RUN_STATUSES: tuple[str, ...] = ("running", "done", "stopped", "error")
_EVENT_KINDS: tuple[str, ...] = ("start", "step", "epoch", "end")


@dataclass(eq=False)
class RunRecord:
    """One defence run started by :class:`~medic_viz.widgets.state.LauncherState`.

    ``label``: ``"MEDIC share=1% λ=10"``, ``"MEDIC τ=5 λ=10"`` or a baseline's name such as
    ``"NAD"`` (``" #2"`` … appended when the same label ran before); ``params``: the launcher
    settings it ran with; ``note``: a remark on those settings (a baseline ignores MEDIC's), or None;
    ``status``: one of :data:`RUN_STATUSES`;
    ``events``: :class:`TrainEvent` objects in order; ``error``: ``"Type: message"`` if the run
    raised (``traceback`` has the details); ``result``: the :class:`DefenseResult` (model and
    history) once it ended without error; ``after``: clean accuracy / ASR of the final model on
    the whole test set (runs that finished, not stopped ones); times are ``time.perf_counter()``;
    ``peak_memory``: :meth:`medic_viz.resources.PeakMemory.as_dict` of the run once it ended.

    ``probe``: the input the run follows (:class:`~medic_viz.probe.InputProbe`, fixed at launch),
    or None; ``readings``: ``(epoch position, ProbeReading)`` of the student on it, one per event
    that carries metrics (the points of :meth:`curve`), in order.

    ``queue_position``: while the run waits for a place in a shared run queue
    (:class:`~medic_viz.run_queue.RunQueue`, ``medic-viz serve``), its position (1 = next); None
    once it trains (and always without a queue). ``queued_seconds``: how long it waited.
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
    peak_memory: dict | None = None
    started_at: float = field(default_factory=time.perf_counter)
    ended_at: float | None = None
    stop_requested_at: float | None = None
    probe: InputProbe | None = None
    readings: list[tuple[float, ProbeReading]] = field(default_factory=list)
    queue_position: int | None = None
    queued_seconds: float | None = None
    queued_since: float | None = None
    _stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _new_event: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def waiting(self) -> bool:
        """True while the run waits in a shared run queue (it has not started training)."""
        return self.running and self.queue_position is not None

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
    def peak_memory_mb(self) -> float | None:
        """Peak memory of the run in MiB once it ended: on CUDA the device memory torch
        allocated, else the process's peak resident memory (None while running)."""
        m = self.peak_memory or {}
        return m.get("cuda_peak_mb") if m.get("cuda_peak_mb") is not None else m.get("peak_rss_mb")

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

    @property
    def layer_taus(self) -> dict[str, float] | None:
        """``{layer: τ}`` the MEDIC run used once it ended with a result: calibrated per layer
        (``result.config["layer_taus"]``) or its one global τ on every hooked layer; None before,
        and for a method that has no τ setting (a baseline)."""
        result = self.result
        config = None if result is None else result.config
        if result is None or not config or "tau" not in method_settings(result.method):  # a method without τ
            return None
        if config.get("layer_taus"):
            return {str(k): float(v) for k, v in config["layer_taus"].items()}
        if config.get("tau") is not None:
            return {str(n): float(config["tau"]) for n in config.get("layers") or ()}
        return None

    @property
    def tau_text(self) -> str | None:
        """The τ the run used, in a few characters: ``"τ 2.1–7.9 (per layer)"`` when calibrated,
        ``"τ 5"`` when global; None until known (and for a baseline)."""
        taus = self.layer_taus
        if taus is None:
            return None
        config = cast(DefenseResult, self.result).config  # taus come from a result
        if config.get("layer_taus"):
            return f"{tau_range_text(taus.values())} (per layer)"
        return f"τ {float(config['tau']):g}"

    @property
    def latest_reading(self) -> tuple[float, ProbeReading] | None:
        """The latest ``(epoch position, reading)`` of the followed input (None before the first)."""
        readings = self.readings
        return readings[-1] if readings else None

    # -- control (from any thread) ----------------------------------------------------------
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
        if kind is not None and kind not in _EVENT_KINDS:
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

    # -- filled by the training thread ------------------------------------------------------
    def _append(self, event: TrainEvent, reading: ProbeReading | None = None) -> None:
        with self._new_event:
            if reading is not None:
                self.readings.append((_epoch_x(event), reading))
            self.events.append(event)
            self._new_event.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        """Keep ``exc`` as the run's error (``"Type: message"``) and traceback."""
        self.error = f"{type(exc).__name__}: {exc}"
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def _end(self, status: str) -> None:
        """Mark the run ended with ``status`` (waiters are released by :meth:`_release`)."""
        if status not in RUN_STATUSES[1:]:  # pragma: no cover - a programming error
            raise ValueError(f"a run ends as one of {RUN_STATUSES[1:]}, got {status!r}")
        self.ended_at = time.perf_counter()
        self.status = status

    def _release(self) -> None:
        """Wake :meth:`wait` and :meth:`wait_for_event` callers (after listeners were told)."""
        self._done.set()
        with self._new_event:
            self._new_event.notify_all()

    # -- reading ----------------------------------------------------------------------------
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

    def holdout_curve(self) -> dict[str, list[float]]:
        """Accuracy on the clean images the run kept out of training (MEDIC's
        ``holdout_fraction``): ``{"x": epochs, "holdout_acc": [%]}``, empty lists without one."""
        xs, acc = [], []
        for ev in list(self.events):
            if ev.holdout_acc is not None:
                xs.append(_epoch_x(ev))
                acc.append(100.0 * ev.holdout_acc)
        return {"x": xs, "holdout_acc": acc}

    def probe_curve(self, label: int | None = None) -> dict[str, list[float]]:
        """The followed input over the run: ``{"x": epochs, "clean": [%], "triggered": [%]}``,
        the probability (in %) the student gives class ``label`` (default: the input's true
        class) on the clean input and on its triggered copy at each evaluation."""
        xs, clean, triggered = [], [], []
        if self.probe is not None:
            k = self.probe.label if label is None else int(label)
            for x, reading in list(self.readings):
                xs.append(x)
                clean.append(100.0 * reading.probability("clean", k))
                triggered.append(100.0 * reading.probability("triggered", k))
        return {"x": xs, "clean": clean, "triggered": triggered}

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
        if self.waiting:
            waited = 0.0 if self.queued_since is None else time.perf_counter() - self.queued_since
            since = f", {waited / 60:.0f} min so far" if waited >= 60 else ""  # changes: the page stays active
            return f"{self.label}: waiting: position {self.queue_position} in the queue{since} (Stop leaves it)"
        parts = [f"{self.label}: {self.status}"]
        last = self.latest_metrics
        if last is not None:
            asr = "" if last.asr is None else f", ASR {100 * last.asr:.1f}%"
            acc = cast(float, last.clean_acc)  # latest_metrics: an event with clean accuracy
            parts.append(f"epoch {_epoch_x(last):.2f}/{last.epochs}: clean acc {100 * acc:.1f}%{asr}")
        if self.after is not None:
            parts.append(f"whole test set: {self.after}")
        if self.tau_text is not None:
            parts.append(self.tau_text)
        parts.append(f"{self.seconds:.1f} s")
        if self.peak_memory_mb is not None:
            parts.append(f"peak memory {self.peak_memory_mb:.0f} MiB")
        if self.note:
            parts.append(self.note)
        if self.holdout_text:
            parts.append(self.holdout_text)
        if self.coverage_note:
            parts.append(self.coverage_note)
        if self.fit_note:
            parts.append(self.fit_note)
        if self.error:
            parts.append(self.error)
        return " | ".join(parts)

    @property
    def holdout_text(self) -> str | None:
        """The clone against the teacher on the run's clean hold-out (MEDIC's
        ``holdout_fraction``): the result's note when the clone is more than
        :data:`~medic_viz.holdout.HOLDOUT_GAP_POINTS` below, else both accuracies, once
        the run ended; the latest hold-out accuracy while it runs; None without a hold-out."""
        if self.result is not None:
            record = self.result.config.get("holdout")
            if not record:
                return None
            note = self.result.config.get("holdout_note")
            return str(note) if note else (f"clean hold-out ({record['images']:,} images): clone "
                                           f"{100 * record['clone_acc']:.1f}%, teacher {100 * record['teacher_acc']:.1f}%")
        held = [ev for ev in list(self.events) if ev.holdout_acc is not None]
        return None if not held else f"clean hold-out acc {100 * cast(float, held[-1].holdout_acc):.1f}%"

    @property
    def coverage_note(self) -> str | None:
        """MEDIC's remark that most of the model learns from the clean labels alone (the
        result's ``coverage_note``, :mod:`medic_viz.coverage`), once the run ended; else None."""
        note = None if self.result is None else self.result.config.get("coverage_note")
        return str(note) if note else None

    @property
    def fit_note(self) -> str | None:
        """MEDIC's remark that the clone learnt nothing from the clean labels (the result's
        ``fit_note``, :mod:`medic_viz.label_fit`), once the run ended; else None."""
        note = None if self.result is None else self.result.config.get("fit_note")
        return str(note) if note else None


def tau_range_text(taus: Any) -> str:
    """``"τ 2.1–7.9"`` for several values (``"τ 3.2"`` when they agree to the digits shown)."""

    def fmt(v: float) -> str:
        return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"

    values = [float(v) for v in taus]
    if not values:
        return "τ —"
    lo, hi = fmt(min(values)), fmt(max(values))
    return f"τ {lo}" if lo == hi else f"τ {lo}–{hi}"


def _epoch_x(ev: TrainEvent) -> float:
    """The event's position in epochs (fractional for step events)."""
    if ev.total_steps:
        return ev.epochs * ev.step / ev.total_steps
    return float(ev.epoch)
