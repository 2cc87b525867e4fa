"""Per-layer temperatures from clean data: τ_l such that each layer's MEDIC weights effectively
match a set share of its neurons.

Why: one global τ means very different things on different layers and teachers. The weights
of eqs.(2)–(4) are a softmax over a layer's ``m`` neurons; their sharpness depends on the spread
of that layer's z-scores and gradients, so τ = 5 spreads the weights of one teacher's first
convolution over a fifth of its neurons and another teacher's over 4 % (BENCHMARKS.md §3).
Measured on GTSRB (``benchmarks/ablate_relapse.py``): with a global τ = 5 the clone re-learns
a BadNet backdoor late in training (live ASR 0–2 % up to epoch 30, then 32–43 %), while τ
calibrated per layer to a share of 5 % holds it at ≤ 2 % for all 60 epochs.

The share of a layer's neurons that the weights ``w`` match, for one sample, is
``exp(H(w / Σw)) / m`` (:func:`medic_viz.importance.effective_neurons` divided by ``m``): 1 for
uniform weights (τ = 0), ``1/m`` for a one-hot. It decreases monotonically with τ, so τ_l is
found by bisection on ``log τ``. The weights depend on the teacher and the input only (never on
the student), so a calibration from a few clean batches holds for the whole run. No trigger,
no test data.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping, Sequence

import torch

from medic_viz.importance import ImportanceOptions, LayerStats, effective_neurons, layer_importance

__all__ = ["matched_share", "calibrate_tau", "calibrate_taus", "validate_share", "TAU_RANGE"]

#: Bisection bracket for τ: below 1e-3 the weights are uniform to float precision for any
#: realistic layer, above 1e3 they are one-hot.
TAU_RANGE: tuple[float, float] = (1e-3, 1e3)


def validate_share(share: float) -> float:
    """The target share must be a number in (0, 1]."""
    try:
        s = float(share)
    except (TypeError, ValueError):
        raise ValueError(f"share must be a number in (0, 1] (e.g. 0.05 = 5 % of each layer's neurons), got {share!r}") from None
    if not (0.0 < s <= 1.0):
        raise ValueError(f"share must be in (0, 1] (e.g. 0.05 = 5 % of each layer's neurons), got {share!r}")
    return s


def matched_share(
    act: torch.Tensor, grad: torch.Tensor | None, stats: LayerStats, options: ImportanceOptions
) -> float:
    """Mean over the batch of the share of the layer's neurons that MEDIC's weights match
    (exp-entropy ÷ m). ``act``, ``grad``: ``(B, C, ...)`` teacher activations and ∂ℓ/∂f."""
    g = None if grad is None else grad.clone()
    w = layer_importance(act, g, stats, options, grad_is_scratch=True)
    m = w[0].numel()
    return float(effective_neurons(w).mean()) / m


def calibrate_tau(
    act: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
    share: float,
    *,
    iterations: int = 30,
) -> float:
    """The τ at which this layer's weights match ``share`` of its neurons on the batch ``act``
    (bisection on log τ within :data:`TAU_RANGE`; ``options.tau`` is ignored). A share of 1
    returns 0 (uniform weights). If even the largest τ matches more than ``share`` (a layer
    with very few neurons), the largest τ is returned."""
    share = validate_share(share)
    if share >= 1.0:
        return 0.0
    lo, hi = math.log(TAU_RANGE[0]), math.log(TAU_RANGE[1])
    for _ in range(int(iterations)):
        mid = 0.5 * (lo + hi)
        if matched_share(act, grad, stats, replace(options, tau=math.exp(mid))) > share:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def calibrate_taus(
    acts: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    stats: Mapping[str, LayerStats],
    options: ImportanceOptions,
    share: float,
) -> dict[str, float]:
    """:func:`calibrate_tau` for every layer; ``acts``/``grads`` in the order of ``stats``."""
    names = list(stats)
    if len(acts) != len(names) or len(grads) != len(names):
        raise ValueError(f"got {len(acts)} activations and {len(grads)} gradients for {len(names)} layers")
    return {n: calibrate_tau(a, g, stats[n], options, share) for n, a, g in zip(names, acts, grads)}

