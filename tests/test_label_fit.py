"""The run's note when the clone learnt nothing from the clean labels (a constant guess's loss)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import medic_viz.defenses.medic as medic_module
from medic_viz.cli import main
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import DefenseResult
from medic_viz.defenses.medic import Medic
from medic_viz.label_fit import LABEL_FIT_RATIO, label_entropy, label_fit_record
from medic_viz.models.zoo import build_model
from medic_viz.pretrained import demo_model_dir
from medic_viz.widgets.state.runs import RunRecord


def test_label_entropy_by_hand():
    assert label_entropy(torch.tensor([0, 0, 1, 1])) == pytest.approx(math.log(2), abs=1e-9)
    # frequencies (1/2, 1/4, 1/4): 1/2·ln 2 + 2·1/4·ln 4 = 1.5 ln 2
    assert label_entropy(torch.tensor([2, 2, 0, 5])) == pytest.approx(1.5 * math.log(2), abs=1e-9)
    assert label_entropy(torch.tensor([3, 3, 3])) == 0.0 and label_entropy(torch.tensor([], dtype=torch.long)) == 0.0


def test_note_only_when_the_last_epoch_is_as_bad_as_a_constant_guess():
    labels = torch.tensor([0, 0, 1, 1])  # a constant guess: ln 2 = 0.693 nats
    note = label_fit_record([3.0, 0.69], labels)["fit_note"]
    assert "0.69 nats" in note and "a constant guess's is 0.69" in note and "a smaller lam" in note
    assert label_fit_record([0.69, 0.30], labels) == {}  # it learnt by the end
    assert label_fit_record([LABEL_FIT_RATIO * math.log(2) - 1e-3], labels) == {}
    assert "fit_note" in label_fit_record([LABEL_FIT_RATIO * math.log(2) + 1e-3], labels)
    assert label_fit_record([], labels) == {} and label_fit_record([float("nan")], labels) == {}
    assert label_fit_record([5.0], torch.tensor([1, 1])) == {}  # one class: nothing to learn


def test_medic_says_so_when_the_clone_ends_at_a_constant_guess():
    # Random labels on noise, two epochs: nothing to learn, the training loss stays near ln 4.
    g = torch.Generator().manual_seed(0)
    clean = ImageArrays(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(16) % 4,
                        classes=tuple("abcd"), name="noise")
    torch.manual_seed(0)
    teacher = build_model("small_cnn", 4).eval()
    result = Medic(epochs=2, batch_size=4, device="cpu", progress=False).run(teacher, clean)
    last_ce = [e.losses["ce"] for e in result.history if e.kind == "epoch"][-1]
    assert last_ce >= LABEL_FIT_RATIO * math.log(4)
    assert "did not learn the clean labels" in result.config["fit_note"]


def test_the_live_view_shows_the_note_once_the_run_ended():
    run = RunRecord(index=1, label="MEDIC τ=0 λ=3", params={"epochs": 2})
    assert run.fit_note is None and "did not learn" not in run.summary()
    note = label_fit_record([0.69], torch.tensor([0, 1]))["fit_note"]
    run.result = DefenseResult("medic", torch.nn.Identity(), [], False, 1.0, {"fit_note": note})
    run.status = "done"
    assert run.fit_note == note and note in run.summary()
    run.result = DefenseResult("medic", torch.nn.Identity(), [], False, 1.0, {})
    assert run.fit_note is None and "did not learn" not in run.summary()


def test_defend_prints_the_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(medic_module, "label_fit_record", lambda ce, labels: {"fit_note": "the clone did not learn (test)"})
    rc = main(["defend", "--teacher", str(demo_model_dir("badnet")), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--fraction", "0.02", "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert "note: the clone did not learn (test)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["fit_note"] == "the clone did not learn (test)"
