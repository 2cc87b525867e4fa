"""``--out`` never equals, holds or lies inside anything a command reads, with or without
``--overwrite``: checkpoint, card, dataset (also the one a teacher's card names), data root,
the code of an architecture of your own, trigger images, teacher folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medic_viz.cli import main
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits
from medic_viz.data.npz import save_npz
from medic_viz.inputs import command_inputs
from medic_viz.outdir import OutputFolderError, check_output_folder
from medic_viz.pretrained import demo_model_dir

MY_NET = ("import torch.nn as nn\n"
          "def build(num_classes):\n"
          "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
          "                         nn.Linear(4, num_classes))\n")


def _npz(path: Path, n: int = 16, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n) % classes,
             x_test=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y_test=np.arange(n) % classes)
    return path


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 3, 3), 255, dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One input of each kind under tmp_path/in/…; the code folders are on the import path."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "in"
    (base / "ckpt").mkdir(parents=True)
    (base / "ckpt" / "w.pt").write_bytes(b"x")
    (base / "card").mkdir()
    (base / "card" / "card.json").write_text("{}")
    _npz(base / "data" / "tiny.npz")
    (base / "root" / "cifar").mkdir(parents=True)
    (base / "code").mkdir()
    (base / "code" / "flat_net.py").write_text(MY_NET)
    (base / "pkgs" / "pkg_net").mkdir(parents=True)
    (base / "pkgs" / "pkg_net" / "__init__.py").write_text(MY_NET)
    _png(base / "trig" / "t.png")
    shutil.copytree(demo_model_dir("badnet"), base / "teacher")
    monkeypatch.syspath_prepend(str(base / "code"))
    monkeypatch.syspath_prepend(str(base / "pkgs"))
    return tmp_path


#: kind → (command_inputs arguments, the input path it must hold, relative to in/)
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "checkpoint": (dict(paths=["in/ckpt/w.pt"]), "ckpt/w.pt"),
    "card": (dict(paths=["in/card/card.json"]), "card/card.json"),
    "dataset file": (dict(datasets=["in/data/tiny.npz"]), "data/tiny.npz"),
    "dataset named by the card": (dict(paths=["in/teacher"], datasets=["in/data/tiny.npz"]), "data/tiny.npz"),
    "data root": (dict(data_root="in/root"), "root"),
    "code module": (dict(code="flat_net:build"), "code/flat_net.py"),
    "code package": (dict(code="pkg_net.sub:build"), "pkgs/pkg_net"),
    "code module trusted": (dict(code="flat_net"), "code/flat_net.py"),
    "trigger image": (dict(trigger="patch:file=in/trig/t.png,position=top-left"), "trig/t.png"),
    "blend image": (dict(trigger="blend-image:file=in/trig/t.png,alpha=0.1"), "trig/t.png"),
    "teacher folder": (dict(paths=["in/teacher"]), "teacher"),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("relation", ["equal", "contains", "inside"])
def test_out_may_not_touch_an_input(tree, kind, relation):
    args, held = dict(KINDS[kind][0]), KINDS[kind][1]
    paths = args.pop("paths", [])
    inputs = command_inputs(*paths, **args)
    source = tree / "in" / held
    assert any(Path(p).resolve() == source.resolve() for p in inputs), inputs
    if relation == "inside" and source.is_file():
        pytest.skip("nothing lies inside a file")
    out = {"equal": source, "contains": source.parent, "inside": source / "sub"}[relation]
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError) as info:
            check_output_folder(out, overwrite=overwrite, inputs=inputs)
        assert len(str(info.value).splitlines()) == 1
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before


def test_command_inputs_runs_no_code(tree):
    (tree / "in" / "code" / "loud_net.py").write_text("open('RAN', 'w')\n")
    assert any(str(p).endswith("loud_net.py") for p in command_inputs(code="loud_net:build"))
    assert not (tree / "RAN").exists()
    assert command_inputs(code="not_there_at_all:build") == []


def test_defend_never_replaces_the_dataset_its_teacher_card_names(tree, capsys):
    teacher = tree / "in" / "teacher"
    signs = tree / "in" / "data" / "signs.npz"

    small = load_dataset("signs", n_train=48, n_test=24)
    save_npz(DatasetSplits(small.train, small.test), signs)
    card = json.loads((teacher / "card.json").read_text())
    card["dataset"] = str(signs)
    (teacher / "card.json").write_text(json.dumps(card))
    rc = main(["defend", "--teacher", str(teacher), "--out", str(signs.parent), "--overwrite", "--epochs", "1",
               "--fraction", "0.5", "--batch-size", "8", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "contains the input" in err and str(signs) in err and len(err.strip().splitlines()) == 1, err
    assert signs.is_file() and (signs.parent / "tiny.npz").is_file()


def test_import_never_replaces_its_code_or_trigger_image(tree, capsys):
    import flat_net  # type: ignore[import-not-found]  # noqa: PLC0415 — a module this test writes (on sys.path at run time)

    torch.save(flat_net.build(4).state_dict(), tree / "w.pt")
    base = ["import", "--checkpoint", "w.pt", "--dataset", "in/data/tiny.npz", "--device", "cpu", "--overwrite"]
    assert main([*base, "--arch", "flat_net:build", "--out", "in/code"]) == 2
    err = capsys.readouterr().err
    assert "flat_net.py" in err and len(err.strip().splitlines()) == 1, err
    assert (tree / "in" / "code" / "flat_net.py").is_file()
    assert main([*base, "--arch", "flat_net:build", "--target", "1", "--trigger", "patch:file=in/trig/t.png",
                 "--out", "in/trig"]) == 2
    assert "t.png" in capsys.readouterr().err and (tree / "in" / "trig" / "t.png").is_file()


def test_attack_and_compare_refuse_an_out_inside_an_input(tree, capsys):
    (tree / "in" / "root" / "keep.txt").write_text("mine")
    assert main(["attack", "--dataset", "in/data/tiny.npz", "--data-root", "in/root", "--out", "in/root/run",
                 "--epochs", "1", "--device", "cpu", "--no-progress"]) == 2
    assert "lies inside the input" in capsys.readouterr().err and not (tree / "in" / "root" / "run").exists()
    assert main(["compare", "--teacher", "in/teacher", "--out", "in/teacher/cmp", "--methods", "finetune",
                 "--seeds", "1", "--epochs", "1", "--max-train", "24", "--max-test", "12", "--device", "cpu"]) == 2
    assert "lies inside the input" in capsys.readouterr().err and not (tree / "in" / "teacher" / "cmp").exists()
