"""remove_backdoor refuses what would give a silently wrong or broken result (issue 13, classes
4 and 5): a non-finite teacher or repaired model, images of another size, an empty test set."""

from __future__ import annotations

import pytest
import torch

from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.defenses.registry import make_defense
from medic_viz.finite import NonFiniteModelError
from medic_viz.pipeline import remove_backdoor, trigger_of
from medic_viz.pretrained import load_demo_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> DatasetSplits:
    return load_dataset("signs", n_train=240, n_test=60)


def _run(teacher, splits, card, **options):
    trigger, target = trigger_of(card)
    defense = make_defense(options.pop("method", "finetune"), device="cpu", progress=False, epochs=1, **options)
    return remove_backdoor(teacher, splits, defense, trigger=trigger, target=target, fraction=0.5, device="cpu")


def test_a_diverged_defence_is_an_error_not_a_result(tiny):
    # lr 1e5: every output NaN; the old code printed ASR 0.00 % (argmax of NaN is class 0) and exited 0
    teacher, card = load_demo_model("badnet")
    with pytest.raises(NonFiniteModelError, match="NaN or infinite"):
        _run(teacher, tiny, card, lr=1e5)


def test_a_teacher_with_nan_weights_is_refused_before_training(tiny):
    teacher, card = load_demo_model("badnet")
    with torch.no_grad():
        next(teacher.parameters())[0].fill_(float("nan"))
    with pytest.raises(NonFiniteModelError, match="the teacher has NaN or infinite weights"):
        _run(teacher, tiny, card, method="medic")


def test_images_of_another_size_are_refused(tiny):
    # The zoo's models run on any size >= 32, so the old code trained a 32-px teacher on 48-px
    # images and wrote a card that still said 32.
    teacher, card = load_demo_model("badnet")
    big = load_dataset("signs", size=48, n_train=240, n_test=60)
    with pytest.raises(ValueError, match="takes 3-channel 32x32 images but signs-train has 3-channel 48x48"):
        _run(teacher, big, card)


def test_an_empty_test_set_is_refused(tiny):
    teacher, card = load_demo_model("badnet")
    empty = ImageArrays(tiny.test.images[:0], tiny.test.labels[:0], tiny.classes, name="empty-test")
    with pytest.raises(ValueError, match="empty-test: the test set is empty"):
        _run(teacher, DatasetSplits(tiny.train, empty), card)
