"""Figure-2 quantities, the neuron ranking and the compromised-neuron statistic, checked on tiny
models whose answers are known."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medic_viz.analysis import (
    MAP_KEYS,
    NeuronRanking,
    analyze_input,
    compromised_importance_statistic,
    find_flipping_image,
    rank_compromised_neurons,
    reduce_channels,
    spearman,
    top_activating_images,
)
from medic_viz.analysis.claim import _sign_test
from medic_viz.analysis.ranking import _image_percentiles
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.registry import trigger_from_config
from medic_viz.capture import run_with_cache
from medic_viz.data import load_dataset
from medic_viz.data.arrays import ImageArrays
from medic_viz.importance import ImportanceOptions, RunningStats, layer_importance
from medic_viz.pretrained import load_demo_model
from medic_viz.stats import compute_layer_stats


class Tiny(nn.Module):
    """conv(3→4, 3×3) → BN → in-place ReLU → avg-pool → linear(4→3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def _stats_of(model, x, layers=None):
    cache = run_with_cache(model, x, layers)
    out = {}
    for n in cache:
        rs = RunningStats()
        rs.update(cache[n])
        out[n] = rs.finish()
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(32, 3, 8, 8)
    stats = _stats_of(model, x)
    trigger = BadNetTrigger(size=3, position="bottom-right", margin=1)
    return model, x, stats, trigger


@pytest.fixture(scope="module")
def analysis(tiny):
    model, x, stats, trigger = tiny
    return analyze_input(model, x[0], trigger, 1, stats=stats)


def test_reduce_channels_by_hand():
    t = torch.tensor([[[1.0, -3.0]], [[-2.0, 1.0]]])  # (C=2, H=1, W=2)
    np.testing.assert_allclose(reduce_channels(t, "mean_abs"), [[1.5, 2.0]])
    np.testing.assert_allclose(reduce_channels(t, "max_abs"), [[2.0, 3.0]])
    np.testing.assert_allclose(reduce_channels(t, "mean"), [[-0.5, -1.0]])
    np.testing.assert_allclose(reduce_channels(t, "max"), [[1.0, 1.0]])
    assert reduce_channels(t, "none").shape == (2, 1, 2)
    # a linear layer (F,) has no channel axis: a 1 × F strip, unchanged
    np.testing.assert_allclose(reduce_channels(torch.tensor([1.0, -2.0, 3.0]), "mean_abs"), [[1.0, -2.0, 3.0]])
    with pytest.raises(ValueError, match="reduction"):
        reduce_channels(t, "median")


def test_cached_activations_are_the_models(tiny, analysis):
    model, x, _, trigger = tiny
    clean = run_with_cache(model, x[:1])
    trig = run_with_cache(model, trigger.apply(x[:1]))
    for n in analysis.layers:
        torch.testing.assert_close(analysis.activations["clean"][n], clean[n][0])
        torch.testing.assert_close(analysis.activations["triggered"][n], trig[n][0])
    assert analysis.layers == ["conv", "bn", "fc"]
    assert analysis.map_layers == ["conv", "bn"]
    probs = torch.softmax(clean.output[0], 0)
    assert analysis.predictions["clean"].label == int(probs.argmax())
    assert analysis.predictions["clean"].probability == pytest.approx(float(probs.max()), rel=1e-5)
    np.testing.assert_allclose(analysis.predictions["triggered"].probabilities.sum(), 1.0, rtol=1e-5)


def test_difference_is_triggered_minus_clean_and_reductions(analysis):
    a_c = analysis.activations["clean"]["bn"].numpy()
    a_t = analysis.activations["triggered"]["bn"].numpy()
    maps = analysis.maps("bn", 2.0, "mean_abs")
    assert set(maps) == set(MAP_KEYS)
    np.testing.assert_allclose(maps["difference"], np.abs(a_t - a_c).mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(maps["clean"], np.abs(a_c).mean(0), rtol=1e-6)
    mx = analysis.maps("bn", 2.0, "max_abs")
    np.testing.assert_allclose(mx["difference"], np.abs(a_t - a_c).max(0), rtol=1e-6, atol=1e-7)
    signed = analysis.maps("bn", 2.0, "mean")
    np.testing.assert_allclose(signed["difference"], (a_t - a_c).mean(0), rtol=1e-5, atol=1e-7)
    # the trigger sits in the bottom-right 3x3 (rows/cols 4..6 of 8); a 3x3 conv reaches one pixel
    # further, so the difference is exactly zero in the top-left quarter
    assert np.all(maps["difference"][:3, :3] == 0) and maps["difference"][5, 5] > 0
    per_channel = analysis.maps("bn", 2.0, "none")
    assert per_channel["difference"].shape == (4, 8, 8)
    ch = analysis.maps("bn", 2.0, channel=2)
    np.testing.assert_allclose(ch["triggered"], a_t[2], rtol=1e-6)
    fc = analysis.maps("fc", 2.0)
    assert fc["clean"].shape == (1, 3) and fc["combined"].shape == (1, 3)


@pytest.mark.parametrize("tau", [0.0, 0.7, 5.0])
@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
def test_importance_from_cache_equals_layer_importance(tiny, analysis, tau, criteria):
    model, x, stats, _ = tiny
    cache = run_with_cache(model, x[:1], target=torch.tensor([1]), with_grads=True)
    got = analysis.importance(tau, "combined" if criteria == "both" else criteria)
    for n in analysis.layers:
        want = layer_importance(cache[n], cache.grads[n], stats[n], ImportanceOptions(tau=tau, criteria=criteria))[0]
        torch.testing.assert_close(got[n], want)
        if criteria != "both" or tau == 0:  # eqs.(2), (3) are softmaxes; eq.(4) sqrt(A·G) sums to ≤ 1
            assert float(got[n].sum()) == pytest.approx(1.0, abs=1e-5)
    maps = analysis.maps("conv", tau)
    key = "combined" if criteria == "both" else criteria
    want = layer_importance(cache["conv"], cache.grads["conv"], stats["conv"], ImportanceOptions(tau=tau, criteria=criteria))
    np.testing.assert_allclose(maps[key], want[0].double().numpy().mean(0), rtol=1e-5)


def test_signed_zscore_option_reaches_layer_importance(tiny, analysis):
    model, x, stats, _ = tiny
    cache = run_with_cache(model, x[:1], target=torch.tensor([1]), with_grads=True)
    opts = ImportanceOptions(tau=3.0, criteria="both", zscore="signed")
    want = layer_importance(cache["bn"], cache.grads["bn"], stats["bn"], opts)[0]
    got = analysis.importance(3.0, zscore="signed")["bn"]
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, analysis.importance(3.0)["bn"])


def test_changing_tau_does_not_run_the_model(tiny):
    model, x, stats, trigger = tiny
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        an = analyze_input(model, x[3], trigger, 0, stats=stats)
        assert len(calls) == 2  # one clean, one triggered pass
        for tau in (0.0, 0.5, 1.0, 2.5, 10.0):
            an.importance(tau)
            an.all_maps(tau)
            an.maps("conv", tau, "max_abs", which="triggered")
        assert len(calls) == 2
    finally:
        handle.remove()


def test_stats_can_be_estimated_from_clean_data(tiny):
    model, x, _, trigger = tiny
    data = ImageArrays((x * 255).round().to(torch.uint8), torch.zeros(len(x), dtype=torch.long), ("a", "b", "c"))
    an = analyze_input(model, x[0], trigger, 0, stats=data, layers=["conv", "fc"])
    want = compute_layer_stats(model, data, ["conv", "fc"], device="cpu")
    assert an.layers == ["conv", "fc"]
    torch.testing.assert_close(an.stats["conv"].std, want["conv"].std)


def test_analysis_errors(tiny, analysis):
    model, x, stats, trigger = tiny
    with pytest.raises(ValueError, match="not analysed"):
        analysis.maps("nope", 1.0)
    with pytest.raises(ValueError, match="criteria"):
        analysis.importance(1.0, "gradient")
    with pytest.raises(ValueError, match="tau"):
        analysis.importance(-1.0)
    with pytest.raises(ValueError, match="channel"):
        analysis.maps("bn", 1.0, channel=4)
    with pytest.raises(ValueError, match="label"):
        analyze_input(model, x[0], trigger, 7, stats=stats)
    with pytest.raises(ValueError, match="statistics"):
        analyze_input(model, x[0], trigger, 0, stats={"conv": stats["conv"]}, layers=["conv", "bn"])
    with pytest.raises(ValueError, match="one float image"):
        analyze_input(model, x[:2], trigger, 0, stats=stats)


# ------------------------------------------------------------------------------------------
# ranking: one channel wired to the trigger
# ------------------------------------------------------------------------------------------


class Wired(nn.Module):
    """1×1 conv with 4 channels; channel 2 sums R+G+B (fires on a white patch on a dark image),
    the others respond to colour differences, which a white patch cancels (a small shift)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(
                [[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 1.0, 1.0], [1.0, 0.0, -1.0]]).reshape(4, 3, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5, -0.2, 0.3], [-0.5, 1.0, 0.4, 0.1]]))

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def wired():
    torch.manual_seed(1)
    model = Wired().eval()
    x = torch.rand(24, 3, 8, 8) * 0.5
    y = torch.arange(24) % 2
    trigger = BadNetTrigger(size=3, pattern="solid", colors=((1.0, 1.0, 1.0),))
    stats = _stats_of(model, x)
    return model, x, y, trigger, stats


def test_ranking_puts_the_wired_channel_first(wired):
    model, x, y, trigger, stats = wired
    ranking = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, tau=2.0, batch_size=10)
    conv = ranking.for_layer("conv")
    assert conv.channel[0] == 2 and conv.layer_rank[0] == 1
    assert conv.shift[0] > 3 * conv.shift[1]
    # the shift by hand: mean over images and positions of |Δ| / σ for channel 2
    d = (trigger.apply(x).sum(1) - x.sum(1)).abs() / stats["conv"].std[2]
    assert conv.shift[0] == pytest.approx(float(d.mean()), rel=1e-5)
    # ranks follow |shift|; relative importance averages exactly 1 over a layer's channels
    assert list(ranking.rank) == sorted(ranking.rank)
    assert np.all(np.diff(np.abs(ranking.shift)) <= 1e-12)
    for layer in ranking.layers:
        assert ranking.for_layer(layer).importance.mean() == pytest.approx(1.0, abs=1e-5)
    assert len(ranking) == 4 + 2 and ranking.n_images == 24
    rec = ranking.top(2).as_records()
    assert len(rec) == 2 and set(rec[0]) == {"layer", "channel", "shift", "importance", "importance_mass", "rank", "layer_rank"}
    assert rec[0]["rank"] == 1


def test_ranking_importance_matches_layer_importance(wired):
    model, x, y, trigger, stats = wired
    ranking = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, tau=2.0, layers=["conv"])
    cache = run_with_cache(model, x, ["conv"], target=y, with_grads=True)
    w = layer_importance(cache["conv"], cache.grads["conv"], stats["conv"], ImportanceOptions(tau=2.0))
    share = w.sum((2, 3))
    mass = (share / share.sum(1, keepdim=True)).mean(0)
    conv = ranking.for_layer("conv")
    np.testing.assert_allclose(conv.importance_mass, mass[conv.channel].numpy(), rtol=1e-5)
    np.testing.assert_allclose(conv.importance, 4 * mass[conv.channel].numpy(), rtol=1e-5)


def test_ranking_excludes_a_class_and_checks_input(wired):
    model, x, y, trigger, stats = wired
    r = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, exclude_label=0)
    assert r.n_images == 12
    with pytest.raises(ValueError, match="labels"):
        rank_compromised_neurons(model, x, trigger, stats=stats)
    with pytest.raises(ValueError, match="shift"):
        rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, shift="median")
    with pytest.raises(ValueError, match="not in this ranking"):
        r.for_layer("bn")


def test_top_activating_images(wired):
    model, x, _, trigger, _ = wired
    top = top_activating_images(model, x, trigger, "conv", 2, k=5)
    act_clean = model.conv(x)[:, 2].amax((1, 2))
    want_vals, want_idx = act_clean.detach().topk(5)
    assert torch.equal(top["clean"]["indices"], want_idx)
    np.testing.assert_allclose(top["clean"]["values"], want_vals.numpy(), rtol=1e-5)
    assert np.all(np.diff(top["triggered"]["values"]) <= 0)
    # the white patch drives channel 2 to 3.0 on every triggered image, above any clean value (≤ 1.5)
    np.testing.assert_allclose(top["triggered"]["values"], 3.0, rtol=1e-5)
    assert top["clean"]["values"].max() <= 1.5
    assert top["triggered"]["images"].shape == (5, 3, 8, 8)
    assert torch.equal(top["triggered"]["images"], trigger.apply(x[top["triggered"]["indices"]]))
    with pytest.raises(ValueError, match="channel"):
        top_activating_images(model, x, trigger, "conv", 9, k=2)


# ------------------------------------------------------------------------------------------
# the statistic: can support and can refute
# ------------------------------------------------------------------------------------------


def _ranking(shift_by_layer, imp_by_layer):
    layers, ch, shifts, imps = [], [], [], []
    for name in shift_by_layer:
        s, w = np.asarray(shift_by_layer[name], float), np.asarray(imp_by_layer[name], float)
        layers += [name] * len(s)
        ch.append(np.arange(len(s)))
        shifts.append(s)
        imps.append(w)
    shift, imp = np.concatenate(shifts), np.concatenate(imps)
    order = np.argsort(-np.abs(shift), kind="stable")
    rank = np.empty(len(shift), int)
    rank[order] = np.arange(1, len(shift) + 1)
    lrank = np.concatenate([np.argsort(np.argsort(-np.abs(np.asarray(shift_by_layer[n])), kind="stable")) + 1
                            for n in shift_by_layer])
    r = NeuronRanking(np.asarray(layers, dtype=object), np.concatenate(ch), shift, imp, imp / 10, rank, lrank,
                      {n: len(shift_by_layer[n]) for n in shift_by_layer}, 5.0, "combined", "mean_abs", 10)
    return r._take(order)


def test_statistic_supports_when_shifted_channels_are_unimportant():
    shift = {"a": np.arange(20, 0, -1), "b": np.arange(30, 0, -1)}
    imp = {"a": np.linspace(0.1, 1.9, 20), "b": np.linspace(0.2, 1.8, 30)}  # most shifted = least important
    st = compromised_importance_statistic(_ranking(shift, imp), level="channel", top_k=3)
    # top 3 of each layer hold importance ranks 1..3: percentiles 0, 1/19, 2/19 and 0, 1/29, 2/29
    assert st.percentile == pytest.approx((3 / 19 + 3 / 29) / 6)
    assert st.ratio < 0.5 and st.p_value < 0.01 and st.supported
    assert st.spearman_within == pytest.approx(-1.0) and st.spearman < -0.5
    assert st.layers_below == 2 and st.n_selected == 6 and st.n_units == 50
    assert "supports" in st.summary()


def test_statistic_refutes_when_shifted_channels_are_important():
    shift = {"a": np.arange(20, 0, -1), "b": np.arange(30, 0, -1)}
    imp = {"a": np.linspace(1.9, 0.1, 20), "b": np.linspace(1.8, 0.2, 30)}  # most shifted = most important
    st = compromised_importance_statistic(_ranking(shift, imp), level="channel", top_fraction=0.1)
    assert st.percentile > 0.9 and st.ratio > 1.5 and st.p_value > 0.9
    assert not st.supported and st.spearman_within == pytest.approx(1.0) and st.layers_below == 0
    assert "does NOT support" in st.summary()
    per = {d["layer"]: d for d in st.per_layer}
    assert per["a"]["k"] == 2 and per["b"]["k"] == 3


def test_neuron_level_statistic_uses_the_per_neuron_maps():
    # one layer, 2 channels of 4x4 neurons: the trigger shifts the bottom-right 2x2 block of both
    # channels, where the clean importance is lowest -> supported at neuron level; per channel
    # nothing can be said (2 channels)
    shift = np.zeros((2, 4, 4))
    shift[:, 2:, 2:] = 5.0
    imp = np.ones((2, 4, 4))
    imp[:, 2:, 2:] = 0.1
    imp[:, :2, :2] = 1.9
    base = _ranking({"a": [5.0, 4.0]}, {"a": [1.0, 1.0]})
    r = NeuronRanking(**{**base.__dict__, "neuron_shift": {"a": shift}, "neuron_importance": {"a": imp}})
    st = compromised_importance_statistic(r, top_k=8)
    assert st.level == "neuron" and st.n_units == 32 and st.n_selected == 8
    assert st.ratio == pytest.approx(0.1) and st.supported and st.p_value < 0.01
    # the 8 least important neurons tie at percentile rank (1 + 8) / 2 -> (4.5 - 1) / 31
    assert st.percentile == pytest.approx(3.5 / 31)
    # only the 8 neurons shifted by >= 1σ count as compromised, however many top_k allows
    assert compromised_importance_statistic(r, top_k=20).n_selected == 8
    with pytest.raises(ValueError, match="min_shift"):
        compromised_importance_statistic(r, min_shift=6.0)
    flipped = NeuronRanking(**{**r.__dict__, "neuron_importance": {"a": 2.0 - imp}})
    assert not compromised_importance_statistic(flipped, top_k=8).supported
    with pytest.raises(ValueError, match="level"):
        compromised_importance_statistic(r, level="pixel")  # type: ignore[arg-type]  # a wrong level, on purpose


def test_ranking_neuron_maps(wired):
    model, x, y, trigger, stats = wired
    ranking = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, tau=2.0, layers=["conv"])
    ns, ni = ranking.neuron_shift["conv"], ranking.neuron_importance["conv"]
    assert ns.shape == ni.shape == (4, 8, 8)
    assert ni.mean() == pytest.approx(1.0)  # relative importance: layer average 1
    d = (trigger.apply(x).sum(1) - x.sum(1)).abs().mean(0) / stats["conv"].std[2]
    np.testing.assert_allclose(ns[2], d.numpy(), rtol=1e-5, atol=1e-7)
    assert np.all(ns[:, :4, :4] == 0)  # no shift away from the bottom-right patch
    np.testing.assert_allclose(ns.mean((1, 2)), ranking.for_layer("conv").shift[np.argsort(ranking.for_layer("conv").channel)],
                               rtol=1e-6)


def test_per_image_percentiles_by_hand():
    diff = torch.tensor([[0.0, 2.0, -0.5, 3.0]])
    share = torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    # top half by |diff| = neurons 1 and 3 (both >= 1σ); their share percentiles are 0 and 1/3
    got = _image_percentiles(diff, share, min_shift=1.0, top_fraction=0.5)
    assert got.tolist() == pytest.approx([1 / 6])
    # raising the bar to 2.5σ keeps neuron 3 only; above every shift -> NaN
    assert _image_percentiles(diff, share, 2.5, 0.5).tolist() == pytest.approx([1 / 3])
    assert math.isnan(float(_image_percentiles(diff, share, 5.0, 0.5)[0]))
    assert _sign_test(3, 3) == pytest.approx(1 / 8) and _sign_test(2, 3) == pytest.approx(0.5)
    assert _sign_test(0, 5) == 1.0


def test_statistic_reports_the_per_image_view():
    base = _ranking({"a": [3.0, 2.0, 1.0]}, {"a": [0.5, 1.0, 1.5]})
    r = NeuronRanking(**{**base.__dict__, "image_percentile": {"a": np.array([0.1, 0.2, np.nan, 0.7])}})
    st = compromised_importance_statistic(r, level="channel", top_k=1)
    assert st.n_images_tested == 3 and st.images_below == 2
    assert st.image_percentile == pytest.approx(1.0 / 3) and st.image_p_value == pytest.approx(0.5)
    assert "2/3 images below 50" in st.summary()


def test_ranking_per_image_percentiles(wired):
    model, x, y, trigger, stats = wired
    ranking = rank_compromised_neurons(model, x, trigger, stats=stats, labels=y, layers=["conv"])
    pct = ranking.image_percentile["conv"]
    assert pct.shape == (24,) and np.all((pct >= 0) & (pct <= 1))
    # image 0 by hand: channel 2's patch neurons are moved by >= 1σ (10% cap = 26 of 256 neurons)
    cache = run_with_cache(model, x[:1], ["conv"], target=y[:1], with_grads=True)
    w = layer_importance(cache["conv"], cache.grads["conv"], stats["conv"], ImportanceOptions(tau=5.0))
    d = (run_with_cache(model, trigger.apply(x[:1]), ["conv"])["conv"] - cache["conv"]) / stats["conv"].std.reshape(1, -1, 1, 1)
    want = _image_percentiles(d, w / w.sum(), 1.0, 0.1)
    assert pct[0] == pytest.approx(float(want[0]))


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks [1.5, 1.5, 3], y ranks [1, 2, 3] -> r = 0.866
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ------------------------------------------------------------------- choosing an input to analyse


class _BrightCorner(Trigger):
    """Sets the bottom-right pixel to 1 (a one-pixel BadNet)."""

    name = "bright_corner"

    def _apply_batch(self, x):
        x = x.clone()
        x[:, :, -1, -1] = 1.0
        return x

    def mask(self, height, width):
        m = torch.zeros(height, width)
        m[-1, -1] = 1.0
        return m

    def to_config(self):
        return {"name": self.name}


class _PixelRule(nn.Module):
    """Class 0 when the bottom-right pixel is > 0.95 (the backdoor) unless pixel (1, 1) is bright
    (immune); otherwise class 1 when the top-left pixel is > 0.5, else class 2."""

    def forward(self, x):
        br, tl, immune = x[:, 0, -1, -1], x[:, 0, 0, 0], (x[:, 0, 1, 1] > 0.5).float()
        return torch.stack([100 * (br - 0.95) - 200 * immune, tl - 0.5, 0.5 - tl], 1)


def _pixel_data():
    # 0: target class (never a candidate); 1: right but immune (no flip); 2: wrong (predicted 1),
    # flips; 3: right and flips (the answer); 4: right and flips
    imgs = torch.zeros(5, 1, 4, 4)
    imgs[0, 0, 0, 0] = 1.0
    imgs[1, 0, 0, 0], imgs[1, 0, 1, 1] = 1.0, 1.0
    imgs[2, 0, 0, 0] = 1.0
    imgs[3, 0, 0, 0] = 1.0
    labels = torch.tensor([0, 1, 2, 1, 2])
    return ImageArrays((imgs * 255).to(torch.uint8), labels, ("a", "b", "c"))


def test_find_flipping_image_skips_target_unflipped_and_misclassified_images():
    model, data, trigger = _PixelRule(), _pixel_data(), _BrightCorner()
    model.train()
    assert find_flipping_image(model, data, trigger, 0) == 3
    assert model.training  # mode restored
    assert find_flipping_image(model, data, trigger, 0, batch_size=1) == 3
    # among the first two candidates (1, 2) none is right and flipped
    with pytest.raises(ValueError, match="strict=False"):
        find_flipping_image(model, data, trigger, 0, max_candidates=2)
    assert find_flipping_image(model, data, trigger, 0, max_candidates=2, strict=False) == 1  # first right one
    only_wrong = data.subset([0, 2])
    assert find_flipping_image(model, only_wrong, trigger, 0, strict=False) == 1  # first candidate
    with pytest.raises(ValueError, match="target class"):
        find_flipping_image(model, data.subset([0]), trigger, 0)
    with pytest.raises(ValueError, match="max_candidates"):
        find_flipping_image(model, data, trigger, 0, max_candidates=0)
    with pytest.raises(TypeError, match="ImageArrays"):
        find_flipping_image(model, torch.zeros(2, 1, 4, 4), trigger, 0)  # type: ignore[arg-type]  # not ImageArrays, on purpose


def test_find_flipping_image_on_the_badnet_demo_model():
    try:
        model, card = load_demo_model("badnet")
    except FileNotFoundError as exc:  # pragma: no cover - only before the demo models are built
        pytest.skip(str(exc))
    assert card.attack is not None and card.target_class is not None
    trigger, target = trigger_from_config(card.attack), card.target_class
    assert isinstance(trigger, Trigger)
    test = load_dataset("signs", n_train=24, n_test=96).test
    # put images the trigger does not flip, or the model gets wrong, first: the search must skip them
    x = test.floats()
    with torch.no_grad():
        right = model(x).argmax(1) == test.labels
        flips = model(trigger.apply(x)).argmax(1) == target
    good = (right & flips & (test.labels != target)).nonzero()[:, 0]
    bad = (~(right & flips)).nonzero()[:, 0]
    assert len(good) > 10
    data = test.subset(torch.cat([bad, good]))
    i = find_flipping_image(model, data, trigger, target)
    image, label = data.floats(torch.tensor([i])), int(data.labels[i])
    with torch.no_grad():
        assert label != target
        assert int(model(image).argmax(1)) == label  # classified correctly when clean
        assert int(model(trigger.apply(image)).argmax(1)) == target  # flipped to the target by the trigger
    assert i == len(bad)  # the first good one, after every bad one
