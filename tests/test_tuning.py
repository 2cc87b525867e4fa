"""Choosing τ from clean data alone."""

import pytest
import torch
import torch.nn as nn

import medic_viz.defenses.tuning as tuning
from medic_viz.data.arrays import ImageArrays


def _data(n=60, classes=3):
    g = torch.Generator().manual_seed(0)
    return ImageArrays((torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8), torch.arange(n) % classes, classes=["a", "b", "c"])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_split_holdout_is_stratified_and_disjoint():
    fit, hold = tuning.split_holdout(_data(), 0.2, seed=0)
    assert len(fit) == 48 and len(hold) == 12
    assert torch.bincount(hold.labels).tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="holdout_fraction"):
        tuning.split_holdout(_data(), 1.0)


def test_select_tau_picks_the_largest_within_budget(monkeypatch):
    accs = {0.0: 0.90, 2.0: 0.89, 5.0: 0.875, 8.0: 0.80}

    def fake_sweep(teacher, clean, taus, evaluator=None, **kw):
        assert evaluator is not None and len(evaluator.y) == 12  # measured on the hold-out part only
        assert evaluator.x_trig is None  # no trigger is used
        return [{"tau": t, "clean_acc": accs[t], "n_clean": 12, "model": None} for t in taus]

    monkeypatch.setattr(tuning, "sweep_tau", fake_sweep)
    monkeypatch.setattr(tuning.Evaluator, "__call__", lambda self, m: type("M", (), {"clean_acc": 0.90})())
    sel = tuning.select_tau(_net(), _data(), candidates=(8, 0, 5, 2), budget=0.03)
    assert sel.tau == 5.0 and sel.reference_acc == 0.90
    assert [r["tau"] for r in sel.rows] == [0.0, 2.0, 5.0, 8.0]
    assert "<- chosen" in str(sel)
    assert tuning.select_tau(_net(), _data(), candidates=(8,), budget=0.03).tau == 8.0  # fallback: smallest


def test_select_tau_runs_for_real_on_a_tiny_model():
    sel = tuning.select_tau(_net(), _data(), candidates=(0, 3), budget=0.5, epochs=1, batch_size=16, progress=False, device="cpu")
    assert sel.tau in (0.0, 3.0) and len(sel.rows) == 2 and all(0 <= r["clean_acc"] <= 1 for r in sel.rows)


def test_bad_arguments():
    with pytest.raises(ValueError, match="candidate"):
        tuning.select_tau(_net(), _data(), candidates=())
    with pytest.raises(ValueError, match="budget"):
        tuning.select_tau(_net(), _data(), budget=3)
    with pytest.raises(ValueError, match="tau"):
        tuning.sweep_tau(_net(), _data(), [-1.0])
