"""Public API inputs are checked up front (security issue, defect class 7, API items): every
numeric field of every defence config (type, finite, range) through one shared helper, the
clean-subset fraction and seed, and a ``student=`` given to MEDIC, each refused with one line
naming what is wrong instead of an IndexError / RuntimeError / AttributeError deep inside."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

import medic_viz.stats as layer_statistics
from medic_viz.checks import check_number, check_whole
from medic_viz.data.arrays import ImageArrays, clean_subset
from medic_viz.defenses.anp import ANPConfig
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.distill import KDConfig, ScratchConfig
from medic_viz.defenses.fineprune import FinePruningConfig
from medic_viz.defenses.finetune import FineTuningConfig
from medic_viz.defenses.mcr import MCRConfig
from medic_viz.defenses.medic import Medic, MedicConfig
from medic_viz.defenses.nad import NADConfig
from medic_viz.training import TrainConfig

NAN, INF = float("nan"), float("inf")

#: (config class, field, bad value): each must be refused when the config is built.
BAD_FIELDS = [
    (MedicConfig, "eps", -1.0),
    (MedicConfig, "eps", 0.0),
    (MedicConfig, "eps", NAN),
    (MedicConfig, "eps", INF),
    (MedicConfig, "eps", "1e-5"),
    (MedicConfig, "eps", True),
    (MedicConfig, "stats_batch_size", 0),
    (MedicConfig, "stats_batch_size", 2.5),
    (MedicConfig, "stats_batch_size", "256"),
    (MedicConfig, "calibration_images", "256"),
    (MedicConfig, "calibration_images", 2.5),
    (MedicConfig, "student_seed", -1),
    (MedicConfig, "student_seed", "0"),
    (TrainConfig, "lr", INF),
    (TrainConfig, "momentum", INF),
    (TrainConfig, "weight_decay", "0"),
    (FineTuningConfig, "momentum", NAN),
    (FinePruningConfig, "max_acc_drop", "0.1"),
    (FinePruningConfig, "max_acc_drop", True),
    (FinePruningConfig, "max_prune_ratio", NAN),
    (FinePruningConfig, "prune_step", 1.5),
    (FinePruningConfig, "prune_step", "2"),
    (FinePruningConfig, "eval_batch_size", 0),
    (ANPConfig, "iterations", 1.5),
    (ANPConfig, "eps", INF),
    (ANPConfig, "eps", "0.4"),
    (ANPConfig, "steps", 1.5),
    (ANPConfig, "alpha", "0.2"),
    (ANPConfig, "threshold", True),
    (ANPConfig, "noise_seed", -1),
    (NADConfig, "teacher_epochs", 1.5),
    (NADConfig, "betas", (INF, 1.0, 1.0)),
    (NADConfig, "betas", ("500", 1.0, 1.0)),
    (NADConfig, "betas", "500"),
    (NADConfig, "p", INF),
    (NADConfig, "p", "2"),
    (MCRConfig, "endpoint_epochs", 1.5),
    (MCRConfig, "t", "0.5"),
    (MCRConfig, "t_grid", ("0.5",)),
    (MCRConfig, "t_grid", 0.5),
    (MCRConfig, "curve_seed", -1),
    (KDConfig, "temperature", INF),
    (KDConfig, "temperature", "2"),
    (KDConfig, "kd_weight", INF),
    (KDConfig, "ce_weight", "1"),
    (KDConfig, "student_seed", -1),
    (ScratchConfig, "student_seed", "0"),
]


@pytest.mark.parametrize(("cls", "name", "value"), BAD_FIELDS,
                         ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in BAD_FIELDS])
def test_every_numeric_config_field_is_checked(cls, name, value):
    with pytest.raises((ValueError, TypeError)) as info:
        cls(**{name: value})
    message = str(info.value)
    assert "\n" not in message and message.startswith(name), message


def test_the_defaults_of_every_config_are_valid():
    for cls in (TrainConfig, MedicConfig, FineTuningConfig, FinePruningConfig, ANPConfig, NADConfig, MCRConfig,
                KDConfig, ScratchConfig):
        cls()


def test_medic_eps_message_says_what_to_do():
    with pytest.raises(ValueError,
                       match=r"^eps must be a finite number > 0, got -1; σ = sqrt\(var \+ eps\); MEDIC's default is 0\.1, "
                             r"the paper's 1e-05$"):
        MedicConfig(eps=-1)


# ------------------------------------------------------------------------------ clean_subset


def _data(n: int = 48, seed: int = 0, classes: int = 3, channels: int = 3) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, channels, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % classes
    return ImageArrays(x, y, classes=tuple("abcdefgh"[:classes]), name="tiny")


@pytest.mark.parametrize(("fraction", "message"), [
    ("0.1", r"^fraction must be a number in \(0, 1\], got '0.1' \(a str\)"),
    (True, r"^fraction must be a number in \(0, 1\], got True \(a bool\)"),
    (NAN, r"^fraction must be a finite number in \(0, 1\], got nan"),
    (0, r"^fraction must be a finite number in \(0, 1\], got 0"),
    (1.5, r"^fraction must be a finite number in \(0, 1\], got 1.5"),
])
def test_clean_subset_refuses_a_bad_fraction(fraction, message):
    with pytest.raises((TypeError, ValueError), match=message):
        clean_subset(_data(), fraction)


@pytest.mark.parametrize("seed", ["0", 1.5, True, -1])
def test_clean_subset_refuses_a_seed_that_is_not_a_whole_number(seed):
    with pytest.raises((TypeError, ValueError), match=r"^seed must be a whole number"):
        clean_subset(_data(), 0.5, seed=seed)


def test_clean_subset_still_takes_numpy_numbers():
    assert len(clean_subset(_data(), np.float32(0.5), seed=np.int64(1))) == 24


# ------------------------------------------------------------------------------ students


def _net(in_channels: int = 3, width: int = 4, classes: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )


def _renamed() -> nn.Module:
    return nn.Sequential(OrderedDict((f"m{i}", m) for i, m in enumerate(_net())))


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: _net(classes=5), ValueError, r"^student\.10\.weight: .* shape \(5, 8\) .*\(3, 8\)"),
    (lambda: _net(in_channels=1), ValueError, r"^student\.0\.weight: .* shape \(4, 1, 3, 3\)"),
    (lambda: _renamed(), ValueError, r"^student has no .*'0\.weight'"),
    (lambda: _net().double(), ValueError, r"^student\.0\.weight: .*float64.*float32"),
    (lambda: "resnet18", TypeError, r"^student must be a torch\.nn\.Module, got str"),
    (lambda: _net().state_dict(), TypeError, r"^student must be a torch\.nn\.Module, got OrderedDict"),
])
def test_a_mismatched_student_is_refused_before_anything_runs(make, error, message, monkeypatch):
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("statistics were computed for a student that should have been refused")

    monkeypatch.setattr(layer_statistics, "compute_layer_stats", forbidden)  # where the engine looks it up
    torch.manual_seed(0)
    teacher = _net()
    with pytest.raises(error, match=message) as info:
        Medic(epochs=1, batch_size=16, progress=False, device="cpu").run(teacher, _data(), student=make())
    assert "\n" not in str(info.value)


def test_a_matching_student_is_still_accepted():
    torch.manual_seed(0)
    teacher = _net()
    result = Medic(epochs=1, batch_size=16, progress=False, device="cpu").run(
        teacher, _data(), student=fresh_copy(teacher, seed=1))
    assert result.model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)


def test_a_huge_bad_value_is_quoted_short():
    for check in (check_whole, check_number):
        with pytest.raises(ValueError) as info:
            check("epochs", "9" * 1_000_000)
        assert len(str(info.value)) < 300
