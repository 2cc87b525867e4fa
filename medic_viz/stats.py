"""Per-channel statistics of a model's layer outputs over clean data: ``μ_c`` and ``σ_c``.

MEDIC's importance (eqs. 2–3) standardises activations with them, the cloning loss divides by
``σ``, and the analysis and widgets show activations relative to them. They are estimated once
from the model in eval mode over a clean dataset (no augmentation) and then frozen.

- :class:`LayerStats`: ``mean``, ``std`` of one layer, float32 ``(C,)``.
- :class:`RunningStats`: accumulates them over batches of activations ``(B, C, ...)``.
- :func:`compute_layer_stats`: ``{layer name: LayerStats}`` for a model over a dataset.
- :func:`floor_std`: raise every σ_c to at least a fraction of its layer's (or the model's)
  typical spread, so that no channel constant on the clean data dominates a loss divided by σ².
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.capture import LayerRecorder, eval_mode, resolve_layers
from medic_viz.checks import check_number, check_whole
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.device import resolve_device

__all__ = ["DEFAULT_EPS", "DEFAULT_EPS_MEDIC", "PAPER_EPS", "LayerStats", "RunningStats", "compute_layer_stats",
           "floor_std", "FLOOR_SCOPES", "layer_spread", "validate_eps"]

#: Added to the variance before the square root: σ = sqrt(var + eps) — the statistics' and the
#: views' default (the paper's "small epsilon"); MEDIC's loss uses :data:`DEFAULT_EPS_MEDIC`.
DEFAULT_EPS = 1e-5

#: MEDIC's default ε added to the teacher's per-channel variances (σ = sqrt(var + ε)). The paper
#: gives σ "a small epsilon" (:data:`PAPER_EPS`, the default until 2026-12-05); with it the loss
#: weighs a channel 1/σ², and on MobileNet-v1, whose late norm and depthwise outputs are live but
#: small (RMS 0.006–0.1), matching those exactly became the whole task: the clone never learned
#: (8.5 % clean after 12 epochs on a development teacher, 9.5–12.4 % after 60 on the evaluation
#: one). ε = 0.1 (σ ≥ 0.32) cloned the development MobileNet-v1 teacher to 96.2 % (labels alone
#: 92.3 %; at 2 % clean data 84.7 % against 49.8 %) and, on WRN-16-1's four development teachers,
#: left every ASR ≤ 10 % at 5 % and 2 % clean data where ε = 1e-5 left SIG at 21.7 and 69.7 %, at
#: the same accuracy (it shrinks WRN-16-1's median weight 1.09–1.18-fold) — chosen by a rule
#: written before those runs, on development teachers and test images only (BENCHMARKS.md §6).
DEFAULT_EPS_MEDIC = 0.1

#: The paper's "small epsilon", and every MEDIC run's before :data:`DEFAULT_EPS_MEDIC`: a grid cell
#: that runs with it keeps the id it had then (:meth:`medic_viz.defenses.medic.Medic.pinned_options`).
PAPER_EPS = DEFAULT_EPS

def validate_eps(eps: object) -> float:
    """``eps`` as a float > 0, or a one-line ``ValueError`` naming the default and the paper's."""
    return float(check_number("eps", eps, 0.0, low_open=True,
                              advice=f"σ = sqrt(var + eps); MEDIC's default is {DEFAULT_EPS_MEDIC:g}, the paper's {PAPER_EPS:g}"))


#: What :func:`floor_std`'s fraction is a fraction of: ``"layer"`` — the layer's RMS spread
#: ``sqrt(mean_c σ_c²)``; ``"model"`` — the median of those over all the layers given.
FLOOR_SCOPES: tuple[str, ...] = ("layer", "model")


@dataclass
class LayerStats:
    """Per-channel mean and standard deviation of one layer's teacher activations.

    ``mean``, ``std``: float32 ``(C,)``; ``std`` already includes the epsilon.
    ``count``: activation values per channel they were estimated from.
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: int = 0

    def to(self, device: str | torch.device) -> "LayerStats":
        return LayerStats(self.mean.to(device), self.std.to(device), self.count)


class RunningStats:
    """Accumulate per-channel mean/std of activations ``(B, C, ...)`` over many batches
    (float64 sums, one pass). ``finish()`` returns :class:`LayerStats` with the unbiased
    variance (``n − 1``) plus ``eps`` under the square root."""

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        self.eps = check_number("eps", eps, 0.0, low_open=True, advice=f"σ = sqrt(var + eps), the default eps is {DEFAULT_EPS:g}")
        self.n = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None

    def update(self, act: torch.Tensor) -> None:
        a = act.detach().double()
        dims = [0] + list(range(2, a.ndim))
        s, ss = a.sum(dims), (a * a).sum(dims)
        count = a.numel() // a.shape[1]
        if self.s is None or self.ss is None:  # set together
            self.s, self.ss = s, ss
        else:
            self.s, self.ss = self.s + s, self.ss + ss
        self.n += count

    def finish(self) -> LayerStats:
        if self.s is None or self.ss is None or self.n < 2:  # s and ss are set together
            raise ValueError("need at least two activation values per channel to estimate statistics")
        mean = self.s / self.n
        var = (self.ss / self.n - mean * mean).clamp_min(0.0) * self.n / (self.n - 1)
        return LayerStats(mean.float(), torch.sqrt(var + self.eps).float(), self.n)


@torch.no_grad()
def compute_layer_stats(
    model: nn.Module,
    data: ImageArrays,
    layers: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    eps: float = DEFAULT_EPS,
    floor: float = 0.0,
    floor_scope: str = "layer",
) -> dict[str, LayerStats]:
    """Per-channel mean/std of each layer's outputs over ``data`` (model in eval mode, no
    augmentation; its previous mode is restored). ``layers``: names as
    :func:`medic_viz.capture.resolve_layers` takes them (None = every conv/norm/linear).
    ``floor``, ``floor_scope``: see :func:`floor_std` (0 = no floor beyond ``eps``).
    The model is moved to ``device``. Returns ``{layer name: LayerStats}`` on ``device``."""
    check_whole("batch_size", batch_size, 1)
    RunningStats(eps)  # checks eps before the model is moved or run
    floor_std({}, floor, floor_scope)  # and the floor
    dev = resolve_device(device)
    names = resolve_layers(model, layers)
    model.to(dev)
    running = {n: RunningStats(eps) for n in names}
    with eval_mode(model), LayerRecorder(model, names) as rec:
        for x, _ in iterate_batches(data, batch_size, device=dev):
            rec.clear()
            model(x)
            for n, a in zip(names, rec.tensors()):
                running[n].update(a)
    return floor_std({n: r.finish().to(dev) for n, r in running.items()}, floor, floor_scope)


def floor_std(stats: dict[str, LayerStats], floor: float, scope: str = "layer") -> dict[str, LayerStats]:
    """``stats`` with every ``σ_c`` raised to at least ``floor · s``: ``s`` is the layer's RMS
    spread ``sqrt(mean_c σ_c²)`` (``scope="layer"``) or the median of those over ``stats``
    (``"model"``). Scale-free, unlike ``eps``: a channel is never weighed more than ``1/floor²``
    times a typical one by a loss divided by σ². ``floor`` in [0, 1); 0 returns ``stats`` itself,
    and so does a floor below every σ (values unchanged to the bit). Means are never changed."""
    check_number("floor", floor, 0.0, 1.0, high_open=True,
                 advice="a fraction of the typical σ (0 = off; 0.1 caps a channel's weight at 100 times a typical one)")
    if scope not in FLOOR_SCOPES:
        raise ValueError(f"floor_scope must be one of {', '.join(map(repr, FLOOR_SCOPES))}, got {scope!r}")
    if floor == 0 or not stats:
        return stats
    spread = layer_spread(stats)
    if scope == "model":
        typical = statistics.median(spread.values())
        spread = dict.fromkeys(spread, typical)
    return {n: LayerStats(s.mean, torch.clamp_min(s.std, floor * spread[n]).to(s.std.dtype), s.count)
            for n, s in stats.items()}


def layer_spread(stats: dict[str, LayerStats]) -> dict[str, float]:
    """Each layer's RMS spread ``sqrt(mean_c σ_c²)`` (float64 arithmetic), by layer name: the
    typical σ :func:`floor_std` takes its fraction of."""
    return {n: float(s.std.double().square().mean().sqrt()) for n, s in stats.items()}
