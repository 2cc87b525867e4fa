"""Bad invocations of the command line: each is one line on stderr that says what is wrong, exit
status 2, and no traceback (issue 13, class 7: 64 probes ended in a raw Python traceback)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medic_viz.cli import main
from medic_viz.pretrained import demo_model_dir

REPO = Path(__file__).resolve().parents[1]


class _Reduce:
    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


def _teacher(root: Path, name: str, card_change: dict | None = None, weights_change=None) -> Path:
    """A copy of the shipped BadNet model, with its card or weights changed."""
    folder = root / name
    shutil.copytree(demo_model_dir("badnet"), folder)
    if card_change is not None:
        card = json.loads((folder / "card.json").read_text())
        (folder / "card.json").write_text(json.dumps({**card, **card_change}))
    if weights_change is not None:
        weights = load_file(str(folder / "model.safetensors"))
        weights_change(weights)
        save_file(weights, str(folder / "model.safetensors"))
    return folder


def _npz(path: Path, size: int = 32, n_train: int = 48, n_test: int = 24, labels_max: int = 11) -> Path:
    rng = np.random.default_rng(0)
    y_train = rng.integers(0, 12, n_train)
    y_train[0] = labels_max
    np.savez(path, x_train=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8), y_test=rng.integers(0, 12, n_test))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")

    def first_float(weights: dict, change) -> None:
        key = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim == 4)
        weights[key] = change(weights[key])

    def zero_dim(weights: dict) -> None:
        key = next(k for k, v in weights.items() if k.endswith("fc.weight") or k.endswith("linear.weight") or v.ndim == 2)
        weights[key] = torch.tensor(1.0)

    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(pickle.dumps({"data": _Reduce(bytes, (10**15,)), "labels": [0]}, protocol=2))
    mnist = root / "mnist" / "MNIST" / "raw"
    mnist.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist / f"{name}.gz", "wb") as f:  # declares 10^6 28x28 images: over the idx limit
            f.write(struct.pack(">IIII", 0x0803, 10**6, 28, 28) + bytes(1000))
    nested = _teacher(root, "nested")
    text = (nested / "card.json").read_text().rstrip().rstrip("}")
    (nested / "card.json").write_text(text + ', "deep": ' + "[" * 50_000 + "]" * 50_000 + "}")
    return {
        "teacher": _teacher(root, "teacher"),
        "card64": _teacher(root, "card64", {"input_size": 64}),
        "card_huge": _teacher(root, "card_huge", {"input_size": 10**9}),
        "nan": _teacher(root, "nan", weights_change=lambda w: first_float(w, lambda t: t * float("nan"))),
        "int": _teacher(root, "int", weights_change=lambda w: first_float(w, lambda t: t.round().to(torch.int64))),
        "zero_dim": _teacher(root, "zero_dim", weights_change=zero_dim),
        "nested": nested,
        "npz": _npz(root / "ok.npz"),
        "npz48": _npz(root / "big.npz", size=48),
        "npz_labels": _npz(root / "labels.npz", labels_max=10**7),
        "npz_empty": _npz(root / "empty.npz", n_test=0),
        "cifar": root / "cifar",
        "mnist": root / "mnist",
    }


CASES = [
    # (argv with {placeholders}, fragment of the one-line message)
    ("attack --target 12 --epochs 1", "--target 12 is not a class of signs-train (classes 0..11)"),
    ("demo --attack clean", "the demo repairs a shipped trojaned model; choose one of badnet"),
    ("attack --device foo", "unknown device 'foo'"),
    ("defend --teacher {teacher} --device cuda:7", "cuda:7"),
    ("attack --seed 1000000000000000000000000000000", "argument --seed: must be 0..4294967295"),
    ("attack --epochs 1.5", "argument --epochs: expected a whole number, got '1.5'"),
    ("attack --rate 0", "argument --rate: must be in (0, 1]"),
    ("attack --model resnet9000 --epochs 1", "unknown model 'resnet9000'"),
    ("attack", "the following arguments are required: --out"),
    ("defend --teacher {teacher} --tau 1e38", "tau must be at most 1000"),
    ("defend --teacher {teacher} --tau five", "--tau must be a number >= 0 or 'auto'"),
    ("defend --teacher {teacher} --lam 1e38", "argument --lam: must be in [0, 1e+06]"),
    ("defend --teacher {teacher} --fraction 2", "argument --fraction: must be in (0, 1]"),
    ("defend --teacher {teacher} --method finetune --tau 99 --lam 7",
     "--tau 99 and --lam 7.0 apply to MEDIC's τ and λ only (--method medic); --method finetune does not use them"),
    ("defend --teacher {teacher} --tau-budget 0.1", "--tau-budget and --tau-search-epochs apply to --tau auto only"),
    ("defend --teacher {teacher} --tau 5 --share 0.05", "both set how sharp MEDIC's weights are; give one"),
    ("defend --teacher {teacher} --share 0", "argument --share: must be in (0, 1]"),
    ("defend --teacher {teacher} --layers conv9 --epochs 1", "unknown layer name(s) ['conv9']"),
    ("defend --teacher {teacher} --method finetune --layers conv+bn", "--layers conv+bn applies to MEDIC"),
    ("defend --teacher {teacher} --method magic", "unknown defence 'magic'"),
    ("defend --teacher {card64}", "takes 3-channel 64x64 images but signs-train has 3-channel 32x32 images"),
    ("defend --teacher {teacher} --dataset {npz48}", "takes 3-channel 32x32 images but big has 3-channel 48x48"),
    ("defend --teacher {teacher} --dataset {npz_labels}", "10000001 classes is more than medic_viz accepts"),
    ("defend --teacher {teacher} --dataset {npz_empty}", "x_test holds no images"),
    ("defend --teacher {card_huge}", "1000000000 pixels per side"),
    ("defend --teacher {nan}", "hold NaN or infinite values"),
    ("defend --teacher {int}", "stored as integers or booleans"),
    ("defend --teacher {zero_dim}", "shape mismatch"),
    ("defend --teacher {nested}", "nests lists/objects deeper than 32 levels"),
    ("attack --dataset cifar10 --data-root {cifar}", "refusing to load bytes(int)"),
    ("attack --dataset mnist --data-root {mnist}", "declares 784,000,000 bytes"),
    ("defend --teacher {teacher} --dataset {npz} --epochs 1 --lr 1e5", "NaN or infinite"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[c[0][:70] for c in CASES])
def test_bad_invocation_is_one_line_exit_2_without_traceback(argv, message, files, tmp_path, capsys):
    args = argv.format(**files).split()
    if args[0] in ("attack", "defend", "demo") and "--out" not in args and argv != "attack":
        args += ["--out", str(tmp_path / "out")]
    if "--device" not in args:
        args += ["--device", "cpu"]
    rc = main([*args, "--no-progress"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "a temporary folder was left behind"


def test_debug_shows_the_traceback_and_the_default_does_not(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "medic_viz.cli", "attack", "--device", "foo", "--out", str(tmp_path / "x")]
    plain = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    debug = subprocess.run([*base, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == debug.returncode == 2
    assert plain.stderr.strip() == "medic-viz attack: error: unknown device 'foo'; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    assert "Traceback (most recent call last)" in debug.stderr and debug.stderr.strip().endswith(plain.stderr.strip())
