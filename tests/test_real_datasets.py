"""Real-dataset loaders on tiny fixtures written in the real on-disk formats (no internet)."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format
from PIL import Image

import medic_viz.limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays
from medic_viz.data.npz import NPZ_AUGMENTATION, load_npz, save_npz
from medic_viz.data.real import (
    CIFAR10_CLASSES,
    GTSRB_CLASSES,
    MNIST_CLASSES,
    REAL_DATASETS,
    load_torchvision,
)

GTSRB_NPZ = Path(__file__).resolve().parents[2] / "shared/data/gtsrb32.npz"


# -- CIFAR-10 fixture: cifar-10-batches-py with pickled dict batches ------------------------------


class _Python2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as the original
    CIFAR-10 files (cPickle, protocol 2) hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)  # type: ignore[attr-defined]  # _Pickler's own
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[bytes] = _save_py2_str  # type: ignore[assignment]


def _dump(obj: object, path: Path, style: str) -> None:
    if style == "py2":
        buf = io.BytesIO()
        _Python2StylePickler(buf, protocol=2).dump(obj)
        # numpy 1 (which wrote the real files) names numpy.core, not numpy._core
        path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(style)))


def _cifar_images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _write_cifar(root: Path, style: str = "py2", per_batch: int = 2) -> dict[str, np.ndarray]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = _cifar_images(i, per_batch)
        y = [(i + j) % 10 for j in range(per_batch)]
        _dump({"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
               "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}, base / f"data_batch_{i}", style)
        xs.append(x)
        ys += y
    x_test = _cifar_images(99, 3)
    _dump({"batch_label": "testing batch 1 of 1", "labels": [9, 0, 4], "data": x_test,
           "filenames": ["a.png", "b.png", "c.png"]}, base / "test_batch", style)
    _dump({"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072},
          base / "batches.meta", style)
    return {"x_train": np.concatenate(xs), "y_train": np.array(ys), "x_test": x_test}


@pytest.mark.parametrize("style", ["py2", "2", "5"])
def test_cifar10_reads_python_batches(tmp_path: Path, style: str) -> None:
    expected = _write_cifar(tmp_path, style)
    splits = load_torchvision("cifar10", tmp_path)
    assert splits.train.images.shape == (10, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (3, 3, 32, 32)
    assert splits.train.labels.tolist() == expected["y_train"].tolist()
    assert splits.test.labels.tolist() == [9, 0, 4]
    # CIFAR rows are channel-major (1024 R, 1024 G, 1024 B): image 5 = batch 3, row 1.
    assert torch.equal(splits.train.images[5], torch.from_numpy(expected["x_train"][5].reshape(3, 32, 32)))
    assert torch.equal(splits.test.images[2], torch.from_numpy(expected["x_test"][2].reshape(3, 32, 32)))
    assert splits.classes == CIFAR10_CLASSES
    assert splits.train.augmentation == Augmentation(crop_pad=4, hflip=True, rotate_deg=0.0)


def test_cifar10_resizes_and_never_calls_plain_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write_cifar(tmp_path)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("plain pickle.load must not be used on CIFAR batches")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    splits = load_torchvision("CIFAR10", tmp_path, size=16)
    assert splits.train.images.shape == (10, 3, 16, 16)
    # Antialiased bilinear, as PIL resizes (GTSRB's route): same pixels up to rounding.
    hwc = expected["x_train"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    pil = np.array(Image.fromarray(hwc).resize((16, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert (splits.train.images[0].float() - torch.from_numpy(pil).float()).abs().max() <= 1.0


class _TouchMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class _ShellMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("payload", [_TouchMarker, _ShellMarker])
@pytest.mark.parametrize("victim", ["data_batch_1", "test_batch", "batches.meta"])
def test_malicious_cifar_pickle_is_refused_and_runs_nothing(tmp_path: Path, payload: type, victim: str) -> None:
    root = tmp_path / "data"
    _write_cifar(root)
    marker = tmp_path / "pwned"
    evil = {"data": payload(marker), "labels": [0]}
    (root / "cifar-10-batches-py" / victim).write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*not a genuine CIFAR batch"):
        load_torchvision("cifar10", root)
    assert not marker.exists()


# -- GTSRB fixture: torchvision's gtsrb/ tree of .ppm files and ';' CSVs -------------------------

_CSV_FIELDS = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def _class_colour(c: int) -> tuple[int, int, int]:
    return (5 * c, 255 - 5 * c, 7)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS, delimiter=";")
        writer.writeheader()
        writer.writerows(rows)


def _row(name: str, image: Image.Image, class_id: int) -> dict[str, object]:
    w, h = image.size
    return {"Filename": name, "Width": w, "Height": h, "Roi.X1": 1, "Roi.Y1": 1,
            "Roi.X2": w - 2, "Roi.Y2": h - 2, "ClassId": class_id}


def _write_gtsrb(root: Path, skip_class: int | None = None) -> dict[str, np.ndarray]:
    base = root / "gtsrb"
    train = base / "GTSRB" / "Training"
    for c in range(43):
        if c == skip_class:
            continue
        folder = train / f"{c:05d}"
        folder.mkdir(parents=True)
        # sizes vary as in the real data; a uniform colour survives any resize exactly
        image = Image.new("RGB", (20 + c, 25 + (c % 7)), _class_colour(c))
        image.save(folder / "00000_00000.ppm")
        _write_csv(folder / f"GT-{c:05d}.csv", [_row("00000_00000.ppm", image, c)])
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    noise = np.random.default_rng(7).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    checker = ((np.indices((96, 96)).sum(0) % 2) * 255).astype(np.uint8)
    images = [
        (Image.fromarray(noise), 14),
        (Image.fromarray(np.stack([checker] * 3, -1)), 33),
        (Image.new("RGB", (61, 47), _class_colour(42)), 42),
    ]
    rows = []
    for i, (image, class_id) in enumerate(images):
        image.save(test / f"{i:05d}.ppm")
        rows.append(_row(f"{i:05d}.ppm", image, class_id))
    _write_csv(test / "GT-final_test.test.csv", [{k: v for k, v in r.items() if k != "ClassId"} for r in rows])
    _write_csv(base / "GT-final_test.csv", rows)
    return {"noise": noise}


def test_gtsrb_reads_ppm_tree(tmp_path: Path) -> None:
    fixture = _write_gtsrb(tmp_path)
    splits = load_torchvision("gtsrb", tmp_path)
    assert splits.train.images.shape == (43, 3, 32, 32)
    assert splits.train.labels.tolist() == list(range(43))
    for c in (0, 17, 42):
        colour = torch.tensor(_class_colour(c), dtype=torch.uint8)[:, None, None]
        assert torch.equal(splits.train.images[c], colour.expand(3, 32, 32))
    assert splits.test.labels.tolist() == [14, 33, 42]
    assert torch.equal(splits.test.images[0], torch.from_numpy(fixture["noise"]).permute(2, 0, 1))
    # antialiased: a 1-pixel checkerboard shrunk 3x turns grey instead of aliasing to 0/255
    shrunk = splits.test.images[1].float()
    assert 100 <= shrunk.min() and shrunk.max() <= 155
    assert splits.classes == GTSRB_CLASSES and len(GTSRB_CLASSES) == 43
    assert splits.classes[14] == "Stop" and splits.classes[33] == "Turn right ahead"
    assert splits.train.augmentation == Augmentation(crop_pad=4, hflip=False, rotate_deg=10.0)


def test_gtsrb_size_and_incomplete_copy(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path / "full")
    small = load_torchvision("gtsrb", tmp_path / "full", size=8)
    assert small.train.images.shape == (43, 3, 8, 8) and small.test.images.shape == (3, 3, 8, 8)
    _write_gtsrb(tmp_path / "partial", skip_class=5)
    with pytest.raises(ValueError, match=r"missing \['00005'\]"):
        load_torchvision("gtsrb", tmp_path / "partial")


# -- MNIST fixture: idx files under MNIST/raw --------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, gz: bool) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        "t10k-images-idx3-ubyte": np.full((2, 28, 28), 200, dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([9, 2], dtype=np.uint8),
    }
    for name, array in arrays.items():
        if gz:  # what the official mirrors serve
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(_idx(array))
        else:  # what torchvision leaves after extracting
            (raw / name).write_bytes(_idx(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz)
    splits = load_torchvision("mnist", tmp_path)
    assert splits.train.images.shape == (5, 1, 32, 32) and splits.test.images.shape == (2, 1, 32, 32)
    assert splits.train.labels.tolist() == [3, 1, 4, 1, 5] and splits.test.labels.tolist() == [9, 2]
    assert bool((splits.test.images == 200).all())  # a uniform image stays uniform when upscaled
    native = load_torchvision("mnist", tmp_path, size=28)
    assert torch.equal(native.train.images[2, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"][2]))
    assert splits.classes == MNIST_CLASSES
    assert splits.train.augmentation == Augmentation(crop_pad=2, hflip=False, rotate_deg=0.0)


# -- argument errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_missing_root_says_where_and_how(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_torchvision(name, root)
    assert str(root) in str(info.value)


def test_bad_name_and_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar10, gtsrb, mnist"):
        load_torchvision("imagenet", tmp_path)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        load_torchvision("mnist", tmp_path, size=0)


# -- npz -----------------------------------------------------------------------------------------------


def _splits(n_classes: int = 3, channels: int = 3) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    classes = tuple(f"class {i}" for i in range(n_classes))

    def part(n: int) -> ImageArrays:
        images = torch.randint(0, 256, (n, channels, 6, 5), generator=g, dtype=torch.uint8)
        return ImageArrays(images, torch.arange(n) % n_classes, classes, name="toy")

    return DatasetSplits(part(7), part(4))


def test_npz_round_trip(tmp_path: Path) -> None:
    splits = _splits()
    path = tmp_path / "toy.npz"
    save_npz(splits, path)
    with np.load(path, allow_pickle=False) as f:
        assert f["x_train"].shape == (7, 6, 5, 3)  # written NHWC
    loaded = load_npz(path)
    assert torch.equal(loaded.train.images, splits.train.images)
    assert torch.equal(loaded.test.labels, splits.test.labels)
    assert loaded.classes == ("class 0", "class 1", "class 2")
    assert loaded.train.name == "toy"
    assert loaded.train.augmentation == NPZ_AUGMENTATION and not NPZ_AUGMENTATION.hflip
    grey = _splits(channels=1)
    save_npz(grey, tmp_path / "grey.npz")
    assert torch.equal(load_npz(tmp_path / "grey.npz").train.images, grey.train.images)
    over = load_npz(path, name="mine", classes=["a", "b", "c"], augmentation=Augmentation(0, True, 0.0))
    assert over.classes == ("a", "b", "c") and over.train.name == "mine" and over.train.augmentation.hflip


def test_npz_layouts_and_gtsrb_defaults(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    nhwc = rng.integers(0, 256, size=(43, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(43, dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", x_train=nhwc.transpose(0, 3, 1, 2), y_train=labels,
             x_test=nhwc[:2].transpose(0, 3, 1, 2), y_test=labels[:2])
    splits = load_npz(tmp_path / "nchw.npz")
    assert torch.equal(splits.train.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert splits.classes == GTSRB_CLASSES and splits.train.name == "gtsrb"
    assert splits.train.augmentation == Augmentation(crop_pad=4, hflip=False, rotate_deg=10.0)
    np.savez(tmp_path / "grey.npz", x_train=nhwc[..., 0], y_train=labels % 4, x_test=nhwc[:3, ..., 0],
             y_test=labels[:3] % 4)
    grey = load_npz(tmp_path / "grey.npz")
    assert grey.image_shape == (1, 8, 8) and grey.classes == ("0", "1", "2", "3")
    assert torch.equal(grey.train.images[:, 0], torch.from_numpy(nhwc[..., 0]))


def _save(path: Path, **arrays: np.ndarray) -> Path:
    base: dict[str, Any] = {"x_train": np.zeros((4, 8, 8, 3), np.uint8), "y_train": np.zeros(4, np.int64),
            "x_test": np.zeros((2, 8, 8, 3), np.uint8), "y_test": np.zeros(2, np.int64)}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_test": None, "y_test": None}, r"missing array\(s\) x_test, y_test .*x_train \(N, H, W, C\) uint8"),
        ({"x_train": np.zeros((4, 8, 8, 3), np.float32)}, "dtype float32.*convert to uint8 0-255"),
        ({"y_test": np.zeros(3, np.int64)}, "3 labels in y_test but 2 images"),
        ({"y_train": np.zeros(4, np.float32)}, "labels must be integer"),
        ({"x_train": np.zeros((4, 5, 5, 5), np.uint8)}, "no channel axis of size 1 or 3"),
        ({"x_test": np.zeros((2, 9, 9, 3), np.uint8)}, "both splits must share one image shape"),
        ({"classes": np.array(["a", 1], dtype=object)}, "will not unpickle"),
        ({"x_train": np.array([np.zeros(3)] * 4, dtype=object)}, "will not unpickle"),
    ],
)
def test_npz_validation_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_npz(_save(tmp_path / "bad.npz", **arrays))


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="npz file not found"):
        load_npz(tmp_path / "absent.npz")


@pytest.mark.gtsrb
@pytest.mark.skipif(not GTSRB_NPZ.is_file(), reason=f"real GTSRB arrays not found at {GTSRB_NPZ}")
def test_real_gtsrb_npz() -> None:
    splits = load_npz(GTSRB_NPZ)
    assert len(splits.train) == 39209 and len(splits.test) == 12630
    assert splits.num_classes == 43 and splits.classes == GTSRB_CLASSES
    assert splits.image_shape == (3, 32, 32)
    assert set(splits.train.labels.unique().tolist()) == set(range(43))
    assert not splits.train.augmentation.hflip


# -- hostile dataset folders and files (issue 13, class 1 and 7) ---------------------------------------


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (links not followed) with its size: what a load may not change."""
    return {str(p.relative_to(root)): (p.lstat().st_size if not p.is_dir() or p.is_symlink() else -1)
            for p in sorted(root.rglob("*"))}


def test_mnist_symlink_in_raw_is_never_written_through(tmp_path: Path) -> None:
    # A dangling symlink where the decompressed file would go, pointing at a place Python runs
    # code from: the old loader gunzipped the .gz *through* the link (attacker bytes written
    # anywhere the user can write). Reading must write nothing at all.
    data = tmp_path / "data"
    arrays = _write_mnist(data, gz=True)
    outside = tmp_path / "site-packages"
    outside.mkdir()
    (data / "MNIST" / "raw" / "train-images-idx3-ubyte").symlink_to(outside / "evil.pth")
    before = _tree(tmp_path)
    splits = load_torchvision("mnist", data, size=28)
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert not (outside / "evil.pth").exists()
    assert _tree(tmp_path) == before, "reading MNIST wrote or changed files"


def _gz_idx(path: Path, dims: tuple[int, ...], payload_bytes: int) -> None:
    header = struct.pack(">I", 0x0800 | len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        chunk = bytes(2**20)
        for start in range(0, payload_bytes, len(chunk)):
            f.write(chunk[: min(len(chunk), payload_bytes - start)])


def test_mnist_gzip_bomb_is_bounded_and_writes_nothing(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    # 1. header declares 5 images, the stream goes on for 40 MB of zeros (~40 kB compressed)
    _gz_idx(raw / "train-images-idx3-ubyte.gz", (5, 28, 28), 40 * 2**20)
    assert (raw / "train-images-idx3-ubyte.gz").stat().st_size < 200_000
    before = _tree(tmp_path)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="more data than its header declares"):
        load_torchvision("mnist", tmp_path)
    assert time.perf_counter() - start < 5
    assert _tree(tmp_path) == before, "the old loader left the decompressed bomb in raw/"
    # 2. header declares more than the idx size limit: refused before decompressing anything
    _gz_idx(raw / "train-images-idx3-ubyte.gz", (1_000_000, 28, 28), 1000)
    with pytest.raises(ValueError, match="declares 784,000,000 bytes"):
        load_torchvision("mnist", tmp_path)
    assert _tree(tmp_path) == {**before,
                               "MNIST/raw/train-images-idx3-ubyte.gz": (raw / "train-images-idx3-ubyte.gz").stat().st_size}


def test_mnist_corrupt_files_are_value_errors(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09\x01")  # 9 declared, 1 there
    with pytest.raises(ValueError, match="truncated"):
        load_torchvision("mnist", tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8b junk")
    with pytest.raises(ValueError, match="not an idx file"):
        load_torchvision("mnist", tmp_path)


class _Reduce:
    """Pickles as ``func(*args)``: how a hostile batch makes the unpickler call an allowed global."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


@pytest.mark.parametrize(
    "payload",
    [
        _Reduce(bytes, (10**15,)),                                        # a petabyte of zeros
        _Reduce(np.ndarray, ((10**12,),)),                                # numpy.ndarray(shape) allocates
        _Reduce(getattr(np, "_core", None) and np._core.multiarray._reconstruct, (np.ndarray, (10**12,), b"b")),  # type: ignore[attr-defined]
        _Reduce(codecs.encode, (b"x" * 10, "zlib_codec")),
        _Reduce(list, (10**9,)),
    ],
    ids=["bytes", "ndarray", "reconstruct", "codec", "list-of-int"],
)
def test_cifar_batch_with_absurd_sizes_is_refused_without_allocating(tmp_path: Path, payload: object) -> None:
    root = tmp_path / "data"
    _write_cifar(root)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": payload, "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="data_batch_3.*(refusing to load|not a readable CIFAR batch)") as info:
        load_torchvision("cifar10", root)
    assert isinstance(info.value, ValueError)  # the CLI's one-line errors


def test_cifar_labels_must_fit_the_images_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_cifar(root)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    _dump({"data": _cifar_images(0, 2), "labels": [0, 10**7]}, batch, "2")
    with pytest.raises(ValueError, match=r"labels range 0\.\.10000000 but there are 10 classes"):
        load_torchvision("cifar10", root)
    _dump({"data": _cifar_images(0, 2), "labels": [0]}, batch, "2")
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        load_torchvision("cifar10", root)


def _npz_with_header(path: Path, key_shapes: dict[str, tuple[tuple[int, ...], str]]) -> Path:
    """An npz whose members only *declare* their shape (the data is absent): what a bomb looks like
    before anything is read."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, (shape, descr) in key_shapes.items():
            buf = io.BytesIO()
            npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
            archive.writestr(f"{key}.npy", buf.getvalue() + b"\0" * 64)
    return path


def test_npz_declared_sizes_are_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"y_train": ((4,), "<i8"), "x_test": ((2, 8, 8, 3), "|u1"), "y_test": ((2,), "<i8")}
    path = _npz_with_header(tmp_path / "big.npz", {"x_train": ((10**7, 32, 32, 3), "|u1"), **small})
    with pytest.raises(ValueError, match="x_train: declares 30,720,000,000 bytes"):
        load_npz(path)
    path = _npz_with_header(tmp_path / "wide.npz", {"x_train": ((1, 10**6, 10**6, 3), "|u1"), **small})
    with pytest.raises(ValueError, match="1000000 pixels per side"):
        load_npz(path)
    path = _npz_with_header(tmp_path / "f64.npz", {"x_train": ((4, 8, 8, 3), "<f8"), **small})
    with pytest.raises(ValueError, match="dtype float64"):
        load_npz(path)
    monkeypatch.setattr(medic_viz.limits, "MAX_ARRAY_BYTES", 100)
    with pytest.raises(ValueError, match="x_train: declares 768 bytes"):
        load_npz(_save(tmp_path / "ok.npz"))


def test_npz_absurd_labels_and_empty_splits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="10000001 classes is more than medic_viz accepts"):
        load_npz(_save(tmp_path / "a.npz", y_train=np.array([0, 1, 2, 10**7])))
    with pytest.raises(ValueError, match="x_test holds no images"):
        load_npz(_save(tmp_path / "b.npz", x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros(0, np.int64)))
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="c.npz"):
        load_npz(tmp_path / "c.npz")
