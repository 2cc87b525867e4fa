"""MEDIC importance, eqs.(2)–(4) of the paper, and the per-layer cloning term of eq.(1): the one
definition, as pure tensor functions.

Everything that uses MEDIC's weights derives them from here: the heatmaps and rankings of
:mod:`medic_viz.analysis` (:func:`layer_importance`, or eq.(4) composed from memoised eq.(2)/(3)
maps with :func:`combine_importance`), the training loss (:func:`layer_clone_loss`, which the
engine runs with ``fused="reference"``), and the per-layer τ calibration
(:func:`medic_viz.calibration.importance_scores` builds its scores with :func:`activation_score`
and :func:`impact_score`). Two faster forms are kept on purpose and held equal to this one by
tests for every option: the fused eager and compiled loss kernels of :mod:`medic_viz.fused`
(tests/test_fused.py) and the calibration's closed form for eq.(4) (tests/test_calibration.py);
tests/test_one_definition.py checks that a change made here reaches, or is caught in, each of them.

For one hooked layer with activations ``f`` of shape ``(B, C, ...)`` (``(B, C, H, W)`` for a
conv, ``(B, F)`` for a linear layer), per-channel statistics ``μ_c, σ_c`` of the teacher over the
clean set, and the gradient ``∂ℓ/∂f`` of the teacher's classification loss:

- activation criterion, eq.(2): ``A = softmax(τ · |f − μ| / σ)``
- impact criterion, eq.(3):     ``G = softmax(τ · g)`` with ``g = σ · ∂ℓ/∂f``
- combination, eq.(4):          ``w = sqrt(A · G)``

Each softmax runs per sample over all ``C·H·W`` elements of the layer. ``τ = 0`` gives uniform
weights ``1/m`` (plain cloning, the paper's ablation).

Options where the paper and its reference code (github qiulingxu/MEDIC) differ — the paper's
equations are the defaults:

- ``zscore="abs"`` (paper, eq.2) or ``"signed"`` (reference code: ``softmax(τ·(f−μ)/σ)``,
  which favours neurons firing *above* their mean and ignores strongly negative ones).
- ``impact="signed"`` (eq.3 as written and the reference code) or ``"abs"`` (the text's
  "magnitude of gradients"); ``"scaled"`` (neither's: ``g`` over its per-sample spread, so that
  eq.(3) still ranks neurons when the teacher's loss, and with it ``g``, is near zero).
- Loss reduction for the impact gradient, chosen where the gradient is computed
  (:mod:`medic_viz.defenses.medic`): ``"sum"`` gives each sample its own gradient (independent
  of batch size); ``"mean"`` (reference code) divides it by the batch size, so the impact
  softmax is flatter with larger batches.
- ``criteria``: ``"both"`` (eq.4), ``"activation"`` (eq.2 alone) or ``"impact"`` (eq.3
  alone) — the paper's E.6 ablation.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch

from medic_viz.stats import DEFAULT_EPS, LayerStats, RunningStats  # re-exported: they used to live here

__all__ = [
    "ImportanceOptions",
    "LayerStats",
    "RunningStats",
    "zscore",
    "activation_score",
    "scaled_impact_divisor",
    "impact_score",
    "activation_importance",
    "impact_importance",
    "combine_importance",
    "layer_importance",
    "weighted_squared_error",
    "layer_clone_loss",
    "validate_tau",
    "MAX_TAU",
    "effective_neurons",
    "CRITERIA",
    "DEFAULT_EPS",
]

Criteria = Literal["both", "activation", "impact"]
#: The importance criteria: ``"both"`` (eq.4, the default), ``"activation"`` (eq.2), ``"impact"`` (eq.3).
CRITERIA: tuple[str, ...] = ("both", "activation", "impact")


#: Largest τ accepted. Past a few hundred the softmax is already one-hot; at 1e38 ``τ·z``
#: overflows float32 and the first step is NaN.
MAX_TAU = 1000.0


def validate_tau(tau: float) -> float:
    """τ must be a number (not a string or bool) in [0, :data:`MAX_TAU`] (0 = uniform weights).
    Returns it as float; raises ValueError otherwise."""
    if isinstance(tau, (str, bytes, bool)) or not isinstance(tau, numbers.Real):
        raise ValueError(f"tau must be a number >= 0, got {tau!r} ({type(tau).__name__})")
    t = float(tau)
    if not (t >= 0.0) or t == float("inf"):
        raise ValueError(
            f"tau must be finite and >= 0 (0 = plain cloning, the paper uses 5 on CIFAR-10), got {tau!r}"
        )
    if t > MAX_TAU:
        raise ValueError(
            f"tau must be at most {MAX_TAU:g} (beyond that the importance is one-hot and the loss overflows; "
            f"the paper uses 0-20), got {tau!r}"
        )
    return t


@dataclass(frozen=True)
class ImportanceOptions:
    """How importance is computed. Defaults follow the paper's equations."""

    tau: float = 5.0
    criteria: Criteria = "both"
    zscore: Literal["abs", "signed"] = "abs"
    impact: Literal["signed", "abs", "scaled"] = "signed"
    loss_reduction: Literal["sum", "mean"] = "sum"

    def __post_init__(self) -> None:
        validate_tau(self.tau)
        if self.criteria not in CRITERIA:
            raise ValueError(f"criteria must be 'both', 'activation' or 'impact', got {self.criteria!r}")
        if self.zscore not in ("abs", "signed"):
            raise ValueError(f"zscore must be 'abs' (paper) or 'signed' (reference code), got {self.zscore!r}")
        if self.impact not in ("signed", "abs", "scaled"):
            raise ValueError(f"impact must be 'signed' (eq.3), 'abs' or 'scaled', got {self.impact!r}")
        if self.loss_reduction not in ("sum", "mean"):
            raise ValueError(f"loss_reduction must be 'sum' (per-sample) or 'mean' (reference), got {self.loss_reduction!r}")

    @property
    def needs_gradients(self) -> bool:
        """Whether the teacher's backward pass is needed (not for τ = 0 or activation-only)."""
        return self.tau > 0 and self.criteria in ("both", "impact")


def _bshape(stat: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    if act.ndim < 2:
        raise ValueError(f"activation must be (B, C, ...), got shape {tuple(act.shape)}")
    if stat.shape[0] != act.shape[1]:
        raise ValueError(
            f"statistics have {stat.shape[0]} channels but the activation has {act.shape[1]} "
            f"(shape {tuple(act.shape)}); were the statistics computed on this layer?"
        )
    dtype = act.dtype if act.dtype in (torch.float32, torch.float64) else torch.float32
    return stat.reshape((1, -1) + (1,) * (act.ndim - 2)).to(device=act.device, dtype=dtype)


def zscore(act: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """``(f − μ) / σ`` per channel, same shape as ``act``."""
    return (act - _bshape(stats.mean, act)) / _bshape(stats.std, act)


def activation_score(act: torch.Tensor, stats: LayerStats, zscore_mode: str = "abs") -> torch.Tensor:
    """The per-neuron score inside eq.(2)'s softmax: ``|f − μ|/σ`` (``zscore_mode="abs"``, the
    paper) or ``(f − μ)/σ`` (``"signed"``, the reference code). Same shape as ``act``."""
    z = zscore(act, stats)
    if zscore_mode == "abs":
        return z.abs()
    if zscore_mode != "signed":
        raise ValueError(f"zscore_mode must be 'abs' or 'signed', got {zscore_mode!r}")
    return z


def impact_score(grad: torch.Tensor, stats: LayerStats, impact_mode: str = "signed") -> torch.Tensor:
    """The per-neuron score inside eq.(3)'s softmax: ``g = σ·∂ℓ/∂f`` (the gradient with respect to
    the normalised "proxy" activation ``h = f/σ``; ``impact_mode="signed"``, eq.(3) and the
    reference code), ``|g|`` (``"abs"``), or ``g`` divided by its spread over the layer's neurons
    per sample (``"scaled"``: ``g / std(g)``, not in the paper — eq.(3)'s ``g`` shrinks with the
    teacher's loss, so a teacher that fits the clean images makes it uniform at any usable τ;
    the scaled score keeps its ranking at any loss; an all-zero gradient stays uniform).
    ``grad``: ``(B, C, ...)`` = ∂ℓ/∂f."""
    g = grad * _bshape(stats.std, grad)
    if impact_mode == "abs":
        return g.abs()
    if impact_mode == "scaled":
        return g / scaled_impact_divisor(g)
    if impact_mode != "signed":
        raise ValueError(f"impact_mode must be 'signed', 'abs' or 'scaled', got {impact_mode!r}")
    return g


def scaled_impact_divisor(g: torch.Tensor) -> torch.Tensor:
    """Per sample, the spread of ``g`` (``(B, ...)``) over all its other dimensions (population
    standard deviation, at least 1e-30), shaped ``(B, 1, …)`` to divide ``g`` by: the divisor of
    ``impact="scaled"``. Two passes (the mean, then the norm of ``g`` minus it), over ``g``'s
    own memory layout: ``Tensor.std`` took ~20× longer on CPU, 16 % of a training step
    (``benchmarks/scaled_impact_speed.py``)."""
    gf = g.float() if g.ndim > 1 else g.float().unsqueeze(1)
    dims = tuple(range(1, gf.ndim))
    centred = gf - gf.mean(dims, keepdim=True)
    norm = torch.linalg.vector_norm(centred, dim=dims, keepdim=True)
    spread = (norm / math.sqrt(max(gf[0].numel(), 1))).clamp_min(1e-30)
    return spread.reshape((-1,) + (1,) * (g.ndim - 1)).to(g.dtype)


def _per_sample_softmax(scores: torch.Tensor, tau: float) -> torch.Tensor:
    flat = scores.reshape(scores.shape[0], -1).float()
    return torch.softmax(tau * flat, dim=1).reshape(scores.shape)


def activation_importance(
    act: torch.Tensor, stats: LayerStats, tau: float, *, zscore_mode: str = "abs"
) -> torch.Tensor:
    """Eq.(2): ``softmax(τ·|f − μ|/σ)`` per sample over all neurons of the layer.

    ``act``: ``(B, C, ...)``; returns float32 weights of the same shape, each sample summing to 1.
    ``zscore_mode="signed"`` drops the absolute value (reference code).
    """
    return _per_sample_softmax(activation_score(act, stats, zscore_mode), tau)


def impact_importance(
    grad: torch.Tensor, stats: LayerStats, tau: float, *, impact_mode: str = "signed"
) -> torch.Tensor:
    """Eq.(3): ``softmax(τ·g)`` with ``g = σ·∂ℓ/∂f`` (the gradient w.r.t. the normalised
    "proxy" activation ``h = f/σ``). ``grad``: ``(B, C, ...)`` = ∂ℓ/∂f."""
    return _per_sample_softmax(impact_score(grad, stats, impact_mode), tau)


def combine_importance(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq.(4): the soft conjunction ``sqrt(A·G)``."""
    return torch.sqrt(a * g)


def layer_importance(
    act: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
    *,
    divide_by_variance: bool = False,
    grad_is_scratch: bool = False,
) -> torch.Tensor:
    """MEDIC weights ``w`` for one layer, detached, float32, same shape as ``act`` — *the*
    definition: eq.(2) (:func:`activation_importance`), eq.(3) (:func:`impact_importance`) and
    eq.(4) (:func:`combine_importance`), or one criterion alone (``options.criteria``).

    ``τ = 0`` returns ``1/m`` everywhere (m = neurons in the layer: plain cloning). ``grad`` may
    be None only when the options do not need it (``options.needs_gradients`` is False).
    ``divide_by_variance=True`` returns ``w / σ²`` instead (per channel), the factor the cloning
    loss multiplies ``(f* − f^c)²`` by (:func:`layer_clone_loss`). ``grad_is_scratch`` is
    accepted for older callers and ignored (``grad`` is never modified).
    """
    del grad_is_scratch
    with torch.no_grad():
        tau = options.tau
        if tau == 0:
            m = act[0].numel()
            w = torch.full(act.shape, 1.0 / m, device=act.device, dtype=torch.float32)
        else:
            a_w = g_w = None
            if options.criteria in ("both", "activation"):
                a_w = activation_importance(act, stats, tau, zscore_mode=options.zscore)
            if options.criteria in ("both", "impact"):
                if grad is None:
                    raise ValueError(f"criteria={options.criteria!r} with tau={tau} needs the teacher's gradient")
                g_w = impact_importance(grad, stats, tau, impact_mode=options.impact)
            if a_w is not None and g_w is not None:
                w = combine_importance(a_w, g_w)
            else:  # criteria names at least one of the two
                w = cast(torch.Tensor, a_w if a_w is not None else g_w)
        if divide_by_variance:
            w = w * _bshape(1.0 / stats.std.float() ** 2, w)
        return w


class _WeightedSquaredError(torch.autograd.Function):
    """``Σ weight · (teacher − student)² / B`` for one layer (B = batch size), with the gradient
    ``−2·weight·(teacher − student)/B`` kept from the forward pass (two passes over the data
    forward and one backward instead of autograd's elementwise chain; same values)."""

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=student.device.type, enabled=False):  # always in float32
            diff = teacher.float() - student.float()
            weighted = weight.float() * diff
            batch = student.shape[0]
            ctx.save_for_backward(weighted)
            ctx.batch, ctx.dtype = batch, student.dtype
            return torch.dot(weighted.reshape(-1), diff.reshape(-1)) / batch

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weighted,) = ctx.saved_tensors
        grad = weighted * (-2.0 / ctx.batch * grad_out)
        return grad.to(ctx.dtype), None, None


def weighted_squared_error(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``Σ_neurons weight · (teacher − student)²`` (differentiable in
    ``student`` only)."""
    if student.shape != teacher.shape or weight.shape != teacher.shape:
        raise ValueError(f"shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}, "
                         f"weight {tuple(weight.shape)}")
    return _WeightedSquaredError.apply(student, teacher.detach(), weight.detach())


def layer_clone_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
) -> torch.Tensor:
    """One hooked layer's term of the MEDIC loss (eq.1, Algorithm 1) — *the* definition:
    ``mean_b Σ_neurons w · ((f* − f^c)/σ)²`` with ``w`` = :func:`layer_importance` of the teacher's
    activations ``teacher`` and gradient ``grad`` (``∂ℓ/∂f*``, not modified), differentiable in
    ``student`` only. The engine sums these over layers, times λ, plus the student's
    cross-entropy; ``fused="reference"`` runs exactly this, the other modes of
    :mod:`medic_viz.fused` are faster forms held equal to it by tests."""
    if student.shape != teacher.shape:
        raise ValueError(f"student shape {tuple(student.shape)} differs from the teacher's {tuple(teacher.shape)}")
    teacher = teacher.detach()
    weight = layer_importance(teacher, None if grad is None else grad.detach(), stats, options, divide_by_variance=True)
    return weighted_squared_error(student, teacher, weight)


def effective_neurons(weights: torch.Tensor) -> torch.Tensor:
    """How many neurons one layer's MEDIC weights effectively match, per sample: the exponential
    of the entropy of the weights normalised to sum to 1 — ``m`` for uniform weights (τ = 0),
    1 for a one-hot. ``weights``: ``(B, ...)``; returns float ``(B,)``. A diagnostic for choosing
    τ: the same τ gives very different sharpness on different teachers."""
    p = weights.detach().reshape(weights.shape[0], -1).double()
    p = p / p.sum(1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return entropy.exp().float()
