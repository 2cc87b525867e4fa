"""Upper bounds on every size medic_viz reads from a file before it allocates anything.

Datasets, checkpoints and model cards may come from elsewhere (see the README's "Security
and failure model"). A number read from such a file — a class count, an image side, an array
length, a card's nesting depth — is checked against these bounds *before* memory is
allocated for it, so a hostile or corrupted file gives a clear error instead of a
multi-gigabyte allocation, a decompression bomb or a ``RecursionError``.

The bounds are far above every dataset and model the project knows (CIFAR-10 train: 150 MB,
10 classes, 32 px; ImageNet-21k: 21,841 classes); a program with larger data can raise them
by assigning to the module attributes (e.g. ``medic_viz.limits.MAX_ARRAY_BYTES = 2**34``).
"""

from __future__ import annotations

__all__ = [
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "MAX_ARRAY_BYTES",
    "MAX_IDX_BYTES",
    "MAX_PICKLE_BYTES",
    "MAX_CARD_BYTES",
    "MAX_JSON_DEPTH",
    "check_classes",
    "check_image_side",
    "check_array_bytes",
]

#: Most classes a dataset or model may have (labels, ``num_classes``, class-name lists).
MAX_CLASSES: int = 100_000
#: Largest image height/width, in pixels (data files, ``input_size`` in cards, ``size=``).
MAX_IMAGE_SIDE: int = 4096
#: Largest single array read from a data file (an npz member), in bytes (8 GiB).
MAX_ARRAY_BYTES: int = 8 * 2**30
#: Largest decompressed MNIST idx file, in bytes (MNIST's training images are 47 MB).
MAX_IDX_BYTES: int = 256 * 2**20
#: Largest CIFAR batch pickle, in bytes (CIFAR-10's are 31 MB, CIFAR-100's training file 155 MB).
MAX_PICKLE_BYTES: int = 1024 * 2**20
#: Largest ``card.json``, in bytes.
MAX_CARD_BYTES: int = 16 * 2**20
#: Deepest nesting of lists/dicts in a ``card.json``.
MAX_JSON_DEPTH: int = 32


def check_classes(n: int, where: str) -> int:
    """``n`` if it is a class count within :data:`MAX_CLASSES`, else ValueError naming ``where``."""
    if n > MAX_CLASSES:
        raise ValueError(
            f"{where}: {n} classes is more than medic_viz accepts ({MAX_CLASSES}); the labels or "
            "class count are probably corrupted (labels must be class ids 0..K-1)"
        )
    return n


def check_image_side(n: int, where: str) -> int:
    """``n`` if it is an image side within :data:`MAX_IMAGE_SIDE` pixels, else ValueError."""
    if n > MAX_IMAGE_SIDE:
        raise ValueError(
            f"{where}: images of {n} pixels per side are larger than medic_viz accepts "
            f"({MAX_IMAGE_SIDE}); the file is probably corrupted"
        )
    return n


def check_array_bytes(n: int, where: str, limit: int | None = None) -> int:
    """``n`` if an array of ``n`` bytes is within ``limit`` (default :data:`MAX_ARRAY_BYTES`)."""
    limit = MAX_ARRAY_BYTES if limit is None else limit
    if n > limit:
        raise ValueError(
            f"{where}: declares {n:,} bytes of data, more than the {limit:,} medic_viz reads from one "
            "file; the file is corrupted or hostile (raise medic_viz.limits if it is genuine)"
        )
    return n
