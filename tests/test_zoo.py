"""Tests for medic_viz.models.zoo: shapes, parameter counts, Normalize, module-call structure."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from medic_viz.models.zoo import (
    Normalize,
    WideResNet,
    available_models,
    build_model,
    count_parameters,
)

ALL_MODELS = [
    "small_cnn",
    "wrn16_1",
    "preact_resnet18",
    "resnet18",
    "resnet34",
    "vgg11_bn",
    "mobilenet_v1",
]
HOOKED_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_available_models_lists_every_zoo_name():
    assert available_models() == ALL_MODELS
    # A fresh list each call: mutating it must not change the registry.
    available_models().clear()
    assert len(available_models()) == len(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_gives_logits_for_32_and_40_pixel_inputs(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    for size in (32, 40):
        x = torch.rand(2, 3, size, size)
        logits = model(x)
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_single_channel_input_and_gtsrb_class_count():
    torch.manual_seed(0)
    gray = build_model("wrn16_1", num_classes=10, in_channels=1)
    assert gray.conv1.weight.shape == (16, 1, 3, 3)
    assert gray(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(RuntimeError):
        gray(torch.rand(2, 3, 32, 32))  # wrong channel count is not silently accepted

    gtsrb = build_model("small_cnn", num_classes=43)
    assert gtsrb.fc.out_features == 43
    assert gtsrb(torch.rand(3, 3, 32, 32)).shape == (3, 43)


def _wrn_param_count_by_hand(depth: int, k: int, num_classes: int) -> int:
    """Count WRN parameters from the architecture description, independent of the code."""
    n = (depth - 4) // 6
    channels = [16, 16 * k, 32 * k, 64 * k]

    def conv(cin: int, cout: int, ks: int) -> int:
        return cin * cout * ks * ks

    def bn(c: int) -> int:
        return 2 * c

    total = conv(3, channels[0], 3)
    for stage in range(3):
        cin, cout = channels[stage], channels[stage + 1]
        for i in range(n):
            c_in = cin if i == 0 else cout
            total += bn(c_in) + conv(c_in, cout, 3) + bn(cout) + conv(cout, cout, 3)
            if c_in != cout:
                total += conv(c_in, cout, 1)
    return total + bn(channels[3]) + channels[3] * num_classes + num_classes


def test_wrn16_1_parameter_count_matches_nad_reference():
    model = build_model("wrn16_1", num_classes=10)
    n_params = count_parameters(model)
    # NAD / MEDIC WideResNet(depth=16, num_classes=10, widen_factor=1): 175,066 parameters.
    assert n_params == 175_066
    assert n_params == _wrn_param_count_by_hand(16, 1, 10)
    assert abs(n_params - 0.175e6) / 0.175e6 < 0.01
    # The same class generalises: WRN-16-2 and WRN-40-1 counts follow the formula too.
    assert count_parameters(WideResNet(16, 2)) == _wrn_param_count_by_hand(16, 2, 10)
    assert count_parameters(WideResNet(40, 1)) == _wrn_param_count_by_hand(40, 1, 10)


def test_wrn16_1_state_dict_names_follow_nad():
    keys = set(build_model("wrn16_1").state_dict())
    for key in [
        "conv1.weight",
        "block1.layer.0.bn1.running_mean",
        "block1.layer.1.conv2.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.0.convShortcut.weight",
        "bn1.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in keys
    # The first block of stage 1 keeps its shape, so it has no shortcut conv (as in NAD).
    assert "block1.layer.0.convShortcut.weight" not in keys
    assert sum(k.endswith(".weight") and "conv" in k.lower() for k in keys) == 1 + 12 + 2  # stem + 6 blocks x 2 + 2 shortcuts


def test_small_cnn_is_small():
    n10 = count_parameters(build_model("small_cnn", 10))
    n43 = count_parameters(build_model("small_cnn", 43))
    assert (n10, n43) == (61_338, 63_483)
    assert 50_000 <= n10 <= 120_000
    assert n43 - n10 == 33 * (64 + 1)  # only the classifier grows with the class count


def test_normalize_maths_on_two_pixels():
    layer = Normalize(mean=[0.5, 0.25], std=[0.5, 0.25])
    x = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.75]]]])  # (1, 2, 1, 2)
    expected = torch.tensor([[[[-1.0, 1.0]], [[1.0, 2.0]]]])  # (0-.5)/.5, (1-.5)/.5, (.5-.25)/.25, (.75-.25)/.25
    assert torch.allclose(layer(x), expected)
    assert list(layer.parameters()) == []
    assert set(layer.state_dict()) == {"mean", "std"}
    assert layer.mean.shape == (1, 2, 1, 1)


def test_normalize_rejects_bad_statistics():
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="equal length"):
        Normalize([0.5, 0.5], [0.5])


def test_build_model_puts_normalize_first():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    torch.manual_seed(3)
    plain = build_model("small_cnn", 5)
    torch.manual_seed(3)
    normed = build_model("small_cnn", 5, normalize=(mean, std))
    first_name, first = next(iter(normed.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    assert count_parameters(normed) == count_parameters(plain)  # buffers, not parameters
    # Same weights (same seed): the normalised model equals the plain one on normalised input.
    normed.eval(), plain.eval()
    x = torch.rand(2, 3, 32, 32)
    x_norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain(x_norm), atol=1e-5)
        assert not torch.allclose(normed(x), plain(x), atol=1e-3)
    assert normed.zoo_config["normalize"] == ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    assert plain.zoo_config == {
        "name": "small_cnn", "num_classes": 5, "in_channels": 3, "input_size": 32, "normalize": None
    }
    assert all(not isinstance(m, Normalize) for m in plain.modules())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_module_is_called_exactly_once_per_forward(name):
    torch.manual_seed(0)
    model = build_model(name, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    calls: Counter[str] = Counter()
    leaves = {n: m for n, m in model.named_modules() if n and not list(m.children())}
    handles = [
        m.register_forward_hook(lambda _m, _i, _o, n=n: calls.update([n])) for n, m in leaves.items()
    ]
    try:
        model(torch.rand(2, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    hooked = [n for n, m in leaves.items() if isinstance(m, HOOKED_TYPES)]
    assert len(hooked) >= 5
    assert calls["normalize"] == 1
    # Every leaf (conv / norm / linear / activation / pooling) runs exactly once: none is
    # reused and none is dead, so module names identify activations unambiguously.
    assert {n: calls[n] for n in leaves} == {n: 1 for n in leaves}
    assert all(not m._forward_hooks for m in model.modules())
    # Activations are modules too: every ReLU-style nonlinearity appears in named_modules.
    assert any(isinstance(m, nn.ReLU) for m in leaves.values())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "preact_resnet18", "wrn16_1"])
def test_resnets_use_inplace_relu_that_overwrites_norm_outputs(name):
    """Capture code must clone hooked outputs: an in-place ReLU rewrites the BN output."""
    torch.manual_seed(0)
    model = build_model(name)
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    bn = next(m for n, m in model.named_modules() if n.endswith("bn1") and isinstance(m, nn.BatchNorm2d))
    seen: dict[str, torch.Tensor] = {}

    def grab(_m, _i, out):
        seen["live"], seen["copy"] = out, out.detach().clone()

    handle = bn.register_forward_hook(grab)
    try:
        model(torch.rand(2, 3, 32, 32))
    finally:
        handle.remove()
    assert (seen["copy"] < 0).any()  # BN output in train mode is centred: has negatives
    assert (seen["live"] >= 0).all()  # ... which the in-place ReLU zeroed afterwards


def test_init_is_deterministic_given_seed():
    torch.manual_seed(123)
    a = build_model("wrn16_1").state_dict()
    torch.manual_seed(123)
    b = build_model("wrn16_1").state_dict()
    torch.manual_seed(124)
    c = build_model("wrn16_1").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_vgg_has_no_dropout_and_mobilenet_is_depthwise():
    vgg = build_model("vgg11_bn")
    assert not any(isinstance(m, nn.Dropout) for m in vgg.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 8
    mobile = build_model("mobilenet_v1")
    depthwise = [m for m in mobile.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 13 and all(m.groups == m.in_channels for m in depthwise)


def test_parameter_counts_of_the_large_models():
    counts = {n: count_parameters(build_model(n)) for n in ["preact_resnet18", "resnet18", "resnet34"]}
    assert counts == {"preact_resnet18": 11_171_146, "resnet18": 11_173_962, "resnet34": 21_282_122}


def test_unknown_name_error_lists_available_models():
    with pytest.raises(ValueError) as info:
        build_model("resnet1000")
    message = str(info.value)
    assert "resnet1000" in message
    for name in ALL_MODELS:
        assert name in message


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="input_size"):
        build_model("small_cnn", input_size=16)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", num_classes=0)
    with pytest.raises(ValueError, match="per input channel"):
        build_model("small_cnn", in_channels=1, normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    with pytest.raises(TypeError, match="drop_rate"):
        build_model("wrn16_1", dropout=0.3)
    model = build_model("wrn16_1", drop_rate=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 6
    assert model.zoo_config["drop_rate"] == 0.3
    assert not any(isinstance(m, nn.Dropout) for m in build_model("wrn16_1").modules())
