"""Each MEDIC criterion's sharpness and its weight on a set of neurons
(medic_viz.analysis.sharpness), on tiny models whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from _support import TinyConvNet
from medic_viz.analysis.sharpness import SHARPNESS_CRITERIA, criteria_sharpness
from medic_viz.data.arrays import Augmentation, ImageArrays
from medic_viz.stats import LayerStats, compute_layer_stats


def Net() -> TinyConvNet:
    """The shared tiny net (tests/_support.py) with 3 classes."""
    return TinyConvNet(3)


def _images(n: int = 24, labels: torch.Tensor | None = None) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.long) if labels is None else labels
    return ImageArrays(x, y, ("a", "b", "c"), augmentation=Augmentation(crop_pad=1))


def _net() -> TinyConvNet:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_var.fill_(0.5)
    return net


def test_tau_zero_is_uniform_for_every_criterion() -> None:
    data = _images()
    out = criteria_sharpness(_net(), data, taus=0.0, layers=["conv", "bn"],
                             neurons={"conv": [0, 5, 70], "bn": torch.arange(256)})
    for c in SHARPNESS_CRITERIA:
        assert out.effective_share[c] == pytest.approx({"conv": 1.0, "bn": 1.0}, abs=1e-6)
        assert out.neuron_weight[c] == pytest.approx({"conv": 1.0, "bn": 1.0}, abs=1e-9)
    assert out.n_images == len(data) and out.layers == ("conv", "bn")


class TwoNeurons(nn.Module):
    """A 1×1 image's two channels pass through ``probe`` unchanged; the logits read them."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Identity()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.probe(x[:, :2]).flatten(1))


def test_activation_share_and_neuron_weight_by_hand() -> None:
    """Neuron 0 sits 2 σ from its mean, neuron 1 at its mean; τ = ln 3 / 2 makes eq.(2)'s weights
    softmax([ln 3, 0]) = (3/4, 1/4): effective neurons exp(H) of 2, neuron 0 at 1.5× uniform."""
    x = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    x[0, 0] = 255  # 1.0 after scaling to [0, 1]
    data = ImageArrays(x, torch.zeros(1, dtype=torch.long), ("a", "b", "c"))
    stats = {"probe": LayerStats(mean=torch.tensor([0.5, 0.0]), std=torch.tensor([0.25, 1.0]))}
    out = criteria_sharpness(TwoNeurons(), data, taus={"probe": math.log(3) / 2}, stats=stats, neurons={"probe": [0]})
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert out.effective_share["activation"]["probe"] == pytest.approx(math.exp(entropy) / 2, rel=1e-5)
    assert out.neuron_weight["activation"]["probe"] == pytest.approx(1.5, rel=1e-5)
    assert out.mean_neuron_weight("activation") == pytest.approx(1.5, rel=1e-5)


@pytest.mark.parametrize("criterion", ["activation", "both"])
def test_neurons_that_fire_most_are_weighted_above_uniform(criterion: str) -> None:
    net, data = _net(), _images()
    with torch.no_grad():
        act = net.bn(net.conv(data.floats()))
    z = ((act - act.mean((0, 2, 3), keepdim=True)) / act.std((0, 2, 3), keepdim=True)).abs().mean(0).reshape(-1)
    loud, quiet = z.argsort(descending=True)[:10], z.argsort()[:10]
    high = criteria_sharpness(net, data, taus=3.0, layers=["bn"], neurons={"bn": loud})
    low = criteria_sharpness(net, data, taus=3.0, layers=["bn"], neurons={"bn": quiet})
    assert high.neuron_weight[criterion]["bn"] > 1.5 > 0.8 > low.neuron_weight[criterion]["bn"]


def test_impact_goes_uniform_as_the_model_grows_confident() -> None:
    """Labels are the model's own predictions; scaling its logits up drives the loss, and with it
    eq.(3)'s gradient, to zero: the impact weights flatten while eq.(2)'s do not change."""
    net = _net()
    data = _images()
    with torch.no_grad():
        data.labels = net(data.floats()).argmax(1)
    results = {}
    for scale in (1.0, 1000.0):
        confident = _net()
        with torch.no_grad():
            confident.fc.weight.mul_(scale)
            confident.fc.bias.mul_(scale)
        results[scale] = criteria_sharpness(confident, data, taus=1000.0, layers=["conv", "bn"])
    unsure, sure = results[1.0], results[1000.0]
    assert sure.loss_mean < 1e-6 < 0.3 < unsure.loss_mean
    assert sure.mean_share("impact") > 0.9999 > 0.9 > unsure.mean_share("impact")
    assert sure.mean_share("activation") == pytest.approx(unsure.mean_share("activation"), rel=1e-6)
    assert sure.mean_share("activation") < 0.5


def test_augmented_batches_differ_and_hooks_are_removed() -> None:
    net, data = _net(), _images()
    plain = criteria_sharpness(net, data, taus=3.0, layers=["bn"])
    augmented = criteria_sharpness(net, data, taus=3.0, layers=["bn"], augment=True, seed=1)
    again = criteria_sharpness(net, data, taus=3.0, layers=["bn"], augment=True, seed=1)
    assert augmented.effective_share == again.effective_share != plain.effective_share
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())


def test_bad_arguments_are_refused_in_one_line() -> None:
    net, data = _net(), _images()
    with pytest.raises(ValueError, match="flat indices in 0..255"):
        criteria_sharpness(net, data, taus=1.0, layers=["bn"], neurons={"bn": [256]})
    with pytest.raises(ValueError, match="lists a neuron twice"):
        criteria_sharpness(net, data, taus=1.0, layers=["bn"], neurons={"bn": [3, 3]})
    with pytest.raises(ValueError, match="no τ for layer"):
        criteria_sharpness(net, data, taus={"bn": 1.0}, layers=["conv", "bn"])
    with pytest.raises(ValueError, match="non-empty ImageArrays"):
        criteria_sharpness(net, data.subset([]), taus=1.0)


def test_statistics_from_data_use_medics_eps_as_a_run_does() -> None:
    """Given clean data, σ is estimated as a MEDIC run estimates it (ε = 0.1 by default): the same
    numbers as passing those statistics, other numbers than with the statistics' own ε = 1e-5."""
    net, data = _net(), _images()
    implied = criteria_sharpness(net, data, taus=3.0, layers=["bn"])
    given = criteria_sharpness(net, data, taus=3.0, layers=["bn"], stats=compute_layer_stats(net, data, ["bn"], eps=0.1))
    small = criteria_sharpness(net, data, taus=3.0, layers=["bn"], eps=1e-5)
    assert implied.effective_share == given.effective_share
    assert abs(small.mean_share("activation") - implied.mean_share("activation")) > 1e-4
