"""Per-channel statistics of a model's layer outputs over clean data: ``μ_c`` and ``σ_c``.

MEDIC's importance (eqs. 2–3) standardises activations with them, the cloning loss divides by
``σ``, and the analysis and widgets show activations relative to them. They are estimated once
from the model in eval mode over a clean dataset (no augmentation) and then frozen.

- :class:`LayerStats`: ``mean``, ``std`` of one layer, float32 ``(C,)``.
- :class:`RunningStats`: accumulates them over batches of activations ``(B, C, ...)``.
- :func:`compute_layer_stats`: ``{layer name: LayerStats}`` for a model over a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.capture import LayerRecorder, eval_mode, resolve_layers
from medic_viz.checks import check_number, check_whole
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.device import resolve_device

__all__ = ["DEFAULT_EPS", "LayerStats", "RunningStats", "compute_layer_stats"]

#: Added to the variance before the square root: σ = sqrt(var + eps).
DEFAULT_EPS = 1e-5


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
) -> dict[str, LayerStats]:
    """Per-channel mean/std of each layer's outputs over ``data`` (model in eval mode, no
    augmentation; its previous mode is restored). ``layers``: names as
    :func:`medic_viz.capture.resolve_layers` takes them (None = every conv/norm/linear).
    The model is moved to ``device``. Returns ``{layer name: LayerStats}`` on ``device``."""
    check_whole("batch_size", batch_size, 1)
    RunningStats(eps)  # checks eps before the model is moved or run
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
    return {n: r.finish().to(dev) for n, r in running.items()}
