"""MEDIC's default layer rule ("auto" = "conv+bn-inner", and "conv+bn-last") is defined on the
computation — forward order, spatial resolution, skip-connection merges of one dummy forward
pass — not on module names: wrapping a model (the importer's ``NormalizedModel``,
``nn.Sequential(Normalize, model)``) or tracing it with ``torch.fx`` selects the same modules,
and on the unwrapped zoo models it selects what the name rule selected (benchmarks and the
demo were measured with those layers)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

from medic_viz.capture import resolve_layers
from medic_viz.importer import NormalizedModel
from medic_viz.models import available_models, build_model
from medic_viz.models.zoo import Normalize
from medic_viz.stages import forward_trace

CUT_PRESETS = ("auto", "conv+bn-inner", "conv+bn-last", "conv+bn-inner-res")

#: What the name rule (before 2026-12-02) selected on each unwrapped zoo model at 32 px:
#: preset -> (count, first, last). Written down once from its output; the rule must keep it.
EXPECTED = {
    "small_cnn": {"conv+bn-inner": (4, "conv2", "bn3"), "conv+bn-last": (6, "conv1", "bn3")},
    "wrn16_1": {"conv+bn-inner": (16, "block1.layer.0.conv1", "block2.layer.1.conv2"),
                "conv+bn-last": (18, "conv1", "block2.layer.1.conv2")},
    "preact_resnet18": {"conv+bn-inner": (25, "layer1.0.conv1", "layer3.1.conv2"),
                        "conv+bn-last": (27, "conv1", "layer3.1.conv2")},
    "resnet18": {"conv+bn-inner": (28, "layer1.0.conv1", "layer3.1.bn2"), "conv+bn-last": (30, "conv1", "layer3.1.bn2")},
    "resnet34": {"conv+bn-inner": (56, "layer1.0.conv1", "layer3.5.bn2"), "conv+bn-last": (58, "conv1", "layer3.5.bn2")},
    "vgg11_bn": {"conv+bn-inner": (12, "features.4", "features.23"), "conv+bn-last": (14, "features.0", "features.23")},
    "mobilenet_v1": {"conv+bn-inner": (50, "layers.0.conv1", "layers.12.bn1"),
                     "conv+bn-last": (52, "conv1", "layers.12.bn1")},
}


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_zoo_model_has_its_expected_layers_listed():
    assert set(EXPECTED) == set(available_models())


@pytest.mark.parametrize("arch", available_models())
def test_unwrapped_zoo_models_keep_the_layers_the_name_rule_selected(arch):
    model = build_model(arch, num_classes=10)
    convbn = resolve_layers(model, "conv+bn")
    for preset, (count, first, last) in EXPECTED[arch].items():
        names = resolve_layers(model, preset)
        assert (len(names), names[0], names[-1]) == (count, first, last), preset
        # a contiguous run of "conv+bn", in definition order
        assert names == convbn[convbn.index(first): convbn.index(last) + 1], preset
    assert resolve_layers(model, "auto") == resolve_layers(model, "conv+bn-inner")
    # the signs data's size and a larger one select the same modules
    for size in (32, 64):
        assert resolve_layers(build_model(arch, num_classes=43, input_size=size), "auto",
                              input_shape=(3, size, size)) == resolve_layers(model, "auto")
    assert _hooks(model) == 0


@pytest.mark.parametrize("arch", available_models())
def test_wrapping_a_zoo_model_does_not_change_its_layers(arch):
    model = build_model(arch, num_classes=10)
    norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    wrappers = {"net.": NormalizedModel(norm, model), "1.": nn.Sequential(norm, model)}
    for preset in CUT_PRESETS:
        plain = resolve_layers(model, preset)
        for prefix, wrapped in wrappers.items():
            assert resolve_layers(wrapped, preset) == [prefix + n for n in plain], (preset, prefix)
            assert resolve_layers(wrapped, preset, input_shape=(3, 32, 32)) == [prefix + n for n in plain]
    assert _hooks(model) == 0 and all(_hooks(w) == 0 for w in wrappers.values())


@pytest.mark.parametrize("arch", available_models())
def test_an_fx_traced_zoo_model_selects_the_same_modules(arch):
    """``torch.fx.symbolic_trace`` keeps the leaf modules under their qualified names but
    registers them in the order the graph uses them (a PreAct block's shortcut before its conv1):
    the same modules, listed in the traced module's definition order."""
    model = build_model(arch, num_classes=10)
    traced = torch.fx.symbolic_trace(model)
    for preset in CUT_PRESETS:
        assert set(resolve_layers(traced, preset, input_shape=(3, 32, 32))) == set(resolve_layers(model, preset))


class _Backwards(nn.Module):
    """Modules defined in the reverse of the order forward() calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.c3, self.n3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.n2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.n1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        for conv, norm in ((self.c1, self.n1), (self.c2, self.n2), (self.c3, self.n3)):
            x = torch.relu(norm(conv(x)))
        return self.fc(x.mean((2, 3)))


def test_first_second_and_last_are_forward_order_not_definition_order():
    model = _Backwards()
    assert resolve_layers(model, "auto") == ["c2", "n2"]
    assert resolve_layers(model, "conv+bn-last") == ["c2", "n2", "c1", "n1"]  # definition order; c3, n3 cut


def test_a_plain_three_convolution_net_keeps_its_middle_convolution():
    """Three conv-BN-ReLU layers, no skip connection: the first convolution sees pixels, the last
    is what the classifier reads; the default clones the middle one and its norm."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert resolve_layers(net, "auto") == ["3", "4"]
    assert resolve_layers(nn.Sequential(Normalize([0.5] * 3, [0.5] * 3), net), "auto") == ["1.3", "1.4"]


class _Shared(nn.Module):
    """One convolution called twice: it counts where it first ran."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.body(self.stem(x))
        x = self.head(self.body(self.mid(x)))
        return self.fc(x.mean((2, 3)))


#: "conv+bn-inner-res" (issue 27 rule 4's candidate): where a plain network's selection ends, by
#: the shapes each zoo model computes at 32 px (VGG-11: 2×2 from features.22; MobileNet-V1: from
#: layers.11.conv1, its stride-2 depthwise convolution; small_cnn: 8×8 from conv3).
RESOLUTION_CUT = {"small_cnn": (2, "bn2"), "vgg11_bn": (10, "features.19"), "mobilenet_v1": (44, "layers.10.bn2")}


@pytest.mark.parametrize("arch", available_models())
def test_the_resolution_cut_moves_only_plain_networks(arch):
    model = build_model(arch, num_classes=10)
    inner, res = resolve_layers(model, "conv+bn-inner"), resolve_layers(model, "conv+bn-inner-res")
    if arch not in RESOLUTION_CUT:  # skip connections: the last stage is the same
        assert res == inner
        return
    count, last = RESOLUTION_CUT[arch]
    assert (len(res), res[-1]) == (count, last) and res == inner[:count]
    sizes = dict(forward_trace(model, (3, 32, 32)).order)
    last_conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    assert sizes[last] != sizes[last_conv] and all(sizes[n] == sizes[last_conv] for n in inner[count:])


def test_the_resolution_cut_keeps_two_convolutions_before_it():
    """A plain net whose every convolution runs at one resolution falls back to the last convolution."""
    net = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(3 if _ == 0 else 8, 8, 3, padding=1), nn.ReLU())],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert resolve_layers(net, "conv+bn-inner-res") == resolve_layers(net, "conv+bn-inner") == ["2"]
    strided = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                            nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.Conv2d(8, 8, 3, padding=1),
                            nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert resolve_layers(strided, "conv+bn-inner") == ["1", "2", "3"]
    assert resolve_layers(strided, "conv+bn-inner-res") == ["1"]


def test_a_module_called_twice_counts_at_its_first_call():
    assert [n for n, _ in forward_trace(_Shared(), (3, 16, 16)).order] == ["stem", "body", "mid", "head", "fc"]
    assert resolve_layers(_Shared(), "auto", input_shape=(3, 16, 16)) == ["body", "mid"]


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(4))
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        x = self.bn(x)
        raise RuntimeError("boom")


def test_no_hook_is_left_and_modes_and_rng_are_restored_even_when_the_forward_raises():
    model = _Raises().train()
    model.bn.eval()
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"input_shape=.*RuntimeError: boom|RuntimeError: boom.*input_shape="):
        resolve_layers(model, "auto")
    assert _hooks(model) == 0
    assert model.training and model.convs[0].training and not model.bn.training
    assert torch.equal(torch.get_rng_state(), rng)
    # a model that runs: no hook left, modes and the global RNG untouched
    wrn = build_model("wrn16_1", num_classes=10).train()
    rng = torch.get_rng_state()
    resolve_layers(wrn, "auto")
    assert _hooks(wrn) == 0 and all(m.training for m in wrn.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_lazy_modules_are_not_initialised_by_the_selection():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3),
                        nn.Flatten(), nn.LazyLinear(2))
    assert resolve_layers(net, "auto") == ["2"]
    assert net[5].has_uninitialized_params()
