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

from typing import Sequence

__all__ = [
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "MAX_ARRAY_BYTES",
    "MAX_IDX_BYTES",
    "MAX_PICKLE_BYTES",
    "MAX_CARD_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TENSOR_BYTES",
    "MAX_CHECKPOINT_BYTES",
    "MAX_DATASET_BYTES",
    "MAX_TRIGGER_SIZE",
    "MAX_QUOTED_CHARS",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_LISTED_NAMES",
    "check_classes",
    "check_image_side",
    "check_array_bytes",
    "check_tensor_bytes",
    "check_dataset_bytes",
    "check_trigger_size",
    "quoted",
    "shortened",
    "listed",
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
#: Largest single tensor in a checkpoint, by logical size (elements x element size): 2 GiB
#: (ImageNet-21k's classifier of a ViT-H is 42 MB).
MAX_TENSOR_BYTES: int = 2 * 2**30
#: Largest sum of the logical sizes of a checkpoint's tensors (8 GiB: 2 G float32 weights).
MAX_CHECKPOINT_BYTES: int = 8 * 2**30
#: Largest dataset generated or resized in memory (images, and the synthetic signs' masks), in
#: bytes, computed before anything is allocated (8 GiB; CIFAR-10's training set is 150 MB).
MAX_DATASET_BYTES: int = 8 * 2**30
#: Largest trigger parameter that sizes an allocation, in pixels or grid cells (WaNet's control
#: grid ``k``, a blend pattern's or reflection scene's ``grid``/``cells``, a BadNet ``size``,
#: a blur ``sigma``): a trigger never needs more than the largest image side.
MAX_TRIGGER_SIZE: int = MAX_IMAGE_SIDE
#: Longest name or value quoted in an error message, in characters (longer ones are cut, "…").
MAX_QUOTED_CHARS: int = 80
#: Most names (keys, classes) one error message lists; "… and N more" stands for the rest.
MAX_LISTED_NAMES: int = 10
#: Largest single image file (or image bytes) decoded for a user: a trigger image, a picked
#: input (32 MiB; a 4096 x 4096 RGB PNG is at most 48 MiB raw but compresses well below this).
MAX_IMAGE_FILE_BYTES: int = 32 * 2**20


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


def check_tensor_bytes(nbytes: int, total: int, where: str, name: str) -> int:
    """``nbytes`` if one tensor of that many bytes, bringing a checkpoint to ``total`` bytes, is
    within :data:`MAX_TENSOR_BYTES` and :data:`MAX_CHECKPOINT_BYTES`, else ValueError."""
    if nbytes > MAX_TENSOR_BYTES:
        raise ValueError(
            f"{where}: tensor {quoted(name)} declares {nbytes:,} bytes, more than the {MAX_TENSOR_BYTES:,} "
            "medic_viz accepts for one tensor (limits.MAX_TENSOR_BYTES); the file is corrupted or hostile "
            "(raise medic_viz.limits if it is genuine)"
        )
    if total > MAX_CHECKPOINT_BYTES:
        raise ValueError(
            f"{where}: the tensors declare {total:,} bytes or more, more than the {MAX_CHECKPOINT_BYTES:,} "
            "medic_viz accepts for one checkpoint (limits.MAX_CHECKPOINT_BYTES); the file is corrupted or "
            "hostile (raise medic_viz.limits if it is genuine)"
        )
    return nbytes


def check_dataset_bytes(nbytes: int, where: str) -> int:
    """``nbytes`` if a dataset of that many bytes is within :data:`MAX_DATASET_BYTES`, else ValueError."""
    if nbytes > MAX_DATASET_BYTES:
        raise ValueError(
            f"{where}: the images would take {nbytes:,} bytes of memory, more than the {MAX_DATASET_BYTES:,} "
            "medic_viz holds for one dataset (limits.MAX_DATASET_BYTES); use a smaller image size or fewer "
            "images (or raise medic_viz.limits if the machine has the memory)"
        )
    return nbytes


def check_trigger_size(value: float, what: str) -> float:
    """``value`` if a trigger parameter that sizes an allocation is within :data:`MAX_TRIGGER_SIZE`."""
    if value > MAX_TRIGGER_SIZE:
        raise ValueError(
            f"{what} must be at most {MAX_TRIGGER_SIZE} (the largest image side medic_viz handles), got "
            f"{quoted(value)}; a trigger this large would only allocate memory"
        )
    return value


def quoted(value: object, limit: int | None = None) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` (default :data:`MAX_QUOTED_CHARS`) characters."""
    limit = MAX_QUOTED_CHARS if limit is None else limit
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def shortened(text: str, limit: int | None = None) -> str:
    """``text`` cut to ``limit`` (default :data:`MAX_QUOTED_CHARS`) characters, "…" marking a cut."""
    limit = MAX_QUOTED_CHARS if limit is None else limit
    return text if len(text) <= limit else text[:limit] + "…"


def listed(names: Sequence[str]) -> str:
    """The first :data:`MAX_LISTED_NAMES` of ``names``, each :func:`shortened`, comma-separated,
    then "… and N more" for the rest."""
    shown = ", ".join(shortened(k) for k in names[:MAX_LISTED_NAMES])
    more = len(names) - MAX_LISTED_NAMES
    return shown + (f", … and {more} more" if more > 0 else "")
