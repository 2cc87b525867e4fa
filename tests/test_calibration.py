"""Per-layer τ calibration to a share of matched neurons (medic_viz.calibration)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medic_viz.calibration import calibrate_tau, calibrate_taus, importance_scores, matched_share, validate_share
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import MedicObjective
from medic_viz.importance import ImportanceOptions, LayerStats, effective_neurons, layer_importance
from medic_viz.stats import compute_layer_stats


def _layer(seed: int = 0, shape=(8, 4, 6, 6), spread: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    act = torch.randn(shape, generator=g) * spread + 0.3
    grad = torch.randn(shape, generator=g) * 0.01
    stats = LayerStats(mean=torch.full((shape[1],), 0.3), std=torch.full((shape[1],), spread))
    return act, grad, stats


def test_matched_share_by_hand_uniform_and_one_hot():
    act, grad, stats = _layer()
    # τ = 0: uniform weights match every neuron
    assert matched_share(act, grad, stats, ImportanceOptions(tau=0.0)) == pytest.approx(1.0)
    # activation criterion with one neuron far above the rest, very sharp τ: one neuron per sample
    a = torch.zeros(2, 1, 3, 3)
    a[:, 0, 1, 1] = 50.0
    st = LayerStats(torch.zeros(1), torch.ones(1))
    s = matched_share(a, None, st, ImportanceOptions(tau=10.0, criteria="activation"))
    assert s == pytest.approx(1 / 9, rel=1e-4)


def test_matched_share_two_level_by_hand():
    # 4 neurons, z-scores (0, 0, 0, 1), activation criterion, τ = ln 3: weights ∝ (1, 1, 1, 3)
    a = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    st = LayerStats(torch.zeros(1), torch.ones(1))
    p = torch.tensor([1.0, 1.0, 1.0, 3.0]) / 6
    expected = math.exp(float(-(p * p.log()).sum())) / 4
    got = matched_share(a, None, st, ImportanceOptions(tau=math.log(3.0), criteria="activation"))
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("share", [0.02, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
def test_calibrated_tau_hits_the_share(share, criteria):
    act, grad, stats = _layer(shape=(8, 8, 8, 8))
    opts = ImportanceOptions(tau=5.0, criteria=criteria)
    tau = calibrate_tau(act, grad, stats, opts, share)
    assert tau > 0
    got = matched_share(act, grad, stats, ImportanceOptions(tau=tau, criteria=criteria))
    assert got == pytest.approx(share, rel=0.02)


def test_share_decreases_with_tau_and_calibration_adapts_to_spread():
    act, grad, stats = _layer(shape=(4, 8, 8, 8))
    shares = [matched_share(act, grad, stats, ImportanceOptions(tau=t)) for t in (0.5, 2.0, 8.0, 32.0)]
    assert shares == sorted(shares, reverse=True) and shares[0] > shares[-1]
    # a teacher whose gradients are 10x larger needs a smaller τ for the same share
    small = calibrate_tau(act, grad, stats, ImportanceOptions(criteria="impact"), 0.05)
    large = calibrate_tau(act, grad * 10, stats, ImportanceOptions(criteria="impact"), 0.05)
    assert large == pytest.approx(small / 10, rel=0.02)


def test_share_one_means_plain_cloning_and_inputs_untouched():
    act, grad, stats = _layer()
    before = grad.clone()
    assert calibrate_tau(act, grad, stats, ImportanceOptions(), 1.0) == 0.0
    calibrate_tau(act, grad, stats, ImportanceOptions(), 0.1)
    assert torch.equal(grad, before)


def test_calibrate_taus_per_layer_and_errors():
    a1, g1, s1 = _layer(0, (4, 4, 6, 6), 1.0)
    a2, g2, s2 = _layer(1, (4, 16), 3.0)
    taus = calibrate_taus([a1, a2], [g1, g2], {"conv": s1, "fc": s2}, ImportanceOptions(), 0.1)
    assert set(taus) == {"conv", "fc"} and all(t > 0 for t in taus.values())
    with pytest.raises(ValueError, match="layers"):
        calibrate_taus([a1], [g1, g2], {"conv": s1, "fc": s2}, ImportanceOptions(), 0.1)
    for bad in (0, -0.1, 1.5, "x", "0.05", True, float("nan")):
        with pytest.raises(ValueError, match="share"):
            validate_share(bad)  # type: ignore[arg-type]  # deliberately wrong


def check_calibration_shortcut(act, grad, stats, opts: ImportanceOptions) -> None:
    """The calibration's closed form (softmax(τ·importance_scores)) against the one definition
    (medic_viz.importance.layer_importance, normalised per sample), and the matched share against
    the exp-entropy of the definition's weights. Raises AssertionError if they differ — e.g. when
    eq.(4)'s combination rule changes in medic_viz.importance and not in medic_viz.calibration."""
    b, m = act.shape[0], act[0].numel()
    w = layer_importance(act, None if grad is None else grad.clone(), stats, opts).reshape(b, -1).double()
    w = w / w.sum(1, keepdim=True)
    p = torch.softmax(opts.tau * importance_scores(act, grad, stats, opts).double(), dim=1)
    # the scaled impact's scores spread over O(1), so at τ = 30 the definition's float32 A·G
    # underflows (weights of ~1e-8 become 0) where the double closed form keeps them
    torch.testing.assert_close(p, w, rtol=1e-4, atol=1e-7 if opts.impact == "scaled" else 1e-9)
    assert matched_share(act, grad, stats, opts) == pytest.approx(
        float(effective_neurons(layer_importance(act, None if grad is None else grad.clone(), stats, opts)).mean()) / m, rel=1e-4)


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("zscore", ["abs", "signed"])
@pytest.mark.parametrize("impact", ["signed", "abs", "scaled"])
def test_scores_softmax_equals_normalised_medic_weights(criteria, zscore, impact):
    act, grad, stats = _layer(3, (4, 5, 4, 4), 2.0)
    grad = grad * 50
    for tau in (0.5, 3.0, 12.0):
        check_calibration_shortcut(act, grad, stats, ImportanceOptions(tau=tau, criteria=criteria, zscore=zscore, impact=impact))


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("zscore", ["abs", "signed"])
@pytest.mark.parametrize("impact", ["signed", "abs", "scaled"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_calibration_shortcut_equals_the_definition_on_an_engine_teacher_pass(criteria, zscore, impact, reduction):
    """Every option, with activations and gradients from the engine's teacher pass (so the
    loss reduction of the impact gradient is the real one), on conv, norm and linear layers."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(1)
    data = ImageArrays((torch.rand(24, 3, 6, 6, generator=g) * 255).to(torch.uint8), torch.randint(0, 3, (24,), generator=g),
                       classes=("a", "b", "c"), name="tiny")
    stats = compute_layer_stats(net, data, device="cpu")
    opts = ImportanceOptions(tau=5.0, criteria=criteria, zscore=zscore, impact=impact, loss_reduction=reduction)
    obj = MedicObjective(net, net, stats, opts, 1.0, fused="reference")
    acts, grads = obj.teacher_activations(data.floats()[:12], data.labels[:12])
    for name, a, gr in zip(obj.layers, acts, grads):
        for tau in (0.7, 5.0, 30.0):
            check_calibration_shortcut(a, gr, stats[name], ImportanceOptions(tau=tau, criteria=criteria, zscore=zscore,
                                                                            impact=impact, loss_reduction=reduction))
