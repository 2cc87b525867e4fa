"""Choosing τ from clean data alone."""

import pytest
import torch
import torch.nn as nn

import medic_viz.defenses.tuning as tuning
from medic_viz.data.arrays import ImageArrays


def _data(n=60, classes=3):
    g = torch.Generator().manual_seed(0)
    return ImageArrays((torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8), torch.arange(n) % classes,
                       classes=("a", "b", "c"))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


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


def test_choose_tau_by_hand():
    rows = [{"tau": 0.0, "clean_acc": 0.995}, {"tau": 2.0, "clean_acc": 0.992}, {"tau": 5.0, "clean_acc": 0.977}]
    assert tuning.choose_tau(rows, 0.995, 0.0) == 0.0
    assert tuning.choose_tau(rows, 0.995, 0.003) == 2.0  # 0.995 - 0.992 = 0.003, exactly on the budget
    assert tuning.choose_tau(rows, 0.995, 0.02) == 5.0
    assert tuning.choose_tau(rows, 1.0, 0.0) == 0.0  # none within: the most accurate τ (here 0)
    # none within and τ = 0 not the most accurate (the WaNet sweep: 386, 386, 387, 388, 386 of 390
    # against the trojaned model's 390): the nearest, τ = 3 — not plain cloning
    wanet = [{"tau": t, "clean_acc": k / 390} for t, k in ((0, 386), (1, 386), (2, 387), (3, 388), (5, 386), (8, 380))]
    assert tuning.choose_tau(wanet, 1.0, 0.0036) == 3.0
    # what it prints says which rule chose
    rows390 = [dict(r, n_clean=390) for r in wanet]
    assert "no τ within the 0.4-point budget: the most accurate" in str(tuning.TauSelection(3.0, 0.0036, 1.0, rows390))
    assert "largest τ with hold-out accuracy drop ≤ 1.0 points" in str(tuning.TauSelection(3.0, 0.01, 1.0, rows390))
    # a tie for the most accurate: the larger τ
    tie = [{"tau": 0.0, "clean_acc": 0.9}, {"tau": 2.0, "clean_acc": 0.9}, {"tau": 5.0, "clean_acc": 0.8}]
    assert tuning.choose_tau(tie, 1.0, 0.0) == 2.0
    with pytest.raises(ValueError, match="no sweep rows"):
        tuning.choose_tau([], 0.9, 0.01)


def test_holdout_stderr_by_hand():
    # plus four: p = (90 + 2) / 104 = 0.884615, sqrt(p * (1 - p) / 104) = 0.031329
    assert tuning.holdout_stderr(0.9, 100) == pytest.approx(0.031329, abs=1e-6)
    # all 50 right: p = 52 / 54, sqrt(p * (1 - p) / 54) = 0.025700 — not zero (the plain rule's 0 was the bug)
    assert tuning.holdout_stderr(1.0, 50) == pytest.approx(0.025700, abs=1e-6)
    assert tuning.holdout_stderr(0.0, 50) == pytest.approx(tuning.holdout_stderr(1.0, 50))
    with pytest.raises(ValueError, match="positive"):
        tuning.holdout_stderr(0.9, 0)
    with pytest.raises(ValueError, match="fraction"):
        tuning.holdout_stderr(90.0, 10)
