"""Clean accuracy and attack success rate (ASR), batched, on any device.

ASR follows the paper: every test image *whose true class is not the target* gets the
trigger; ASR is the share of those classified as the target. Every number comes with the
count of images it was computed on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import torch
import torch.nn as nn

from medic_viz.capture import eval_mode
from medic_viz.data.arrays import ImageArrays
from medic_viz.deprecation import moved_names
from medic_viz.device import resolve_device as _resolve_device
from medic_viz.finite import check_finite_outputs

if TYPE_CHECKING:  # pragma: no cover
    from medic_viz.attacks.base import Trigger

__all__ = [
    "BackdoorMetrics",
    "predict",
    "evaluate_backdoor",
    "Evaluator",
    "MeanStd",
    "mean_std",
    "SignTest",
    "paired_sign_test",
    "format_before_after",
]


@dataclass(frozen=True)
class BackdoorMetrics:
    """Clean accuracy and ASR as fractions in [0, 1], with the image counts used.

    ``asr`` is None when no trigger was given.
    """

    clean_acc: float
    n_clean: int
    asr: float | None = None
    n_asr: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        asr = "n/a" if self.asr is None else f"{100 * self.asr:.1f}% of {self.n_asr}"
        return f"clean acc {100 * self.clean_acc:.1f}% of {self.n_clean}, ASR {asr}"


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Predicted class ids ``(N,)`` (on CPU) for float images ``x`` ``(N, C, H, W)`` in [0, 1].
    The model is evaluated in eval mode and its mode restored afterwards."""
    dev = _resolve_device(device)
    with eval_mode(model):
        out = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(dev, non_blocking=True)
            out.append(check_finite_outputs(model(xb)).argmax(1).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


class Evaluator:
    """Clean accuracy and ASR of any model on one test set, with tensors prepared once.

    ``data``: the clean test set. ``trigger``/``target``: the attack (None for clean accuracy
    only). ``max_images``: evaluate on a fixed random subset of this size (chosen by ``seed``)
    — for fast live curves; the counts in the result say how many were used.

    An empty test set is a ValueError (an accuracy of 0 images is no measurement), and a model
    whose outputs are NaN/inf raises :class:`~medic_viz.finite.NonFiniteModelError` instead of
    being scored (``argmax`` of NaN is class 0).
    """

    def __init__(
        self,
        data: ImageArrays,
        trigger: "Trigger | None" = None,
        target: int | None = None,
        *,
        max_images: int | None = None,
        seed: int = 0,
        batch_size: int = 512,
        device: str | torch.device = "auto",
    ) -> None:
        if (trigger is None) != (target is None):
            raise ValueError("give both trigger= and target= to measure ASR, or neither for clean accuracy only")
        if target is not None and not (0 <= int(target) < data.num_classes):
            raise ValueError(f"target class {target} is out of range for {data.num_classes} classes")
        if len(data) == 0 or max_images == 0:
            raise ValueError(f"{data.name}: the test set is empty, so nothing can be measured; use data with test images")
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        idx = torch.arange(len(data))
        if max_images is not None and max_images < len(data):
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(data), generator=g)[:max_images].sort().values
        self.x = data.floats(idx, self.device)
        self.y = data.labels[idx].to(self.device)
        self.target = None if target is None else int(target)
        self.x_trig: torch.Tensor | None = None
        if trigger is not None:
            keep = self.y != self.target
            self.x_trig = trigger.apply(self.x[keep]).clamp_(0, 1)

    @torch.no_grad()
    def _hits(self, model: nn.Module, x: torch.Tensor, want: torch.Tensor | int) -> int:
        hits = 0
        for start in range(0, len(x), self.batch_size):
            pred = check_finite_outputs(model(x[start : start + self.batch_size])).argmax(1)
            w = want if isinstance(want, int) else want[start : start + self.batch_size]
            hits += int((pred == w).sum())
        return hits

    def __call__(self, model: nn.Module) -> BackdoorMetrics:
        with eval_mode(model):
            n = len(self.y)
            acc = self._hits(model, self.x, self.y) / max(n, 1)
            if self.x_trig is None:
                return BackdoorMetrics(acc, n)
            m = len(self.x_trig)
            asr = self._hits(model, self.x_trig, self.target) / max(m, 1)  # type: ignore[arg-type]
            return BackdoorMetrics(acc, n, asr, m)


def evaluate_backdoor(
    model: nn.Module,
    data: ImageArrays,
    trigger: "Trigger | None" = None,
    target: int | None = None,
    *,
    batch_size: int = 512,
    device: str | torch.device = "auto",
    max_images: int | None = None,
) -> BackdoorMetrics:
    """Clean accuracy on ``data`` and, given a trigger and target, ASR on its non-target images."""
    dev = _resolve_device(device)
    model.to(dev)
    return Evaluator(data, trigger, target, max_images=max_images, batch_size=batch_size, device=dev)(model)


class MeanStd(NamedTuple):
    """Mean, standard deviation and count of a metric over runs (e.g. seeds)."""

    mean: float
    std: float
    n: int


def mean_std(values: Iterable[float | None]) -> MeanStd:
    """Mean and **sample** standard deviation (ddof=1, i.e. divided by n - 1) of ``values``.

    The one definition of "mean ± std over seeds" in every table and figure of the package
    (:mod:`medic_viz.experiments` tables, :func:`medic_viz.viz.aggregate_rows`). None and NaN
    values are left out; ``n`` counts the rest. One value: std 0; none: mean and std NaN.
    Example: ``[1, 2, 4]`` → mean 2.333, std 1.528 (the population std would be 1.247).
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return MeanStd(float("nan"), float("nan"), 0)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return MeanStd(mean, std, n)


class SignTest(NamedTuple):
    """A paired sign test: pairs where the first value is lower (``wins``), higher (``losses``),
    within the tie margin (``ties``, left out), and the exact two-sided p-value."""

    wins: int
    losses: int
    ties: int
    p_value: float


def paired_sign_test(first: Sequence[float], second: Sequence[float], tie: float = 0.0) -> SignTest:
    """Exact two-sided sign test of ``first[i] - second[i]`` (same length; e.g. two methods' ASR,
    paired by seed): pairs within ``tie`` of each other are left out; p = min(1, 2 · P(X ≤ k)),
    X ~ Binomial(wins + losses, 1/2), k = min(wins, losses); no untied pair: p = 1.
    Example: 9 lower, 1 higher → p = 2 · 11/1024 = 0.0215."""
    if len(first) != len(second):
        raise ValueError(f"paired_sign_test needs pairs: {len(first)} first values, {len(second)} second values")
    if tie < 0:
        raise ValueError(f"tie must be ≥ 0, got {tie}")
    diffs = [float(a) - float(b) for a, b in zip(first, second)]
    wins, losses = sum(d < -tie for d in diffs), sum(d > tie for d in diffs)
    n, k = wins + losses, min(wins, losses)
    p = min(1.0, 2 * math.fsum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return SignTest(wins, losses, len(diffs) - n, p)


def format_before_after(before: BackdoorMetrics, after: BackdoorMetrics, method: str = "MEDIC") -> str:
    """A plain-text table of clean accuracy and ASR before and after a defence, with image counts
    (what ``medic-viz remove`` prints). The Table-1 summary of a grid of runs is
    :func:`medic_viz.experiments.format_table`."""

    def cell(v: float | None, n: int) -> str:
        return "n/a" if v is None else f"{100 * v:6.2f}%  (n={n})"

    lines = [
        f"{'':24s}{'clean accuracy':>22s}{'attack success rate':>26s}",
        f"{'before (trojaned)':24s}{cell(before.clean_acc, before.n_clean):>22s}{cell(before.asr, before.n_asr):>26s}",
        f"{'after (' + method + ')':24s}{cell(after.clean_acc, after.n_clean):>22s}{cell(after.asr, after.n_asr):>26s}",
    ]
    return "\n".join(lines)


#: ``resolve_device`` was imported from here; it lives in :mod:`medic_viz.device` (:mod:`medic_viz.deprecation`).
__getattr__ = moved_names(__name__)
