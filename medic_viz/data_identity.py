"""Which data a model was made on, said so that it means the same thing anywhere: a named dataset
(``signs``, ``cifar10``, ``gtsrb``, ``mnist``) by its name, an ``.npz`` file by its resolved path
and its SHA-256 — never by a relative path that would be resolved against whatever folder a later
command runs in.

:func:`dataset_record` describes the data a command used (for a model card and ``result.json``);
:func:`card_dataset` finds the data a model card names, refusing a missing or changed file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["NAMED_DATASETS", "file_sha256", "is_named_dataset", "dataset_record", "card_dataset"]

#: Datasets known by name (the embedded signs and the torchvision ones): they keep their name.
NAMED_DATASETS: tuple[str, ...] = ("signs", "cifar10", "gtsrb", "mnist")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_named_dataset(name: str | Path) -> bool:
    """Whether ``name`` is a dataset known by name rather than a file."""
    return str(name).strip().lower() in NAMED_DATASETS


def dataset_record(name: str | Path) -> dict[str, Any]:
    """``{"dataset": name, "dataset_sha256": None}`` for a named dataset, ``{"dataset": resolved
    path, "dataset_sha256": hex}`` for a file (what a card and ``result.json`` record)."""
    if is_named_dataset(name) or not Path(str(name)).expanduser().is_file():
        return {"dataset": str(name), "dataset_sha256": None}
    path = Path(str(name)).expanduser().resolve()
    return {"dataset": str(path), "dataset_sha256": file_sha256(path)}


def card_dataset(card: Any, folder: str | Path, where: str = "") -> str | None:
    """The dataset a model card (:class:`~medic_viz.cards.ModelCard`) in ``folder`` names, ready to
    load: a name as it is; a file path resolved (a relative one, from cards that stored one,
    against ``folder``). Raises ValueError (one line, prefixed with ``where``) when the file is
    not there or its SHA-256 is not the card's ``dataset_sha256``. None: the card names none."""
    name = card.dataset
    if not name:
        return None
    if is_named_dataset(name):
        return str(name)
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = Path(folder) / path
    hint = "give --dataset PATH (dataset= in Python) pointing at the file the model was made on"
    if not path.is_file():
        looked = "" if str(path) == str(name) else f" (looked for {path})"
        raise ValueError(f"{where}card.json names the dataset file {name}{looked}, which is not there; {hint}")
    expected = getattr(card, "dataset_sha256", None)
    if expected is not None and file_sha256(path) != expected:
        raise ValueError(f"{where}card.json names the dataset file {path}, but its SHA-256 is not the one the card "
                         f"records ({expected[:12]}…): the file changed or is another one; {hint}")
    return str(path.resolve())
