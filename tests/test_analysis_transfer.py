"""Why a cloning keeps a backdoor: compromised neurons, their share of the cloning weight and of
the map's centre, and the trigger response a clone kept — on tiny models whose answers are known."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from _support import TinyConvNet
from medic_viz.analysis import (
    NeuronRanking,
    centre_share,
    compromised_importance_statistic,
    compromised_neurons,
    rank_compromised_neurons,
    target_readout,
    trigger_transfer,
    weight_share,
)
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.capture import run_with_cache
from medic_viz.data.arrays import ImageArrays
from medic_viz.importance import ImportanceOptions, RunningStats, layer_importance


def Net() -> TinyConvNet:
    """The shared tiny net (tests/_support.py) with 2 classes."""
    return TinyConvNet(2)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(20, 3, 8, 8) * 0.5
    y = torch.arange(20) % 2
    trigger = BadNetTrigger(size=3, pattern="solid", colors=((1.0, 1.0, 1.0),))
    cache = run_with_cache(model, x)
    stats = {}
    for n in cache:
        rs = RunningStats()
        rs.update(cache[n])
        stats[n] = rs.finish()
    return model, x, y, trigger, stats


def _ranking_with_maps(shift: np.ndarray, importance: np.ndarray) -> NeuronRanking:
    c = shift.shape[0]
    return NeuronRanking(np.asarray(["a"] * c, dtype=object), np.arange(c), np.abs(shift).reshape(c, -1).mean(1),
                         np.ones(c), np.ones(c) / c, np.arange(1, c + 1), np.arange(1, c + 1), {"a": c}, 5.0, "combined",
                         "mean_abs", 10, {"a": shift}, {"a": importance})


def test_compromised_neurons_are_the_statistics_units():
    shift = np.zeros((2, 4, 4))
    shift[:, 2:, 2:] = 5.0
    shift[0, 3, 3] = 6.0
    shift[1, 0, 0] = 0.5  # below 1σ: never compromised
    r = _ranking_with_maps(shift, np.ones((2, 4, 4)))
    idx = compromised_neurons(r, "a", top_fraction=1.0)
    assert len(idx) == 8 and idx[0] == np.ravel_multi_index((0, 3, 3), (2, 4, 4))
    assert set(idx.tolist()) == set(np.flatnonzero(shift.reshape(-1) >= 1.0).tolist())
    # the statistic selects as many: 10 % of 32 neurons = 3 by default, 8 when the cap allows
    assert len(compromised_neurons(r, "a")) == 3
    for frac in (0.1, 0.5, 1.0):
        st = compromised_importance_statistic(r, top_fraction=frac)
        assert st.per_layer[0]["k"] == len(compromised_neurons(r, "a", top_fraction=frac))
    assert len(compromised_neurons(r, "a", min_shift=5.5)) == 1
    with pytest.raises(ValueError, match="per-neuron maps"):
        compromised_neurons(r, "b")
    with pytest.raises(ValueError, match="top_fraction"):
        compromised_neurons(r, "a", top_fraction=0.0)


def test_centre_share_by_hand():
    r = _ranking_with_maps(np.zeros((2, 4, 4)), np.ones((2, 4, 4)))
    flat = lambda c, i, j: int(np.ravel_multi_index((c, i, j), (2, 4, 4)))  # noqa: E731
    # the middle half of a 4x4 map is rows 1-2 x cols 1-2
    assert centre_share(r, "a", [flat(0, 1, 1), flat(1, 2, 2)]) == 1.0
    assert centre_share(r, "a", [flat(0, 0, 0), flat(1, 3, 3), flat(0, 1, 2), flat(1, 0, 2)]) == 0.25
    assert centre_share(r, "a", [flat(0, 0, 0)], centre=1.0) == 1.0
    assert np.isnan(centre_share(r, "a", []))
    with pytest.raises(ValueError, match="centre"):
        centre_share(r, "a", [0], centre=0.0)


def test_weight_share_is_the_count_share_at_tau_0_and_layer_importance_above(setup):
    model, x, y, trigger, stats = setup
    uniform = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, tau=0.0, layers=["conv", "bn"])
    for layer in ("conv", "bn"):
        idx = compromised_neurons(uniform, layer)
        assert len(idx) > 0
        assert weight_share(uniform, layer, idx) == pytest.approx(len(idx) / uniform.neuron_shift[layer].size)
    idx = compromised_neurons(uniform, "bn")
    sharp = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, tau=3.0, layers=["bn"])
    cache = run_with_cache(model, x, ["bn"], target=y, with_grads=True)
    w = layer_importance(cache["bn"], cache.grads["bn"], stats["bn"], ImportanceOptions(tau=3.0)).double()
    w = (w / w.sum((1, 2, 3), keepdim=True)).reshape(len(x), -1)
    assert weight_share(sharp, "bn", idx) == pytest.approx(float(w[:, idx].sum(1).mean()), rel=1e-6)
    assert weight_share(sharp, "bn", np.arange(w.shape[1])) == pytest.approx(1.0)


def test_trigger_transfer_known_answers(setup):
    model, x, y, trigger, stats = setup
    half = copy.deepcopy(model)
    blind = copy.deepcopy(model)
    with torch.no_grad():
        half.conv.weight.mul_(0.5)  # conv(x') - conv(x) = W(x' - x): half the teacher's shift, same direction
        blind.conv.weight.zero_()  # no response to any input change
    t = trigger_transfer(model, {"self": copy.deepcopy(model), "half": half, "blind": blind}, x, trigger, stats=stats,
                         labels=y)
    assert t.layers == ["conv", "bn", "fc"] and t.clones == ["self", "half", "blind"] and t.n_images == 20
    for layer in t.layers:
        assert t.kept["self"][layer] == pytest.approx(1.0) and t.cosine["self"][layer] == pytest.approx(1.0)
        assert t.kept["blind"][layer] == 0.0 and t.cosine["blind"][layer] == 0.0
        assert t.clone_shift["self"][layer] == pytest.approx(t.teacher_shift[layer])
        assert t.clean_error["self"][layer] == 0.0
    assert t.kept["half"]["conv"] == pytest.approx(0.5) and t.cosine["half"]["conv"] == pytest.approx(1.0)
    assert t.kept["half"]["bn"] == pytest.approx(0.5)  # BN in eval mode is affine per channel
    # the clean representation the half-weight clone misses, by hand: conv(x) - b is halved
    z = model.conv(x).detach()
    mu, sd = stats["conv"].mean.reshape(1, -1, 1, 1), stats["conv"].std.reshape(1, -1, 1, 1)
    b = model.conv.bias.detach().reshape(1, -1, 1, 1)
    want = float((((z - b) / 2 / sd) ** 2).sum() / (((z - mu) / sd) ** 2).sum())
    assert t.clean_error["half"]["conv"] == pytest.approx(want, rel=1e-5)
    # the teacher's shift by hand: mean |Δ|/σ over the conv layer's neurons
    d = (model.conv(trigger.apply(x)) - model.conv(x)).detach() / stats["conv"].std.reshape(1, -1, 1, 1)
    assert t.teacher_shift["conv"] == pytest.approx(float(d.abs().mean()), rel=1e-5)
    rec = t.as_records()
    assert len(rec) == 9 and set(rec[0]) == {"clone", "layer", "kept", "cosine", "teacher_shift", "clone_shift",
                                             "clean_error"}
    only = trigger_transfer(model, {"half": half}, x, trigger, stats=stats, labels=y, exclude_label=0, layers=["conv"])
    assert only.layers == ["conv"] and only.n_images == 10 and only.kept["half"]["conv"] == pytest.approx(0.5)


def test_trigger_transfer_refuses_bad_input(setup):
    model, x, y, trigger, stats = setup
    with pytest.raises(ValueError, match="non-empty"):
        trigger_transfer(model, {}, x, trigger, stats=stats, labels=y)
    with pytest.raises(ValueError, match="reserved"):
        trigger_transfer(model, {"teacher": model}, x, trigger, stats=stats, labels=y)
    with pytest.raises(ValueError, match="no images left"):
        trigger_transfer(model, {"m": model}, x, trigger, stats=stats, labels=torch.zeros(20, dtype=torch.long),
                         exclude_label=0)
    with pytest.raises(TypeError, match="Trigger"):
        trigger_transfer(model, {"m": model}, x, "badnet", stats=stats, labels=y)  # type: ignore[arg-type]  # a name, on purpose


class Identity1x1(nn.Module):
    """A 1×1 convolution that copies its input, then a linear read-out (2 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_target_readout_says_where_triggered_images_look_like_the_target():
    torch.manual_seed(0)
    # class 0: dark images, class 1 (the target): bright ones
    dark = 0.1 + 0.05 * torch.rand(12, 3, 8, 8)
    bright = 0.85 + 0.05 * torch.rand(12, 3, 8, 8)
    data = ImageArrays((torch.cat([dark, bright]) * 255).round().to(torch.uint8), torch.tensor([0] * 12 + [1] * 12),
                       ("dark", "bright"))
    model = Identity1x1().eval()
    cache = run_with_cache(model, data.floats(), ["conv"])
    rs = RunningStats()
    rs.update(cache["conv"])
    stats = {"conv": rs.finish()}
    whole = BadNetTrigger(size=8, position=(0, 0), pattern="solid", colors=((1.0, 1.0, 1.0),))  # all white
    corner = BadNetTrigger(size=2, pattern="solid", colors=((1.0, 1.0, 1.0),))  # a small patch: still dark
    red_only = copy.deepcopy(model)
    with torch.no_grad():
        red_only.conv.weight.zero_()
        red_only.conv.weight[0, 0] = 1.0  # sees the red channel only: still separates dark from bright
    r = target_readout({"m": model, "red_only": red_only}, data, data, whole, 1, stats=stats, layers=["conv"])
    assert r.layers == ["conv"] and r.models == ["m", "red_only"] and r.n_images == 12 and r.n_clean == 24
    assert r.target_share["m"]["conv"] == 1.0 and r.clean_accuracy["m"]["conv"] == 1.0
    assert r.target_share["red_only"]["conv"] == 1.0
    small = target_readout({"m": model}, data, data, corner, 1, stats=stats, layers=["conv"])
    assert small.target_share["m"]["conv"] == 0.0 and small.clean_accuracy["m"]["conv"] == 1.0
    assert small.as_records() == [{"model": "m", "layer": "conv", "target_share": 0.0, "clean_accuracy": 1.0}]
    with pytest.raises(ValueError, match="no image of the target class"):
        target_readout({"m": model}, data.subset(torch.arange(12)), data, whole, 1, stats=stats, layers=["conv"])
    with pytest.raises(ValueError, match="non-empty"):
        target_readout({}, data, data, whole, 1, stats=stats)
    with pytest.raises(TypeError, match="ImageArrays"):
        target_readout({"m": model}, data.floats(), data, whole, 1, stats=stats)  # type: ignore[arg-type]  # a tensor, on purpose
