"""Every size read from a file is checked against medic_viz.limits BEFORE anything is allocated.

The hostile cases run in a child process whose address space is capped a little above what
its imports take (:func:`_run_capped`): a size checked too late shows as an allocation error
there instead of eating the machine, and the test fails."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from _support import write_tiny_npz
from medic_viz import limits
from medic_viz.attacks import spec
from medic_viz.attacks.registry import make_trigger, trigger_from_config
from medic_viz.attacks.spec import parse_trigger_spec
from medic_viz.checkpoints import load_state_dict_file
from medic_viz.data.synthetic import synthesize_signs
from medic_viz.models.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import os, resource, sys
import torch, numpy
import medic_viz.cli, medic_viz.importer, medic_viz.data, medic_viz.data.real, medic_viz.data.synthetic
vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2 * 2**30, resource.RLIM_INFINITY))  # 2 GiB more, no more
"""


def _run_capped(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python allowed 2 GiB of memory beyond its imports."""
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def _small_cnn_state(classes: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("small_cnn", classes).state_dict()


# ---------------------------------------------------------------------------------- checkpoints
def test_a_stride0_30000_square_tensor_is_refused_before_it_is_materialised(tmp_path, npz):
    sd = _small_cnn_state()
    sd["conv1.weight"] = torch.zeros(1).expand(30000, 30000)  # 3.6 GB logical, 4 bytes stored
    torch.save(sd, tmp_path / "bomb.pt")
    assert (tmp_path / "bomb.pt").stat().st_size < 300_000
    start = time.perf_counter()
    out = _run_capped(f"""
        from medic_viz.cli import main
        sys.exit(main(["import", "--checkpoint", "bomb.pt", "--arch", "small_cnn", "--dataset", {str(npz)!r},
                       "--out", "out", "--device", "cpu"]))
    """, tmp_path)
    elapsed = time.perf_counter() - start
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "MAX_TENSOR_BYTES" in lines[0] and "conv1.weight" in lines[0], lines[0]
    assert elapsed < 60


def test_a_view_whose_storage_is_smaller_than_the_tensor_is_refused(tmp_path):
    # 100 MB logical (under every limit) but one float stored: weights never look like that
    torch.save({"w": torch.empty_strided((5000, 5000), (0, 0)), "b": torch.zeros(3)}, tmp_path / "overlap.pt")
    with pytest.raises(ValueError, match=r"(?i)overlap|stride") as info:
        load_state_dict_file(tmp_path / "overlap.pt")
    assert "'w'" in str(info.value) and "\n" not in str(info.value)


def test_the_sum_of_a_checkpoints_tensors_is_bounded(tmp_path, monkeypatch):
    torch.save({"a": torch.zeros(100), "b": torch.zeros(100)}, tmp_path / "two.pt")
    monkeypatch.setattr(limits, "MAX_CHECKPOINT_BYTES", 600)
    with pytest.raises(ValueError, match="MAX_CHECKPOINT_BYTES"):
        load_state_dict_file(tmp_path / "two.pt")
    monkeypatch.setattr(limits, "MAX_CHECKPOINT_BYTES", 800)
    assert set(load_state_dict_file(tmp_path / "two.pt")) == {"a", "b"}


def test_a_safetensors_header_is_checked_before_the_tensors_are_read(tmp_path, monkeypatch):
    save_file({"big": torch.zeros(1000)}, str(tmp_path / "m.safetensors"))
    monkeypatch.setattr(limits, "MAX_TENSOR_BYTES", 1000)

    def never(*args, **kwargs):
        raise AssertionError("the tensors were read before their declared size was checked")

    monkeypatch.setattr(safetensors.torch, "load_file", never)
    with pytest.raises(ValueError, match="MAX_TENSOR_BYTES") as info:
        load_state_dict_file(tmp_path / "m.safetensors")
    assert "'big'" in str(info.value)


def test_a_torch_zip_records_uncompressed_size_is_checked_before_loading(tmp_path, monkeypatch):
    torch.save({"big": torch.zeros(1000)}, tmp_path / "m.pt")
    monkeypatch.setattr(limits, "MAX_CHECKPOINT_BYTES", 1000)

    def never(*args, **kwargs):
        raise AssertionError("torch.load ran before the stored sizes were checked")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ValueError, match="MAX_CHECKPOINT_BYTES"):
        load_state_dict_file(tmp_path / "m.pt")


def _legacy_declaring(tmp_path: Path, numel: int) -> Path:
    """A legacy (pre-zip) torch.save file of 70000 floats whose pickle declares ``numel`` of them."""
    torch.save({"w": torch.zeros(70000)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = bytearray((tmp_path / "legacy.pt").read_bytes())
    old = b"J" + struct.pack("<i", 70000)
    i = data.index(old)
    data[i : i + 5] = b"J" + struct.pack("<i", numel)
    (tmp_path / "bomb.pt").write_bytes(bytes(data))
    return tmp_path / "bomb.pt"


@pytest.mark.parametrize("numel, limit", [(2_000_000_000, "MAX_TENSOR_BYTES"), (100_000_000, "the file holds")])
def test_a_legacy_checkpoints_declared_storages_are_checked_before_torch_allocates_them(tmp_path, monkeypatch,
                                                                                          numel, limit):
    path = _legacy_declaring(tmp_path, numel)
    assert set(load_state_dict_file(tmp_path / "legacy.pt")) == {"w"}  # the genuine file still loads

    def never(*args, **kwargs):
        raise AssertionError("torch.load (which allocates each declared storage) ran before the check")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ValueError, match=limit):
        load_state_dict_file(path)


# ------------------------------------------------------------------------------------- triggers
@pytest.mark.parametrize("build", [
    lambda: make_trigger("wanet", k=100000),
    lambda: trigger_from_config({"name": "wanet", "k": 100000, "s": 0.5}),
    lambda: parse_trigger_spec("wanet:k=100000"),
    lambda: make_trigger("blend", cells=10**6),
    lambda: make_trigger("reflection", grid=10**6),
    lambda: make_trigger("reflection", kind="blur", sigma=1e9),
    lambda: make_trigger("badnet", size=10**6),
], ids=["wanet", "wanet-config", "wanet-spec", "blend-cells", "reflection-grid", "reflection-sigma", "badnet-size"])
def test_trigger_parameters_that_size_an_allocation_are_bounded_when_built(build):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"at most {limits.MAX_TRIGGER_SIZE}") as info:
        build()
    assert time.perf_counter() - start < 1 and "\n" not in str(info.value)


def test_wanet_k_100000_through_the_import_cli_is_one_line_before_any_work(tmp_path, npz):
    torch.save(_small_cnn_state(), tmp_path / "w.pt")
    out = _run_capped(f"""
        from medic_viz.cli import main
        sys.exit(main(["import", "--checkpoint", "w.pt", "--arch", "small_cnn", "--dataset", {str(npz)!r},
                       "--trigger", "wanet:k=100000", "--target", "0", "--out", "out", "--device", "cpu"]))
    """, tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "k" in out.stderr, out.stderr


def test_a_blend_image_spec_bounds_its_image_size():
    with pytest.raises(ValueError, match=str(limits.MAX_IMAGE_SIDE)):
        spec._blend_image({"file": "missing.png"}, 10**6)


# ------------------------------------------------------------------------------------- datasets
def test_signs_at_4096_pixels_are_refused_before_generation(tmp_path):
    start = time.perf_counter()
    out = _run_capped("""
        from medic_viz.data import load_dataset
        try:
            load_dataset("signs", size=4096)
        except ValueError as exc:
            print("ValueError:", exc)
    """, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ValueError:" in out.stdout and "MAX_DATASET_BYTES" in out.stdout, out.stdout + out.stderr[-2000:]
    assert time.perf_counter() - start < 60


def test_synthesize_signs_checks_its_bytes_first(monkeypatch):
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 10_000)
    with pytest.raises(ValueError, match="MAX_DATASET_BYTES"):
        synthesize_signs(np.zeros(100, dtype=np.int64), size=32)


def _idx(path: Path, data: bytes, dims: tuple[int, ...]) -> None:
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header + data)


def test_mnist_of_16m_one_pixel_images_is_refused_before_the_resize(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n = 16 * 2**20
    for images, labels in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        _idx(raw / f"{images}.gz", bytes(n), (n, 1, 1))
        _idx(raw / f"{labels}.gz", bytes(n), (n,))
    assert sum(p.stat().st_size for p in raw.iterdir()) < 200_000
    out = _run_capped(f"""
        from medic_viz.data import load_dataset
        try:
            load_dataset("mnist", root={str(tmp_path)!r}, size=32)
        except ValueError as exc:
            print("ValueError:", exc)
    """, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ValueError:" in out.stdout and "MAX_DATASET_BYTES" in out.stdout, out.stdout + out.stderr[-2000:]
