"""Per-layer τ calibration to a share of matched neurons (medic_viz.calibration)."""

from __future__ import annotations

import math

import pytest
import torch

from medic_viz.calibration import calibrate_tau, calibrate_taus, matched_share, validate_share
from medic_viz.importance import ImportanceOptions, LayerStats


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
            validate_share(bad)


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("zscore", ["abs", "signed"])
@pytest.mark.parametrize("impact", ["signed", "abs"])
def test_scores_softmax_equals_normalised_medic_weights(criteria, zscore, impact):
    from medic_viz.calibration import importance_scores
    from medic_viz.importance import effective_neurons, layer_importance

    act, grad, stats = _layer(3, (4, 5, 4, 4), 2.0)
    grad = grad * 50
    for tau in (0.5, 3.0, 12.0):
        opts = ImportanceOptions(tau=tau, criteria=criteria, zscore=zscore, impact=impact)
        w = layer_importance(act, grad.clone(), stats, opts).reshape(4, -1).double()
        w = w / w.sum(1, keepdim=True)
        p = torch.softmax(tau * importance_scores(act, grad, stats, opts).double(), dim=1)
        torch.testing.assert_close(p, w, rtol=1e-4, atol=1e-9)
        m = act[0].numel()
        assert matched_share(act, grad, stats, opts) == pytest.approx(
            float(effective_neurons(layer_importance(act, grad.clone(), stats, opts)).mean()) / m, rel=1e-4)
