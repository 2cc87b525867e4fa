"""Teachers given as model folders instead of trained by the grid: a model made elsewhere and
imported (``medic-viz import``), or one saved by ``medic-viz attack``, compared under the same
defences as the grid's own teachers (``medic-viz compare --teacher DIR``).

:func:`read_teacher_folder` reads what a grid needs to know up front (the card, and a digest of
the weights that keys the teacher: a folder whose weights change is a new teacher);
:func:`check_teacher_folder` checks one against the cell's data before anything runs;
:func:`medic_viz.experiments.cells.folder_teacher` measures such a model on a cell's test set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medic_viz.attacks.registry import image_trigger
from medic_viz.data_identity import file_sha256
from medic_viz.deprecation import moved_names
from medic_viz.importer import check_model_folder, load_model_folder
from medic_viz.io import CARD_FILENAME, MODEL_FILENAME, read_card
from medic_viz.pipeline import trigger_of

__all__ = ["TeacherFolder", "read_teacher_folder", "check_teacher_folder", "file_sha256",
           "card_digest"]


def card_digest(card_path: str | Path) -> str:
    """Hex SHA-256 of a ``card.json``'s canonical JSON (keys sorted, no spaces): the same for any
    layout of the same card, new for any edit of its content. Read after the card was checked."""
    data = json.loads(Path(card_path).read_text())
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class TeacherFolder:
    """A model folder as a grid's teacher: ``path`` (absolute), ``label`` (its name, the grid's
    "attack" column), ``card`` (:class:`~medic_viz.cards.ModelCard`), ``sha256`` of its weights and
    ``card_sha256`` of its card (:func:`card_digest`)."""

    path: str
    label: str
    card: Any
    sha256: str
    card_sha256: str


def read_teacher_folder(folder: str | Path) -> TeacherFolder:
    """Read a model folder (``model.safetensors`` + ``card.json``) for a grid. Raises ValueError
    with one line saying what is missing; nothing is imported or built here."""
    where = f"--teacher {folder}"
    try:
        path = check_model_folder(folder)
    except ValueError as exc:
        raise ValueError(f"--teacher {exc}") from None
    try:
        card = read_card(path / CARD_FILENAME)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    resolved = path.resolve()
    return TeacherFolder(str(resolved), resolved.name, card, file_sha256(resolved / MODEL_FILENAME),
                         card_digest(resolved / CARD_FILENAME))


def check_teacher_folder(cell: Any, splits: Any) -> None:
    """Refuse a folder cell (:class:`~medic_viz.experiments.grid.CellSpec` with ``teacher_dir``)
    whose model does not fit its data: classes, channels and image size against the card,
    the card's target class, its trigger (applied to two test images), and the weights (loaded,
    strictly). Raises ValueError naming the folder."""
    where = f"--teacher {cell.teacher_dir}"
    _model, card = load_model_folder(cell.teacher_dir, trust_arch_code=cell.trust_arch_code)
    channels, height, width = splits.image_shape
    if card.num_classes != splits.num_classes or card.in_channels != channels:
        raise ValueError(f"{where}: the model has {card.num_classes} classes and {card.in_channels}-channel inputs, "
                         f"{cell.dataset} has {splits.num_classes} classes and {channels} channels; compare it on "
                         "the dataset it was trained on (--dataset)")
    if (height, width) != (card.input_size, card.input_size):
        raise ValueError(f"{where}: the model takes {card.input_size}x{card.input_size} images, {cell.dataset} holds "
                         f"{height}x{width}; compare it on data of its size")
    if card.target_class is not None and not 0 <= card.target_class < splits.num_classes:
        raise ValueError(f"{where}: its card's target class {card.target_class} is not a class of {cell.dataset}")
    try:
        attack, target = trigger_of(card)
        if attack is not None:  # a composite attack is bound to a test image of its class B first
            image_trigger(attack, splits.test, target)(splits.test.floats(torch.arange(min(2, len(splits.test)))))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{where}: its card's attack cannot be applied to {cell.dataset}'s images "
                         f"({' '.join(str(exc).split())}); fix card.json's attack") from None


#: ``folder_teacher`` moved to :mod:`medic_viz.experiments.cells` (it computes a cell's teacher).
__getattr__ = moved_names(__name__)
