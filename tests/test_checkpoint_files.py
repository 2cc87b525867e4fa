"""Odd checkpoint files get one line saying what is wrong and what to do (exit 2 in the CLI):
the format is sniffed from the content, names are cut short, nothing executes code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from _support import write_tiny_npz
from medic_viz.checkpoints import load_state_dict_file
from medic_viz.cli import main
from medic_viz.models.zoo import build_model


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("small_cnn", 4).state_dict()


def _cli_line(ckpt, npz, tmp_path, capsys) -> str:
    """The import CLI's stderr for ``ckpt``: asserts exit 2 and exactly one line."""
    rc = main(["import", "--checkpoint", str(ckpt), "--arch", "small_cnn", "--dataset", str(npz),
               "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert "internal error" not in err, err
    return err


def test_a_sparse_tensor_is_named_with_what_to_do(tmp_path, npz, capsys):
    sd = _weights()
    sd["fc.weight"] = sd["fc.weight"].to_sparse()
    torch.save(sd, tmp_path / "sparse.pt")
    line = _cli_line(tmp_path / "sparse.pt", npz, tmp_path, capsys)
    assert "sparse" in line and "fc.weight" in line and ".to_dense()" in line, line


def test_a_one_megabyte_key_name_is_cut_short_in_the_error(tmp_path, npz, capsys):
    sd = _weights()
    sd["k" * 1_000_000] = torch.zeros(2)
    torch.save(sd, tmp_path / "longkey.pt")
    line = _cli_line(tmp_path / "longkey.pt", npz, tmp_path, capsys)
    assert len(line) < 2000 and "kkkk" in line and "…" in line, line[:300]


def test_a_numpy_scalar_in_the_metadata_is_read_as_a_plain_number(tmp_path, npz, capsys):
    weights = _weights()
    torch.save({"state_dict": weights, "best_acc": np.float64(0.9), "epoch": np.int64(199)}, tmp_path / "np.pt")
    loaded = load_state_dict_file(tmp_path / "np.pt")
    assert set(loaded) == set(weights) and all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert main(["import", "--checkpoint", str(tmp_path / "np.pt"), "--arch", "small_cnn", "--dataset", str(npz),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0


def test_a_numpy_array_in_the_checkpoint_says_numpy_not_code(tmp_path, npz, capsys):
    torch.save({"state_dict": _weights(), "history": np.arange(5.0)}, tmp_path / "nparr.pt")
    line = _cli_line(tmp_path / "nparr.pt", npz, tmp_path, capsys)
    assert "numpy" in line and "torch.save(model.state_dict()" in line, line
    assert "execute code" not in line, line


def test_a_safetensors_file_named_pth_tar_is_read_by_its_content(tmp_path):
    weights = _weights()
    save_file(weights, str(tmp_path / "weights.pth.tar"))
    loaded = load_state_dict_file(tmp_path / "weights.pth.tar")
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_a_torch_zip_named_safetensors_is_read_by_its_content(tmp_path):
    weights = _weights()
    torch.save(weights, tmp_path / "weights.safetensors")
    loaded = load_state_dict_file(tmp_path / "weights.safetensors")
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_an_empty_file_says_it_is_empty(tmp_path, npz, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    line = _cli_line(tmp_path / "empty.pt", npz, tmp_path, capsys)
    assert "empty.pt is empty" in line, line


def test_an_empty_state_dict_beside_the_weights_picks_the_weights(tmp_path):
    weights = _weights()
    torch.save({"state_dict": {}, "net": weights}, tmp_path / "two.pt")
    loaded = load_state_dict_file(tmp_path / "two.pt")
    assert set(loaded) == set(weights)


def test_no_entry_with_weights_lists_the_keys_found(tmp_path, npz, capsys):
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "none.pt")
    line = _cli_line(tmp_path / "none.pt", npz, tmp_path, capsys)
    assert "'state_dict'" in line and "'epoch'" in line and "no tensors" in line, line


def test_a_torchscript_archive_is_one_line_without_torchs_warning(tmp_path, npz, capsys):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Net()), str(tmp_path / "scripted.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" warning must not escape
        line = _cli_line(tmp_path / "scripted.pt", npz, tmp_path, capsys)
    assert "TorchScript" in line and "state_dict" in line, line
