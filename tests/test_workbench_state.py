"""The workbench's state without a browser: one τ and λ across picker, explorer and launcher, the
picked input followed through runs (a reading per evaluation), stop, overlaid runs, and the
repaired model's view of the input."""

from typing import Any

import numpy as np
import pytest
import torch

from medic_viz.cards import ModelCard
from medic_viz.data.arrays import DatasetSplits
from medic_viz.probe import InputProbe, predict_input
from medic_viz.widgets.state import StateChange, WorkbenchState
from test_widget_state import TRIGGER, _data, _net


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return DatasetSplits(_data(96, 0), _data(30, 1))


def _bench(splits, **kw) -> WorkbenchState:
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=2, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None, stats_images=30)
    settings.update(kw)
    return WorkbenchState(_net(), splits, **settings)


def test_one_tau_and_one_lambda_across_picker_explorer_and_launcher(splits):
    s = _bench(splits, tau=4.0, lam=8.0, tau_mode="global")  # runs use the one τ
    assert (s.picker.tau, s.explorer.tau, s.launcher.tau, s.launcher.lam) == (4.0, 4.0, 4.0, 8.0)
    changes: list[StateChange] = []
    s.add_listener(changes.append)
    s.tau = 7.0                                   # the workbench's own slider
    assert (s.picker.tau, s.explorer.tau, s.launcher.tau) == (7.0, 7.0, 7.0)
    assert changes == [StateChange("param", name="tau", value=7.0)]
    s.explorer.tau = 2.5                          # the explorer's slider: the run will use it
    assert (s.tau, s.picker.tau, s.launcher.tau) == (2.5, 2.5, 2.5)
    s.launcher.set(tau=3.0, lam=1.5)              # the launcher's sliders
    assert (s.tau, s.lam, s.picker.tau, s.explorer.tau) == (3.0, 1.5, 3.0, 3.0)
    s.lam = 6.0
    assert s.launcher.lam == 6.0
    with pytest.raises(ValueError, match="^tau must be"):
        s.tau = -1.0                              # refused: nothing changes anywhere
    assert (s.tau, s.picker.tau, s.explorer.tau, s.launcher.tau) == (3.0, 3.0, 3.0, 3.0)
    s.launcher.tau = float("nan")                 # the launcher keeps what was typed and reports it at launch
    assert s.tau == 3.0 and s.picker.tau == 3.0 and "tau" in s.launcher.problems
    run = s.launch()
    assert run.status == "error" and "tau" in run.error
    s.tau = 5.0                                   # a valid value from the workbench repairs the launcher's
    assert s.launcher.tau == 5.0 and not s.launcher.problems


def test_the_layer_is_shared_and_the_explorer_follows_the_picked_input(splits):
    s = _bench(splits)
    layers = s.picker.layers
    s.explorer.layer = layers[0]
    assert s.picker.layer == layers[0]
    s.picker.layer = layers[-1]
    assert s.explorer.layer == layers[-1]
    s.choose(2)
    assert s.explorer.analysis is s.picker.analysis and s.explorer.analysis.label == s.picker.label == 2
    probe = s.probe
    assert isinstance(probe, InputProbe) and s.launcher.probe is probe
    assert probe.label == 2 and probe.name == "gallery image 2" and torch.equal(probe.image, s.picker.image)
    # The trojaned model's reading of the picked input is what a run starts to heal.
    want = predict_input(s.picker.model, s.picker.image)
    np.testing.assert_allclose(s.before.clean.probabilities, want.probabilities, atol=1e-6)
    s.load_image(np.full((5, 5, 3), 200, np.uint8), label=1)
    assert s.probe.name == "your image" and s.probe.label == 1 and s.explorer.analysis.label == 1


def test_first_pick_is_not_of_the_target_class_and_choice_is_honoured(splits):
    s = _bench(splits)
    assert s.picker.label != 0  # the trigger's target: its triggered copy would show nothing
    assert _bench(splits, choice=0).picker.choice == 0


def test_settings_the_workbench_owns_are_refused_and_the_rest_reach_the_launcher(splits):
    with pytest.raises(ValueError, match=r"sets \['probe'\] itself"):
        _bench(splits, probe=None)
    s = _bench(splits, options={"student_seed": 3}, eval_every_steps=2, method="finetune")
    assert s.launcher.options == {"student_seed": 3} and s.launcher.eval_every_steps == 2
    assert s.launcher.method == "finetune"
    assert s.launcher.teacher is not s.picker.model  # runs read their own copy of the model
    with pytest.raises(TypeError, match="DatasetSplits"):
        WorkbenchState(_net(), splits.test)


def test_trigger_and_target_from_the_model_card(splits):
    card = ModelCard(architecture="small_cnn", num_classes=3, attack=TRIGGER.to_config(), target_class=1)
    s = WorkbenchState(_net(), splits, card=card, epochs=1, device="cpu", stats_images=30)
    assert s.launcher.target == 1 and s.launcher.trigger.to_config() == TRIGGER.to_config()
    assert next(iter(s.picker.triggers)) == "model: badnet" and s.picker.label != 1


def test_a_run_records_the_picked_inputs_prediction_at_every_evaluation(splits):
    s = _bench(splits, epochs=3)
    s.choose(1)
    run = s.launch()
    assert run.probe is s.probe
    s.wait(60)
    assert run.status == "done"
    curve = run.curve()
    assert len(curve["x"]) == 4  # start + 3 epochs
    assert [x for x, _ in run.readings] == curve["x"]  # one reading per evaluation, at the same points
    for _x, reading in run.readings:
        for pred in (reading.clean, reading.triggered):
            assert abs(pred.probabilities.sum() - 1) < 1e-5 and pred.probability == pred.probabilities.max()
    # The last evaluation is of the final model: its reading is that model's prediction on the input.
    last = run.readings[-1][1]
    assert run.model is not None
    np.testing.assert_allclose(last.clean.probabilities, predict_input(run.model, s.probe.image).probabilities, atol=1e-5)
    np.testing.assert_allclose(last.triggered.probabilities,
                               predict_input(run.model, s.probe.triggered_image).probabilities, atol=1e-5)
    pc = run.probe_curve()
    assert pc["x"] == curve["x"]
    np.testing.assert_allclose(pc["clean"], [100 * r.clean.probabilities[1] for _, r in run.readings])
    np.testing.assert_allclose(pc["triggered"], [100 * r.triggered.probabilities[1] for _, r in run.readings])
    # The run ended normally: the repaired model's view of the input is ready when wait() returns.
    assert s.compared is run and s.compare_error is None
    c = s.comparison()
    assert c["run"] is run and c["trojaned"]["label"] == "b" == c["repaired"]["label"]
    repaired = predict_input(run.model, s.picker.image)
    assert c["repaired"]["clean_pred"][0] == "abc"[repaired.label]
    assert c["repaired"]["clean_pred"][1] == pytest.approx(repaired.probability, abs=1e-5)
    assert c["trojaned"]["combined"].shape == c["repaired"]["combined"].shape


def test_stop_keeps_the_readings_and_compare_is_on_request(splits):
    s = _bench(splits, epochs=2000, eval_every_steps=2)
    run = s.launch()
    assert run.wait_for_event("step", timeout=30) is not None
    with pytest.raises(ValueError, match="still running"):
        s.compare(run)
    s.stop()
    assert run.wait(10) and run.status == "stopped"
    assert len(run.readings) == len(run.curve()["x"]) >= 2  # the stopped model was evaluated and read too
    assert s.compared is None  # not automatic for a stopped run …
    assert s.compare() is run and s.compared is run  # … but on request
    assert s.comparison()["repaired"] is not None
    s.clear()
    assert s.compared is None and s.runs == []
    with pytest.raises(ValueError, match="no run has a repaired model"):
        s.compare()


def test_two_runs_are_overlaid_each_following_the_input_picked_at_its_launch(splits):
    s = _bench(splits, epochs=1, tau_mode="global")
    s.choose(1)
    first = s.launch()
    s.wait(60)
    s.choose(2)
    s.tau = 9.0
    second = s.launch()
    s.wait(60)
    assert [r.label for r in s.runs] == ["MEDIC τ=5 λ=3", "MEDIC τ=9 λ=3"]
    assert first.probe.label == 1 and second.probe.label == 2
    assert len(first.readings) == len(second.readings) == 2
    assert s.compared is second and s.comparison()["repaired"]["label"] == "c"
    # The earlier run's model on the input now picked (computed on demand, cached per run and input).
    a = s.repaired_analysis(first)
    assert a is s.repaired_analysis(first) and a.label == 2
