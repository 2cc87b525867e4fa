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
  whatever code a tampered file names. This module reads them with :class:`CifarBatchUnpickler`,
  which only rebuilds numpy arrays and plain containers and refuses anything else.
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
``classes``) is the "bring your own arrays" route: :func:`load_npz` / :func:`save_npz`.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import os
import pickle
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib import format as npy_format
from PIL import Image

from medic_viz import limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays

__all__ = [
    "REAL_DATASETS",
    "CIFAR10_CLASSES",
    "GTSRB_CLASSES",
    "MNIST_CLASSES",
    "CIFAR10_AUGMENTATION",
    "GTSRB_AUGMENTATION",
    "MNIST_AUGMENTATION",
    "NPZ_AUGMENTATION",
    "NPZ_KEYS",
    "CifarBatchUnpickler",
    "UnsafeDataError",
    "load_cifar_batch",
    "read_idx",
    "load_torchvision",
    "load_npz",
    "save_npz",
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
#: Default for npz data of unknown kind: crops only; flips are unsafe unless known to keep labels.
NPZ_AUGMENTATION = Augmentation(crop_pad=4, hflip=False, rotate_deg=0.0)

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LAYOUT_HELP = (
    "expected arrays x_train (N, H, W, C) uint8 0-255, y_train (N,) integer class ids, "
    "x_test, y_test likewise, and optionally classes (K,) strings"
)

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_META = "batches.meta"
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_RESIZE_CHUNK = 2048


# -- safe unpickling of CIFAR batches ----------------------------------------------------------


class UnsafeDataError(pickle.UnpicklingError, ValueError):
    """A dataset file holds something other than plain data, or sizes no genuine file has.

    Both a :class:`pickle.UnpicklingError` (what a refused pickle always raised) and a
    :class:`ValueError` (what every other bad-input error in medic_viz is)."""


def _refuse(what: str) -> UnsafeDataError:
    return UnsafeDataError(
        f"refusing to load {what} from a CIFAR batch: a CIFAR-10 batch holds only numpy arrays and "
        "plain containers, so this file is not a genuine CIFAR batch (it may be corrupted or "
        "malicious); delete it and download the dataset again"
    )


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing dtypes that hold Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f"refusing to rebuild a numpy array of Python objects (dtype {dtype}); "
            "a CIFAR batch holds only numeric arrays"
        )
    return dtype


def _numpy_core_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1)."""
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy < 2
        mod = importlib.import_module(f"numpy.core.{module}")
    return getattr(mod, name)


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a CIFAR pickle: accepted only as the first argument of
    ``_reconstruct`` (which then builds an empty array), never called itself — calling the real
    class with a shape from the file would allocate whatever the file asks for."""

    def __repr__(self) -> str:  # pragma: no cover - diagnostics only
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()
#: ``_reconstruct`` only ever builds the empty placeholder that ``__setstate__`` then fills.
_MAX_RECONSTRUCT_ELEMENTS = 1


def _safe_reconstruct(reconstruct: Callable[..., Any]) -> Callable[..., Any]:
    def build(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise _refuse(f"an array of type {type(subtype).__name__}")
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) and 0 <= d for d in dims) or int(np.prod(dims, dtype=object)) > _MAX_RECONSTRUCT_ELEMENTS:
            raise _refuse(f"a placeholder array of shape {shape!r}")
        return reconstruct(np.ndarray, dims, dtype)

    return build


def _safe_encode(text: Any = "", encoding: str = "latin1", *rest: Any) -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes (``encode(text, "latin1")``), nothing else:
    other codecs (zlib, bz2, rot13, hex …) can transform data without bound."""
    if rest or not isinstance(text, str) or str(encoding).replace("-", "").replace("_", "").lower() != "latin1":
        raise _refuse("a _codecs.encode call other than text.encode('latin1')")
    return codecs.encode(text, "latin1")


def _safe_bytes(*args: Any) -> bytes:
    """``bytes()`` or ``bytes(<bytes-like>)`` only: ``bytes(10**15)`` would allocate a petabyte."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise _refuse(f"bytes({', '.join(type(a).__name__ for a in args)})")


def _safe_container(kind: type) -> Callable[..., Any]:
    """``dict``/``list``/``tuple``/``str`` of an existing object only (never of a number)."""

    def build(*args: Any) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, dict, str, bytes))):
            raise _refuse(f"{kind.__name__}({', '.join(type(a).__name__ for a in args)})")
        return kind(*args)

    build.__name__ = kind.__name__
    return build


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name (as written by Python 2 or 3, numpy 1 or 2),
    each wrapped so that no argument from the file can make it allocate without bound."""
    reconstruct = _safe_reconstruct(_numpy_core_attr("multiarray", "_reconstruct"))
    scalar = _numpy_core_attr("multiarray", "scalar")
    frombuffer = _numpy_core_attr("numeric", "_frombuffer")  # views its buffer; a bad shape raises
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _safe_dtype,
        # bytes pickled by Python 3 at protocol 2: _codecs.encode(text, "latin1")
        ("_codecs", "encode"): _safe_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for builtins in ("builtins", "__builtin__"):
        allowed[(builtins, "bytes")] = _safe_bytes
        for kind in (dict, list, tuple, str):
            allowed[(builtins, kind.__name__)] = _safe_container(kind)
    return allowed


class CifarBatchUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only what a CIFAR batch holds: numpy arrays, dicts, lists,
    strings and numbers. Any other global (``os.system``, ``builtins.eval``, an arbitrary
    class…) raises :class:`pickle.UnpicklingError` before anything is called."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if CifarBatchUnpickler._allowed is None:
            CifarBatchUnpickler._allowed = _allowed_globals()
        try:
            return CifarBatchUnpickler._allowed[(module, name)]
        except KeyError:
            raise _refuse(f"{module}.{name}") from None


def load_cifar_batch(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR pickle (a data batch or ``batches.meta``) safely.

    Returns the dict with ``str`` keys (Python-2 files are decoded as latin-1, as the CIFAR
    site recommends). Raises :class:`UnsafeDataError` (a :class:`pickle.UnpicklingError` and a
    ValueError) for anything but plain data, for a file larger than
    :data:`medic_viz.limits.MAX_PICKLE_BYTES`, and for a file that is not a readable pickle.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limits.MAX_PICKLE_BYTES:
            raise UnsafeDataError(
                f"{path}: {size:,} bytes is larger than any CIFAR batch (limit {limits.MAX_PICKLE_BYTES:,}); "
                "delete it and download the dataset again"
            )
        try:
            obj = CifarBatchUnpickler(f, encoding="latin1").load()
        except UnsafeDataError as exc:
            raise UnsafeDataError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError, RecursionError, UnicodeError, struct.error) as exc:
            raise UnsafeDataError(
                f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc}); delete it and download "
                "the dataset again"
            ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict in a CIFAR batch file, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


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


# -- npz arrays -----------------------------------------------------------------------------------


def _npz_images(x: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, str]:
    """Validate an image array from an npz file; return it with its layout ("NHWC" or "NCHW")."""
    if x.dtype != np.uint8:
        hint = " (for floats in [0, 1]: (x * 255).round().astype(np.uint8))" if x.dtype.kind == "f" else ""
        raise ValueError(
            f"{path}: {key} has dtype {x.dtype}, but images must be uint8 0-255: "
            f"convert to uint8 0-255{hint} and save again"
        )
    if x.ndim == 3:  # (N, H, W) grey
        return x, "NHWC"
    if x.ndim != 4:
        raise ValueError(f"{path}: {key} has shape {x.shape}; {_NPZ_LAYOUT_HELP}")
    last, second = x.shape[-1] in (1, 3), x.shape[1] in (1, 3)
    if last:  # NHWC, the documented layout (also wins when both readings fit)
        return x, "NHWC"
    if second:
        return x, "NCHW"
    raise ValueError(
        f"{path}: {key} has shape {x.shape}, which has no channel axis of size 1 or 3 at the end "
        f"(NHWC) or second (NCHW); {_NPZ_LAYOUT_HELP}"
    )


def _npz_headers(path: Path, keys: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each ``keys`` member of an npz archive, read from the ``.npy`` headers
    only (nothing is decompressed beyond them), after checking what they declare:

    * no Python objects (their dtype needs pickle, which is refused);
    * images uint8 at most :data:`~medic_viz.limits.MAX_IMAGE_SIDE` pixels per side, labels
      integers, class names strings;
    * every array at most :data:`~medic_viz.limits.MAX_ARRAY_BYTES`.
    """
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            for key in keys:
                if key not in members:
                    continue
                with archive.open(members[key]) as f:
                    version = npy_format.read_magic(f)
                    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                    shape, _fortran, dtype = reader(f)
                found[key] = (tuple(int(d) for d in shape), dtype)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable npz file ({exc}); {_NPZ_LAYOUT_HELP}") from None
    for key, (shape, dtype) in found.items():
        if dtype.hasobject:
            raise ValueError(
                f"{path}: {key!r} is stored as Python objects, which this loader will not unpickle; "
                "save plain arrays (uint8 images, integer labels, np.array(names, dtype=str))"
            )
        if key.startswith("x_"):
            if dtype != np.uint8:
                hint = " (for floats in [0, 1]: (x * 255).round().astype(np.uint8))" if dtype.kind == "f" else ""
                raise ValueError(
                    f"{path}: {key} has dtype {dtype}, but images must be uint8 0-255: "
                    f"convert to uint8 0-255{hint} and save again"
                )
            for side in shape[1:]:
                if side not in (1, 3):
                    limits.check_image_side(side, f"{path}: {key}")
        elif key.startswith("y_") and dtype.kind not in "iu":
            raise ValueError(f"{path}: {key} has dtype {dtype}; labels must be integer class ids 0..K-1")
        elif key == "classes":
            if dtype.kind not in "US":
                raise ValueError(f"{path}: classes has dtype {dtype}; class names must be strings")
            limits.check_classes(int(np.prod(shape, dtype=object)), f"{path}: classes")
        limits.check_array_bytes(int(np.prod(shape, dtype=object)) * dtype.itemsize, f"{path}: {key}")
    return found


def _npz_labels(y: np.ndarray, key: str, n_images: int, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: {key} has shape {y.shape}; labels must be 1-D class ids (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: {key} has dtype {y.dtype}; labels must be integer class ids 0..K-1")
    if len(y) != n_images:
        raise ValueError(
            f"{path}: {len(y)} labels in {key} but {n_images} images in x_{key[2:]}; they must match"
        )
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{path}: {key} holds negative labels; class ids must be 0..K-1")
    if len(y):
        limits.check_classes(int(y.max()) + 1, f"{path}: {key}")
    return y.astype(np.int64)


def load_npz(
    path: str | Path,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    augmentation: Augmentation | None = None,
) -> DatasetSplits:
    """Load train/test arrays from an ``.npz`` file (never unpickling anything).

    Layout: ``x_train``/``x_test`` uint8 ``(N, H, W, C)`` (``(N, C, H, W)`` accepted when
    unambiguous, ``(N, H, W)`` read as grey), ``y_train``/``y_test`` integer ``(N,)``, and an
    optional ``classes`` string array. Images keep their size. Class names come from
    ``classes=``, else the file, else GTSRB's names when there are 43 classes, else "0".."K-1".
    The augmentation is ``augmentation=``, else GTSRB's for 43-class GTSRB-like data, else
    :data:`NPZ_AUGMENTATION` (crops, no flips).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an npz archive (a zip of .npy arrays); {_NPZ_LAYOUT_HELP}")
    _npz_headers(path, (*NPZ_KEYS, "classes"))  # bounds and dtypes, before anything is read
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable npz file ({err}); {_NPZ_LAYOUT_HELP}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an npz archive; {_NPZ_LAYOUT_HELP}")
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: missing array(s) {', '.join(missing)} (found {', '.join(archive.files) or 'none'}); "
                f"{_NPZ_LAYOUT_HELP}"
            )

        def read(key: str) -> np.ndarray:
            try:
                return archive[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise ValueError(
                    f"{path}: could not read {key!r} ({err}); save plain arrays (uint8 images, integer "
                    "labels, np.array(names, dtype=str)) with numpy.savez"
                ) from None

        arrays = {k: read(k) for k in NPZ_KEYS}
        file_classes: tuple[str, ...] | None = None
        if "classes" in archive.files:
            file_classes = tuple(str(c) for c in read("classes").reshape(-1))

    x_train, layout_train = _npz_images(arrays["x_train"], "x_train", path)
    x_test, layout_test = _npz_images(arrays["x_test"], "x_test", path)
    for key in ("x_train", "x_test"):
        if len(arrays[key]) == 0:
            raise ValueError(f"{path}: {key} holds no images; both splits need at least one")
    y_train = _npz_labels(arrays["y_train"], "y_train", len(x_train), path)
    y_test = _npz_labels(arrays["y_test"], "y_test", len(x_test), path)

    n_classes = max([int(y.max()) + 1 for y in (y_train, y_test) if len(y)], default=0)
    if classes is not None:
        names_used = tuple(str(c) for c in classes)
    elif file_classes is not None:
        names_used = file_classes
    elif n_classes == len(GTSRB_CLASSES):
        names_used = GTSRB_CLASSES
    else:
        names_used = tuple(str(i) for i in range(n_classes))
    if len(names_used) < n_classes:
        raise ValueError(
            f"{path}: labels go up to {n_classes - 1} but only {len(names_used)} class names were given; "
            "pass one name per class"
        )
    looks_like_gtsrb = names_used == GTSRB_CLASSES
    if augmentation is None:
        augmentation = GTSRB_AUGMENTATION if looks_like_gtsrb else NPZ_AUGMENTATION
    if name is None:
        name = "gtsrb" if looks_like_gtsrb else path.stem

    train = ImageArrays.from_numpy(x_train, y_train, names_used, layout=layout_train, name=name,
                                   augmentation=augmentation)
    test = ImageArrays.from_numpy(x_test, y_test, names_used, layout=layout_test, name=name,
                                  augmentation=augmentation)
    if train.image_shape != test.image_shape:
        raise ValueError(
            f"{path}: train images are {train.image_shape} (C, H, W) but test images are "
            f"{test.image_shape}; both splits must share one image shape"
        )
    return DatasetSplits(train, test)


def save_npz(splits: DatasetSplits, path: str | Path) -> None:
    """Write ``splits`` to ``path`` in :func:`load_npz`'s layout: NHWC uint8 images, int64
    labels and the class names as a string array (uncompressed; no pickles)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)

    def nhwc(data: ImageArrays) -> np.ndarray:
        return np.ascontiguousarray(data.images.cpu().numpy().transpose(0, 2, 3, 1))

    with open(path, "wb") as f:  # a file object keeps the name exactly as given (no ".npz" added)
        np.savez(
            f,
            x_train=nhwc(splits.train),
            y_train=splits.train.labels.cpu().numpy().astype(np.int64),
            x_test=nhwc(splits.test),
            y_test=splits.test.labels.cpu().numpy().astype(np.int64),
            classes=np.array(splits.classes, dtype=str),
        )
