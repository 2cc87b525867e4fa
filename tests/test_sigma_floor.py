"""The σ floor (:func:`medic_viz.stats.floor_std`, ``MedicConfig.sigma_floor``): values by hand,
a floor below every σ changes nothing to the bit, a dead channel's weight is capped, errors."""

import math
from typing import Any

import pytest
import torch
import torch.nn as nn

from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import Medic, MedicConfig
from medic_viz.stats import LayerStats, compute_layer_stats, floor_std


def _stats(*stds: list[float]) -> dict[str, LayerStats]:
    return {f"l{i}": LayerStats(torch.arange(len(s), dtype=torch.float32), torch.tensor(s), 10)
            for i, s in enumerate(stds)}


def test_layer_floor_raises_a_dead_channel_to_rho_times_the_layer_rms():
    # RMS of (1, 1, 1, 0.001) = sqrt(3.000001 / 4) = 0.8660258; floor 0.1 → 0.08660258.
    out = floor_std(_stats([1.0, 1.0, 1.0, 0.001]), 0.1, "layer")["l0"]
    expected = 0.1 * math.sqrt((3 + 1e-6) / 4)
    torch.testing.assert_close(out.std, torch.tensor([1.0, 1.0, 1.0, expected]))
    torch.testing.assert_close(out.mean, torch.arange(4, dtype=torch.float32))  # means untouched
    assert out.count == 10


def test_model_floor_uses_the_median_of_the_layers_rms():
    # Layer RMS: 2.0, 0.02 and 1.0 → median 1.0; floor 0.1 → 0.1 in every layer.
    out = floor_std(_stats([2.0, 2.0], [0.02, 0.02], [1.0, 1.0]), 0.1, "model")
    torch.testing.assert_close(out["l0"].std, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(out["l1"].std, torch.tensor([0.1, 0.1]))
    torch.testing.assert_close(out["l2"].std, torch.tensor([1.0, 1.0]))
    # The layer scope leaves the uniformly small layer alone (each channel is its layer's RMS).
    torch.testing.assert_close(floor_std(_stats([0.02, 0.02]), 0.1, "layer")["l0"].std, torch.tensor([0.02, 0.02]))


def test_a_floor_below_every_sigma_changes_nothing_to_the_bit():
    stats = _stats([0.7, 0.9, 1.3], [0.5, 0.6])
    assert floor_std(stats, 0.0) is stats
    for scope in ("layer", "model"):
        out = floor_std(stats, 0.3, scope)
        for name in stats:
            assert torch.equal(out[name].std, stats[name].std)


@pytest.mark.parametrize("floor, scope, fragment", [(1.0, "layer", "floor"), (-0.1, "layer", "floor"),
                                                    (0.1, "network", "floor_scope"), ("0.1", "layer", "floor")])
def test_bad_floors_are_refused_in_one_line(floor: Any, scope: str, fragment: str):
    with pytest.raises(ValueError, match=fragment) as info:
        floor_std({}, floor, scope)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=fragment):
        MedicConfig(sigma_floor=floor, sigma_floor_scope=scope)


def _dead_channel_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[3].weight[2].zero_()  # channel 2 of the second conv is constant (its bias) on any input
    return net.eval()


def _data(n: int = 32) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    return ImageArrays(x, torch.randint(0, 3, (n,), generator=g), classes=("a", "b", "c"), name="tiny")


def test_a_dead_channel_sits_at_the_eps_floor_without_the_floor_and_at_rho_rms_with_it():
    net, data = _dead_channel_net(), _data()
    plain = compute_layer_stats(net, data, ["3"], device="cpu")["3"].std
    floored = compute_layer_stats(net, data, ["3"], device="cpu", floor=0.2)["3"].std
    assert float(plain[2]) == pytest.approx(math.sqrt(1e-5), rel=1e-3)  # weight 1/σ² = 1e5 in the loss
    rms = float(plain.double().square().mean().sqrt())
    assert float(floored[2]) == pytest.approx(0.2 * rms, rel=1e-5)
    live = [0, 1, 3]
    assert torch.equal(floored[live], plain[live])  # the live channels are far above 0.2 · RMS here
    # the dead channel's weight in the loss, 1/σ², is now 1/0.2² = 25 times the layer's typical 1/RMS²
    assert float(floored[2]) ** -2 == pytest.approx(25 * rms ** -2, rel=1e-4)
    assert float(plain[2]) ** -2 > 100 * rms ** -2  # and was over 100 times it (177 here)


def test_medic_with_a_floor_no_channel_reaches_is_the_same_run_to_the_bit():
    """What makes the floor safe for models without dead channels (BENCHMARKS: every WRN-16-1 and
    small-CNN teacher): the run, weights and curve, is bit-identical to the run without it."""
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                            nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 3)).eval()
    data = _data()
    # the paper's ε (its stats below): at MEDIC's default ε = 0.1 the ε already floors σ at 0.32
    options: dict[str, Any] = dict(epochs=2, batch_size=16, progress=False, device="cpu", fused="reference", tau=0.0,
                                   eps=1e-5)
    layers = ["3", "4"]
    stats = compute_layer_stats(teacher, data, layers, device="cpu", eps=1e-5)
    smallest = min(float((s.std / s.std.square().mean().sqrt()).min()) for s in stats.values())
    assert smallest > 0.2  # so a 0.2 floor touches nothing
    runs = [Medic(layers=layers, sigma_floor=rho, **options).run(teacher, data) for rho in (0.0, 0.2)]
    for (name, a), (_, b) in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().items()):
        assert torch.equal(a, b), name
    above = Medic(layers=layers, sigma_floor=0.99, **options).run(teacher, data)  # touches most channels
    assert any(not torch.equal(a, b) for a, b in zip(runs[0].model.state_dict().values(),
                                                      above.model.state_dict().values()))
