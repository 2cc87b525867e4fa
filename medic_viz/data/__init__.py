"""Datasets: the embedded synthetic traffic signs (default), CIFAR-10 / GTSRB / MNIST through
torchvision, and npz arrays — all as in-memory :class:`ImageArrays`."""

from __future__ import annotations

import functools
import numbers
from pathlib import Path

from medic_viz import limits
from medic_viz.data.arrays import (
    NO_AUGMENTATION,
    Augmentation,
    DatasetSplits,
    ImageArrays,
    clean_subset,
    iterate_batches,
)
from medic_viz.data.npz import load_npz
from medic_viz.data.real import REAL_DATASETS, load_torchvision
from medic_viz.data.synthetic import make_synthetic_signs

__all__ = [
    "Augmentation",
    "NO_AUGMENTATION",
    "ImageArrays",
    "DatasetSplits",
    "iterate_batches",
    "clean_subset",
    "load_dataset",
    "DEFAULT_DATASET",
    "dataset_names",
]

#: The embedded dataset every entry point uses when none is named.
DEFAULT_DATASET = "signs"


def dataset_names() -> list[str]:
    """Names :func:`load_dataset` accepts (besides a path to an ``.npz`` file)."""
    return [DEFAULT_DATASET, *REAL_DATASETS]


@functools.lru_cache(maxsize=4)
def _signs(size: int, seed: int, n_train: int, n_test: int) -> DatasetSplits:
    return make_synthetic_signs(n_train, n_test, size=size, seed=seed)


def load_dataset(
    name: str | Path = DEFAULT_DATASET,
    *,
    root: str | Path | None = None,
    download: bool = False,
    size: int = 32,
    seed: int = 0,
    n_train: int = 12000,
    n_test: int = 3000,
) -> DatasetSplits:
    """Load a dataset by name or path.

    - ``"signs"`` (default): synthetic traffic signs generated from ``seed`` at ``size`` pixels,
      ``n_train``/``n_test`` images (no download; cached per process, treat as read-only).
    - ``"cifar10"``, ``"gtsrb"``, ``"mnist"``: torchvision datasets under ``root``
      (``download=True`` fetches them).
    - a path to an ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``
      (NHWC uint8), e.g. ``../shared/data/gtsrb32.npz``.
    """
    text = str(name)
    key = text.strip().lower()
    if key == DEFAULT_DATASET:
        for what, value in (("size", size), ("seed", seed), ("n_train", n_train), ("n_test", n_test)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{what} must be an int, got {type(value).__name__}")
        limits.check_image_side(int(size), "signs")
        if n_train + n_test > 10_000_000:
            raise ValueError(f"n_train + n_test = {n_train + n_test:,} synthetic images is more than this generator "
                             "makes (10,000,000)")
        return _signs(int(size), int(seed), int(n_train), int(n_test))
    if key in REAL_DATASETS:
        if root is None:
            raise ValueError(
                f"dataset {key!r} needs a data root: pass root= (CLI: --data-root DIR) pointing at "
                "torchvision's folder for it, and download=True (--download) to fetch it there"
            )
        return load_torchvision(key, root, download=download, size=size)
    if key.endswith(".npz") or Path(text).is_file():
        return load_npz(text)
    raise ValueError(
        f"unknown dataset {text!r}; use one of {dataset_names()} or a path to an .npz file "
        "(x_train, y_train, x_test, y_test as NHWC uint8)"
    )
