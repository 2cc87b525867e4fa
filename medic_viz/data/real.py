"""Real image datasets: CIFAR-10, GTSRB and MNIST from torchvision's on-disk layouts, and npz arrays.

Every loader returns a :class:`~medic_viz.data.arrays.DatasetSplits` of uint8 ``(N, C, H, W)``
images resized (antialiased) to ``size`` x ``size``, with the augmentation that suits the data:

========  ========  =====  ==========
dataset   crop_pad  hflip  rotate_deg
========  ========  =====  ==========
cifar10   4         yes    0
gtsrb     4         no     10          (a flipped sign can mean another sign)
mnist     2         no     0           (kept 1-channel; 28 -> 32 by default)
========  ========  =====  ==========

Where the files live is torchvision's convention, so a ``root`` already used with
``torchvision.datasets`` works as is and ``download=True`` fetches the same archives:

* CIFAR-10: ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``. These
  batches are Python pickles; torchvision opens them with plain ``pickle.load``, which runs
  whatever code a tampered file names. This module reads them with :class:`CifarBatchUnpickler`
  (:mod:`medic_viz.data.safe_pickle`), which only rebuilds numpy arrays and plain containers and
  refuses anything else.
* GTSRB: ``root/gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` (plus per-class ``GT-*.csv``) and
  ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm`` with labels in ``root/gtsrb/GT-final_test.csv``
  (``Filename;...;ClassId``), read through ``torchvision.datasets.GTSRB``.
* MNIST: ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, or the ``.gz`` copy
  the mirrors serve, read by this module's own idx reader. A ``.gz`` is decompressed in memory,
  never to disk, and no further than its header's declared size (at most
  :data:`medic_viz.limits.MAX_IDX_BYTES`); ``download=True`` fetches the ``.gz`` files into a
  temporary folder created here and renames them into ``raw/`` (a rename replaces a symlink
  in ``raw/`` rather than writing through it).

Reading never writes into a dataset folder and every size read from a file (array lengths,
image sides, class counts) is bounded (:mod:`medic_viz.limits`) before memory is allocated.

The npz format (``x_train``, ``y_train``, ``x_test``, ``y_test``; NHWC uint8; optional
``classes``) is the "bring your own arrays" route: :mod:`medic_viz.data.npz`.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medic_viz import limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays
from medic_viz.data.safe_pickle import CifarBatchUnpickler, UnsafeDataError, load_cifar_batch

__all__ = [
    "REAL_DATASETS",
    "CIFAR10_CLASSES",
    "GTSRB_CLASSES",
    "MNIST_CLASSES",
    "CIFAR10_AUGMENTATION",
    "GTSRB_AUGMENTATION",
    "MNIST_AUGMENTATION",
    "CifarBatchUnpickler",
    "UnsafeDataError",
    "load_cifar_batch",
    "read_idx",
    "load_torchvision",
]

REAL_DATASETS: tuple[str, ...] = ("cifar10", "gtsrb", "mnist")

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: The 43 GTSRB classes in class-id order (the benchmark's official sign names).
GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

CIFAR10_AUGMENTATION = Augmentation(crop_pad=4, hflip=True, rotate_deg=0.0)
GTSRB_AUGMENTATION = Augmentation(crop_pad=4, hflip=False, rotate_deg=10.0)
MNIST_AUGMENTATION = Augmentation(crop_pad=2, hflip=False, rotate_deg=0.0)
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_META = "batches.meta"
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_RESIZE_CHUNK = 2048


# -- resizing --------------------------------------------------------------------------------------


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 ``(N, C, H, W)`` to ``(N, C, size, size)``."""
    if tuple(images.shape[-2:]) == (size, size):
        return images.contiguous()
    n, c = images.shape[0], images.shape[1]
    limits.check_dataset_bytes(n * c * size * size, f"{n:,} images resized to {size}x{size} pixels")
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _pil_to_chw(image: Image.Image, size: int) -> np.ndarray:
    """A PIL RGB image resized (antialiased bilinear) to ``size`` x ``size``, as uint8 ``(3, size, size)``."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


# -- torchvision datasets -------------------------------------------------------------------------


def _not_found(name: str, looked_for: Path, root: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} not found: looked for {looked_for} (root={root}). Pass download=True to fetch it "
        f"there, or root= the folder that holds torchvision's {name} files"
    )


def _load_cifar10(root: Path, download: bool, size: int) -> DatasetSplits:
    base = root / _CIFAR_DIR
    needed = [base / f for f in (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH)]
    if not all(p.is_file() for p in needed):
        if not download:
            missing = next(p for p in needed if not p.is_file())
            raise _not_found("CIFAR-10", missing, root)
        # torchvision's URL and checksum; its CIFAR10 class is not used to *read* the batches
        # because it unpickles them with plain pickle.load.
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)

    meta_path = base / _CIFAR_META
    classes = CIFAR10_CLASSES
    if meta_path.is_file():
        names = load_cifar_batch(meta_path).get("label_names")
        if names is not None:
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
                raise ValueError(f"{meta_path}: label_names must be a list of strings; download the dataset again")
            limits.check_classes(len(names), str(meta_path))
            classes = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)

    def read(files: Sequence[str]) -> ImageArrays:
        data, labels = [], []
        for fname in files:
            batch = load_cifar_batch(base / fname)
            x = batch.get("data")
            y = batch.get("labels", batch.get("fine_labels"))
            if (not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32
                    or not isinstance(y, (list, tuple, np.ndarray))):
                got = f"data {x.dtype} {x.shape}" if isinstance(x, np.ndarray) else f"data {type(x).__name__}"
                raise ValueError(
                    f"{base / fname}: not a CIFAR-10 batch (expected 'data' uint8 (N, 3072) and "
                    f"'labels'; got {got}); download the dataset again"
                )
            try:
                y = np.asarray(y, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"{base / fname}: labels are not integers; download the dataset again") from None
            if len(y) != len(x):
                raise ValueError(f"{base / fname}: {len(y)} labels for {len(x)} images; download the dataset again")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
                raise ValueError(
                    f"{base / fname}: labels range {int(y.min())}..{int(y.max())} but there are {len(classes)} "
                    "classes; download the dataset again"
                )
            data.append(x)
            labels.append(y)
        images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
        return ImageArrays(
            _resize_uint8(images, size),
            torch.from_numpy(np.concatenate(labels)),
            classes,
            name="cifar10",
            augmentation=CIFAR10_AUGMENTATION,
        )

    return DatasetSplits(read(_CIFAR_TRAIN_BATCHES), read((_CIFAR_TEST_BATCH,)))


def _load_gtsrb(root: Path, download: bool, size: int) -> DatasetSplits:
    from torchvision.datasets import GTSRB

    base = root / "gtsrb"
    train_dir = base / "GTSRB" / "Training"
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_csv = base / "GT-final_test.csv"
    if not download:
        for p in (train_dir, test_dir):
            if not p.is_dir():
                raise _not_found("GTSRB", p, root)
        if not test_csv.is_file():
            raise _not_found("GTSRB test labels", test_csv, root)

    def read(split: str) -> ImageArrays:
        ds = GTSRB(str(root), split=split, download=download)
        if split == "train":
            # torchvision numbers classes by the sorted folder names; that is the class id only
            # when all 43 folders 00000..00042 are there.
            folders = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
            expected = [f"{i:05d}" for i in range(len(GTSRB_CLASSES))]
            if folders != expected:
                absent = sorted(set(expected) - set(folders))
                extra = sorted(set(folders) - set(expected))
                raise ValueError(
                    f"GTSRB training folder {train_dir} must hold the 43 class folders 00000..00042; "
                    f"missing {absent[:5]}{'...' if len(absent) > 5 else ''}, unexpected {extra[:5]}. "
                    "The copy is incomplete: download it again (download=True into an empty root)"
                )
        limits.check_dataset_bytes(len(ds) * 3 * size * size, f"GTSRB {split}: {len(ds):,} images of {size}x{size} pixels")
        images = np.empty((len(ds), 3, size, size), dtype=np.uint8)
        labels = np.empty(len(ds), dtype=np.int64)
        for i in range(len(ds)):
            image, label = ds[i]
            images[i] = _pil_to_chw(image, size)
            labels[i] = label
        return ImageArrays(
            torch.from_numpy(images), torch.from_numpy(labels), GTSRB_CLASSES,
            name="gtsrb", augmentation=GTSRB_AUGMENTATION,
        )

    return DatasetSplits(read("train"), read("test"))


_IDX_UBYTE = 0x08


def _idx_ndim(magic: bytes, source: str) -> int:
    """The number of dimensions from an idx magic number (``00 00 08 ndim``: unsigned bytes)."""
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{source}: not an idx file (bad magic number); download the dataset again")
    if magic[2] != _IDX_UBYTE:
        raise ValueError(f"{source}: idx data type 0x{magic[2]:02x} is not unsigned bytes (0x08), as MNIST's are")
    if not 1 <= magic[3] <= 3:
        raise ValueError(f"{source}: idx file with {magic[3]} dimensions; MNIST files have 1 (labels) or 3 (images)")
    return magic[3]


def read_idx(path: str | Path, *, max_bytes: int | None = None) -> np.ndarray:
    """Read an idx file (MNIST's format), plain or gzip-compressed (``.gz``), into memory.

    Nothing is written to disk. The header's dimensions are checked first: the data may hold at
    most ``max_bytes`` (default :data:`medic_viz.limits.MAX_IDX_BYTES`), and a ``.gz`` is
    decompressed no further than the declared size plus one byte (so a decompression bomb costs
    nothing). Returns a uint8 array of the declared shape; raises ValueError for anything else
    (wrong magic, truncated or over-long data, a corrupt gzip stream).
    """
    path = Path(path)
    limit = limits.MAX_IDX_BYTES if max_bytes is None else int(max_bytes)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            ndim = _idx_ndim(f.read(4), str(path))
            head = f.read(4 * ndim)
            if len(head) != 4 * ndim:
                raise ValueError(f"{path}: truncated idx header; download the dataset again")
            dims = struct.unpack(f">{ndim}I", head)
            count = int(np.prod(dims, dtype=object))
            limits.check_array_bytes(count, str(path), limit)
            data = f.read(count)
            if len(data) != count:
                raise ValueError(
                    f"{path}: holds {len(data):,} data bytes but its header declares {count:,} "
                    f"(shape {dims}); the file is truncated: download the dataset again"
                )
            if f.read(1):
                raise ValueError(
                    f"{path}: holds more data than its header declares ({count:,} bytes, shape {dims}); "
                    "the file is corrupted or hostile: download the dataset again"
                )
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: could not read the idx file ({exc}); download the dataset again") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _mnist_file(raw: Path, fname: str) -> Path | None:
    """The plain idx file if there is one, else its ``.gz``, else None (reads only)."""
    for candidate in (raw / fname, raw / f"{fname}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download_mnist(raw: Path) -> None:
    """Fetch MNIST's ``.gz`` files (checked against torchvision's MD5 sums) into ``raw``.

    Each file is downloaded into a temporary folder created here and then renamed into
    ``raw/``: nothing is ever written through a pre-existing path there."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw, prefix=".download-") as tmp:
        for filename, md5 in MNIST.resources:
            if (raw / filename).is_file() or (raw / filename.removesuffix(".gz")).is_file():
                continue
            errors = []
            for mirror in MNIST.mirrors:
                try:
                    download_url(f"{mirror}{filename}", tmp, filename=filename, md5=md5)
                    break
                except (OSError, RuntimeError) as exc:  # URLError is an OSError
                    errors.append(f"{mirror}: {exc}")
            else:
                raise OSError(f"could not download MNIST's {filename}: {'; '.join(errors)}")
            os.replace(Path(tmp) / filename, raw / filename)


def _load_mnist(root: Path, download: bool, size: int) -> DatasetSplits:
    raw = root / "MNIST" / "raw"
    if download and any(_mnist_file(raw, f) is None for files in _MNIST_FILES.values() for f in files):
        _download_mnist(raw)

    def read(split: str) -> ImageArrays:
        paths = []
        for fname in _MNIST_FILES[split]:
            found = _mnist_file(raw, fname)
            if found is None:
                raise _not_found("MNIST", raw / fname, root)
            paths.append(found)
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(
                f"MNIST {split} files under {raw}: expected images (N, H, W) and labels (N,), got shapes "
                f"{images.shape} and {labels.shape}; download the dataset again"
            )
        limits.check_image_side(max(images.shape[1:]), str(paths[0]))
        if len(images) != len(labels):
            raise ValueError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels; they must match")
        if len(labels) and int(labels.max()) >= len(MNIST_CLASSES):
            raise ValueError(f"{paths[1]}: label {int(labels.max())} is not a digit 0-9; download the dataset again")
        tensor = torch.from_numpy(images.copy())[:, None]  # (N, 1, H, W)
        return ImageArrays(
            _resize_uint8(tensor, size), torch.from_numpy(labels.astype(np.int64)), MNIST_CLASSES,
            name="mnist", augmentation=MNIST_AUGMENTATION,
        )

    return DatasetSplits(read("train"), read("test"))


_LOADERS: dict[str, Callable[[Path, bool, int], DatasetSplits]] = {
    "cifar10": _load_cifar10,
    "gtsrb": _load_gtsrb,
    "mnist": _load_mnist,
}


def load_torchvision(name: str, root: str | Path, *, download: bool = False, size: int = 32) -> DatasetSplits:
    """Load CIFAR-10, GTSRB or MNIST from ``root`` (torchvision's layout) as uint8 splits.

    ``name``: one of :data:`REAL_DATASETS` (case-insensitive). ``download``: fetch the official
    archives into ``root`` when the files are absent (needs internet). ``size``: images are
    resized (antialiased bilinear) to ``size`` x ``size`` pixels; MNIST stays 1-channel.
    Raises ``FileNotFoundError`` when the files are absent and ``download`` is False.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(REAL_DATASETS)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels per side), got {size!r}")
    limits.check_image_side(int(size), "size")
    return _LOADERS[key](Path(root).expanduser(), bool(download), int(size))
