"""Bring-your-own arrays: a dataset as one ``.npz`` archive (``x_train``, ``y_train``,
``x_test``, ``y_test``; NHWC uint8 images, integer labels; optional ``classes`` strings).

:func:`load_npz` reads no pickles (``allow_pickle=False``), checks every array's header —
shape, dtype, size bounded by :mod:`medic_viz.limits` — before it reads the array, and says in
one line what layout it expected when the file does not match; :func:`save_npz` writes the
same layout.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.lib import format as npy_format

from medic_viz import limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays
from medic_viz.data.real import GTSRB_AUGMENTATION, GTSRB_CLASSES

__all__ = ["NPZ_AUGMENTATION", "NPZ_KEYS", "load_npz", "save_npz"]

#: Default for npz data of unknown kind: crops only; flips are unsafe unless known to keep labels.
NPZ_AUGMENTATION = Augmentation(crop_pad=4, hflip=False, rotate_deg=0.0)

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LAYOUT_HELP = (
    "expected arrays x_train (N, H, W, C) uint8 0-255, y_train (N,) integer class ids, "
    "x_test, y_test likewise, and optionally classes (K,) strings"
)


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
