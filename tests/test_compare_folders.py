"""``medic-viz compare --teacher DIR``: models given as folders (from ``medic-viz import``) are
compared like the grid's own teachers — imported end to end, refused up front in one line
when they cannot run, keyed by their weights (not their path), and resumable."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from medic_viz.cli import main
from medic_viz.experiments import build_grid, read_runs, runner
from medic_viz.experiments.cells import train_teacher
from medic_viz.experiments.grid import CellSpec
from medic_viz.models.zoo import build_model

TRIGGER = "patch:pixels=0,0,1;0,1,0;1,0,1,position=bottom-right,margin=0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny 4-class npz and two imported folders on it: ``patched`` (trigger, target 1) and
    ``bare`` (no trigger), both from ``{"state_dict": …}`` checkpoints with ``module.`` keys."""
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    npz = root / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_train=np.arange(48) % 4,
             x_test=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), y_test=np.arange(24) % 4)
    folders = {}
    for name, extra in (("patched", ["--target", "1", "--trigger", TRIGGER]), ("bare", [])):
        torch.manual_seed(len(name))
        net = build_model("small_cnn", 4)
        ckpt = root / f"{name}.pth.tar"
        torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
        folders[name] = root / name
        assert main(["import", "--checkpoint", str(ckpt), "--arch", "small_cnn", "--dataset", str(npz),
                     "--out", str(folders[name]), "--device", "cpu", *extra]) == 0
    return npz, folders


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a teacher was measured or a cell run for a grid that should have been refused")

    monkeypatch.setattr(runner, "train_teacher", forbidden)
    monkeypatch.setattr(runner, "run_cell", forbidden)


def _compare(out, *args):
    return main(["compare", *args, "--methods", "medic,finetune", "--seeds", "1", "--epochs", "1",
                 "--fraction", "0.5", "--device", "cpu", "--out", str(out)])


def test_compare_takes_imported_folders_end_to_end_and_resumes(data, tmp_path, capsys, monkeypatch):
    npz, folders = data
    out = tmp_path / "cmp"
    assert _compare(out, "--teacher", str(folders["patched"]), "--teacher", str(folders["bare"])) == 0
    printed = capsys.readouterr().out
    assert "measuring 2 teacher(s) from model folders" in printed and "trojaned teacher" not in printed
    rows = read_runs(out / "runs.jsonl")
    assert [(r["attack"], r["method"]) for r in rows] == [("patched", "medic"), ("patched", "finetune"),
                                                         ("bare", "medic"), ("bare", "finetune")]
    for name in ("patched", "bare"):
        imported = json.loads((folders[name] / "result.json").read_text())
        for r in (r for r in rows if r["attack"] == name):
            # the card's dataset (no --dataset given), the whole test split, the model as imported
            assert r["dataset"] == str(npz) and r["n_clean"] == 24 and r["model"] == "small_cnn"
            assert r["before_clean_acc"] == pytest.approx(imported["clean_acc"])
            assert r["teacher_folder"] == str(folders[name].resolve()) and r["attack_epochs"] is None
    patched = [r for r in rows if r["attack"] == "patched"]
    assert all(r["target"] == 1 and r["asr"] is not None and r["n_asr"] == 18 for r in patched)
    assert patched[0]["before_asr"] == pytest.approx(json.loads((folders["patched"] / "result.json").read_text())["asr"])
    assert all(r["target"] is None and r["asr"] is None and r["before_asr"] is None
               for r in rows if r["attack"] == "bare")
    table = (out / "table.md").read_text()
    assert "teachers: model folders" in table and "| patched | ASR |" in table and "| bare | ASR | – | – | – |" in table
    assert "teacher_folder" in (out / "results.csv").read_text().splitlines()[0]

    def forbidden(*a):
        raise AssertionError("a finished cell or teacher was computed again")

    monkeypatch.setattr(runner, "run_cell", forbidden)
    monkeypatch.setattr(runner, "train_teacher", forbidden)
    assert _compare(out, "--teacher", str(folders["patched"]), "--teacher", str(folders["bare"])) == 0
    assert len(read_runs(out / "runs.jsonl")) == 4


def test_a_folder_teacher_is_keyed_by_its_weights_not_its_path(data, tmp_path):
    npz, folders = data
    moved = tmp_path / "elsewhere" / "patched"
    shutil.copytree(folders["patched"], moved)
    here = build_grid(teachers=[folders["patched"]], methods=["medic"], seeds=1)
    there = build_grid(teachers=[moved], methods=["medic"], seeds=1)
    assert [c.cell_id for c in here] == [c.cell_id for c in there]
    assert here[0].teacher_id == there[0].teacher_id and here[0].teacher_dir != there[0].teacher_dir
    assert here[0].teacher_id.startswith("patched-small_cnn-") and here[0].dataset == str(npz)
    bare = build_grid(teachers=[folders["bare"]], methods=["medic"], seeds=1)[0]
    assert bare.teacher_sha256 != here[0].teacher_sha256 and bare.target is None
    # weights that change after the grid was built are refused, not silently compared
    (moved / "model.safetensors").write_bytes((folders["bare"] / "model.safetensors").read_bytes())

    with pytest.raises(ValueError, match="weights changed after the grid was built"):
        train_teacher(there[0].to_dict())


def test_grid_trained_teachers_keep_their_ids():
    # the ids of runs.jsonl written before teacher folders existed (computed on the previous version)
    c = CellSpec(dataset="signs", model="small_cnn", attack="badnet", method="medic", seed=1,
                 method_options={"tau": 5.0, "device": "cpu"})
    assert (c.cell_id, c.teacher_id) == ("badnet-medic-s1-47515ce5bf", "badnet-small_cnn-s1-7a8f2c8df5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "{tmp}/nowhere"], "nowhere: not a folder"),
        (["--teacher", "{tmp}"], "no card.json in it"),
        (["--teacher", "{patched}", "--attacks", "badnet"], "--attacks describes the teachers compare trains"),
        (["--teacher", "{patched}", "--model", "wrn16_1", "--target", "2"], "--model, --target describe"),
        (["--teacher", "{patched}", "--teacher", "{patched}"], "given twice"),
        (["--teacher", "{patched}", "--teacher", "{tmp}/copy/patched"], "two folders are named 'patched'"),
        (["--teacher", "{patched}", "--dataset", "{ten}"], "the model has 4 classes .* 10 classes"),
        (["--teacher", "{patched}", "--ablation", "arch"], "arch ablation trains a teacher per architecture"),
    ],
)
def test_bad_teacher_folders_are_refused_in_one_line_before_any_work(data, tmp_path, capsys, no_training, args,
                                                                     message):
    npz, folders = data
    shutil.copytree(folders["patched"], tmp_path / "copy" / "patched")
    ten = tmp_path / "ten.npz"
    np.savez(ten, x_train=np.zeros((10, 32, 32, 3), np.uint8), y_train=np.arange(10),
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10))
    args = [a.format(tmp=tmp_path, patched=folders["patched"], ten=ten) for a in args]
    out = tmp_path / "out"
    assert _compare(out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("medic-viz compare: error: ") and len(err.strip().splitlines()) == 1, err

    assert re.search(message, err), err
    assert not out.exists()


def test_an_architecture_of_your_own_needs_trust(data, tmp_path, monkeypatch, capsys):
    npz, _ = data
    (tmp_path / "tiny_nets.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(4, num_classes))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_nets  # type: ignore[import-not-found]  # noqa: PLC0415 — a module this test writes (on sys.path at run time)

    torch.manual_seed(0)
    torch.save({"state_dict": tiny_nets.build(4).state_dict()}, tmp_path / "mine.pth")
    assert main(["import", "--checkpoint", "mine.pth", "--arch", "tiny_nets:build", "--dataset", str(npz),
                 "--out", "mine", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert _compare(tmp_path / "refused", "--teacher", "mine") == 2
    assert "add --trust-arch-code" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert _compare(tmp_path / "refused", "--teacher", "mine", "--trust-arch-code") == 2  # trust names the code
    assert "--trust-arch-code needs the code you trust" in capsys.readouterr().err
    assert _compare(tmp_path / "refused", "--teacher", "mine", "--trust-arch-code", "other_nets") == 2
    assert "not the code you trusted" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert _compare(tmp_path / "cmp", "--teacher", "mine", "--trust-arch-code", "tiny_nets:build") == 0
    rows = read_runs(tmp_path / "cmp" / "runs.jsonl")
    assert [r["model"] for r in rows] == ["tiny_nets:build"] * 2 and all(r["asr"] is None for r in rows)
