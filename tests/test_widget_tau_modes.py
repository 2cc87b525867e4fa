"""How the widgets' MEDIC runs set τ and choose layers: by default τ calibrated per layer to a
share of each layer's neurons on MEDIC's default layers (as ``MedicConfig()``), or one global τ;
the layer set is a launcher parameter; labels, run records and the workbench say which ran."""

from typing import Any

import pytest

from medic_viz.data.arrays import DatasetSplits
from medic_viz.defenses.medic import DEFAULT_LAYERS, DEFAULT_SHARE, DEFAULT_TAU
from medic_viz.widgets.state import LauncherState, WorkbenchState, run_label
from medic_viz.widgets.state.runs import tau_range_text
from test_widget_state import TRIGGER, _data, _net


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return DatasetSplits(_data(96, 0), _data(30, 1))


def _state(splits, **kw) -> LauncherState:
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=1, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None, final_eval=False)
    settings.update(kw)
    return LauncherState(_net(), splits, **settings)


def _run(state):
    run = state.launch()
    assert state.wait(60) is run
    return run


# ---------------------------------------------------------------------------------- the default


def test_the_default_run_calibrates_tau_per_layer_on_the_default_layers(splits):
    state = _state(splits)
    assert (state.tau_mode, state.share, state.layers) == ("share", DEFAULT_SHARE, DEFAULT_LAYERS)
    run = _run(state)
    assert run.status == "done", run.summary()
    config = run.result.config
    # As MedicConfig() runs: no global τ, τ calibrated per hooked layer at the 1 % share. The tiny
    # model has one convolution, so "auto" falls back to conv+bn (no logits).
    assert config["tau"] is None and config["share"] == DEFAULT_SHARE and config["layers"] == ["0", "1"]
    taus = config["layer_taus"]
    assert set(taus) == {"0", "1"} and all(t > 0 for t in taus.values())
    assert all(abs(t - DEFAULT_TAU) > 1 for t in taus.values())  # not the old global τ = 5 in disguise
    assert run.label == "MEDIC share=1% λ=3" == run_label(None, 3, share=0.01)
    assert run.layer_taus == taus
    assert run.tau_text == tau_range_text(taus.values()) + " (per layer)" and run.tau_text in run.summary()
    # The launcher's preview of the calibration is what the run used (same data, seed, batches).
    preview = state.calibrated_taus()
    assert preview.keys() == taus.keys()
    for name, tau in taus.items():
        assert preview[name] == pytest.approx(tau, rel=1e-3)
    # A larger share spreads the weights: a smaller τ on every layer.
    wider = state.calibrated_taus(share=0.2)
    assert all(wider[n] < preview[n] for n in preview)


def test_global_mode_passes_one_tau_and_no_calibration(splits):
    state = _state(splits, tau_mode="global", tau=3.0)
    run = _run(state)
    config = run.result.config
    assert config["tau"] == 3.0 and config.get("layer_taus") is None and config["share"] is None
    assert run.label == "MEDIC τ=3 λ=3" and run.tau_text == "τ 3"
    assert run.layer_taus == {"0": 3.0, "1": 3.0}


def test_the_constructor_reads_tau_as_global_mode_unless_told(splits):
    assert _state(splits).tau_mode == "share"
    given = _state(splits, tau=7.0)  # a caller who names a τ means it (as before the share existed)
    assert given.tau_mode == "global" and given.tau == 7.0
    kept = _state(splits, tau_mode="share", tau=2.0)  # the τ waits for the global mode
    assert kept.tau_mode == "share" and kept.tau == 2.0 and kept.share == DEFAULT_SHARE
    assert _state(splits, share=0.05).tau_mode == "share"
    with pytest.raises(ValueError, match="tau_mode"):
        _state(splits, tau=5.0, share=0.05)
    both = _state(splits, tau=5.0, share=0.05, tau_mode="global")
    assert (both.tau, both.share) == (5.0, 0.05)
    state = _state(splits)
    state.tau = 9.0  # setting τ does not switch the mode
    assert state.tau_mode == "share"


# ---------------------------------------------------------------------------------- problems


@pytest.mark.parametrize("name, bad", [("share", 0), ("share", 1.5), ("share", "x"), ("share", True),
                                       ("share", float("nan")), ("layers", "conv+bn+bogus"), ("layers", ("0", "nope")),
                                       ("layers", None), ("layers", lambda n, m: True), ("tau_mode", "both")])
def test_invalid_share_layers_or_mode_are_problems_and_error_runs(splits, name, bad):
    state = _state(splits)
    setattr(state, name, bad)
    assert set(state.problems) == {name} and "\n" not in state.problems[name]
    run = state.launch()
    assert run.status == "error" and run.error == "ValueError: " + state.problems[name]
    assert run.result is None


def test_a_bad_layer_name_lists_the_valid_ones(splits):
    state = _state(splits, layers=("0", "nope"))
    assert "'nope'" in state.problems["layers"] and "0, 1, 5" in state.problems["layers"]
    state.layers = ["1", "5"]  # module names are kept as a tuple
    assert state.layers == ("1", "5") and state.problems == {}


def test_each_mode_ignores_the_setting_it_does_not_use(splits):
    share_mode = _state(splits, tau_mode="share", tau=-1.0)
    assert "tau" in share_mode.problems
    assert _run(share_mode).status == "done"
    global_mode = _state(splits, tau_mode="global", tau=2.0, share=3.0)
    assert "share" in global_mode.problems
    assert _run(global_mode).status == "done"
    global_mode.tau = float("nan")
    assert global_mode.launch().error == "ValueError: " + global_mode.problems["tau"]


def test_a_baseline_ignores_invalid_share_and_layers(splits):
    state = _state(splits, method="finetune", share=5.0, layers=("nope",), tau_mode="both")
    assert set(state.problems) == {"share", "layers", "tau_mode"}
    run = _run(state)
    assert run.status == "done" and run.label == "Fine-tuning"
    assert "share, layers" in run.note and run.layer_taus is None and run.tau_text is None
    state.method = "medic"
    assert state.launch().error == "ValueError: " + state.problems["tau_mode"]  # MEDIC: checked in parameter order


def test_options_must_not_repeat_share_or_layers(splits):
    run = _state(splits, options={"share": 0.05}).launch()
    assert run.status == "error" and "must not repeat launcher settings ['share']" in run.error
    # A baseline's own "layers" (NAD's attention layers) is its business.
    _state(splits, baseline_options={"nad": {"layers": ("1",)}})


# ---------------------------------------------------------------------------------- layers and labels


def test_the_chosen_layers_reach_the_run_and_its_label(splits):
    state = _state(splits, layers="conv+bn+linear")
    run = _run(state)
    assert run.result.config["layers"] == ["0", "1", "5"] and set(run.result.config["layer_taus"]) == {"0", "1", "5"}
    assert run.label == "MEDIC share=1% λ=3 layers=conv+bn+linear"
    state.set(layers=("1",), tau_mode="global", tau=4.0)
    run = _run(state)
    assert run.result.config["layers"] == ["1"] and run.label == "MEDIC τ=4 λ=3 layers=1"


def test_run_labels_say_how_tau_was_set():
    assert run_label(5, 10) == "MEDIC τ=5 λ=10"
    assert run_label(5, 10, share=0.01) == "MEDIC share=1% λ=10"  # τ is not shown: it was not used
    assert run_label(None, 3, share=0.005) == "MEDIC share=0.5% λ=3"
    assert run_label(5, 10, layers="conv+bn") == "MEDIC τ=5 λ=10 layers=conv+bn"
    assert run_label(5, 10, share=0.02, layers=("a", "b", "c", "d")) == "MEDIC share=2% λ=10 layers=a,b,c,… (4)"
    assert run_label(5, 10, "nad", share=0.01, layers="conv+bn") == "NAD"
    assert run_label(5, 10, share="x") == "MEDIC share='x' λ=10"


def test_tau_range_text():
    assert tau_range_text([2.134, 7.93, 4.0]) == "τ 2.1–7.9"
    assert tau_range_text([3.21, 3.24]) == "τ 3.2"
    assert tau_range_text([0.05, 12.4]) == "τ 0.05–12"


# ---------------------------------------------------------------------------------- the workbench


def _bench(splits, **kw) -> WorkbenchState:
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=1, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None, stats_images=30, final_eval=False)
    settings.update(kw)
    return WorkbenchState(_net(), splits, **settings)


def test_the_workbench_runs_the_default_and_passes_its_choices_to_the_launcher(splits):
    s = _bench(splits, tau=4.0)  # τ draws the maps: the runs still calibrate per layer
    assert (s.tau_mode, s.launcher.tau_mode, s.launcher.tau, s.share, s.run_layers) == \
        ("share", "share", 4.0, DEFAULT_SHARE, DEFAULT_LAYERS)
    s.picker.layer = "1"
    run = s.launch()
    s.wait(60)
    assert run.status == "done" and run.label == "MEDIC share=1% λ=3" and run.result.config["tau"] is None
    # The hint's τ on the picked layer is the one the run calibrated there.
    assert s.calibrated_tau() == pytest.approx(run.layer_taus["1"], rel=1e-3)
    assert s.calibrated_tau("5") > 0 and "5" not in s.run_layer_names()  # any looked-at layer has one
    with pytest.raises(ValueError, match="not one the picker analyses"):
        s.calibrated_tau("nope")
    g = _bench(splits, tau=4.0, tau_mode="global", share=0.05, run_layers="conv+bn+linear")
    assert (g.launcher.tau_mode, g.launcher.tau, g.launcher.share, g.launcher.layers) == \
        ("global", 4.0, 0.05, "conv+bn+linear")
    g.tau_mode, g.share, g.run_layers = "share", 0.02, ("1",)  # the attributes set the launcher's parameters
    assert (g.launcher.tau_mode, g.launcher.share, g.launcher.layers) == ("share", 0.02, ("1",))
    assert g.run_layer_names() == ["1"]
    g.share = 0  # kept and reported, as in the launcher
    assert "share" in g.launcher.problems
    with pytest.raises(ValueError, match="share"):
        g.calibrated_tau()
