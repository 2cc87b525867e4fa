"""The workbench view, driven without a browser: shared sliders, gallery clicks, Launch/Stop,
the picked input's live panel and the before/after figure."""

import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")  # plotly >= 6 FigureWidget needs it

from medic_viz.data.arrays import DatasetSplits
from medic_viz.widgets.apps import workbench_app
from medic_viz.widgets.state import WorkbenchState
from test_widget_state import TRIGGER, _data, _net


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return DatasetSplits(_data(96, 0), _data(30, 1))


def _app(splits, **kw):
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=2, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None, stats_images=30)
    settings.update(kw)
    state = WorkbenchState(_net(), splits, **settings)
    return state, workbench_app(state)


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_one_tau_slider_moves_every_view_and_the_run_uses_it(splits):
    state, app = _app(splits, tau_mode="global")
    app.tau.value = 7.25
    assert state.tau == state.picker.tau == state.explorer.tau == state.launcher.tau == 7.25
    assert app.explorer_view.tau.value == 7.25 and app.launcher_view.tau.value == 7.25
    assert "τ = 7.25" in app.explorer_view.figure.layout.title.text
    assert app.compare_figure.layout.title.text.endswith("τ = 7.25")
    app.lam.value = 3.0
    assert state.launcher.lam == 3.0
    state.launcher.tau = 2.0  # set elsewhere: the workbench's slider follows
    assert app.tau.value == 2.0
    app.launch_button.click()
    state.wait(60)
    assert state.runs[0].label == "MEDIC τ=2 λ=3" and state.runs[0].params["tau"] == 2.0
    assert state.listener_errors == state.launcher.listener_errors == state.picker.listener_errors == []


def test_picking_an_input_updates_the_panels_in_class_names(splits):
    state, app = _app(splits)
    app.picker_view.gallery_buttons[2].click()
    assert state.picker.choice == 2
    assert "gallery image 2" in app.probe_html.value and "true class <b>c</b>" in app.probe_html.value
    trojaned = app.compare_figure.layout.annotations[-2].text
    assert trojaned.startswith("<b>trojaned model</b>: x → ") and trojaned.split("→ ")[1][0] in "abc"
    np.testing.assert_allclose(app.compare_figure.data[4].z, state.comparison()["trojaned"]["difference"])
    assert "your image" not in app.probe_html.value


def test_launch_follows_the_input_live_and_shows_the_repaired_model(splits):
    state, app = _app(splits, epochs=3)
    app.launch_button.click()
    state.wait(60)
    run = state.runs[0]
    assert run.status == "done"
    _wait(lambda: len(app.probe_figure.data) == 2 and len(app.probe_figure.data[0].x or ()) == 4)
    clean, triggered = app.probe_figure.data
    assert list(clean.x) == run.curve()["x"]
    np.testing.assert_allclose(clean.y, run.probe_curve()["clean"])
    np.testing.assert_allclose(triggered.y, run.probe_curve()["triggered"])
    assert len(app.probe_figure.layout.shapes) == 2  # the trojaned model's two probabilities
    assert app.probe_figure.layout.title.text.startswith(f"P({'abc'[state.probe.label]})")
    last = run.readings[-1][1]
    assert f"{100 * last.triggered.probability:.0f}%" in app.probe_html.value and "<td>3.0</td>" in app.probe_html.value
    repaired = app.compare_figure.layout.annotations[-1].text
    assert repaired.startswith("<b>repaired: MEDIC share=1% λ=3 (done)</b>: x → ")  # the default: τ per layer
    np.testing.assert_allclose(app.compare_figure.data[6 + 5].z, state.comparison()["repaired"]["combined"])
    # A second run is overlaid: two more lines in another colour.
    app.launch_button.click()
    state.wait(60)
    _wait(lambda: len(app.probe_figure.data) == 4)
    assert app.probe_figure.data[2].line.color != app.probe_figure.data[0].line.color
    assert "MEDIC share=1% λ=3 #2" in app.probe_html.value


def test_stop_then_compare_on_request(splits):
    state, app = _app(splits, epochs=2000, eval_every_steps=2)
    app.launch_button.click()
    run = state.runs[0]
    assert run.wait_for_event("step", timeout=30) is not None
    assert app.compare_button.disabled  # nothing to compare while the run trains
    app.stop_button.click()
    assert run.wait(10) and run.status == "stopped"
    assert not app.compare_button.disabled and state.compared is None
    assert "when a run ends" in app.compare_figure.layout.annotations[-1].text
    app.compare_button.click()  # analysed in a background thread
    _wait(lambda: state.compared is run and not app.compare_button.disabled, timeout=30)
    _wait(lambda: "(stopped)" in app.compare_figure.layout.annotations[-1].text)
    assert app.compare_status.value == ""


def test_compare_without_a_model_is_shown_not_raised(splits):
    state, app = _app(splits)
    app.compare_button.click()
    _wait(lambda: "#c62828" in app.compare_status.value)
    assert "no run has a repaired model" in app.compare_status.value


def test_the_run_mode_and_the_calibrated_tau_hint(splits):
    state, app = _app(splits)
    lv = app.launcher_view
    shown = _widgets_in(app)
    assert all(any(w is part for w in shown) for part in (lv.tau_mode, lv.share, lv.layers))  # step 3 offers them
    assert not app.tau.disabled  # the workbench's τ always draws the maps
    state.picker.layer = "1"
    tau = state.calibrated_tau("1")
    assert f"τ = {tau:.3g} on 1" in app.tau_hint.value and "per layer" in app.tau_hint.value
    lv.share.value = 0.1  # another share: another calibrated τ, shown at once
    wider = state.calibrated_tau("1")
    assert wider < tau and f"τ = {wider:.3g} on 1" in app.tau_hint.value
    lv.tau_mode.value = "global"
    assert state.tau_mode == "global" and "this τ = 5 on every" in app.tau_hint.value
    app.tau.value = 2.5
    assert "this τ = 2.5 on every" in app.tau_hint.value
    state.picker.layer = "5"  # the logits: not cloned by the default layers
    assert "do not clone 5" in app.tau_hint.value
    lv.layers.value = "all"
    assert "do not clone" not in app.tau_hint.value
    app.launch_button.click()
    state.wait(60)
    assert state.runs[0].label == "MEDIC τ=2.5 λ=3 layers=all"
    lv.method.value = "finetune"
    assert app.tau_hint.value == ""


def _widgets_in(widget) -> list:
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += _widgets_in(child)
    return out
