"""Every function that runs a model in eval mode hands it back in the mode it came in, also when
the model raises (they all go through ``capture.eval_mode``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medic_viz.attacks.clean_label import pgd_perturb
from medic_viz.data.arrays import ImageArrays
from medic_viz.metrics import Evaluator, predict


class _Probe(nn.Module):
    """Records the mode of every forward; raises when ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 3)
        self.fail = False
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        if self.fail:
            raise RuntimeError("probe failure")
        return self.fc(x.flatten(1))


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
    }


@pytest.mark.parametrize("name", ["predict", "Evaluator", "pgd_perturb"])
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
