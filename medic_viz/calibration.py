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
uniform weights (τ = 0), ``1/m`` for a one-hot. Normalised, MEDIC's weights are a softmax of
τ times a fixed per-neuron score (:func:`importance_scores`), so the share decreases
monotonically with τ and has a closed-form derivative: τ_l is found by Newton's method on
``log τ`` inside a bisection bracket, a few passes over the scores. The weights depend on the
teacher and the input only (never on the student), so a calibration from a few clean batches
holds for the whole run. No trigger, no test data.

This closed form is a shortcut, not a second definition: the scores are the one definition's
(:func:`medic_viz.importance.activation_score`, :func:`medic_viz.importance.impact_score`), and
for eq.(4) their mean — which is exact only because eq.(4) is the geometric mean ``sqrt(A·G)`` of
two τ-softmaxes of those scores, ``sqrt(softmax(τa)·softmax(τg)) ∝ exp(τ·(a + g)/2)``. It holds
for every ``zscore``/``impact``/``loss_reduction`` option and any τ > 0 (τ = 0 is uniform by
definition). tests/test_calibration.py checks ``softmax(τ·importance_scores)`` against
:func:`medic_viz.importance.layer_importance` normalised, for every option; a different
combination rule in :mod:`medic_viz.importance` fails that test until this function is changed.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, cast

import torch

from medic_viz import importance
from medic_viz.importance import ImportanceOptions, LayerStats

__all__ = ["importance_scores", "matched_share", "calibrate_tau", "calibrate_taus", "validate_share", "TAU_RANGE"]

#: Bisection bracket for τ: below 1e-3 the weights are uniform to float precision for any
#: realistic layer, above 1e3 they are one-hot.
TAU_RANGE: tuple[float, float] = (1e-3, 1e3)


def validate_share(share: float) -> float:
    """The target share must be a number (not a string or bool) in (0, 1]. Returns it as float;
    raises ValueError otherwise."""
    try:
        if isinstance(share, (str, bytes, bool)):
            raise TypeError
        s = float(share)
    except (TypeError, ValueError):
        raise ValueError(f"share must be a number in (0, 1] (e.g. 0.05 = 5 % of each layer's neurons), got {share!r}") from None
    if not (0.0 < s <= 1.0):
        raise ValueError(f"share must be in (0, 1] (e.g. 0.05 = 5 % of each layer's neurons), got {share!r}")
    return s


def importance_scores(act: torch.Tensor, grad: torch.Tensor | None, stats: LayerStats,
                      options: ImportanceOptions) -> torch.Tensor:
    """Per-neuron scores ``s``, ``(B, m)`` float32, such that MEDIC's weights for one sample
    (:func:`medic_viz.importance.layer_importance`, τ > 0), normalised to sum to 1, are
    ``softmax(τ·s)`` — for every τ. Activation criterion: ``s`` =
    :func:`medic_viz.importance.activation_score` (``|f − μ|/σ`` or signed); impact: ``s`` =
    :func:`medic_viz.importance.impact_score` (``σ·∂ℓ/∂f`` or its magnitude); both (eq.4): the
    mean of the two — valid because eq.(4) is ``sqrt(A·G)`` (see the module doc)."""
    b = act.shape[0]
    scores = None
    if options.criteria in ("both", "activation"):
        scores = importance.activation_score(act.float(), stats, options.zscore)
    if options.criteria in ("both", "impact"):
        if grad is None:
            raise ValueError(f"criteria={options.criteria!r} needs the teacher's gradient")
        g = importance.impact_score(grad.float(), stats, options.impact)
        scores = g if scores is None else (scores + g) / 2
    return cast(torch.Tensor, scores).reshape(b, -1)  # criteria names at least one of the two


def _share_and_slope(scores: torch.Tensor, tau: float) -> tuple[float, float]:
    """Mean over samples of exp(entropy of softmax(τ·s))/m, and its derivative in log τ."""
    q = scores * tau
    lse = torch.logsumexp(q, dim=1, keepdim=True)
    p = torch.exp(q - lse)
    mean_s = (p * scores).sum(1)
    var_s = (p * scores * scores).sum(1) - mean_s * mean_s
    # Σ p·(lse − q) term by term: lse − τ·E_p[s] cancels two large sums in float32 at large τ
    entropy = (p * (lse - q)).sum(1)
    eff = entropy.exp() / scores.shape[1]
    # d entropy / d τ = −τ·Var_p(s); in u = log τ multiply by τ
    slope = (eff * (-tau * tau * var_s.clamp_min(0))).mean()
    return float(eff.mean()), float(slope)


def matched_share(
    act: torch.Tensor, grad: torch.Tensor | None, stats: LayerStats, options: ImportanceOptions
) -> float:
    """Mean over the batch of the share of the layer's neurons that MEDIC's weights match
    (exp-entropy ÷ m). ``act``, ``grad``: ``(B, C, ...)`` teacher activations and ∂ℓ/∂f."""
    if options.tau == 0:
        return 1.0
    return _share_and_slope(importance_scores(act, grad, stats, options), float(options.tau))[0]


def calibrate_tau(
    act: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
    share: float,
    *,
    iterations: int = 40,
    rtol: float = 1e-3,
) -> float:
    """The τ at which this layer's weights match ``share`` of its neurons on the batch ``act``
    (``options.tau`` is ignored). Newton's method on log τ, kept inside a bisection bracket
    within :data:`TAU_RANGE`, to a relative error ``rtol`` in the share. A share of 1 returns
    0 (uniform weights); if even the largest τ matches more than ``share`` (a layer with very
    few neurons or constant scores), the largest τ is returned."""
    share = validate_share(share)
    if share >= 1.0:
        return 0.0
    scores = importance_scores(act, grad, stats, options)
    lo, hi = math.log(TAU_RANGE[0]), math.log(TAU_RANGE[1])
    if _share_and_slope(scores, TAU_RANGE[1])[0] > share:
        return TAU_RANGE[1]
    u = math.log(5.0)
    for _ in range(int(iterations)):
        value, slope = _share_and_slope(scores, math.exp(u))
        err = value - share
        if abs(err) <= rtol * share:
            break
        if err > 0:
            lo = u
        else:
            hi = u
        step = u - err / slope if slope < 0 else None
        u = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
    return math.exp(u)


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

