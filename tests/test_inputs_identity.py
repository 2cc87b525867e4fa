"""Inputs are identified by what they hold, and checked before any work: a compare cell's
identity includes its teacher's card and weights, every --teacher is checked up front, a
card names its dataset by resolved path and SHA-256, a poison rate is the real share, trigger
images are read at their real range, and a card's contradictions are one clear line."""

from __future__ import annotations

import json
import shutil
import zlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from medic_viz.cli import main
from medic_viz.experiments import build_grid, runner
from medic_viz.io import ModelCard, load_model, save_model
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
    from medic_viz.attacks.registry import make_trigger

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
    from medic_viz.attacks.registry import make_trigger

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
    import re

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
