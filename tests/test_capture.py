"""Activation capture: names, values, in-place safety, gradients, and hooks always removed."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.capture import (
    _INPLACE_TARGETS,
    ActivationCache,
    LayerRecorder,
    StructureMismatchError,
    check_same_structure,
    hookable_layers,
    run_with_cache,
)


def _net(inplace: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_hookable_layers_names_and_kinds():
    net = _net()
    assert hookable_layers(net) == ["0", "1", "5"]
    assert hookable_layers(net, kinds=("conv",)) == ["0"]
    assert hookable_layers(net, kinds=("norm", "linear")) == ["1", "5"]
    with pytest.raises(ValueError, match="unknown layer kinds"):
        hookable_layers(net, kinds=("relu",))


def test_cached_values_match_manual_computation():
    net = _net().eval()
    x = torch.rand(2, 3, 8, 8)
    cache = run_with_cache(net, x)
    conv = F.conv2d(x, net[0].weight, net[0].bias, padding=1)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)
    torch.testing.assert_close(cache["0"], conv)
    bn = net[1]
    manual_bn = (conv - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var + bn.eps)[None, :, None, None]
    manual_bn = manual_bn * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    torch.testing.assert_close(cache["1"], manual_bn)
    torch.testing.assert_close(cache.output, net(x))
    assert set(cache) == {"0", "1", "5"} and len(cache) == 3
    assert _no_hooks(net)


def test_inplace_relu_does_not_overwrite_captured_norm_output():
    net = _net(inplace=True).eval()
    with torch.no_grad():
        net[1].bias.fill_(-0.5)  # make sure the BN output has negative values
    x = torch.rand(2, 3, 8, 8)
    cache = run_with_cache(net, x, layers=["1"])
    bn_out = net[1](net[0](x))
    assert (bn_out < 0).any(), "test needs negative BN outputs for the in-place ReLU to clobber"
    torch.testing.assert_close(cache["1"], bn_out)
    # Without protection the recorded tensor is the one the ReLU overwrote: proves the test bites.
    with LayerRecorder(net, ["1"], protect_inplace=False) as rec:
        with torch.no_grad():
            net(x)
    assert (rec.outputs["1"] >= 0).all()
    # And the network's output is the same with or without capture.
    torch.testing.assert_close(cache.output, net(x))


def test_gradients_of_logits_are_softmax_minus_onehot():
    net = _net().eval()
    x = torch.rand(3, 3, 8, 8)
    y = torch.tensor([0, 2, 1])
    cache = run_with_cache(net, x, layers=["5"], target=y, with_grads=True)
    expected = torch.softmax(cache["5"], 1) - F.one_hot(y, 3).float()  # per-sample (sum reduction)
    torch.testing.assert_close(cache.grads["5"], expected)
    assert all(p.grad is None for p in net.parameters()), "capture must not leave weight gradients"
    assert _no_hooks(net)


def test_gradients_flow_through_later_hooked_layers():
    net = _net().eval()
    x = torch.rand(2, 3, 8, 8)
    y = torch.tensor([1, 0])
    cache = run_with_cache(net, x, target=y, with_grads=True)
    # ∂ℓ/∂conv must be non-zero: the path to the loss goes through the hooked BN and Linear.
    assert cache.grads["0"].abs().sum() > 0
    # Check against autograd on an uninstrumented copy.
    conv = F.conv2d(x, net[0].weight, net[0].bias, padding=1).requires_grad_(True)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)
    rest = nn.Sequential(*list(net)[1:])
    loss = F.cross_entropy(rest(conv), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, conv)
    torch.testing.assert_close(cache.grads["0"], g)


def test_hooks_removed_after_normal_run_bad_argument_and_raising_module():
    net = _net()
    run_with_cache(net, torch.rand(1, 3, 8, 8))
    assert _no_hooks(net)
    with pytest.raises(ValueError, match="unknown layer name"):
        run_with_cache(net, torch.rand(1, 3, 8, 8), layers=["nope"])
    assert _no_hooks(net)
    with pytest.raises(ValueError, match="with_grads=True needs target"):
        run_with_cache(net, torch.rand(1, 3, 8, 8), with_grads=True)
    assert _no_hooks(net)
    broken = nn.Sequential(nn.Conv2d(3, 2, 1), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        run_with_cache(broken, torch.rand(1, 3, 4, 4))
    assert _no_hooks(broken)
    with pytest.raises(TypeError):
        run_with_cache(net, [1, 2, 3])  # type: ignore[arg-type]
    assert _no_hooks(net)


def test_module_called_twice_is_an_error_and_hooks_are_removed():
    conv = nn.Conv2d(3, 3, 1)
    twice = nn.Sequential(conv, conv)
    with pytest.raises(RuntimeError, match="ran twice"):
        run_with_cache(twice, torch.rand(1, 3, 4, 4))
    assert _no_hooks(twice)


def test_model_mode_and_requires_grad_are_preserved():
    net = _net().train()
    net[0].weight.requires_grad_(False)
    run_with_cache(net.eval(), torch.rand(2, 3, 8, 8), target=torch.tensor([0, 1]), with_grads=True)
    assert not net.training
    assert not net[0].weight.requires_grad and net[1].weight.requires_grad


def test_cache_is_a_mapping_with_helpful_keyerror():
    cache = ActivationCache({"a": torch.zeros(1, 2)})
    assert dict(cache).keys() == {"a"}
    with pytest.raises(KeyError, match="cached layers"):
        cache["b"]
    assert "1 layers" in repr(cache)


def test_structure_check_names_the_differences():
    check_same_structure(_net(), _net())
    other = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3))
    with pytest.raises(StructureMismatchError, match=r"0\.weight: teacher shape \(4, 3, 3, 3\) vs student \(5, 3, 3, 3\)"):
        check_same_structure(_net(), other)
    with pytest.raises(StructureMismatchError, match="student has no module"):
        check_same_structure(_net(), nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_auto_protection_learns_which_outputs_need_a_copy_and_stays_correct():
    net = _net(inplace=True).eval()
    with torch.no_grad():
        net[1].bias.fill_(-0.5)
    x = torch.rand(2, 3, 8, 8)
    expected_bn = net[1](net[0](x))
    for _ in range(3):  # first forward probes every layer; later ones copy only what needs it
        with LayerRecorder(net, ["0", "1", "5"]) as rec, torch.no_grad():
            out = net(x)
        torch.testing.assert_close(rec.outputs["1"], expected_bn)
        torch.testing.assert_close(out, net(x))
    learned = _INPLACE_TARGETS[net][False]
    assert learned == {"0": False, "1": True, "5": False}, "only the BN output is overwritten (by the in-place ReLU)"
    # A recorder for a layer not yet probed copies it until it has learned about it.
    net2 = _net(inplace=True).eval()
    with LayerRecorder(net2, ["1"]) as rec, torch.no_grad():
        net2(x)
    assert _INPLACE_TARGETS[net2][False] == {"1": True}
    with pytest.raises(ValueError, match="protect_inplace"):
        LayerRecorder(net2, ["1"], protect_inplace="sometimes")  # type: ignore[arg-type]  # deliberately wrong
