"""``experiments.folders.check_teacher_folder``: a folder teacher's card is checked against
the data before any cell runs — including a composite attack's (it used to be refused)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medic_viz.cards import ModelCard
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.experiments.folders import check_teacher_folder
from medic_viz.io import save_model
from medic_viz.models.zoo import build_model


def _splits(classes: int = 4) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    names = tuple(f"c{i}" for i in range(classes))

    def part(n: int) -> ImageArrays:
        return ImageArrays((torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.arange(n) % classes,
                           names, name="tiny")

    return DatasetSplits(part(16), part(8))


def _folder(tmp_path, attack: dict, target: int = 1):
    torch.manual_seed(0)
    model = build_model("small_cnn", 4)
    card = ModelCard(architecture="small_cnn", num_classes=4, input_size=32, in_channels=3, arch_kwargs={},
                     classes=[f"c{i}" for i in range(4)], normalize=None, dataset="tiny.npz", attack=attack,
                     target_class=target, poison_rate=0.1, metrics={}, history=[], notes="")
    folder = tmp_path / attack["name"]
    save_model(model, folder, card)
    return SimpleNamespace(teacher_dir=str(folder), trust_arch_code=False, dataset="tiny.npz")


def test_a_composite_teacher_folder_is_accepted(tmp_path):
    cell = _folder(tmp_path, {"name": "composite", "class_a": 0, "class_b": 2, "split": "vertical"})
    check_teacher_folder(cell, _splits())  # raised "cannot be applied" before: a composite attack is not callable


def test_a_composite_whose_class_is_missing_from_the_data_is_refused_in_one_line(tmp_path):
    cell = _folder(tmp_path, {"name": "composite", "class_a": 0, "class_b": 3, "split": "vertical"})
    splits = _splits()
    keep = splits.test.labels != 3
    splits = DatasetSplits(splits.train, ImageArrays(splits.test.images[keep], splits.test.labels[keep],
                                                     splits.test.classes, name="tiny"))
    with pytest.raises(ValueError, match=r"cannot be applied to tiny\.npz's images .*class 3") as info:
        check_teacher_folder(cell, splits)
    assert "\n" not in str(info.value)


def test_a_patch_teacher_folder_is_accepted_and_a_broken_attack_refused(tmp_path):
    check_teacher_folder(_folder(tmp_path, {"name": "badnet", "size": 3}), _splits())
    with pytest.raises(ValueError, match="fix card.json's attack"):
        check_teacher_folder(_folder(tmp_path, {"name": "badnet", "size": 99}), _splits())
