"""``medic-viz import``: checkpoint layouts found in the wild, safe refusal, errors that list
what is wrong, and import → defend end to end (tiny data, seconds)."""

import json
import pickle
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medic_viz.cli import _load_teacher, main
from medic_viz.io import load_model
from medic_viz.models.zoo import build_model


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A tiny 4-class 32 px dataset (48 train, 24 test images): fast to load and evaluate."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_train=np.arange(48) % 4,
             x_test=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), y_test=np.arange(24) % 4)
    return path


def _net(arch="small_cnn", classes=4):
    torch.manual_seed(1)
    return build_model(arch, classes).eval()


def _import(ckpt, npz, out, *extra):
    return main(["import", "--checkpoint", str(ckpt), "--arch", extra[0] if extra else "small_cnn",
                 "--dataset", str(npz), "--out", str(out), "--device", "cpu", *extra[1:]])


LAYOUTS = {
    "bare": lambda sd: sd,
    "state_dict+extras": lambda sd: {"epoch": 199, "best_acc": 0.93, "acc": torch.tensor(91.2), "state_dict": sd,
                                     "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9}]}},
    "backdoorbench_model": lambda sd: {"model": sd, "model_name": "small_cnn", "num_classes": 4},
    "dataparallel": lambda sd: {f"module.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("suffix", [".pth.tar", ".pt"])
def test_each_checkpoint_layout_imports_the_same_weights(tmp_path, npz, capsys, layout, suffix):
    net = _net()
    ckpt = tmp_path / f"model_best{suffix}"
    torch.save(LAYOUTS[layout](net.state_dict()), ckpt)
    assert _import(ckpt, npz, tmp_path / "m") == 0
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "ASR cannot be measured" in printed
    model, card = load_model(tmp_path / "m")
    for key, value in net.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert card.architecture == "small_cnn" and card.num_classes == 4 and card.attack is None
    result = json.loads((tmp_path / "m" / "result.json").read_text())
    x = torch.from_numpy(np.load(npz)["x_test"]).permute(0, 3, 1, 2).float() / 255
    expected = float((net(x).argmax(1) == torch.arange(24) % 4).float().mean())
    assert result["clean_acc"] == pytest.approx(expected) and result["n_clean"] == 24 and result["asr"] is None


def test_safetensors_checkpoint_and_normalisation(tmp_path, npz):
    net = _net()  # trained (here: random) on normalised inputs, without normalize buffers
    ckpt = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(ckpt))
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn", "--normalize", "0.5,0.25") == 0
    model, card = load_model(tmp_path / "m")
    assert card.normalize == {"mean": [0.5] * 3, "std": [0.25] * 3}
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), net((x - 0.5) / 0.25), atol=1e-5)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, npz, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    ckpt = tmp_path / "evil.pth"
    with open(ckpt, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    # sanity: the fixture really runs code when unpickled the unsafe way
    probe = tmp_path / "probe.pth"
    with open(probe, "wb") as fh:
        pickle.dump(Evil(), fh)
    assert _import(ckpt, npz, tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the checkpoint's code ran"
    assert "state_dict" in err and "trust" in err and not (tmp_path / "m").exists()
    pickle.loads(probe.read_bytes())
    assert marker.read_text() == "ran"


def test_a_whole_pickled_model_is_refused_with_how_to_convert_it(tmp_path, npz, capsys):
    ckpt = tmp_path / "trojai_model.pt"
    torch.save(_net(), ckpt)  # what TrojAI rounds ship
    assert _import(ckpt, npz, tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert "whole pickled nn.Module" in err and "torch.save(model.state_dict(), path)" in err
    assert "environment where you trust the file" in err and "weights_only=False" in err and "weights.pt" in err


def test_wrong_num_classes_names_the_final_layer(tmp_path, npz, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(_net().state_dict(), ckpt)
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn", "--num-classes", "10") == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "final layer has 4 outputs; the model has 10" in err


def test_num_classes_that_disagrees_with_the_dataset(tmp_path, npz, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(_net(classes=10).state_dict(), ckpt)
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn", "--num-classes", "10") == 2
    assert "--num-classes 10 but" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_mismatched_architecture_lists_missing_and_unexpected_keys(tmp_path, npz, capsys):
    ckpt = tmp_path / "wrn.pt"
    torch.save({"state_dict": _net("wrn16_1").state_dict()}, ckpt)
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn") == 2
    err = capsys.readouterr().err
    assert "missing key(s)" in err and "unexpected key(s)" in err and "block1.layer.0.bn1.weight" in err


def test_a_bad_trigger_spec_fails_before_any_work(tmp_path, npz, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(_net().state_dict(), ckpt)
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn", "--target", "1", "--trigger", "badnet:sise=3") == 2
    err = capsys.readouterr().err
    assert "sise" in err and "accepted parameters" in err and not (tmp_path / "m").exists()
    assert _import(ckpt, npz, tmp_path / "m", "small_cnn", "--trigger", "badnet") == 2
    assert "--trigger needs --target" in capsys.readouterr().err


def test_an_architecture_of_your_own(tmp_path, npz, monkeypatch, capsys):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, num_classes))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)  # not another test's module of that name
    import my_nets  # type: ignore[import-not-found]  # noqa: PLC0415 — a module this test writes (on sys.path at run time)

    net = my_nets.build(4).eval()
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "mine.pth")
    assert _import(tmp_path / "mine.pth", npz, tmp_path / "m", "my_nets:build", "--normalize", "half") == 0
    capsys.readouterr()
    with pytest.raises(ValueError, match="--trust-arch-code"):
        load_model(tmp_path / "m")  # a card never imports code by itself

    model, card = _load_teacher(str(tmp_path / "m"), trust_arch_code="my_nets:build")
    x = torch.rand(2, 3, 32, 32)
    assert card.architecture == "my_nets:build" and torch.allclose(model(x), net((x - 0.5) / 0.5), atol=1e-5)


def test_import_a_wrn16_1_state_dict_checkpoint_then_defend(tmp_path, npz, capsys):
    """The issue's end-to-end test: the MEDIC authors' {"state_dict": ...} layout of a WRN-16-1."""
    wrn = _net("wrn16_1")
    ckpt = tmp_path / "WRN-16-1-S-model_best.pth.tar"
    torch.save({"epoch": 60, "state_dict": wrn.state_dict(), "best_prec": 89.1, "optimizer": {"state": {}}}, ckpt)
    folder = tmp_path / "imported"
    assert _import(ckpt, npz, folder, "wrn16_1", "--target", "1",
                   "--trigger", "patch:pixels=0,0,1;0,1,0;1,0,1,position=bottom-right,margin=0") == 0
    printed = capsys.readouterr().out
    assert "ASR" in printed and "cannot be measured" not in printed
    card = json.loads((folder / "card.json").read_text())
    assert card["attack"]["name"] == "patch" and card["target_class"] == 1 and card["dataset"] == str(npz)
    assert card["imported_from"]["file"] == ckpt.name and len(card["imported_from"]["sha256"]) == 64
    assert set(json.loads((folder / "result.json").read_text())) >= {"clean_acc", "asr", "n_asr"}

    out = tmp_path / "repaired"
    assert main(["defend", "--teacher", str(folder), "--out", str(out), "--epochs", "1", "--fraction", "0.5",
                 "--batch-size", "8", "--device", "cpu", "--no-progress"]) == 0  # dataset from the card
    result = json.loads((out / "result.json").read_text())
    assert result["before"]["asr"] is not None and result["after"]["asr"] is not None
    assert result["config"]["epochs"] == 1 and result["before"]["n_clean"] == 24
    assert (out / "report.html").is_file() and (out / "model" / "model.safetensors").is_file()
    repaired, repaired_card = load_model(out / "model")
    assert repaired_card.architecture == "wrn16_1"


def test_defend_without_a_known_trigger_says_asr_cannot_be_measured(tmp_path, npz, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(_net().state_dict(), ckpt)
    assert _import(ckpt, npz, tmp_path / "m") == 0
    assert main(["defend", "--teacher", str(tmp_path / "m"), "--out", str(tmp_path / "d"), "--epochs", "1",
                 "--fraction", "0.5", "--batch-size", "8", "--device", "cpu", "--no-progress"]) == 0
    assert "ASR cannot be measured" in capsys.readouterr().out
    result = json.loads((tmp_path / "d" / "result.json").read_text())
    assert result["before"]["asr"] is None and result["after"]["asr"] is None
