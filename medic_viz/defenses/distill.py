"""Training a fresh model of the trojaned model's structure on the clean set: logit
knowledge distillation (KD) and training from scratch — MEDIC's Figure 3 comparisons. Both
start from random weights, as MEDIC does; the trojaned model lends its structure (and, for KD,
its logits).

- KD (``kd``): CE + w·T²·KL(softmax(t/T) ‖ softmax(s/T)), T = 2, w = 1, with MEDIC's training
  settings (Adam lr 1e-2, weight decay 1e-4, cosine, batch 64, 60 epochs). Sources: Hinton et
  al. 2015; the MEDIC reference ``main.py``. Known difference, on purpose: the batch-mean KL
  divergence (the reference code averages over classes too, which only rescales w).
- Scratch (``scratch``): CE on the clean subset only, MEDIC's training settings (λ = 0 in eq. 1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.checks import MAX_SEED, check_number, check_whole
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import ConfiguredDefense, fresh_copy, frozen_copy
from medic_viz.defenses.phases import EventStream, run_single_phase
from medic_viz.metrics import Evaluator
from medic_viz.training import BatchLoss, Callback, Objective, SupervisedObjective, TrainConfig

__all__ = ["KDConfig", "KnowledgeDistillation", "ScratchConfig", "ScratchTraining", "DistillationObjective"]


class DistillationObjective:
    """Logit distillation: ``CE(s, y) + w · T² · KL(softmax(t/T) ‖ softmax(s/T))`` (batch mean);
    ``model`` is the student, the teacher is frozen in eval mode."""

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = 2.0, weight: float = 1.0,
                 ce_weight: float = 1.0) -> None:
        self.model = student
        self.teacher = teacher
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.ce_weight = float(ce_weight)

    def parameters(self) -> Iterable[nn.Parameter]:
        return [q for q in self.model.parameters() if q.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchLoss:
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
        check_number("temperature", self.temperature, 0.0, low_open=True)
        check_number("kd_weight", self.kd_weight, 0.0)
        check_number("ce_weight", self.ce_weight, 0.0)
        check_whole("student_seed", self.student_seed, 0, MAX_SEED)


class _FreshStudentDefense(ConfiguredDefense):
    """Train a freshly initialised copy of the teacher (``config.student_seed``) on the clean
    set with the objective :meth:`objective` builds, in one phase."""

    seed_options = ("student_seed",)
    config: KDConfig | ScratchConfig

    def objective(self, student: nn.Module, teacher: nn.Module, device: torch.device) -> Objective:  # pragma: no cover
        """The training objective of ``student``; ``teacher`` is the user's (unchanged) model."""
        raise NotImplementedError

    def _run(self, teacher: nn.Module, clean: ImageArrays, device: torch.device, evaluator: Evaluator | None,
             callbacks: Sequence[Callback], stop_event: threading.Event | None,
             label: str) -> tuple[nn.Module, dict, EventStream]:
        student = fresh_copy(teacher, seed=self.config.student_seed).to(device)
        stream = run_single_phase(
            self.objective(student, teacher, device), clean, self.config,
            label=label, callbacks=callbacks, evaluator=evaluator, stop_event=stop_event,
        )
        return student, {}, stream


class KnowledgeDistillation(_FreshStudentDefense):
    """Distil the trojaned model's logits into a freshly initialised copy."""

    name = "kd"
    display_name = "KD"
    config_class = KDConfig
    config: KDConfig

    def objective(self, student: nn.Module, teacher: nn.Module, device: torch.device) -> DistillationObjective:
        cfg = self.config
        return DistillationObjective(student, frozen_copy(teacher, device), cfg.temperature, cfg.kd_weight, cfg.ce_weight)


@dataclass
class ScratchConfig(TrainConfig):
    """Train a fresh model of the same structure on the clean set only (MEDIC's settings)."""

    student_seed: int = 0

    def validate(self) -> None:
        super().validate()
        check_whole("student_seed", self.student_seed, 0, MAX_SEED)


class ScratchTraining(_FreshStudentDefense):
    """Training from scratch on the clean subset: the trojaned model only lends its structure."""

    name = "scratch"
    display_name = "Scratch"
    config_class = ScratchConfig
    config: ScratchConfig

    def objective(self, student: nn.Module, teacher: nn.Module, device: torch.device) -> SupervisedObjective:
        return SupervisedObjective(student)
