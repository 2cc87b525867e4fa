"""Widget state objects without a browser or ipywidgets: background MEDIC runs (launch, stop
latency, errors, overlaid runs, kept results), the importance explorer and the input picker."""

import io
import time
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.stats import compute_layer_stats
from medic_viz.widgets.state import ExplorerState, LauncherState, PickerState, StateChange, run_label


def _net(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    ).eval()


def _data(n: int, seed: int, size: int = 8) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % 3
    return ImageArrays(x, y, classes=("a", "b", "c"), name="tiny")


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return DatasetSplits(_data(96, 0), _data(30, 1))


TRIGGER = BadNetTrigger(size=2)


def _state(splits, **kw) -> LauncherState:
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=2, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None)
    settings.update(kw)
    return LauncherState(_net(), splits, **settings)


def _collect(state) -> list[StateChange]:
    changes: list[StateChange] = []
    state.add_listener(changes.append)
    return changes


# ------------------------------------------------------------------------------------ launcher


def test_run_completes_with_events_curves_and_kept_result(splits):
    state = _state(splits, tau=5, lam=10, epochs=3)
    changes = _collect(state)
    run = state.launch()
    assert run.label == "MEDIC τ=5 λ=10" and run.label == run_label(5, 10) and run.note is None
    assert state.wait(30) is run
    assert run.status == "done" and run.error is None
    kinds = [e.kind for e in run.events]
    assert kinds == ["start", "epoch", "epoch", "epoch", "end"]
    curve = run.curve()
    assert curve["x"] == [0.0, 1.0, 2.0, 3.0]  # start + one point per epoch
    assert all(0.0 <= v <= 100.0 for v in curve["clean_acc"] + curve["asr"])
    losses = run.loss_curves()
    assert set(losses) == {"total", "ce", "clone"} and losses["ce"][0] == [1.0, 2.0, 3.0]
    # The result is kept for the next cells: a new model (not the teacher), measured on the whole test set.
    assert state.result is run.result and state.model is run.model and run.model is not state.teacher
    assert run.after is not None and run.after.n_clean == 30 and run.after.n_asr == 20
    assert state.baseline is not None and state.baseline.n_clean == 30
    # Listeners saw launch, one change per event (from the training thread), then the status.
    assert changes[0].kind == "launch" and changes[-1].kind == "status" and changes[-1].value == "done"
    assert [c.event.kind for c in changes if c.kind == "event"] == kinds
    assert not state.running and state.current is None


def test_stop_ends_a_run_within_a_second(splits):
    state = _state(splits, epochs=2000)
    run = state.launch()
    ev = run.wait_for_event("epoch", timeout=30)
    assert ev is not None and ev.kind == "epoch" and ev.epoch >= 1, "no epoch event arrived"
    assert state.running
    t0 = time.perf_counter()
    assert state.stop() is run
    assert run.wait(5)
    latency = time.perf_counter() - t0
    assert run.status == "stopped"
    assert latency < 1.0 and run.stop_latency is not None and run.stop_latency < 1.0
    # The partly trained model and its history are kept.
    assert run.result is not None and run.result.stopped and state.model is run.model
    assert run.events[-1].kind == "end" and run.events[-1].stopped and run.events[-1].epoch < 2000
    assert run.after is None  # no whole-test-set evaluation after a stop (that would delay it)
    assert run.wait_for_event(timeout=5) is None  # an ended run emits nothing more


def test_wait_for_event_returns_new_events_only(splits):
    state = _state(splits, epochs=3)
    run = state.launch()
    first = run.wait_for_event("epoch", timeout=30)
    second = run.wait_for_event("epoch", timeout=30)
    assert first.kind == second.kind == "epoch" and 1 <= first.epoch < second.epoch <= 3
    assert run.wait_for_event("end", timeout=30).kind == "end"
    state.wait(30)
    with pytest.raises(ValueError, match="kind"):
        run.wait_for_event("batch")


@pytest.mark.parametrize("tau", [-1.0, float("nan"), "sharp"])
def test_invalid_tau_is_an_error_shown_in_state_not_raised(splits, tau):
    state = _state(splits, tau=tau)
    changes = _collect(state)
    run = state.launch()
    assert run.status == "error" and "tau" in run.error
    assert run.result is None and run.model is None and not state.running
    assert [c.kind for c in changes] == ["launch", "status"]


@pytest.mark.parametrize("bad", [dict(fraction=0.0), dict(epochs=0), dict(lam=-1), dict(eval_every_steps=1.5),
                                 dict(device="cuda:99" if torch.cuda.is_available() else "cuda")])
def test_other_bad_settings_are_errors_in_state(splits, bad):
    run = _state(splits, **bad).launch()
    assert run.status == "error" and run.error.startswith("ValueError")


def test_exception_inside_the_training_thread_reaches_the_state(splits):
    state = _state(splits)
    with torch.no_grad():
        state.teacher[5].weight.fill_(float("inf"))  # teacher outputs are inf/NaN: the loss cannot be finite
    run = state.launch()
    state.wait(30)
    assert run.status == "error"
    # a non-finite teacher is diagnosed on its outputs before any loss is computed (issue 13)
    assert run.error.startswith("NonFiniteModelError") and "NonFiniteModelError" in run.traceback
    assert not state.running
    # The state is usable again after an error.
    with torch.no_grad():
        state.teacher[5].weight.normal_()
    assert state.launch() is not run and state.wait(30).status == "done"


def test_runs_are_overlaid_labelled_and_cleared(splits):
    state = _state(splits, epochs=1)
    state.launch()  # the default: τ calibrated per layer to a 1 % share
    state.wait(30)
    state.tau_mode = "global"
    state.tau = 0
    state.launch()
    state.wait(30)
    state.tau = 0.0
    state.launch()
    state.wait(30)
    assert [r.label for r in state.runs] == ["MEDIC share=1% λ=3", "MEDIC τ=0 λ=3", "MEDIC τ=0 λ=3 #2"]
    assert [r.params["tau"] for r in state.runs] == [5.0, 0, 0.0]
    assert all(r.status == "done" and len(r.curve()["x"]) == 2 for r in state.runs)
    assert state.result is state.runs[-1].result
    assert state.runs[0].model is not state.runs[1].model
    state.clear()
    assert state.runs == [] and state.result is None


def test_one_run_at_a_time(splits):
    state = _state(splits, epochs=2000)
    run = state.launch()
    try:
        with pytest.raises(RuntimeError, match="in progress"):
            state.launch()
    finally:
        state.stop()
        run.wait(5)
    assert run.status == "stopped"


def test_param_changes_notify_and_unknown_params_are_rejected(splits):
    state = _state(splits)
    changes = _collect(state)
    state.set(tau=7.5, lam=4)
    state.tau = 7.5  # unchanged: no notification
    assert [(c.kind, c.name, c.value) for c in changes] == [("param", "tau", 7.5), ("param", "lam", 4)]
    assert state.params["tau"] == 7.5 and state.lam == 4
    with pytest.raises(ValueError, match="unknown launcher parameter"):
        state.set(temperature=2)


def test_a_broken_listener_does_not_break_the_run(splits):
    state = _state(splits, epochs=1)

    def broken(change):
        raise KeyError("view bug")

    state.add_listener(broken)
    with pytest.warns(RuntimeWarning, match="view bug"):
        run = state.launch()
        state.wait(30)
    assert run.status == "done"
    assert state.listener_errors and "KeyError" in state.listener_errors[0]


def test_eval_every_steps_adds_step_points(splits):
    state = _state(splits, epochs=1, eval_every_steps=2)  # 96 images / 16 = 6 steps → steps 2, 4, 6
    run = state.launch()
    state.wait(30)
    assert [e.kind for e in run.events] == ["start", "step", "step", "step", "epoch", "end"]
    np.testing.assert_allclose(run.curve()["x"], [0, 1 / 3, 2 / 3, 1, 1])
    xs, ys = run.loss_curves()["ce"]  # from the step events only: each a mean over its own 2 steps
    np.testing.assert_allclose(xs, [1 / 3, 2 / 3, 1])
    assert ys == [e.losses["ce"] for e in run.events if e.kind == "step"]


def test_run_labels_name_the_method():
    assert run_label(5, 10) == run_label(5.0, 10.0, "medic") == "MEDIC τ=5 λ=10"
    assert run_label(2.5, 0, "MEDIC") == "MEDIC τ=2.5 λ=0"
    assert run_label(5, 10, "nad") == "NAD" and run_label(5, 10, "fine-tuning") == "Fine-tuning"
    assert run_label(5, 10, "bogus") == "bogus"  # unknown: as given (the launch reports the error)


@pytest.mark.parametrize("method", ["finetune", "anp", "scratch"])
def test_a_baseline_run_emits_events_and_is_kept(splits, method):
    state = _state(splits, method=method, epochs=2, tau=-1.0)  # τ/λ are ignored by a baseline: no error
    changes = _collect(state)
    run = state.launch()
    assert state.wait(30) is run
    assert run.status == "done", run.summary()
    display = {"finetune": "Fine-tuning", "anp": "ANP", "scratch": "Scratch"}[method]
    assert run.label == display and run.params["method"] == method
    assert run.note is not None and "ignores" in run.note and run.note in run.summary()
    assert run.result.method == method and state.runs == [run] and state.model is run.model
    assert run.model is not state.teacher
    kinds = [e.kind for e in run.events]
    assert kinds == ["start", "epoch", "epoch", "end"], kinds
    assert [c.event.kind for c in changes if c.kind == "event"] == kinds
    # ANP's end event measures the pruned model (which differs from the masked one trained): one more point.
    assert run.curve()["x"] == [0.0, 1.0, 2.0] + ([2.0] if method == "anp" else [])
    assert len(run.loss_curves()) >= 1
    assert run.after is not None and run.after.n_clean == 30


def test_method_parameter_is_canonical_and_checked_at_launch(splits):
    state = _state(splits, method="Fine-tuning")
    assert state.method == "finetune"
    changes = _collect(state)
    state.method = "NAD"
    assert state.method == "nad" and [(c.name, c.value) for c in changes] == [("method", "nad")]
    state.method = "nad"  # the same method: no notification
    assert len(changes) == 1
    state.method = "bogus"
    run = state.launch()
    assert run.status == "error" and "unknown method" in run.error and run.label == "bogus"
    state.method = "medic"
    state.set(tau_mode="global", tau=2)
    assert state.launch().label == "MEDIC τ=2 λ=3"
    state.wait(30)


def test_baseline_options_reach_the_method_and_are_checked(splits):
    state = _state(splits, method="finetune", epochs=1, baseline_options={"fine-tuning": {"weight_decay": 0.0}})
    run = state.launch()
    state.wait(30)
    assert run.status == "done" and run.result.config["weight_decay"] == 0.0
    # The launcher's settings reach a baseline too (batch size, epochs), the method's own defaults otherwise.
    assert run.result.config["batch_size"] == 16 and run.result.config["epochs"] == 1
    assert run.result.config["optimizer"] == "sgd"
    with pytest.raises(ValueError, match="baseline names"):
        _state(splits, baseline_options={"medic": {"tau": 1}})
    with pytest.raises(ValueError, match="must not repeat launcher settings"):
        _state(splits, baseline_options={"nad": {"epochs": 3}})
    bad = _state(splits, method="finetune", baseline_options={"finetune": {"no_such_option": 1}}).launch()
    assert bad.status == "error" and "no_such_option" in bad.error


# ------------------------------------------------------------------------------------ explorer


class _CountingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net(3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.fixture(scope="module")
def analysed(splits):
    pytest.importorskip("medic_viz.analysis")
    model = _CountingNet().eval()
    stats = compute_layer_stats(model, splits.train, device="cpu")
    state = ExplorerState.from_model(model, splits.test.floats()[4], TRIGGER, int(splits.test.labels[4]), stats=stats)
    return model, state


def test_explorer_redraws_from_cache_without_running_the_model(analysed):
    model, state = analysed
    calls = model.calls
    changes = _collect(state)
    seen = []
    for layer in state.layers:
        for crit in ("activation", "impact", "combined"):
            for tau in (0.0, 2.0, 10.0):
                state.set(layer=layer, criteria=crit, tau=tau)
                seen.append(state.importance_map())
    assert model.calls == calls  # no forward pass for any slider position
    assert {c.name for c in changes} == {"layer", "criteria", "tau"}
    # The map shown is the selected criterion's map of the analysis.
    state.set(layer="net.0", criteria="impact", tau=3.0)
    np.testing.assert_array_equal(state.importance_map(), state.analysis.maps("net.0", 3.0, "mean_abs")["impact"])


def test_tau_controls_how_spread_the_importance_is(analysed):
    _, state = analysed
    state.set(layer="net.0", criteria="activation", tau=0.0)
    assert state.effective_fraction() == pytest.approx(1.0)  # τ = 0: uniform weights
    fractions = []
    for tau in (0.5, 2.0, 8.0):
        state.tau = tau
        fractions.append(state.effective_fraction())
        assert float(state.importance().sum()) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > fractions[0] > fractions[1] > fractions[2] > 0.0


def test_explorer_rejects_bad_settings(analysed):
    _, state = analysed
    before = state.params
    with pytest.raises(ValueError, match="was not analysed"):
        state.layer = "nope"
    with pytest.raises(ValueError, match="criteria"):
        state.set(tau=1.0, criteria="gradient")  # all or nothing: τ is not changed either
    with pytest.raises(ValueError, match="tau"):
        state.tau = -2
    assert state.params == before
    with pytest.raises(TypeError, match="InputAnalysis"):
        ExplorerState(object())


# ------------------------------------------------------------------------------------ picker


@pytest.fixture()
def picker(splits):
    pytest.importorskip("medic_viz.analysis")
    return PickerState(_CountingNet().eval(), splits.test, trigger=TRIGGER, target=0, stats_images=30)


def test_picker_gallery_and_panels(picker, splits):
    assert len(picker.gallery) == 3 and picker.gallery_labels() == ["a", "b", "c"]
    assert [int(splits.test.labels[i]) for i in picker.gallery] == [0, 1, 2]
    assert picker.gallery_images()[1].shape == (8, 8, 3) and picker.gallery_images()[1].dtype == np.uint8
    assert list(picker.triggers)[0] == "model: badnet" and "blend" in picker.triggers
    picker.choose(1)
    p = picker.panels()
    assert p["label"] == "b" and p["image"].shape == (8, 8, 3)
    np.testing.assert_allclose(p["image"], splits.test.floats()[picker.gallery[1]].permute(1, 2, 0).numpy())
    # The triggered panel differs from the clean one only in the 2x2 patch near the bottom-right corner.
    changed = np.abs(p["triggered"] - p["image"]).sum(2) > 1e-6
    assert changed.any() and not changed[:5].any() and not changed[:, :5].any()
    for key in ("clean", "triggered_act", "difference", "activation", "impact", "combined"):
        assert p[key].ndim == 2


def test_picker_recomputes_analysis_only_for_new_inputs(picker):
    changes = _collect(picker)
    first = picker.analysis
    calls = picker.model.calls
    picker.layer = picker.layers[0]
    picker.tau = 9.0
    picker.panels()
    assert picker.analysis is first and picker.model.calls == calls
    picker.choose(2)
    assert picker.analysis is not first and picker.analysis.label == 2
    second = picker.analysis
    picker.trigger_name = "blend"
    assert picker.analysis is not second
    assert [c.name for c in changes if c.kind == "param"] == ["layer", "tau", "choice", "trigger_name"]
    with pytest.raises(ValueError, match="gallery"):
        picker.choose(3)
    with pytest.raises(ValueError, match="load_image"):
        picker.choose(PickerState.CUSTOM)


def test_picker_loads_own_image_of_any_size(picker):
    rgb = np.zeros((20, 16, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255  # pure red
    picker.load_image(rgb, label=2)
    assert picker.choice == PickerState.CUSTOM and picker.label == 2
    img = picker.image
    assert img.shape == (3, 8, 8)
    torch.testing.assert_close(img[0], torch.ones(8, 8))
    torch.testing.assert_close(img[1:], torch.zeros(2, 8, 8))
    buf = io.BytesIO()
    Image.fromarray(rgb[:, :, ::-1].copy()).save(buf, format="PNG")  # pure blue, as PNG bytes
    picker.load_image(buf.getvalue())
    expected = int(picker.model(picker.image.unsqueeze(0)).argmax(1))
    assert picker.label == expected  # no label given: the model's prediction
    torch.testing.assert_close(picker.image[2], torch.ones(8, 8))
    assert picker.analysis.label == expected
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        picker.load_image(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="class id"):
        picker.load_image(rgb, label=7)



def test_picker_loads_a_jpeg_file_of_any_size(picker, tmp_path):
    rgb = np.zeros((37, 50, 3), dtype=np.uint8)
    rgb[:, :, 1] = 255  # pure green, 37 x 50: not the data's 8 x 8, not square
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, format="JPEG", quality=95)
    picker.load_image(path, label=1)
    assert picker.choice == PickerState.CUSTOM and picker.image.shape == (3, 8, 8)
    torch.testing.assert_close(picker.image[1], torch.ones(8, 8), atol=0.03, rtol=0)
    assert float(picker.image[[0, 2]].abs().max()) < 0.03
    picker.load_image(path.read_bytes())  # the bytes of an upload
    assert picker.image.shape == (3, 8, 8) and picker.label == int(picker.model(picker.image[None]).argmax(1))
    with pytest.raises(ValueError, match="image file not found"):
        picker.load_image(tmp_path / "missing.jpg")

def test_picker_loads_another_model(picker):
    with pytest.raises(ValueError, match="5 classes"):
        picker.load_model(_net(1, classes=5))
    other = _net(2)
    picker.load_model(other)
    assert picker.model is other and picker.analysis.layers == picker.layers
