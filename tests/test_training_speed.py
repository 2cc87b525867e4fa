"""Training-loop speed settings: ``channels_last`` (conv models run channels-last on CPU and
CUDA, the model handed back in the usual format, the same training to float rounding) and
``cpu_bf16`` (bf16 autocast on the CPU, opt-in)."""

from typing import Any

import pytest
import torch
import torch.nn as nn

import medic_viz.training as training
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import Medic
from medic_viz.training import SupervisedObjective, TrainConfig, resolve_channels_last, train


def _net(seed: int = 0) -> nn.Sequential:
    # (no bias before the BN: its true gradient is 0, and Adam would blow the rounding noise up
    # to full steps — different in any two runs that round differently)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


def _data(n: int = 48) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    return ImageArrays((torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8), torch.randint(0, 3, (n,), generator=g),
                       classes=("a", "b", "c"), name="tiny")


def test_auto_is_on_for_conv_models_on_cpu_and_cuda_only():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert resolve_channels_last("auto", _net(), cpu) and resolve_channels_last("auto", _net(), cuda)
    assert not resolve_channels_last("auto", _net(), mps)
    assert not resolve_channels_last("auto", nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), cpu)
    assert resolve_channels_last(True, nn.Linear(3, 2), mps) and not resolve_channels_last(False, _net(), cpu)
    with pytest.raises(ValueError, match="channels_last must be True, False or 'auto'"):
        TrainConfig(channels_last="yes")


@pytest.mark.parametrize("objective", ["supervised", "medic"])
def test_channels_last_trains_the_same_and_returns_a_contiguous_model(objective):
    data = _data()
    models = {}
    for cl in (False, True):
        common: dict[str, Any] = dict(epochs=2, batch_size=16, progress=False, device="cpu", channels_last=cl, eval_every=0)
        if objective == "supervised":
            models[cl] = train(SupervisedObjective(_net(1)), data, TrainConfig(**common, augment=False)).model
        else:
            models[cl] = Medic(**common, tau=5.0, fused="eager").run(_net(0).eval(), data).model
    for (name, a), b in zip(models[False].named_parameters(), models[True].parameters()):
        assert b.is_contiguous(), name  # the usual format again (safetensors, users' code)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")  # noqa: B023 — assert_close calls msg at once, in this iteration
    # Not vacuous: training moved the weights.
    start = _net(1) if objective == "supervised" else fresh_copy(_net(0), seed=0)
    assert (models[True][0].weight - start[0].weight).abs().max() > 1e-3


class _Spy(SupervisedObjective):
    """Records whether the loss ran under CPU bf16 autocast."""

    def __init__(self, model):
        super().__init__(model)
        self.autocast = []

    def loss(self, x, y):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return super().loss(x, y)


@pytest.mark.parametrize("cpu_bf16, has_bf16, expected", [(False, True, False), (True, True, True), (True, False, False)])
def test_cpu_bf16_autocasts_only_when_asked_and_supported(monkeypatch, cpu_bf16, has_bf16, expected):
    monkeypatch.setattr(training.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: has_bf16, raising=False)
    spy = _Spy(_net(1))
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, device="cpu", eval_every=0, cpu_bf16=cpu_bf16)
    if cpu_bf16 and not has_bf16:
        with pytest.warns(RuntimeWarning, match="no native bf16"):
            train(spy, _data(), cfg)
    else:
        train(spy, _data(), cfg)
    assert spy.autocast == [expected] * 3
