"""One settings object for a run (:mod:`medic_viz.run_settings`): the CLI, the launcher, the
workbench and the grid make a defence's options from one :class:`RunSettings`; the widget states
share one :class:`SharedSettings` (one τ change: one check, one notification per state, no echo);
what a method uses is its class's ``run_settings``, so one definition reaches every consumer."""

import math
from typing import Any, Callable

import pytest

import medic_viz.run_settings as rs
from _support import write_tiny_npz
from medic_viz.cli import build_parser, main
from medic_viz.cli_compare import _medic_options
from medic_viz.defenses.medic import DEFAULT_LAM, DEFAULT_LAYERS, DEFAULT_TAU, Medic
from medic_viz.defenses.nad import NAD
from medic_viz.defenses.registry import DEFENSES, MAIN_METHOD, defense_class
from medic_viz.experiments import build_grid, method_options
from medic_viz.importance import validate_tau
from medic_viz.run_settings import RunSettings, method_settings, unused_settings
from medic_viz.widgets.state import LauncherState, SharedSettings, StateChange, WorkbenchState
from test_widget_state import TRIGGER, _net, splits  # noqa: F401  (splits: fixture)


def _launcher(splits, **kw) -> LauncherState:  # noqa: F811
    settings: dict[str, Any] = dict(trigger=TRIGGER, target=0, epochs=1, fraction=1.0, device="cpu", batch_size=16,
                                    eval_images=None, final_eval=False)
    settings.update(kw)
    return LauncherState(_net(), splits, **settings)


def _counting_tau_checks(calls: list) -> Callable[[Any], float]:
    """``validate_tau`` that also records each value it checks in ``calls``."""
    def check(value: Any) -> float:
        calls.append(value)
        return validate_tau(value)

    return check


@pytest.fixture()
def bench(splits):  # noqa: F811
    return WorkbenchState(_net(), splits, trigger=TRIGGER, target=0, tau=4.0, tau_mode="global", epochs=1,
                          fraction=1.0, device="cpu", batch_size=16, eval_images=None, stats_images=30)


# ------------------------------------------------------------------------------ the settings object


def test_fields_are_checked_once_with_the_messages_the_launcher_reports(splits):  # noqa: F811
    s = RunSettings()
    assert (s.method, s.tau_mode, s.tau, s.share, s.layers, s.lam) == ("medic", "share", DEFAULT_TAU, None,
                                                                        DEFAULT_LAYERS, DEFAULT_LAM)
    assert RunSettings.controls() == LauncherState.PARAMS  # every control a launcher parameter
    launcher = _launcher(splits)
    for name, bad in (("fraction", 0.0), ("epochs", 2.5), ("tau", -1), ("lam", math.inf), ("share", 2.0),
                      ("tau_mode", "both"), ("method", "bogus"), ("eval_every_steps", -1)):
        kwargs: dict[str, Any] = {name: bad}
        with pytest.raises(ValueError) as exc:
            RunSettings(**kwargs)
        setattr(launcher, name, bad)
        assert launcher.problems[name] == str(exc.value)  # the launcher's message is the settings' check
    assert RunSettings(epochs=3.0, method="Fine-tuning").epochs == 3  # type: ignore[arg-type]  # a whole float and RunSettings(method="fp").method == "fineprune"
    changed = s.replace(tau=7)
    assert changed.tau == 7.0 and s.tau == DEFAULT_TAU  # immutable: a copy
    with pytest.raises(ValueError, match="unknown run setting"):
        s.replace(temperature=1)


def test_replace_checks_only_what_it_changes(monkeypatch):
    calls: list[Any] = []
    monkeypatch.setattr(rs, "validate_tau", _counting_tau_checks(calls))
    s = RunSettings()
    assert calls == [DEFAULT_TAU]  # construction checks every field
    s.replace(lam=1.0, epochs=3)
    assert calls == [DEFAULT_TAU]
    s.replace(tau=2.0)
    assert calls == [DEFAULT_TAU, 2.0]


def test_defence_options_per_method():
    s = RunSettings.create(tau=3.0, epochs=6, seed=2, batch_size=32)
    assert s.tau_mode == "global"
    assert s.to_defense_options() == {"tau": 3.0, "layers": DEFAULT_LAYERS, "lam": DEFAULT_LAM, "eps": 0.1, "epochs": 6,
                                      "device": "auto", "seed": 2, "student_seed": 2, "batch_size": 32}
    assert "eps" not in s.to_defense_options(defaults=False)  # the method's own default: a grid pins it
    assert s.replace(eps=1e-5).to_defense_options(defaults=False)["eps"] == 1e-5
    per_layer = s.replace(tau_mode="share", share=0.02).to_defense_options()
    assert per_layer["share"] == 0.02 and "tau" not in per_layer
    assert "share" not in RunSettings().to_defense_options()  # None: the method's own default
    nad = s.to_defense_options("nad")
    assert nad == {"epochs": 6, "teacher_epochs": 3, "device": "auto", "seed": 2, "batch_size": 32}
    assert s.to_defense_options("nad", budget=False)["epochs"] == 6 and "teacher_epochs" not in \
        s.to_defense_options("nad", budget=False)
    assert s.to_defense_options("anp")["noise_seed"] == 2
    for name in DEFENSES:  # every method builds from its options
        defense_class(name)(**{**RunSettings(method=name, epochs=1, device="cpu").to_defense_options(), "progress": False})


def _old_method_options(method, epochs, seed, device):
    """The grid's options as they were made before the settings object (ids of resumed grids)."""
    cls = defense_class(method)
    opts = {"device": device, "seed": int(seed), "progress": False, "eval_every": 0}
    opts.update({name: int(seed) for name in cls.seed_options})
    if epochs is not None:
        opts.update(cls.epoch_options(int(epochs)))
    return opts


@pytest.mark.parametrize("method", list(DEFENSES))
@pytest.mark.parametrize("epochs", [None, 5])
def test_grid_cells_keep_their_options_and_ids(method, epochs):
    cls = defense_class(method)
    new = method_options(method, epochs=epochs, seed=3, device="cuda")  # a cell may run elsewhere
    assert new == _old_method_options(method, epochs, 3, "cuda")
    assert cls.pinned_options(new) == cls.pinned_options(_old_method_options(method, epochs, 3, "cuda"))


def test_grid_options_for_medic_take_the_grids_medic_options(tmp_path):
    npz = tmp_path / "d.npz"
    write_tiny_npz(npz)
    cells = build_grid(dataset=str(npz), attacks=["badnet"], methods=["medic"], seeds=1, medic={"tau": 3.0})
    assert cells[0].method_options["tau"] == 3.0 and "share" not in cells[0].method_options
    cells = build_grid(dataset=str(npz), attacks=["badnet"], methods=["medic"], seeds=1)
    assert cells[0].method_options["share"] == 0.01 and cells[0].method_options["lam"] == DEFAULT_LAM


def test_the_cli_reads_its_settings_into_one_object():
    parser = build_parser()
    args = parser.parse_args(["defend", "--teacher", "t", "--out", "o", "--tau", "3", "--layers", "conv1, conv2",
                              "--lam", "10", "--epochs", "7", "--seed", "4", "--device", "cpu"])
    s = RunSettings.from_cli_args(args)
    assert (s.method, s.tau_mode, s.tau, s.layers, s.lam, s.epochs, s.seed, s.fraction) == \
        ("medic", "global", 3.0, ("conv1", "conv2"), 10.0, 7, 4, 0.05)
    plain = RunSettings.from_cli_args(parser.parse_args(["defend", "--teacher", "t", "--out", "o"]))
    # No flag: MEDIC's own defaults (τ calibrated per layer to its default share), as MedicConfig() has them.
    config = Medic(**plain.to_defense_options(budget=False)).config
    assert config.tau is None and config.share is None and config.layers == DEFAULT_LAYERS and config.epochs == 60
    assert config.eps == 0.1  # MEDIC's default ε, not the paper's 1e-5
    paper = RunSettings.from_cli_args(parser.parse_args(["defend", "--teacher", "t", "--out", "o", "--tau", "5", "--lam",
                                                         "10", "--layers", "all", "--eps", "1e-5"]))
    assert Medic(**paper.to_defense_options(budget=False)).config.eps == 1e-5  # the paper's setting, one flag each
    with pytest.raises(SystemExit):
        parser.parse_args(["defend", "--teacher", "t", "--out", "o", "--eps", "0"])
    auto = RunSettings.from_cli_args(parser.parse_args(["defend", "--teacher", "t", "--out", "o", "--tau", "auto"]))
    assert auto.tau_mode == "share"  # the command chooses τ, then replaces it
    with pytest.raises(ValueError, match="both set how sharp"):
        RunSettings.from_cli_args(parser.parse_args(["defend", "--teacher", "t", "--out", "o", "--tau", "3",
                                                     "--share", "0.1"]))


def test_compare_reads_medics_flags_as_defend_does_and_keeps_the_cell_ids():
    """``compare``'s MEDIC column is made as ``defend``'s run is: :meth:`RunSettings.from_cli_args`,
    then :meth:`~RunSettings.to_defense_options` (the flags given; the grid writes MEDIC's defaults
    out), and its cells keep the ids of the options compare wrote by hand before."""
    parser = build_parser()

    def options(*flags: str) -> dict[str, Any]:
        return _medic_options(parser.parse_args(["compare", "--out", "o", *flags]))

    flags = ["--tau", "3", "--lam", "10", "--layers", "conv1, conv2"]
    assert options(*flags) == {"tau": 3.0, "lam": 10.0, "layers": ("conv1", "conv2")}
    defend = RunSettings.from_cli_args(parser.parse_args(["defend", "--teacher", "t", "--out", "o", *flags]))
    own = method_settings(MAIN_METHOD)
    assert options(*flags) == {k: v for k, v in defend.to_defense_options(defaults=False).items() if k in own}
    assert options() == {} and options("--share", "0.02", "--layers", "all") == {"share": 0.02, "layers": "all"}
    assert options("--eps", "1e-5") == {"eps": 1e-5}
    with pytest.raises(ValueError, match="both set how sharp"):
        options("--tau", "3", "--share", "0.1")
    # the flags as compare read them before: the same cells, the same ids
    by_hand: list[tuple[list[str], dict[str, Any]]] = [
        (["--lam", "3"], {"lam": 3.0}),
        (["--layers", "conv1"], {"layers": "conv1"}),
        (["--layers", "auto", "--share", "0.01"], {"layers": "auto", "share": 0.01}),
        (flags, {"tau": 3.0, "lam": 10.0, "layers": ("conv1", "conv2")}),
    ]

    def ids(medic: dict[str, Any], ablation: str) -> list[str] | str:
        try:
            return [c.cell_id for c in build_grid(dataset="signs", attacks=["badnet"], methods=["medic", "nad"], seeds=1,
                                                  ablation=ablation, medic=medic)]
        except ValueError as exc:  # a share with the τ sweep: refused alike
            return str(exc)

    for given, medic in by_hand:
        for ablation in ("none", "tau", "layers"):
            assert ids(options(*given), ablation) == ids(medic, ablation), (given, ablation)


# ------------------------------------------------------------------------------ one holder, shared


def test_one_tau_change_is_checked_once_and_told_once_to_each_state(bench, monkeypatch):
    s = bench
    assert s.settings is s.launcher.settings is s.picker.settings is s.explorer.settings
    assert not hasattr(s, "_syncing")
    calls: list[Any] = []
    monkeypatch.setattr(rs, "validate_tau", _counting_tau_checks(calls))
    states = {"workbench": s, "launcher": s.launcher, "picker": s.picker, "explorer": s.explorer}
    logs: dict[str, list[StateChange]] = {name: [] for name in states}
    for name, state in states.items():
        state.add_listener(logs[name].append)
    for i, (source, state) in enumerate(states.items()):
        tau = 6.0 + i
        calls.clear()
        for log in logs.values():
            log.clear()
        state.tau = tau
        assert calls == [tau], f"set on the {source}"  # one check, wherever it was set
        for name, log in logs.items():  # each state told once, nobody sets it back
            assert [c for c in log if c.kind == "param"] == [StateChange("param", name="tau", value=tau)], (source, name)
        assert {st.tau for st in states.values()} == {tau}
    # λ: the workbench's and the launcher's (the picker and explorer have none)
    for log in logs.values():
        log.clear()
    s.lam = 6.0
    assert logs["workbench"] == logs["launcher"] == [StateChange("param", name="lam", value=6.0)]
    assert logs["picker"] == logs["explorer"] == []


def test_an_invalid_tau_typed_in_the_launcher_stays_there(bench, monkeypatch):
    s = bench
    s.tau = 3.0
    calls: list[Any] = []
    monkeypatch.setattr(rs, "validate_tau", _counting_tau_checks(calls))
    logs: dict[str, list[StateChange]] = {name: [] for name in ("workbench", "launcher", "picker", "explorer")}
    for name in logs:
        (s if name == "workbench" else getattr(s, name)).add_listener(logs[name].append)
    s.launcher.tau = -2.0
    assert len(calls) == 1 and s.launcher.tau == -2.0 and "tau" in s.launcher.problems
    assert (s.tau, s.picker.tau, s.explorer.tau, s.settings.settings.tau) == (3.0, 3.0, 3.0, 3.0)
    assert logs["launcher"] == [StateChange("param", name="tau", value=-2.0)]
    assert logs["workbench"] == logs["picker"] == logs["explorer"] == []
    s.tau = 3.0  # the valid value again: the launcher's typed value is repaired, the others had it
    assert s.launcher.tau == 3.0 and not s.launcher.problems
    assert logs["launcher"][-1] == StateChange("param", name="tau", value=3.0)
    assert logs["workbench"] == logs["picker"] == logs["explorer"] == []
    with pytest.raises(ValueError, match="^tau must be"):
        s.picker.tau = -1.0  # the picker refuses: nothing changes anywhere
    assert s.launcher.tau == 3.0 and s.settings.problems == {}


def test_shared_settings_on_their_own():
    shared = SharedSettings()
    typed: list[StateChange] = []
    valid: list[StateChange] = []
    shared.add_listener(typed.append, typed=True)
    shared.add_listener(valid.append)
    shared.set(tau=2.0, lam=1.0)
    assert [(c.name, c.value) for c in typed] == [(c.name, c.value) for c in valid] == [("tau", 2.0), ("lam", 1.0)]
    with pytest.raises(ValueError, match="lam"):
        shared.set(tau=4.0, lam=-1.0)  # all or none
    assert shared.settings.tau == 2.0
    shared.set(lam=-1.0, keep_invalid=True)
    assert shared.value("lam", typed=True) == -1.0 and shared.value("lam") == 1.0 and "lam" in shared.problems
    assert len(typed) == 3 and len(valid) == 2
    shared.remove_listener(typed.append)
    shared.set(lam=5.0)
    assert len(typed) == 3 and valid[-1] == StateChange("param", name="lam", value=5.0)


# ------------------------------------------------------------------------------ one definition, every consumer


def test_the_cli_and_the_launcher_refuse_or_ignore_the_same_settings(splits, tmp_path, capsys):  # noqa: F811
    """What a method does not use comes from its class (``run_settings``) for both."""
    flags = {"tau": "5", "share": "0.05", "layers": "conv+bn", "lam": "7"}
    bad = {"tau": -1.0, "share": 0, "layers": ("nope",), "lam": -1.0}
    for method in ("finetune", "kd", "medic"):
        unused = set(unused_settings(method))
        for name in flags:
            rc = main(["defend", "--method", method, "--teacher", str(tmp_path / "none"), "--out",
                       str(tmp_path / "o"), f"--{name}", flags[name]])
            err = capsys.readouterr().err
            assert rc == 2
            assert ("applies to MEDIC" in err) == (name in unused), (method, name, err)
            state = _launcher(splits, method=method, tau_mode="global" if name == "tau" else "share", **{name: bad[name]})
            run = state.launch()
            state.wait(60)
            assert (run.status == "error") == (name not in unused), (method, name, run.summary())
    assert set(unused_settings("finetune")) == set(Medic.run_settings) == set(method_settings("medic"))


def test_a_new_method_setting_reaches_cli_launcher_grid_and_labels_from_one_definition(splits, tmp_path, capsys,  # noqa: F811
                                                                                     monkeypatch):
    """Say on NAD's class that it uses the ``layers`` setting (its attention layers): the CLI
    accepts ``--layers`` for NAD, the launcher counts (and passes) NAD's layers, the settings give
    them to NAD (the grid a value that is not the default), labels and notes follow — nothing
    else is changed."""
    monkeypatch.setattr(NAD, "run_settings", ("layers",))
    assert method_settings("nad") == ("layers",)
    rc = main(["defend", "--method", "nad", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
               "--layers", "conv+bn"])
    assert rc == 2 and "applies to MEDIC" not in capsys.readouterr().err  # refused later: no such teacher
    rc = main(["defend", "--method", "nad", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
               "--lam", "7"])
    assert rc == 2 and "applies to MEDIC" in capsys.readouterr().err
    state = _launcher(splits, method="nad", layers=("nope",))
    run = state.launch()
    assert run.status == "error" and "nope" in run.error  # NAD's layers now count
    state = _launcher(splits, method="nad", layers=("1",), epochs=1, baseline_options={"nad": {"betas": (500.0,)}})
    run = state.launch()
    state.wait(60)
    assert run.status == "done" and list(run.result.config["layers"]) == ["1"], run.summary()
    assert run.label == "NAD layers=1" and run.note == "τ, share, λ and hold-out are MEDIC settings: NAD ignores them"
    assert RunSettings().to_defense_options("nad")["layers"] == DEFAULT_LAYERS
    assert RunSettings(layers=("1",)).to_defense_options("nad")["layers"] == ("1",)
    assert method_options("nad", epochs=2, seed=0) == _old_method_options("nad", 2, 0, "auto")  # defaults: NAD's own
