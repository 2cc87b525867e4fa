"""Eqs.(2)–(4) against values worked out by hand."""

import math

import pytest
import torch
import torch.nn as nn

from medic_viz.capture import run_with_cache
from medic_viz.importance import (
    ImportanceOptions,
    LayerStats,
    RunningStats,
    activation_importance,
    combine_importance,
    effective_neurons,
    impact_importance,
    impact_score,
    layer_importance,
    scaled_impact_divisor,
    validate_tau,
)


def _stats(mean, std):
    return LayerStats(torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))


def test_activation_importance_by_hand():
    # One sample, a linear layer with 2 neurons: f = [1, 3], mu = [1, 1], sigma = [2, 2]
    # |z| = [0, 1]; tau = 2 -> softmax([0, 2]) = [1/(1+e^2), e^2/(1+e^2)]
    f = torch.tensor([[1.0, 3.0]])
    a = activation_importance(f, _stats([1.0, 1.0], [2.0, 2.0]), tau=2.0)
    e2 = math.exp(2)
    torch.testing.assert_close(a, torch.tensor([[1 / (1 + e2), e2 / (1 + e2)]]))


def test_abs_vs_signed_zscore():
    # f = [-3, 1], mu 0, sigma 1: abs -> |z| = [3, 1] favours neuron 0; signed favours neuron 1.
    f = torch.tensor([[-3.0, 1.0]])
    s = _stats([0.0, 0.0], [1.0, 1.0])
    a_abs = activation_importance(f, s, tau=1.0, zscore_mode="abs")
    a_signed = activation_importance(f, s, tau=1.0, zscore_mode="signed")
    torch.testing.assert_close(a_abs, torch.softmax(torch.tensor([[3.0, 1.0]]), 1))
    torch.testing.assert_close(a_signed, torch.softmax(torch.tensor([[-3.0, 1.0]]), 1))
    assert a_abs[0, 0] > a_abs[0, 1] and a_signed[0, 0] < a_signed[0, 1]


def test_impact_importance_scales_gradient_by_sigma():
    # grad = [0.5, -0.25], sigma = [2, 4] -> g = [1, -1]; tau = 3 -> softmax([3, -3])
    grad = torch.tensor([[0.5, -0.25]])
    s = _stats([0.0, 0.0], [2.0, 4.0])
    g = impact_importance(grad, s, tau=3.0)
    torch.testing.assert_close(g, torch.softmax(torch.tensor([[3.0, -3.0]]), 1))
    g_abs = impact_importance(grad, s, tau=3.0, impact_mode="abs")
    torch.testing.assert_close(g_abs, torch.tensor([[0.5, 0.5]]))


def test_softmax_is_over_all_neurons_of_a_conv_layer_per_sample():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 4)
    s = _stats([0.1, -0.2, 0.3], [1.0, 2.0, 0.5])
    a = activation_importance(f, s, tau=1.5)
    assert a.shape == f.shape
    torch.testing.assert_close(a.sum(dim=(1, 2, 3)), torch.ones(2))
    z = ((f - s.mean[None, :, None, None]) / s.std[None, :, None, None]).abs()
    torch.testing.assert_close(a[1].flatten(), torch.softmax(1.5 * z[1].flatten(), 0))


def test_combination_is_geometric_mean():
    a = torch.tensor([[0.25, 0.75]])
    g = torch.tensor([[0.64, 0.36]])
    torch.testing.assert_close(combine_importance(a, g), torch.tensor([[0.4, math.sqrt(0.75 * 0.36)]]))


def test_tau_zero_gives_uniform_weights_for_every_criterion():
    f = torch.randn(3, 2, 5, 5)
    grad = torch.randn(3, 2, 5, 5)
    s = _stats([0.0, 0.0], [1.0, 1.0])
    for criteria in ("both", "activation", "impact"):
        w = layer_importance(f, grad, s, ImportanceOptions(tau=0.0, criteria=criteria))
        torch.testing.assert_close(w, torch.full_like(f, 1 / 50))
    assert not ImportanceOptions(tau=0.0).needs_gradients
    assert not ImportanceOptions(tau=5.0, criteria="activation").needs_gradients
    assert ImportanceOptions(tau=5.0).needs_gradients


def test_larger_tau_is_sharper():
    torch.manual_seed(1)
    f = torch.randn(1, 4, 3, 3)
    s = _stats([0.0] * 4, [1.0] * 4)
    peaks = [activation_importance(f, s, tau=t).max().item() for t in (0.5, 1, 2, 5, 10)]
    assert peaks == sorted(peaks) and peaks[-1] > 0.5 > peaks[0]


def test_layer_importance_on_a_tiny_network_matches_hand_computation():
    # Network whose hooked layer is the logits: dℓ/dlogits = softmax - onehot (per sample).
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        lin.bias.zero_()
    x = torch.tensor([[1.0, 1.0]])
    y = torch.tensor([0])
    net = nn.Sequential(lin)
    cache = run_with_cache(net, x, target=y, with_grads=True)
    logits = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(cache["0"], logits)
    s = _stats([0.0, 1.0], [1.0, 2.0])
    opts = ImportanceOptions(tau=2.0)
    w = layer_importance(cache["0"], cache.grads["0"], s, opts)
    # By hand: |z| = [1, 0.5]; A = softmax(2*[1, 0.5]) = softmax([2, 1])
    p = torch.softmax(logits, 1)
    grad = p - torch.tensor([[1.0, 0.0]])  # [p0 - 1, p1]
    g = grad * torch.tensor([[1.0, 2.0]])
    A = torch.softmax(torch.tensor([[2.0, 1.0]]), 1)
    G = torch.softmax(2.0 * g, 1)
    torch.testing.assert_close(w, torch.sqrt(A * G))


def test_running_stats_match_torch():
    torch.manual_seed(0)
    chunks = [torch.randn(5, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0])[None, :, None, None] + 1 for _ in range(3)]
    rs = RunningStats(eps=1e-5)
    for c in chunks:
        rs.update(c)
    st = rs.finish()
    full = torch.cat(chunks).transpose(0, 1).reshape(3, -1).double()
    torch.testing.assert_close(st.mean, full.mean(1).float())
    torch.testing.assert_close(st.std, torch.sqrt(full.var(1) + 1e-5).float())
    assert st.count == 5 * 3 * 16


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "five", None])
def test_tau_validation(bad):
    with pytest.raises(ValueError, match="tau"):
        validate_tau(bad)


def test_options_validation_messages():
    with pytest.raises(ValueError, match="criteria"):
        ImportanceOptions(criteria="gradient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zscore"):
        ImportanceOptions(zscore="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="statistics have 3 channels"):
        activation_importance(torch.zeros(1, 2), _stats([0.0] * 3, [1.0] * 3), tau=1.0)


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("zscore", ["abs", "signed"])
@pytest.mark.parametrize("impact", ["signed", "abs", "scaled"])
def test_layer_importance_is_the_equations_composed(criteria, zscore, impact):
    torch.manual_seed(3)
    act, grad = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5) * 0.1
    s = _stats([0.2, -0.1, 0.0], [0.5, 1.5, 2.0])
    opts = ImportanceOptions(tau=4.0, criteria=criteria, zscore=zscore, impact=impact)
    a = activation_importance(act, s, 4.0, zscore_mode=zscore)
    g = impact_importance(grad, s, 4.0, impact_mode=impact)
    expected = {"both": combine_importance(a, g), "activation": a, "impact": g}[criteria]
    torch.testing.assert_close(layer_importance(act, grad, s, opts), expected)
    g0 = grad.clone()
    scaled = layer_importance(act, grad, s, opts, divide_by_variance=True, grad_is_scratch=True)
    torch.testing.assert_close(scaled, expected / (s.std ** 2)[None, :, None, None])
    assert torch.equal(grad, g0)  # the definition never overwrites the gradient


def test_effective_neurons_by_hand():
    uniform = torch.full((2, 4, 5), 1 / 20)
    torch.testing.assert_close(effective_neurons(uniform), torch.tensor([20.0, 20.0]))
    one_hot = torch.zeros(1, 10)
    one_hot[0, 3] = 1.0
    torch.testing.assert_close(effective_neurons(one_hot), torch.tensor([1.0]))
    two = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(effective_neurons(two), torch.tensor([2.0]))


def test_layer_importance_accepts_channels_last_activations():
    """The frozen teacher runs channels-last; its activations must give the same weights."""
    g = torch.Generator().manual_seed(0)
    act = torch.randn(3, 4, 5, 5, generator=g)
    grad = torch.randn(3, 4, 5, 5, generator=g)
    stats = LayerStats(torch.zeros(4), torch.ones(4))
    opts = ImportanceOptions(tau=3.0)
    ref = layer_importance(act, grad.clone(), stats, opts)
    cl = layer_importance(act.contiguous(memory_format=torch.channels_last),
                          grad.clone().contiguous(memory_format=torch.channels_last), stats, opts)
    torch.testing.assert_close(cl, ref)


def test_scaled_impact_by_hand_and_free_of_the_gradients_scale():
    """σ = (1, 2), ∂ℓ/∂f = (1, −1)·1e-6: g = σ·∂ℓ/∂f = (1, −2)·1e-6, spread 1.5e-6, scaled score
    (2/3, −4/3); at τ = ln 3 / 2 eq.(3) is softmax([ln 3 / 3, −2 ln 3 / 3]) = (3/4, 1/4) — at any
    gradient scale, where the signed score is uniform to 1e-6."""
    stats = LayerStats(mean=torch.zeros(2), std=torch.tensor([1.0, 2.0]))
    tau = math.log(3) / 2
    for scale in (1e-6, 1.0, 1e3):
        grad = torch.tensor([[1.0, -1.0]]) * scale
        score = impact_score(grad, stats, "scaled")
        assert torch.allclose(score, torch.tensor([[2 / 3, -4 / 3]]), atol=1e-6)
        assert torch.allclose(impact_importance(grad, stats, tau, impact_mode="scaled"), torch.tensor([[0.75, 0.25]]), atol=1e-6)
    tiny = impact_importance(torch.tensor([[1e-6, -1e-6]]), stats, tau, impact_mode="signed")
    assert torch.allclose(tiny, torch.full((1, 2), 0.5), atol=1e-6)
    zero = impact_importance(torch.zeros(1, 2), stats, tau, impact_mode="scaled")
    assert torch.equal(zero, torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="'abs' or 'scaled', got 'normalised'"):
        ImportanceOptions(impact="normalised")  # type: ignore[arg-type]


def test_scaled_impact_divisor_is_the_population_std_per_sample_for_every_shape_and_layout():
    """The two-pass divisor equals ``std(unbiased=False)`` over each sample's other dimensions
    (to 1e-5) for 1-D, 2-D, 4-D and channels-last gradients, offset from zero, in float32 and
    bfloat16; it is shaped (B, 1, …); a constant sample gets the floor 1e-30."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(5,), (4, 7), (3, 6, 5, 4)]:
        g = torch.randn(shape, generator=gen) * 1e-3 + 0.5
        for x in (g, g.contiguous(memory_format=torch.channels_last)) if g.ndim == 4 else (g,):
            expected = x.reshape(x.shape[0], -1).std(1, unbiased=False).clamp_min(1e-30)
            got = scaled_impact_divisor(x)
            assert got.shape == (x.shape[0],) + (1,) * (x.ndim - 1)
            torch.testing.assert_close(got.reshape(-1), expected, rtol=1e-5, atol=0.0)
    half = (torch.randn(3, 8, generator=gen) + 2.0).bfloat16()
    got = scaled_impact_divisor(half)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float().reshape(-1), half.float().std(1, unbiased=False), rtol=1e-2, atol=0.0)
    const = torch.ones(2, 3, 4)
    assert torch.equal(scaled_impact_divisor(const), torch.full((2, 1, 1), 1e-30))


def test_combined_weights_are_not_renormalised_and_sum_below_one_unless_uniform():
    """Eq.(4) as used: ``Σ sqrt(A·G) ≤ 1``, equal only at τ = 0 (plain cloning's ``1/m``). Two
    neurons, f = (3, 1), μ = (1, 1), σ = (2, 2): |z| = (1, 0), at τ = ln 3 A = (3/4, 1/4); a zero
    gradient makes G = (1/2, 1/2); so w = (sqrt(3/8), sqrt(1/8)), summing to 0.966 — the cloning
    term's total weight that ``benchmarks.diag_weight_mass`` measures on real teachers."""
    stats = _stats([1.0, 1.0], [2.0, 2.0])
    act, grad = torch.tensor([[3.0, 1.0]]), torch.zeros(1, 2)
    w = layer_importance(act, grad, stats, ImportanceOptions(tau=math.log(3)))
    torch.testing.assert_close(w, torch.tensor([[math.sqrt(3 / 8), math.sqrt(1 / 8)]]))
    assert abs(float(w.sum()) - (math.sqrt(3 / 8) + math.sqrt(1 / 8))) < 1e-6 and float(w.sum()) < 0.97
    plain = layer_importance(act, grad, stats, ImportanceOptions(tau=0.0))
    assert float(plain.sum()) == pytest.approx(1.0)
