"""Inputs are identified by what they hold, and checked before any work: a compare cell's
identity includes its teacher's card and weights, every --teacher is checked up front, a
card names its dataset by resolved path and SHA-256, a poison rate is the real share, trigger
images are read at their real range, and a card's contradictions are one clear line."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from _support import png_with_text_chunk
from medic_viz.attacks import train as train_module
from medic_viz.attacks.registry import make_trigger
from medic_viz.attacks.spec import parse_trigger_spec, read_image_file
from medic_viz.cards import ModelCard
from medic_viz.cli import main
from medic_viz.experiments import build_grid, runner
from medic_viz.io import load_model, save_model
from medic_viz.models.zoo import build_model

TRIGGER = "patch:pixels=0,0,1;0,1,0;1,0,1,position=bottom-right,margin=0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny 4-class npz and an imported folder ``patched`` on it (trigger, target 1)."""
    root = tmp_path_factory.mktemp("identity")
    rng = np.random.default_rng(0)
    npz = root / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_train=np.arange(48) % 4,
             x_test=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), y_test=np.arange(24) % 4)
    torch.manual_seed(0)
    ckpt = root / "net.pt"
    torch.save(build_model("small_cnn", 4).state_dict(), ckpt)
    folder = root / "patched"
    assert main(["import", "--checkpoint", str(ckpt), "--arch", "small_cnn", "--dataset", str(npz),
                 "--out", str(folder), "--device", "cpu", "--target", "1", "--trigger", TRIGGER]) == 0
    return npz, folder, ckpt


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a teacher was measured or a cell run for a grid that should have been refused")

    monkeypatch.setattr(runner, "train_teacher", forbidden)
    monkeypatch.setattr(runner, "run_cell", forbidden)


def _one_line_error(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"medic-viz {prefix}: error: ") and len(err.strip().splitlines()) == 1, err
    return err


def _edit_card(folder, **changes) -> None:
    path = folder / "card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


# ------------------------------------------------------------------------- card messages


@pytest.mark.parametrize(("fields", "message"), [
    ({"attack": {"name": "badnet"}}, "card.json: gives an attack but no target_class; give both trigger and target "
                                     "(or neither)"),
    ({"target_class": 1}, "card.json: gives a target_class but no attack; give both trigger and target (or neither)"),
])
def test_a_card_with_half_an_attack_is_one_clear_line(fields, message):
    with pytest.raises(ValueError) as info:
        ModelCard.from_dict({"architecture": "small_cnn", "num_classes": 4, **fields})
    assert str(info.value) == message


def test_zoo_options_of_the_wrong_type_name_the_field(tmp_path):
    with pytest.raises(TypeError, match=r"small_cnn.*widths.*4 whole numbers.*'abcd'"):
        build_model("small_cnn", 4, widths="abcd")
    with pytest.raises(TypeError, match=r"wrn16_1.*drop_rate.*number"):
        build_model("wrn16_1", 4, drop_rate="x")
    save_model(build_model("small_cnn", 4), tmp_path, ModelCard("small_cnn", 4))
    _edit_card(tmp_path, arch_kwargs={"widths": "abcd"})
    with pytest.raises(TypeError, match=r"widths \(a card's arch_kwargs\)"):
        load_model(tmp_path)


# ------------------------------------------------------------------ compare --teacher


def test_an_edited_card_or_weights_is_a_new_cell_an_unchanged_one_resumes(data, tmp_path):
    npz, folder, _ = data
    copy = tmp_path / "patched"
    shutil.copytree(folder, copy)
    before = build_grid(teachers=[copy], methods=["finetune"], seeds=1)[0]
    assert build_grid(teachers=[copy], methods=["finetune"], seeds=1)[0].cell_id == before.cell_id

    _edit_card(copy, attack=make_trigger("blend").to_config())
    edited = build_grid(teachers=[copy], methods=["finetune"], seeds=1)[0]
    assert edited.cell_id != before.cell_id and edited.teacher_id != before.teacher_id
    # the dataset a card names counts by content too
    assert edited.dataset_sha256 is not None


def test_compare_reruns_a_teacher_whose_card_changed(data, tmp_path, capsys):
    npz, folder, _ = data
    copy = tmp_path / "patched"
    shutil.copytree(folder, copy)
    out = tmp_path / "cmp"
    args = ["compare", "--teacher", str(copy), "--methods", "finetune", "--seeds", "1", "--epochs", "1",
            "--fraction", "0.5", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "resume: 1 of 1 cells" in capsys.readouterr().out

    _edit_card(copy, attack=make_trigger("blend").to_config())
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resume:" not in printed and "measuring 1 teacher(s)" in printed


@pytest.mark.parametrize(("change", "message"), [
    ({"attack": {"name": "no-such-attack"}}, r"--teacher .*bad: .*no-such-attack"),
    ({"attack": {"name": "patch", "pixels": "oops"}}, r"--teacher .*bad: "),
])
def test_every_teacher_is_checked_before_any_cell_runs(data, tmp_path, capsys, no_training, change, message):
    npz, folder, _ = data
    shutil.copytree(folder, tmp_path / "good")
    shutil.copytree(folder, tmp_path / "bad")
    _edit_card(tmp_path / "bad", **change)
    out = tmp_path / "out"
    assert main(["compare", "--teacher", str(tmp_path / "good"), "--teacher", str(tmp_path / "bad"),
                 "--methods", "finetune", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 2

    assert re.search(message, _one_line_error(capsys, "compare"))
    assert not out.exists()


def test_a_teacher_whose_dataset_is_missing_is_refused_naming_it(data, tmp_path, capsys, no_training):
    npz, folder, _ = data
    shutil.copytree(folder, tmp_path / "lost")
    _edit_card(tmp_path / "lost", dataset=str(tmp_path / "gone.npz"), dataset_sha256=None)
    out = tmp_path / "out"
    assert main(["compare", "--teacher", str(tmp_path / "lost"), "--methods", "finetune", "--seeds", "1",
                 "--device", "cpu", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "compare")
    assert "lost" in err and "gone.npz" in err and "--dataset" in err
    assert not out.exists()


# --------------------------------------------------------------- the data a card names


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _defend(teacher, out, *extra):
    return main(["defend", "--method", "finetune", "--teacher", str(teacher), "--out", str(out), "--epochs", "1",
                 "--fraction", "0.5", "--device", "cpu", "--no-progress", *extra])


def test_import_records_the_resolved_dataset_and_defend_finds_it_from_elsewhere(data, tmp_path, monkeypatch, capsys):
    npz, _, ckpt = data
    work, other = tmp_path / "work", tmp_path / "other"
    (work / "data").mkdir(parents=True)
    (other / "data").mkdir(parents=True)
    shutil.copy(npz, work / "data" / "x.npz")
    rng = np.random.default_rng(5)  # another file under the same relative name, elsewhere
    np.savez(other / "data" / "x.npz", x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(40) % 4, x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(20) % 4)
    right = (work / "data" / "x.npz").resolve()
    monkeypatch.chdir(work)
    assert main(["import", "--checkpoint", str(ckpt), "--arch", "small_cnn", "--dataset", "data/x.npz",
                 "--out", "m", "--device", "cpu"]) == 0
    card = json.loads((work / "m" / "card.json").read_text())
    assert card["dataset"] == str(right) and card["dataset_sha256"] == _sha(right)
    result = json.loads((work / "m" / "result.json").read_text())
    assert result["dataset"] == str(right) and result["dataset_sha256"] == _sha(right)

    monkeypatch.chdir(other)  # data/x.npz here is another file: the card's is used
    assert _defend(work / "m", "r") == 0
    result = json.loads((other / "r" / "result.json").read_text())
    assert result["dataset"] == str(right) and result["dataset_sha256"] == _sha(right)
    assert result["after"]["n_clean"] == 24

    shutil.copy(other / "data" / "x.npz", right)  # the card's file changed since
    capsys.readouterr()
    assert _defend(work / "m", "r2") == 2
    err = _one_line_error(capsys, "defend")
    assert "SHA-256" in err and str(right) in err and "--dataset" in err and not (other / "r2").exists()
    assert _defend(work / "m", "r3", "--dataset", "data/x.npz") == 0  # --dataset points at the data to use


def test_an_old_card_with_a_relative_dataset_resolves_against_its_folder(data, tmp_path, capsys):
    npz, folder, _ = data
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    _edit_card(old, dataset="data/tiny.npz", dataset_sha256=None)
    assert _defend(old, tmp_path / "r") == 2
    err = _one_line_error(capsys, "defend")
    assert "data/tiny.npz" in err and str(old / "data" / "tiny.npz") in err and "--dataset" in err
    (old / "data").mkdir()
    shutil.copy(npz, old / "data" / "tiny.npz")
    assert _defend(old, tmp_path / "r") == 0
    assert json.loads((tmp_path / "r" / "result.json").read_text())["dataset"] == str((old / "data" / "tiny.npz").resolve())


def test_attack_records_its_dataset(data, tmp_path):
    npz, _, _ = data
    assert main(["attack", "--attack", "badnet", "--dataset", str(npz), "--epochs", "1", "--out", str(tmp_path / "a"),
                 "--device", "cpu", "--no-progress"]) == 0
    for name in ("card.json", "result.json"):
        saved = json.loads((tmp_path / "a" / name).read_text())
        assert saved["dataset"] == str(npz.resolve()) and saved["dataset_sha256"] == _sha(npz), name


# ------------------------------------------------------------------------ poison rates


@pytest.mark.parametrize(("attack", "rate", "message"), [
    ("cleanlabel", "0.99", r"poison rate 0\.99 cannot be met: cleanlabel poisons only images of the target class 1, "
                           r"12 of 48 training images \(25\.0 %\); give a rate of at most 0\.25"),
    ("sig", "0.5", r"sig poisons only images of the target class 1, 12 of 48 .* at most 0\.25"),
    ("badnet", "0.9", r"badnet poisons only images of classes other than the target 1, 36 of 48 .* at most 0\.75"),
])
def test_a_rate_that_cannot_be_met_is_refused_before_training(data, tmp_path, capsys, monkeypatch, attack, rate,
                                                               message):
    npz, _, _ = data

    def forbidden(*a, **k):
        raise AssertionError("a model was trained for a rate that cannot be met")

    monkeypatch.setattr(train_module, "train_on_poisoned", forbidden)
    out = tmp_path / "a"
    assert main(["attack", "--attack", attack, "--dataset", str(npz), "--target", "1", "--rate", rate,
                 "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-progress"]) == 2

    assert re.search(message, _one_line_error(capsys, "attack"))
    assert not out.exists()


def test_the_recorded_rate_is_the_real_poisoned_share(data, tmp_path, capsys):
    npz, _, _ = data
    out = tmp_path / "a"
    assert main(["attack", "--attack", "sig", "--dataset", str(npz), "--target", "1", "--rate", "0.2",
                 "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    real = 10 / 48  # round(0.2 · 48) images of class 1
    assert "poisoned 10 of 48 training images (20.83 %)" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["rate"] == pytest.approx(real) and result["rate_requested"] == 0.2
    assert json.loads((out / "card.json").read_text())["poison_rate"] == pytest.approx(real)


def test_compare_refuses_a_rate_no_teacher_can_meet_before_training(data, tmp_path, capsys, no_training):
    npz, _, _ = data
    out = tmp_path / "out"
    assert main(["compare", "--dataset", str(npz), "--attacks", "badnet,sig", "--target", "1", "--rate", "0.5",
                 "--methods", "finetune", "--seeds", "1", "--device", "cpu", "--out", str(out)]) == 2
    assert "sig poisons only images of the target class 1" in _one_line_error(capsys, "compare")
    assert not out.exists()


# ---------------------------------------------------------------------- trigger images


def test_16_bit_and_float_trigger_images_keep_their_range(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(tmp_path / "t16.png")
    torch.testing.assert_close(read_image_file(tmp_path / "t16.png"),
                               torch.tensor([[[0.0, 32768 / 65535, 1.0]]], dtype=torch.float64))
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)).save(tmp_path / "f.tif")
    torch.testing.assert_close(read_image_file(tmp_path / "f.tif"),
                               torch.tensor([[[0.0, 0.25, 1.0]]], dtype=torch.float64))
    Image.fromarray(np.array([[0.0, 128.0, 255.0]], np.float32)).save(tmp_path / "f255.tif")
    with pytest.raises(ValueError, match=r"f255\.tif: .*\[0, 1\].*0 \.\. 255"):
        read_image_file(tmp_path / "f255.tif")


def test_a_trigger_png_with_a_huge_text_chunk_is_refused_naming_the_file(tmp_path, capsys):
    png_with_text_chunk(tmp_path / "bomb.png", 100)
    with pytest.raises(ValueError, match=r"bomb\.png"):
        parse_trigger_spec(f"patch:file={tmp_path / 'bomb.png'}")
