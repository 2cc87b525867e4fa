"""MEDIC importance, eqs.(2)–(4) of the paper, as pure tensor functions.

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
  "magnitude of gradients").
- Loss reduction for the impact gradient, chosen where the gradient is computed
  (:mod:`medic_viz.defenses.medic`): ``"sum"`` gives each sample its own gradient (independent
  of batch size); ``"mean"`` (reference code) divides it by the batch size, so the impact
  softmax is flatter with larger batches.
- ``criteria``: ``"both"`` (eq.4), ``"activation"`` (eq.2 alone) or ``"impact"`` (eq.3
  alone) — the paper's E.6 ablation.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

import torch

from medic_viz.stats import DEFAULT_EPS, LayerStats, RunningStats  # re-exported: they used to live here

__all__ = [
    "ImportanceOptions",
    "LayerStats",
    "RunningStats",
    "zscore",
    "activation_importance",
    "impact_importance",
    "combine_importance",
    "layer_importance",
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
    impact: Literal["signed", "abs"] = "signed"
    loss_reduction: Literal["sum", "mean"] = "sum"

    def __post_init__(self) -> None:
        validate_tau(self.tau)
        if self.criteria not in CRITERIA:
            raise ValueError(f"criteria must be 'both', 'activation' or 'impact', got {self.criteria!r}")
        if self.zscore not in ("abs", "signed"):
            raise ValueError(f"zscore must be 'abs' (paper) or 'signed' (reference code), got {self.zscore!r}")
        if self.impact not in ("signed", "abs"):
            raise ValueError(f"impact must be 'signed' (eq.3) or 'abs', got {self.impact!r}")
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
    z = zscore(act, stats)
    if zscore_mode == "abs":
        z = z.abs()
    elif zscore_mode != "signed":
        raise ValueError(f"zscore_mode must be 'abs' or 'signed', got {zscore_mode!r}")
    return _per_sample_softmax(z, tau)


def impact_importance(
    grad: torch.Tensor, stats: LayerStats, tau: float, *, impact_mode: str = "signed"
) -> torch.Tensor:
    """Eq.(3): ``softmax(τ·g)`` with ``g = σ·∂ℓ/∂f`` (the gradient w.r.t. the normalised
    "proxy" activation ``h = f/σ``). ``grad``: ``(B, C, ...)`` = ∂ℓ/∂f."""
    g = grad * _bshape(stats.std, grad)
    if impact_mode == "abs":
        g = g.abs()
    elif impact_mode != "signed":
        raise ValueError(f"impact_mode must be 'signed' or 'abs', got {impact_mode!r}")
    return _per_sample_softmax(g, tau)


def combine_importance(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq.(4): the soft conjunction ``sqrt(A·G)``."""
    return torch.sqrt(a * g)


def _softmax_rows_(v: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of a 2-D tensor, in place (no new full-size tensor)."""
    v.sub_(v.amax(dim=1, keepdim=True)).exp_()
    return v.div_(v.sum(dim=1, keepdim=True))


def layer_importance(
    act: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
    *,
    divide_by_variance: bool = False,
    grad_is_scratch: bool = False,
) -> torch.Tensor:
    """MEDIC weights ``w`` for one layer, detached, float32, same shape as ``act``.

    ``τ = 0`` returns ``1/m`` everywhere (m = neurons in the layer). ``grad`` may be None only
    when the options do not need it (``options.needs_gradients`` is False).
    ``divide_by_variance=True`` returns ``w / σ²`` instead (per channel), the factor the
    cloning loss multiplies ``(f* − f^c)²`` by — folded in here to save a pass over the data.
    ``grad_is_scratch=True`` lets the function overwrite ``grad`` (saves a copy).

    Same values as composing :func:`activation_importance`, :func:`impact_importance` and
    :func:`combine_importance`, computed with fewer passes over memory (the MEDIC training
    step's overhead is dominated by such passes on CPU).
    """
    with torch.no_grad():
        tau = options.tau
        b = act.shape[0]
        if tau == 0:
            m = act[0].numel()
            w = torch.full(act.shape, 1.0 / m, device=act.device, dtype=torch.float32)
            return w.mul_(_bshape(1.0 / stats.std.float() ** 2, w)) if divide_by_variance else w
        a_w = g_w = None
        if options.criteria in ("both", "activation"):
            # τ·|f − μ|/σ as one fused multiply-add and an in-place abs
            k = _bshape(tau / stats.std.float(), act)
            z = torch.addcmul(-_bshape(stats.mean.float(), act) * k, act.float(), k)
            if options.zscore == "abs":
                z.abs_()
            a_w = _softmax_rows_(z.reshape(b, -1))  # reshape: channels-last activations give a channels-last z
        if options.criteria in ("both", "impact"):
            if grad is None:
                raise ValueError(f"criteria={options.criteria!r} with tau={tau} needs the teacher's gradient")
            scale = _bshape(tau * stats.std.float(), grad)
            q = grad.mul_(scale) if grad_is_scratch and grad.dtype == torch.float32 else grad.float() * scale
            if options.impact == "abs":
                q.abs_()
            g_w = _softmax_rows_(q.reshape(b, -1))
        if a_w is not None and g_w is not None:
            w = a_w.mul_(g_w).sqrt_()
        else:
            w = a_w if a_w is not None else g_w
        w = w.view(act.shape)
        if divide_by_variance:
            w.mul_(_bshape(1.0 / stats.std.float() ** 2, w))
        return w


def effective_neurons(weights: torch.Tensor) -> torch.Tensor:
    """How many neurons one layer's MEDIC weights effectively match, per sample: the exponential
    of the entropy of the weights normalised to sum to 1 — ``m`` for uniform weights (τ = 0),
    1 for a one-hot. ``weights``: ``(B, ...)``; returns float ``(B,)``. A diagnostic for choosing
    τ: the same τ gives very different sharpness on different teachers."""
    p = weights.detach().reshape(weights.shape[0], -1).double()
    p = p / p.sum(1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return entropy.exp().float()
