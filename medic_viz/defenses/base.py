"""What every defence shares: a result type, a run interface, a fresh same-structure copy."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.data.arrays import ImageArrays
from medic_viz.metrics import Evaluator
from medic_viz.training import Callback, TrainEvent

__all__ = ["DefenseResult", "Defense", "fresh_copy"]


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
    """

    name: str = "defense"

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
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    return student
