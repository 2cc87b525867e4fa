"""The one parameter mechanism of the widget states (:mod:`medic_viz.widgets.state.observable`):
every value is validated on set by its parameter's check, with a one-line message naming the
parameter and what it accepts; the launcher keeps an invalid value and its launch reports the
message of that same check instead of checking again. Also: the state package's public names,
the layering (core never imports widgets; states import no ipywidgets), criteria names."""

import ast
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
import torch.nn as nn

import medic_viz.widgets.state as state_package
from medic_viz.importance import CRITERIA, validate_tau
from medic_viz.stats import compute_layer_stats
from medic_viz.widgets.state import ExplorerState, LauncherState, PickerState, StateChange
from medic_viz.widgets.state.observable import Param, Parameterized, one_of
from test_widget_state import TRIGGER, _net, _state, splits  # noqa: F401  (splits: fixture)

ROOT = Path(__file__).resolve().parents[1]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


@pytest.fixture(scope="module")
def explorer(splits):  # noqa: F811
    model = _net(3)
    stats = compute_layer_stats(model, splits.train, device="cpu")
    return ExplorerState.from_model(model, splits.test.floats()[4], TRIGGER, int(splits.test.labels[4]), stats=stats)


@pytest.fixture()
def picker(splits):  # noqa: F811
    return PickerState(_net(4), splits.test, trigger=TRIGGER, target=0, stats_images=30)


# ------------------------------------------------------------------------------ the mechanism


class _Toy(Parameterized):
    KIND = "toy"
    rate = Param(lambda s, v: validate_tau(v))
    mode = Param(one_of(("a", "b"), {"alpha": "a"}))

    def __init__(self):
        super().__init__()
        self._init_params(rate=1.0, mode="a")


def test_params_are_collected_and_validated_on_set():
    toy = _Toy()
    assert _Toy.PARAMS == ("rate", "mode") and toy.params == {"rate": 1.0, "mode": "a"}
    changes: list[StateChange] = []
    toy.add_listener(changes.append)
    toy.mode = "alpha"  # an alias is stored as its choice: "a" again, no change to announce
    toy.rate = 2  # normalised by the check
    assert toy.params == {"rate": 2.0, "mode": "a"} and type(toy.rate) is float
    assert [(c.name, c.value) for c in changes] == [("rate", 2.0)]
    with pytest.raises(ValueError) as exc:
        toy.set(rate=3.0, mode="c")  # all or none: rate is not changed either
    assert _one_line(exc) == "mode must be one of ['a', 'b'], or 'alpha' (= 'a'), got 'c'"
    assert toy.rate == 2.0 and len(changes) == 1 and toy.problems == {}
    with pytest.raises(ValueError, match=r"^unknown toy parameter\(s\) \['speed'\]; parameters are \['rate', 'mode'\]$"):
        toy.set(speed=1)


@pytest.mark.parametrize("name, value, message", [
    ("tau", -2, "tau must be finite and >= 0 (0 = plain cloning, the paper uses 5 on CIFAR-10), got -2"),
    ("criteria", "gradient",
     "criteria must be one of ['both', 'activation', 'impact'], or 'combined' (= 'both'), got 'gradient'"),
    ("reduction", "median", "reduction must be one of ['mean_abs', 'max_abs', 'mean', 'max'], got 'median'"),
    ("layer", "nope", "layer 'nope' was not analysed; choose one of ['0', '1', '5']"),
])
def test_explorer_refuses_an_invalid_value_on_set(explorer, name, value, message):
    before = explorer.params
    changes: list[StateChange] = []
    explorer.add_listener(changes.append)
    try:
        with pytest.raises(ValueError) as exc:
            setattr(explorer, name, value)
        assert _one_line(exc) == message
        assert explorer.params == before and changes == [] and explorer.problems == {}
    finally:
        explorer.remove_listener(changes.append)


def test_picker_refuses_an_invalid_value_on_set(picker):
    with pytest.raises(ValueError) as exc:
        picker.choice = 3
    assert _one_line(exc) == "choice must be a gallery position in 0..2 (or -1 for a loaded image), got 3"
    with pytest.raises(ValueError) as exc:
        picker.trigger_name = "nope"
    msg = _one_line(exc)
    assert msg.startswith("trigger_name must be one of ['model: badnet', ") and msg.endswith(", got 'nope'")
    with pytest.raises(ValueError, match="got 1.5$"):
        picker.choose(1.5)
    assert picker.choice == 0 and picker.trigger_name == "model: badnet"


@pytest.mark.parametrize("name, value, message", [
    ("fraction", 0.0, "fraction must be a finite number in (0, 1] (the share of the training set used as clean data), got 0.0"),
    ("fraction", 1.5, "fraction must be a finite number in (0, 1] (the share of the training set used as clean data), got 1.5"),
    ("epochs", 2.5, "epochs must be a whole number >= 1, got 2.5"),
    ("epochs", True, "epochs must be a whole number >= 1, got True"),
    ("eval_every_steps", -1, "eval_every_steps must be None or a whole number >= 0 (None or 0 = once per epoch), got -1"),
    ("lam", float("inf"), "lam (λ) must be finite and >= 0 (the paper uses 10), got inf"),
    ("method", "bogus", "unknown method 'bogus'; choose one of ['medic', "),
])
def test_launcher_keeps_an_invalid_value_and_its_launch_reports_the_same_message(splits, name, value, message):  # noqa: F811
    state = _state(splits)
    changes: list[StateChange] = []
    state.add_listener(changes.append)
    setattr(state, name, value)
    # Validated on set: the value is kept (a view never loses what was typed), the message is there at once.
    assert state.params[name] is value and [(c.name, c.value) for c in changes] == [(name, value)]
    assert list(state.problems) == [name] and state.problems[name].startswith(message)
    assert "\n" not in state.problems[name]
    run = state.launch()
    assert run.status == "error" and run.error == f"ValueError: {state.problems[name]}"


def test_launch_uses_the_check_made_on_set_not_a_second_one(splits, monkeypatch):  # noqa: F811
    calls = []
    fraction = cast(Any, LauncherState).fraction  # a parameter made from the run settings' controls
    check = fraction.check

    def counted(param, value):
        calls.append(value)
        return check(param, value)

    monkeypatch.setattr(fraction, "check", counted)
    state = _state(splits)
    assert calls == [1.0]  # the constructor's value went through the same check
    state.fraction = 0.0
    assert calls == [1.0, 0.0]
    run = state.launch()
    assert calls == [1.0, 0.0] and run.status == "error" and "fraction must be" in run.error
    state.fraction = 0.5  # a valid value clears the problem
    assert state.problems == {} and state.fraction == 0.5
    state.check_params()  # nothing to report


def test_the_same_check_gives_the_same_message_in_every_state(splits, explorer, picker):  # noqa: F811
    launcher = _state(splits)
    launcher.tau = -1
    with pytest.raises(ValueError) as refused:
        explorer.tau = -1
    with pytest.raises(ValueError) as refused_too:
        picker.tau = -1
    assert launcher.problems["tau"] == str(refused.value) == str(refused_too.value)
    with pytest.raises(ValueError) as core:
        validate_tau(-1)
    assert str(core.value) == launcher.problems["tau"]  # the core's own check, not a copy


def test_a_baseline_run_ignores_invalid_medic_settings_but_not_others(splits):  # noqa: F811
    state = _state(splits, method="finetune", tau="sharp", lam=-1, fraction=2.0)
    assert set(state.problems) == {"tau", "lam", "fraction"}
    run = state.launch()
    assert run.status == "error" and run.error.startswith("ValueError: fraction must be")
    state.method = "medic"
    assert state.launch().error == "ValueError: " + state.problems["tau"]  # MEDIC: τ first, in parameter order


def test_valid_launcher_values_are_normalised(splits):  # noqa: F811
    state = _state(splits, epochs=3.0, eval_every_steps=4.0, device="cpu")
    state.tau = 0
    state.method = "Fine-tuning"
    assert state.params["epochs"] == 3 and type(state.epochs) is int
    assert type(state.eval_every_steps) is int and type(state.tau) is float and state.method == "finetune"
    assert state.problems == {}


# ------------------------------------------------------------------------------ criteria names


def test_explorer_criteria_come_from_the_core_and_accept_the_old_spelling(explorer):
    assert ExplorerState.CRITERIA == CRITERIA == ("both", "activation", "impact")
    assert ExplorerState(explorer.analysis).criteria == "both"  # the default
    explorer.set(criteria="combined", layer="0", tau=4.0)
    assert explorer.criteria == "both"
    both = explorer.importance_map()
    np.testing.assert_array_equal(both, explorer.analysis.maps("0", 4.0)["combined"])
    explorer.criteria = "impact"
    assert not np.array_equal(explorer.importance_map(), both)


class _FixedImportance:
    """An analysis stand-in whose importance is a given tensor."""

    layers = ["l"]

    def __init__(self, w):
        self.w = w

    def importance(self, tau, criteria, *, which, layers):
        return {"l": self.w}

    def maps(self, *args, **kwargs):  # pragma: no cover - not used here
        raise AssertionError


@pytest.mark.parametrize("weights, fraction", [
    ([0.25, 0.25, 0.25, 0.25], 1.0),  # uniform: every neuron counts
    ([0.5, 0.5, 0.0, 0.0], 0.5),  # two of four: exp(ln 2) / 4
    ([1.0, 0.0, 0.0, 0.0], 0.25),  # one-hot
    ([0.5, 0.25, 0.25, 0.0], math.exp(1.5 * math.log(2)) / 4),  # entropy 1.5 ln 2
])
def test_effective_fraction_is_exp_entropy_over_m(weights, fraction):
    state = ExplorerState(_FixedImportance(torch.tensor(weights).reshape(4, 1, 1)))
    assert state.effective_fraction() == pytest.approx(fraction, rel=1e-6)


# ------------------------------------------------------------------------------ picker fix


class _Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc(x)  # (B, 3, 8, 8) images do not fit a Linear(7, 3): RuntimeError


def test_picker_load_model_restores_train_mode_when_the_model_fails(picker):
    model = _Broken().train()
    with pytest.raises(ValueError, match="cannot run on the picker's images"):
        picker.load_model(model)
    assert model.training  # was left in eval mode before (mode restored without `finally`)


# ------------------------------------------------------------------------------ structure


OLD_STATE_NAMES = ["StateChange", "Listener", "Observable", "RUN_STATUSES", "DEVICE_CHOICES", "method_choices",
                   "RunRecord", "LauncherState", "ExplorerState", "PickerState", "run_label"]


def test_the_state_package_keeps_every_public_name():
    assert set(OLD_STATE_NAMES) <= set(state_package.__all__)
    for name in state_package.__all__:
        assert getattr(state_package, name) is not None


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_the_core_never_imports_the_widgets():
    package = ROOT / "medic_viz"
    views = [package / "widgets", package / "viz"]
    offenders = []
    for path in package.rglob("*.py"):
        if any(v in path.parents for v in views) or path.name.startswith("cli"):
            continue
        if any(m == "medic_viz.widgets" or m.startswith("medic_viz.widgets.") for m in _imports(path)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_states_import_no_ipywidgets():
    code = ("import sys, medic_viz.widgets.state, medic_viz.data.images; "
            "bad = [m for m in ('ipywidgets', 'IPython', 'plotly') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
