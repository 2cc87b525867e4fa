"""Every function that runs a model in eval (or train) mode hands it back in the mode it came in,
also when the model raises (they all go through ``capture.eval_mode`` / ``capture.train_mode``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medic_viz.analysis import find_flipping_image
from medic_viz.attacks.clean_label import pgd_perturb
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.capture import eval_mode, train_mode
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import clean_set_accuracy
from medic_viz.defenses.mcr import update_bn
from medic_viz.metrics import Evaluator, predict
from medic_viz.stats import compute_layer_stats


class _Probe(nn.Module):
    """Records the mode of every forward; raises when ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)
        self.fail = False
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        if self.fail:
            raise RuntimeError("probe failure")
        return self.fc(self.bn(x).flatten(1))


def _data(n: int = 6) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    return ImageArrays(torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8), torch.arange(n) % 3,
                       ("a", "b", "c"))


def _calls():
    data = _data()
    x, y = data.floats(), data.labels
    return {
        "predict": lambda m: predict(m, x, device="cpu"),
        "Evaluator": lambda m: Evaluator(data, device="cpu")(m),
        "pgd_perturb": lambda m: pgd_perturb(m, x, y, eps=0.05, steps=1, step_size=0.02),
        "compute_layer_stats": lambda m: compute_layer_stats(m, data, ["fc"], device="cpu"),
        "clean_set_accuracy": lambda m: clean_set_accuracy(m, data, torch.device("cpu")),
        "find_flipping_image": lambda m: find_flipping_image(m, data, BadNetTrigger(size=2), 0, strict=False),
    }


@pytest.mark.parametrize("name", list(_calls()))
@pytest.mark.parametrize("start", [True, False], ids=["from-train", "from-eval"])
@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_eval_mode_inside_and_mode_restored(name, start, fail):
    model = _Probe()
    model.train(start)
    model.fail = fail
    call = _calls()[name]
    if fail:
        with pytest.raises(RuntimeError, match="probe failure"):
            call(model)
    else:
        call(model)
    assert model.modes and not any(model.modes)  # every forward ran in eval mode
    assert model.training is start and model.fc.training is start  # children restored too


@pytest.mark.parametrize("start", [True, False], ids=["from-train", "from-eval"])
@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_update_bn_runs_in_train_mode_and_restores_the_mode(start, fail):
    model = _Probe()
    model.train(start)
    model.fail = fail
    data = _data()
    if fail:
        with pytest.raises(RuntimeError, match="probe failure"):
            update_bn(model, data)
    else:
        update_bn(model, data)
        # the running mean is the exact mean over the data (batch-size-weighted momentum)
        torch.testing.assert_close(model.bn.running_mean, data.floats().mean((0, 2, 3)))
    assert model.modes and all(model.modes)
    assert model.training is start and model.bn.training is start
    assert model.bn.momentum == 0.1  # restored too


@pytest.mark.parametrize("manager, inside", [(eval_mode, False), (train_mode, True)])
def test_mode_managers_restore_on_error(manager, inside):
    for start in (True, False):
        model = _Probe()
        model.train(start)
        with pytest.raises(KeyError):
            with manager(model) as m:
                assert m is model and model.training is inside and model.fc.training is inside
                raise KeyError("x")
        assert model.training is start and model.fc.training is start
