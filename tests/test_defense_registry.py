"""The defences package: one registry whose names and display names come from the classes,
legacy import paths that keep working, one shared frozen copy that leaves the user's model
alone, and MEDIC's τ/λ checked once, in its config."""

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import medic_viz.defenses as defenses
import medic_viz.defenses.medic as medic_module  # the module; the function is medic_viz.medic
import medic_viz.importance as importance
import medic_viz.stats as stats
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import ConfiguredDefense, frozen_copy, trainable_copy
from medic_viz.defenses.registry import DEFENSES, DISPLAY_NAMES, available_defenses, display_name, make_defense
from medic_viz.deprecation import MOVED
from medic_viz.experiments import ALL_METHODS, TABLE1_METHODS
from test_architecture import _is_view, _module_name, _modules

# Every method and the module that owns it (one file per method; KD and scratch share one).
MODULES = {
    "finetune": "finetune",
    "fineprune": "fineprune",
    "nad": "nad",
    "mcr": "mcr",
    "anp": "anp",
    "kd": "distill",
    "scratch": "distill",
    "medic": "medic",
}

# What `from medic_viz.defenses.baselines import …` offered before the split (its __all__
# plus the public helpers and the private names other modules and tests imported from it).
LEGACY_BASELINES = [
    "FineTuningConfig", "FineTuning", "FinePruningConfig", "FinePruning", "NADConfig", "NAD",
    "MCRConfig", "MCR", "ANPConfig", "ANP", "KDConfig", "KnowledgeDistillation", "ScratchConfig",
    "ScratchTraining", "AttentionDistillationObjective", "DistillationObjective", "BezierCurve",
    "CurveObjective", "ANPObjective", "attention_map", "attention_layers", "last_conv_block",
    "prune_channels", "update_bn", "DEFENSES", "DISPLAY_NAMES", "available_defenses",
    "defense_class", "make_defense", "choose_t", "prune_by_masks", "_canonical", "_MaskedNetwork",
]
LEGACY_PACKAGE = [
    "Defense", "DefenseResult", "fresh_copy", "Medic", "MedicConfig", "MedicObjective",
    "compute_layer_stats", "medic", "FineTuning", "FinePruning", "NAD", "MCR", "ANP",
    "KnowledgeDistillation", "ScratchTraining", "DEFENSES", "available_defenses", "make_defense",
]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def _data(n: int = 32, seed: int = 0) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    return ImageArrays(x, torch.randint(0, 3, (n,), generator=g), classes=("a", "b", "c"), name="tiny")


FAST: dict[str, Any] = dict(epochs=1, batch_size=16, progress=False, device="cpu")
EXTRA: dict[str, dict[str, Any]] = {"nad": dict(teacher_epochs=1), "mcr": dict(endpoint_epochs=1, t_grid=(0.5,)),
                                    "anp": dict(iterations=None)}


# ------------------------------------------------------------------------------------ registry


def test_registry_lists_every_method_once_keyed_by_the_class_name():
    assert available_defenses() == list(DEFENSES) == list(MODULES)
    for name, cls in DEFENSES.items():
        assert issubclass(cls, ConfiguredDefense)
        assert cls.name == name
        assert cls.__module__ == f"medic_viz.defenses.{MODULES[name]}"
    assert len(set(DEFENSES.values())) == len(DEFENSES)


@pytest.mark.parametrize("name", list(MODULES))
def test_make_defense_builds_each_method_with_the_display_name_of_its_class(name):
    defense = make_defense(name, epochs=3)
    cls = DEFENSES[name]
    assert type(defense) is cls and defense.name == name
    assert isinstance(defense.config, cls.config_class) and defense.config.epochs == 3
    assert cls.display_name and DISPLAY_NAMES[name] == cls.display_name == display_name(name)
    if name != "medic":  # MEDIC's label carries τ and λ
        assert defense.default_label() == cls.display_name


def test_display_names_are_read_from_the_classes(monkeypatch):
    """No second table of names: change a class's display name and every reader follows."""
    monkeypatch.setattr(DEFENSES["kd"], "display_name", "Logit KD")
    assert DISPLAY_NAMES["kd"] == "Logit KD" and display_name("distillation") == "Logit KD"
    assert make_defense("kd").default_label() == "Logit KD"
    assert dict(DISPLAY_NAMES)["kd"] == "Logit KD" and list(DISPLAY_NAMES) == list(DEFENSES)


def test_medic_uses_the_shared_configured_base():
    medic = make_defense("medic", tau=2.0)
    assert isinstance(medic, ConfiguredDefense) and medic.default_label() == "MEDIC τ=2 λ=3"
    with pytest.raises(TypeError, match="needs a MedicConfig"):
        defenses.Medic(config=defenses.FineTuningConfig())
    cfg = defenses.MedicConfig(tau=1.0)
    assert defenses.Medic(cfg).config is cfg and defenses.Medic(cfg, lam=5.0).config.lam == 5.0
    assert cfg.lam == 3.0  # the overrides built a new config (3 = the default λ)


# ----------------------------------------------------------------------------- legacy imports


@pytest.mark.parametrize("name", LEGACY_BASELINES)
def test_legacy_baselines_names_still_import(name):
    legacy = importlib.import_module("medic_viz.defenses.baselines")
    with pytest.warns(DeprecationWarning, match=r"medic_viz\.defenses\.(baselines|registry)\._?\w+ is deprecated"):
        obj = getattr(legacy, name)
        owner = getattr(obj, "__module__", None)
        if owner is not None and owner.startswith("medic_viz.defenses."):
            assert owner != "medic_viz.defenses.baselines"  # a re-export of the one definition
            assert getattr(importlib.import_module(owner), name) is obj  # (_canonical: a deprecated name there too)


def test_legacy_package_and_module_names_still_import():
    for name in LEGACY_PACKAGE:
        if name in MOVED["medic_viz.defenses"]:  # compute_layer_stats: medic_viz.stats, with a warning
            with pytest.warns(DeprecationWarning, match=rf"medic_viz\.defenses\.{name} is deprecated"):
                assert hasattr(defenses, name), name
        else:
            assert hasattr(defenses, name), name
    with pytest.warns(DeprecationWarning, match=r"medic_viz\.defenses\.medic\.weighted_squared_error is deprecated"):
        assert medic_module.weighted_squared_error is importance.weighted_squared_error
    with pytest.warns(DeprecationWarning, match=r"medic_viz\.defenses\.medic\.compute_layer_stats is deprecated"):
        assert medic_module.compute_layer_stats is stats.compute_layer_stats
    assert importance.LayerStats is stats.LayerStats and importance.RunningStats is stats.RunningStats
    assert importance.DEFAULT_EPS == 1e-5


# ------------------------------------------------------------------------ copies of the model


def test_frozen_and_trainable_copies_leave_the_model_alone():
    model = _net().train()
    model[0].weight.requires_grad_(False)  # a user's partly frozen model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    frozen = frozen_copy(model, "cpu")
    trainable = trainable_copy(model, "cpu")
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    with torch.no_grad():
        frozen[0].weight.add_(1.0)
        trainable[0].weight.add_(1.0)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["medic", "kd", "mcr", "anp", "nad"])
def test_a_defense_run_leaves_parameters_flags_and_mode_of_the_users_model_unchanged(name):
    """The methods that read a frozen copy (or freeze their own teacher) never freeze, switch or
    change the user's model: parameters equal, ``requires_grad`` and train mode as they were."""
    model = _net().train()
    model[4].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    result = make_defense(name, **FAST, **EXTRA.get(name, {})).run(model, _data())
    assert result.model is not model
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------ MEDIC's τ and λ, once


def test_medic_checks_tau_and_lambda_once_from_construction_to_training(monkeypatch):
    calls = {"tau": 0, "lam": 0}
    real_tau, real_lam = importance.validate_tau, medic_module.validate_lambda

    def count_tau(v):
        calls["tau"] += 1
        return real_tau(v)

    def count_lam(v):
        calls["lam"] += 1
        return real_lam(v)

    monkeypatch.setattr(importance, "validate_tau", count_tau)
    monkeypatch.setattr(medic_module, "validate_lambda", count_lam)
    medic = defenses.Medic(tau=3.0, lam=2.0, **FAST)
    assert calls == {"tau": 1, "lam": 1}
    medic.run(_net(), _data())
    assert calls == {"tau": 1, "lam": 1}
    medic.config.tau = 4.0  # a changed field is checked again before it is used
    assert medic.config.importance.tau == 4.0 and calls["tau"] == 2
    medic.config.tau = -1.0
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        _ = medic.config.importance


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tau": "x"}, r"tau must be a number >= 0, got 'x'"),
        ({"tau": -1}, r"tau must be finite and >= 0 \(0 = plain cloning"),
        ({"lam": "x"}, r"lam \(λ\) must be a number >= 0, got 'x'"),
        ({"lam": float("inf")}, r"lam \(λ\) must be finite and >= 0 \(the paper uses 10\)"),
        ({"zscore": "sq"}, "zscore must be 'abs'"),
    ],
)
def test_medic_config_errors_keep_their_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        defenses.MedicConfig(**kwargs)
    cfg = defenses.MedicConfig()
    for k, v in kwargs.items():
        setattr(cfg, k, v)
    with pytest.raises(ValueError, match=message):
        defenses.Medic(cfg)  # a config changed after it was built is checked by the defence


# ----------------------------------------------------------------------------- one place per method


def _method_name_comparisons(source: str) -> list[str]:
    """``x == "nad"``, ``x in ("kd", "scratch")`` … : comparisons against a method's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            found += [f"line {node.lineno}: {v.value!r}" for v in values
                      if isinstance(v, ast.Constant) and v.value in DEFENSES]
    return found


def test_the_core_asks_a_method_not_its_name():
    # what a method needs (seed options, epoch budget, pinned defaults) lives in its class; the
    # core outside defenses/ does not branch on method names (views: see docs/architecture.md)
    bad = []
    for path in _modules():
        name = _module_name(path)
        if _is_view(name) or name.startswith("medic_viz.defenses"):
            continue
        bad += [f"{name} {hit}" for hit in _method_name_comparisons(Path(path).read_text())]
    assert not bad, "method names compared outside medic_viz/defenses/:\n" + "\n".join(bad)
    assert _method_name_comparisons('if key in ("medic", "kd"):\n    pass\nif m == "nad":\n    pass\n') == [
        "line 1: 'medic'", "line 1: 'kd'", "line 3: 'nad'"]


def test_all_methods_is_the_registry():
    assert ALL_METHODS == tuple(DEFENSES) and set(TABLE1_METHODS) <= set(DEFENSES)
