"""``--trust-arch-code``: the user names the code they trust; a model card (untrusted) may only
match it. Builders are checked before they are called; card arguments never reach the file
system; a builder's own error is the user's, reported in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medic_viz.cards import ModelCard
from medic_viz.cli import main
from medic_viz.importer import code_builder, load_model_folder
from medic_viz.io import save_model

MY_NETS = (
    "import torch.nn as nn\n"
    "def build(num_classes, **kwargs):\n"
    "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
    "                         nn.Linear(4, num_classes))\n"
    "def broken(num_classes):\n"
    "    raise RuntimeError('width must be even')\n"
    "from os import system\n"
    "from helper_mod import make\n"
    "exec = exec\n"
)
HELPER = "def make(num_classes):\n    open('CALLED', 'w').write('x')\n"
HUBCONF = "open({marker!r}, 'w').write('pwned')\ndef m(**kwargs):\n    import torch.nn as nn\n    return nn.Linear(1, 1)\n"


@pytest.fixture()
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """my_nets.py and helper_mod.py in the current folder (on the import path)."""
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    (tmp_path / "helper_mod.py").write_text(HELPER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("my_nets", "helper_mod"):  # another test file's module of the same name must not be reused
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def _folder(where: Path, architecture: str, arch_kwargs: dict | None = None) -> Path:
    """A model folder whose card names ``architecture`` (written as an attacker would)."""
    import my_nets  # type: ignore[import-not-found]  # noqa: PLC0415 — a module this test writes (on sys.path at run time)

    folder = where / "model"
    save_model(my_nets.build(4), folder, ModelCard(architecture="my_nets:build", num_classes=4))
    card = json.loads((folder / "card.json").read_text())
    card["architecture"], card["arch_kwargs"] = architecture, arch_kwargs or {}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture()
def hub_card(code: Path) -> tuple[Path, Path]:
    """A folder whose card asks torch.hub to run a local hubconf.py; the marker it would write."""
    evil = code / "evil"
    evil.mkdir()
    marker = code / "pwned"
    (evil / "hubconf.py").write_text(HUBCONF.format(marker=str(marker)))
    return _folder(code, "torch.hub:load", {"repo_or_dir": str(evil), "model": "m", "source": "local"}), marker


def test_the_card_cannot_choose_the_code(hub_card):
    folder, marker = hub_card
    with pytest.raises(ValueError, match="torch.hub:load.*never runs"):
        load_model_folder(folder, trust_arch_code="my_nets:build")
    with pytest.raises(ValueError, match="torch.hub"):
        load_model_folder(folder, trust_arch_code="torch.hub:load")  # a loader, even when the user names it
    assert not marker.exists()
    other = _folder(folder.parent / "other", "helper_mod:make")
    with pytest.raises(ValueError, match="helper_mod:make, not the code you trusted .--trust-arch-code my_nets"):
        load_model_folder(other, trust_arch_code="my_nets")
    assert not Path("CALLED").exists()


def test_a_card_naming_a_denied_loader_is_called_unusable_even_without_trust(hub_card, capsys):
    # Before: the error suggested "--trust-arch-code torch.hub:load", which is refused anyway.
    folder, marker = hub_card
    with pytest.raises(ValueError, match="torch.hub:load, code from torch that medic-viz never runs") as info:
        load_model_folder(folder)
    assert "--trust-arch-code" not in str(info.value)
    rc = main(["defend", "--teacher", str(folder), "--out", "out", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "never runs" in err, err
    assert not marker.exists() and not Path("out").exists()


def test_trust_must_name_the_code(hub_card, capsys):
    folder, marker = hub_card
    with pytest.raises((TypeError, ValueError), match="name"):
        load_model_folder(folder, trust_arch_code=True)  # type: ignore[arg-type]  # deliberately wrong
    rc = main(["defend", "--teacher", str(folder), "--trust-arch-code", "--out", "out", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--trust-arch-code" in err and "name" in err, err
    rc = main(["defend", "--teacher", str(folder), "--trust-arch-code", "my_nets", "--out", "out", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "torch.hub:load" in err, err
    assert not marker.exists() and not Path("out").exists()


def test_a_module_named_by_the_user_rebuilds_its_models(code):
    folder = _folder(code, "my_nets:build", {"width": 2, "style": "wide", "sizes": [1, 2.5], "flag": None})
    for trusted in ("my_nets", "my_nets:build"):
        model, card = load_model_folder(folder, trust_arch_code=trusted)
        assert isinstance(model, nn.Module) and card.architecture == "my_nets:build"
    with pytest.raises(ValueError, match="my_nets:build"):
        load_model_folder(folder, trust_arch_code="my_nets:other")


@pytest.mark.parametrize("kwargs", [{"root": "/"}, {"root": "evil"}, {"root": "a/b"}, {"root": "x" * 300},
                                    {"roots": ["evil"]}, {"opts": {"path": "evil"}}])
def test_card_arguments_never_reach_the_file_system(code, kwargs):
    (code / "evil").mkdir()
    folder = _folder(code, "my_nets:build", kwargs)
    with pytest.raises(ValueError, match="arch_kwargs"):
        load_model_folder(folder, trust_arch_code="my_nets")


@pytest.mark.parametrize("spec", ["os:system", "builtins:eval", "subprocess:run", "torch.hub:load", "torch:load",
                                  "importlib:import_module", "pickle:loads", "medic_viz.io:load_model",
                                  "torch.serialization:load", "runpy:run_path", "shutil:rmtree", "pathlib:Path"])
def test_denied_modules_are_refused_even_when_named(code, spec):
    with pytest.raises(ValueError, match="refuse|never"):
        code_builder(spec)


@pytest.mark.parametrize("spec", ["my_nets:system", "my_nets:make", "my_nets:exec"])
def test_a_builder_is_checked_before_it_is_called(code, spec):
    with pytest.raises(ValueError, match="my_nets"):
        code_builder(spec)
    assert not (code / "CALLED").exists()


def test_import_refuses_a_re_exported_callable_and_runs_nothing(code, capsys):
    rng = np.random.default_rng(0)
    np.savez(code / "tiny.npz", x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_train=np.arange(8) % 4,
             x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_test=np.arange(8) % 4)
    import my_nets  # noqa: PLC0415 — a module this test writes (on sys.path at run time)

    torch.save(my_nets.build(4).state_dict(), code / "w.pt")
    base = ["import", "--checkpoint", "w.pt", "--dataset", "tiny.npz", "--device", "cpu"]
    assert main([*base, "--arch", "my_nets:make", "--out", "m1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "my_nets:make" in err and not (code / "CALLED").exists(), err
    assert main([*base, "--arch", "my_nets:broken", "--out", "m2"]) == 2  # was an "internal error" (exit 1)
    err = capsys.readouterr().err
    assert "--arch my_nets:broken raised RuntimeError: width must be even" in err and "fix your builder" in err, err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    assert main([*base, "--arch", "my_nets:build", "--out", "m3"]) == 0
