"""MCR, Mode Connectivity Repair (Zhao et al. 2020): fine-tune an endpoint, train a Bezier
curve of weights to it from the trojaned model, and return the model at a point of the curve
chosen on clean data.

Defaults: endpoints w₀ (trojaned) and w₁ (fine-tuned 30 epochs, as Fine-tuning); quadratic
Bezier curve φ(t) = (1−t)²w₀ + 2t(1−t)θ + t²w₁, bend θ initialised at (w₀+w₁)/2 and trained
100 epochs with one t ~ U(0, 1) per batch (SGD lr 0.01, momentum 0.9, weight decay 5e-4,
cosine, batch 64); BatchNorm statistics re-estimated at each t on the clean subset; t = the
grid point closest to 0.5 whose clean-subset accuracy is within 2 points of the better
endpoint's. Sources: Zhao et al. 2020 (ICLR); curves and BN update after Garipov et al. 2018;
the MEDIC reference ``MCR/train.py``. Known difference, on purpose: a cosine learning-rate
schedule instead of Garipov's piecewise-linear one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from medic_viz.capture import train_mode
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.checks import MAX_SEED, check_numbers, check_whole
from medic_viz.defenses.base import ConfiguredDefense, check_fraction, clean_set_accuracy, frozen_copy
from medic_viz.defenses.phases import fine_tune_phase, phase_config
from medic_viz.device import model_device
from medic_viz.training import TrainConfig

__all__ = ["MCRConfig", "MCR", "BezierCurve", "CurveObjective", "choose_t", "update_bn"]


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
    device = model_device(model)
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
        with train_mode(model):
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
        check_whole("endpoint_epochs", self.endpoint_epochs, 1)
        if self.t is not None:
            check_fraction(self.t, "t")
        check_numbers("t_grid", self.t_grid, 0.0, 1.0)
        check_fraction(self.max_acc_drop, "max_acc_drop")
        check_whole("curve_seed", self.curve_seed, 0, MAX_SEED)


def choose_t(accuracies: dict[float, float], start_acc: float, end_acc: float, max_acc_drop: float) -> float:
    """MCR's point on the curve, from clean-set accuracies only: the grid ``t`` closest to 0.5
    (farthest from both backdoored endpoints) whose accuracy is at least
    ``max(start_acc, end_acc) − max_acc_drop``; if none qualifies, the most accurate ``t``."""
    floor = max(start_acc, end_acc) - max_acc_drop
    ok = [t for t, a in accuracies.items() if a >= floor]
    if ok:
        return min(ok, key=lambda t: (abs(t - 0.5), -accuracies[t], t))
    return max(accuracies, key=lambda t: (accuracies[t], -abs(t - 0.5)))


class MCR(ConfiguredDefense):
    """Fine-tune an endpoint, train a Bezier curve to it from the trojaned model, and return
    the model at the curve point chosen on clean data."""

    name = "mcr"
    display_name = "MCR"
    config_class = MCRConfig
    seed_options = ("curve_seed",)

    @classmethod
    def epoch_options(cls, epochs: int) -> dict[str, object]:
        """The endpoint's fine-tuning and the curve get ``epochs`` each."""
        return {"epochs": int(epochs), "endpoint_epochs": int(epochs)}

    def _run(self, teacher, clean, device, evaluator, callbacks, stop_event, label):
        cfg = self.config
        start = frozen_copy(teacher, device)
        stream, end = fine_tune_phase(
            cfg, cfg.endpoint_epochs, teacher, clean, device, evaluator, callbacks, stop_event, label
        )
        if stream.stopped:
            stream.finish(end, evaluator, evaluate=True)
            return end, {"t": 1.0, "stage_stopped": "endpoint"}, stream
        curve = BezierCurve(start, end.eval()).to(device)
        stream.run(CurveObjective(curve, cfg.curve_seed), clean, phase_config(cfg), evaluator=evaluator, stop_event=stop_event)
        start_acc = clean_set_accuracy(start, clean, device)
        end_acc = clean_set_accuracy(end, clean, device)
        if cfg.t is not None:
            t = float(cfg.t)
            accs = {t: clean_set_accuracy(curve.model_at(t, clean), clean, device)}
        else:
            accs = {float(t): clean_set_accuracy(curve.model_at(float(t), clean), clean, device) for t in cfg.t_grid}
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
