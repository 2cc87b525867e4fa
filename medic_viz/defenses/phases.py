"""Training phases of a defence joined into one run and one event stream.

Several baselines train in phases (NAD fine-tunes its teacher and then distils; MCR fine-tunes
an endpoint and then trains a curve). Each phase is one call of
:func:`medic_viz.training.train` with its own objective; :class:`EventStream` forwards the
phases' events as one run: one ``start`` (the first phase's), ``epoch``/``step`` events
numbered across phases, and one ``end`` that can evaluate the final, possibly post-processed,
model.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import fields, replace
from typing import Any, Sequence

import torch
import torch.nn as nn

from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import trainable_copy
from medic_viz.metrics import Evaluator
from medic_viz.training import Callback, SupervisedObjective, TrainConfig, TrainEvent, TrainResult, train

__all__ = ["EventStream", "phase_config", "phase_steps", "run_single_phase", "fine_tune_phase"]


def phase_config(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """The plain :class:`TrainConfig` part of a method's config, with ``changes`` applied."""
    values = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
    values.update(changes)
    return TrainConfig(**values)


def phase_steps(n: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of ``epochs`` epochs over ``n`` images in batches of ``batch_size``."""
    return math.ceil(n / batch_size) * epochs


class EventStream:
    """Joins the events of a method's training phases into one run.

    ``epochs``, ``steps``: the planned epochs and steps of each phase (for the totals that
    every event carries). Call :meth:`run` once per phase and :meth:`finish` at the end.
    ``history``, ``stopped``, ``seconds``: the run so far.
    """

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


def run_single_phase(
    objective: Any,
    clean: ImageArrays,
    cfg: TrainConfig,
    *,
    label: str,
    callbacks: Sequence[Callback],
    evaluator: Evaluator | None,
    stop_event: threading.Event | None,
) -> EventStream:
    """A whole run of one training phase: train ``objective.model`` on ``clean`` with the
    training fields of ``cfg``, then the ``end`` event (which evaluates the model only if the
    run was stopped: otherwise the last epoch event already did)."""
    stream = EventStream(label, callbacks, [cfg.epochs], [phase_steps(len(clean), cfg.batch_size, cfg.epochs)])
    stream.run(objective, clean, phase_config(cfg), evaluator=evaluator, stop_event=stop_event)
    stream.finish(objective.model, evaluator, evaluate=stream.stopped)
    return stream


def fine_tune_phase(
    cfg: TrainConfig,
    first_epochs: int,
    teacher: nn.Module,
    clean: ImageArrays,
    device: torch.device,
    evaluator: Evaluator | None,
    callbacks: Sequence[Callback],
    stop_event: threading.Event | None,
    label: str,
    **changes: Any,
) -> tuple[EventStream, nn.Module]:
    """Phase 1 of the two-phase defences (NAD's teacher, MCR's endpoint): fine-tune a copy of
    ``teacher`` on ``clean`` for ``first_epochs`` with ``cfg``'s optimiser (``changes``: fields
    that differ, e.g. MCR's endpoint learning rate), on an event stream that also announces
    phase 2 (``cfg.epochs``). Returns ``(stream, fine-tuned copy)``."""
    n = len(clean)
    stream = EventStream(
        label,
        callbacks,
        [first_epochs, cfg.epochs],
        [phase_steps(n, cfg.batch_size, first_epochs), phase_steps(n, cfg.batch_size, cfg.epochs)],
    )
    tuned = trainable_copy(teacher, device)
    stream.run(
        SupervisedObjective(tuned), clean, phase_config(cfg, epochs=first_epochs, **changes),
        evaluator=evaluator, stop_event=stop_event,
    )
    return stream, tuned
