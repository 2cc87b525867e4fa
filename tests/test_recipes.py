"""docs/architecture.md's recipe "add a defence", followed literally: one class in its own
module and one entry in the registry are all the command line, the grid, the run settings and
the tables need."""

import json
from dataclasses import dataclass

import pytest

import medic_viz.defenses.registry as registry
from medic_viz.cli import main
from medic_viz.defenses.finetune import FineTuning, FineTuningConfig
from medic_viz.experiments import build_grid
from medic_viz.pretrained import demo_model_dir
from medic_viz.run_settings import RunSettings, method_choices


@dataclass
class HalfTuningConfig(FineTuningConfig):
    """Fine-tuning at half the learning rate (a stand-in for a new method)."""

    lr: float = 0.005


class HalfTuning(FineTuning):
    """A new defence: its name, display name and config are declared on the class."""

    name = "halftune"
    display_name = "Half-tuning"
    config_class = HalfTuningConfig


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry.DEFENSES, HalfTuning.name, HalfTuning)  # = one line in registry._METHODS
    return HalfTuning.name


def test_a_registered_defence_reaches_the_registry_settings_and_grid(registered, tmp_path):
    assert registry.display_name(registered) == "Half-tuning" and registered in method_choices()
    defense = registry.make_defense(registered, epochs=1)
    assert isinstance(defense, HalfTuning) and defense.config.lr == 0.005
    options = RunSettings.create(method=registered, epochs=3).to_defense_options(registered)
    assert options["epochs"] == 3 and "tau" not in options  # MEDIC's settings are not its
    (cell,) = build_grid(attacks=["badnet"], methods=[registered], seeds=1, epochs=1, attack_epochs=1)
    assert cell.method == registered and cell.variant == "Half-tuning"


def test_the_command_line_runs_a_registered_defence(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["defend", "--method", registered, "--teacher", str(demo_model_dir("badnet")), "--epochs", "1",
                 "--fraction", "0.01", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == registered and result["config"]["lr"] == 0.005
    assert "Half-tuning" in capsys.readouterr().out
    assert main(["defend", "--method", registered, "--tau", "3", "--teacher", str(demo_model_dir("badnet")),
                 "--out", str(tmp_path / "x")]) == 2  # a MEDIC-only flag is refused for it


def test_defend_help_names_every_registered_defence(registered, capsys):
    assert main(["defend", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in registry.DEFENSES) and registered in text  # the help was a fixed list
