"""MEDIC's clean hold-out (issue 27 item 3): with ``holdout_fraction`` the engine keeps part of
the clean data out of training and measures, with clean data alone, what cloning costs — the
clone's accuracy on it every epoch against the teacher's, in the result and the live view."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from medic_viz.cli import _refuse_unused, build_parser, main
from medic_viz.cli_compare import _medic_options
from medic_viz.data.arrays import DatasetSplits, ImageArrays, split_holdout
from medic_viz.defenses.medic import Medic, MedicConfig
from medic_viz.holdout import HOLDOUT_GAP_POINTS, holdout_record
from medic_viz.metrics import Evaluator
from medic_viz.models.zoo import build_model
from medic_viz.pretrained import demo_model_dir
from medic_viz.run_settings import RunSettings
from medic_viz.viz.curves import training_curves_figure
from medic_viz.widgets.apps import launcher_app
from medic_viz.widgets.state import LauncherState
from test_widget_state import TRIGGER, _data


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return DatasetSplits(_data(96, 0), _data(30, 1))


def _clean(n_per_class: int = 4, classes: int = 4) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    n = n_per_class * classes
    return ImageArrays(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % classes,
                       classes=tuple("abcd"[:classes]), name="toy")


def test_holdout_record_by_hand():
    rec = holdout_record(0.90, 0.85, 40, 360)
    assert rec["holdout"] == {"images": 40, "trained_on": 360, "teacher_acc": 0.90, "clone_acc": 0.85, "gap_points": 5.0,
                              "whole_groups": False}
    assert holdout_record(0.90, 0.85, 40, 360, whole_groups=True)["holdout"]["whole_groups"] is True
    assert "40 held-out clean images" in rec["holdout_note"] and "5.0 points below" in rec["holdout_note"]
    close = holdout_record(0.90, 0.90 - HOLDOUT_GAP_POINTS / 100 + 0.001, 40, 360)
    assert close["holdout"]["gap_points"] == pytest.approx(2.9) and "holdout_note" not in close
    better = holdout_record(0.80, 0.85, 40, 360)  # the clone above the teacher: a negative gap, no note
    assert better["holdout"]["gap_points"] == -5.0 and "holdout_note" not in better


def test_a_run_with_a_holdout_trains_on_the_rest_and_measures_clone_and_teacher_on_it():
    torch.manual_seed(0)
    clean = _clean()
    teacher = build_model("small_cnn", 4).eval()
    result = Medic(epochs=2, batch_size=4, device="cpu", progress=False, holdout_fraction=0.25).run(teacher, clean)
    fit, hold = split_holdout(clean, 0.25, seed=0)  # the engine's split: config.seed, class-stratified
    assert (len(fit), len(hold)) == (12, 4)
    record = result.config["holdout"]
    assert record["images"] == 4 and record["trained_on"] == 12
    assert record["teacher_acc"] == Evaluator(hold, device="cpu")(teacher).clean_acc
    assert record["clone_acc"] == Evaluator(hold, device="cpu")(result.model).clean_acc
    assert record["gap_points"] == pytest.approx(100 * (record["teacher_acc"] - record["clone_acc"]), abs=0.01)
    epochs = [e for e in result.history if e.kind in ("start", "epoch")]
    assert [e.n_holdout for e in epochs] == [4, 4, 4] and all(e.holdout_acc is not None for e in epochs)
    assert epochs[-1].holdout_acc == record["clone_acc"]  # the returned model is the last epoch's
    assert all(e.total_steps == 3 * 2 for e in result.history)  # 12 training images / batch 4, not 16 / 4


def test_the_report_figure_draws_the_holdout_curve_dotted():
    torch.manual_seed(0)
    result = Medic(epochs=2, batch_size=4, device="cpu", progress=False, holdout_fraction=0.25).run(
        build_model("small_cnn", 4).eval(), _clean())
    fig = training_curves_figure(result.history)
    held = [t for t in fig.data if t.name == "run: clean hold-out acc"]
    assert len(held) == 1 and held[0].line.dash == "dot"
    assert list(held[0].y) == [100 * e.holdout_acc for e in result.history if e.kind in ("start", "epoch")]
    plain = Medic(epochs=1, batch_size=4, device="cpu", progress=False).run(build_model("small_cnn", 4).eval(), _clean())
    assert not [t for t in training_curves_figure(plain.history).data if "hold-out" in t.name]


def test_without_a_holdout_every_image_trains_and_nothing_is_measured():
    torch.manual_seed(0)
    result = Medic(epochs=1, batch_size=4, device="cpu", progress=False).run(build_model("small_cnn", 4).eval(), _clean())
    assert "holdout" not in result.config and "holdout_note" not in result.config
    assert all(e.holdout_acc is None and e.n_holdout == 0 for e in result.history)
    assert all(e.total_steps == 4 for e in result.history)


@pytest.mark.parametrize("bad", [-0.1, 0.6, "0.1", True, float("nan")])
def test_a_holdout_fraction_outside_0_to_half_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match="holdout_fraction") as err:
        MedicConfig(holdout_fraction=bad).validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="holdout_fraction"):
        RunSettings(holdout_fraction=bad)


def test_too_small_a_clean_set_for_a_holdout_says_so():
    one_each = _clean(n_per_class=1)
    with pytest.raises(ValueError, match="too small"):
        Medic(epochs=1, device="cpu", progress=False, holdout_fraction=0.1).run(build_model("small_cnn", 4), one_each)


def test_the_holdout_is_medics_setting_and_reaches_it_from_every_front_end():
    assert RunSettings(holdout_fraction=0.1).to_defense_options()["holdout_fraction"] == 0.1
    assert "holdout_fraction" not in RunSettings().to_defense_options()  # off by default: grid cells keep their ids
    assert "holdout_fraction" not in RunSettings(method="finetune", holdout_fraction=0.1).to_defense_options()
    args = build_parser().parse_args(["defend", "--teacher", "x", "--out", "o", "--holdout-fraction", "0.1"])
    assert RunSettings.from_cli_args(args).holdout_fraction == 0.1
    args = build_parser().parse_args(["defend", "--teacher", "x", "--out", "o", "--method", "finetune",
                                      "--holdout-fraction", "0.1"])
    with pytest.raises(ValueError, match="--holdout-fraction 0.1"):
        _refuse_unused(args, "finetune")
    assert isinstance(args, argparse.Namespace)
    compare = build_parser().parse_args(["compare", "--out", "o", "--holdout-fraction", "0.2"])
    assert _medic_options(compare) == {"holdout_fraction": 0.2}  # a grid's MEDIC column, as defend reads it


def test_the_launcher_draws_the_holdout_curve_and_says_the_gap(splits):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    state = LauncherState(net, splits, trigger=TRIGGER, target=0, epochs=2, fraction=1.0, device="cpu",
                          batch_size=16, eval_images=None)
    app = launcher_app(state)
    app.holdout_fraction.value = 0.25
    assert state.holdout_fraction == 0.25
    app.launch_button.click()
    state.wait(60)
    run = state.runs[0]
    assert run.status == "done", run.error
    held = run.holdout_curve()
    assert held["x"] == [0.0, 1.0, 2.0] and len(held["holdout_acc"]) == 3
    record = run.result.config["holdout"]
    assert held["holdout_acc"][-1] == pytest.approx(100 * record["clone_acc"])
    assert run.holdout_text is not None and run.holdout_text in run.summary()
    assert ("held-out clean images" if "holdout_note" in run.result.config else "clean hold-out (") in app.status.value
    dotted = [t for t in app.figure.data if t.name.endswith("clean hold-out acc")]
    assert len(dotted) == 1 and dotted[0].line.dash == "dot" and list(dotted[0].y) == held["holdout_acc"]
    app.method.value = "finetune"
    assert app.holdout_fraction.disabled  # MEDIC's setting: greyed out for a baseline


def test_defend_with_a_holdout_prints_the_split_and_the_clone_against_the_teacher(tmp_path, capsys):
    out = tmp_path / "held"
    rc = main(["defend", "--teacher", str(demo_model_dir("badnet")), "--out", str(out), "--epochs", "1",
               "--fraction", "0.02", "--holdout-fraction", "0.25", "--device", "cpu", "--no-progress"])
    assert rc == 0
    held = json.loads((out / "result.json").read_text())["config"]["holdout"]
    printed = capsys.readouterr().out
    assert f"240 clean images ({held['trained_on']} trained on, {held['images']} held out)" in printed
    assert held["images"] + held["trained_on"] == 240 and held["images"] == 60  # 25 % of 20 per class, 12 classes
    assert f"clone {100 * held['clone_acc']:.2f}%, teacher {100 * held['teacher_acc']:.2f}%" in printed
    assert ("note: on 60 held-out clean images" in printed) == (held["gap_points"] > HOLDOUT_GAP_POINTS)
    assert "clean hold-out acc" in (out / "report.html").read_text()
