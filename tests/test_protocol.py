"""The development / evaluation protocol: the test-set split, a model's role in its card, and
grids that run on one part of the test set."""

import numpy as np
import pytest
import torch

from medic_viz.cards import ModelCard
from medic_viz.cli import main
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.experiments import build_grid, read_runs, run_grid
from medic_viz.experiments.cells import cell_splits
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.experiments.protocol import (
    DEVELOPMENT,
    EVALUATION,
    check_role,
    part_of_test_set,
    role_of_seed,
    splits_part,
)
from medic_viz.experiments.teachers import TeacherRecipe
from medic_viz.io import load_model, save_model
from medic_viz.models.zoo import build_model


def _arrays(labels: list[int]) -> ImageArrays:
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return ImageArrays(images, torch.tensor(labels), classes=("a", "b", "c"), name="toy")


def test_the_two_parts_are_disjoint_cover_the_set_and_split_each_class_in_half():
    labels = [0] * 10 + [1] * 7 + [2] * 1  # class 2 has one image: it goes to evaluation
    data = _arrays(labels)
    dev, ev = part_of_test_set(data, DEVELOPMENT), part_of_test_set(data, EVALUATION)
    ids_dev = set(dev.images[:, 0, 0, 0].tolist())
    ids_ev = set(ev.images[:, 0, 0, 0].tolist())
    assert ids_dev.isdisjoint(ids_ev) and ids_dev | ids_ev == set(range(18))
    # round(0.5 * 10) = 5, round(0.5 * 7) = 4 (banker's rounding of 3.5), 1 image → 0
    assert torch.bincount(dev.labels, minlength=3).tolist() == [5, 4, 0]
    assert torch.bincount(ev.labels, minlength=3).tolist() == [5, 3, 1]
    # every image keeps its own label
    assert all(labels[i] == int(y) for i, y in zip(dev.images[:, 0, 0, 0].tolist(), dev.labels))
    # a fixed function of the data: the same images every time, in the data's order
    again = part_of_test_set(data, DEVELOPMENT)
    assert torch.equal(again.images, dev.images) and dev.images[:, 0, 0, 0].tolist() == sorted(ids_dev)
    assert dev.name == "toy[development]"


def test_another_split_seed_gives_another_split_and_bad_parts_are_refused():
    data = _arrays([0] * 40)
    a = set(part_of_test_set(data, DEVELOPMENT).images[:, 0, 0, 0].tolist())
    b = set(part_of_test_set(data, DEVELOPMENT, seed=1).images[:, 0, 0, 0].tolist())
    assert a != b and len(a) == len(b) == 20
    with pytest.raises(ValueError, match="test part must be one of development, evaluation"):
        part_of_test_set(data, "test")
    with pytest.raises(ValueError, match="dev_fraction"):
        part_of_test_set(data, DEVELOPMENT, dev_fraction=1.0)


def test_splits_part_keeps_the_training_set():
    train, test = _arrays([0, 1, 2] * 4), _arrays([0, 1, 2] * 6)
    splits = DatasetSplits(train, test)
    assert splits_part(splits, None) is splits
    part = splits_part(splits, EVALUATION)
    assert part.train is train and len(part.test) == 9


def test_a_card_records_its_role_and_refuses_an_unknown_one(tmp_path):
    card = ModelCard(architecture="small_cnn", num_classes=3, role=EVALUATION)
    assert card.to_dict()["role"] == EVALUATION
    save_model(build_model("small_cnn", 3), tmp_path / "m", card)
    assert load_model(tmp_path / "m")[1].role == EVALUATION
    assert ModelCard.from_dict({"architecture": "small_cnn", "num_classes": 3}).role is None  # older cards
    with pytest.raises(ValueError, match="role must be one of development, evaluation"):
        ModelCard(architecture="small_cnn", num_classes=3, role="test")


def test_preset_teachers_get_their_role_from_the_seed_and_the_role_is_not_the_model():
    assert [role_of_seed(s) for s in (0, 1, 2, 7)] == [DEVELOPMENT, EVALUATION, EVALUATION, None]
    assert gtsrb_recipe("sig", "wrn16_1", "gtsrb32.npz", seed=2).role == EVALUATION  # the fresh evaluation set
    dev = gtsrb_recipe("badnet", "wrn16_1", "gtsrb32.npz", seed=0)
    ev = gtsrb_recipe("badnet", "wrn16_1", "gtsrb32.npz", seed=1)
    assert (dev.role, ev.role) == (DEVELOPMENT, EVALUATION)
    assert "role" not in dev.key() and dev.key()["seed"] == 0  # the role is documentation, the seed the model
    same = TeacherRecipe(**{**dev.__dict__, "role": None})
    assert same.digest() == dev.digest()
    with pytest.raises(ValueError, match="role must be one of"):
        TeacherRecipe(dataset="x.npz", architecture="small_cnn", epochs=1, seed=0, role="holdout")


def test_check_role_refuses_the_other_use_and_passes_cards_without_one():
    check_role({"role": DEVELOPMENT}, DEVELOPMENT)
    check_role({}, EVALUATION)
    check_role(ModelCard(architecture="small_cnn", num_classes=3), DEVELOPMENT)
    with pytest.raises(ValueError, match="teacher is an evaluation model \\(results are reported on it\\)"):
        check_role({"role": EVALUATION}, DEVELOPMENT, "teacher")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=np.arange(160) % 4,
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    return str(path)


def test_cells_on_a_test_part_are_other_cells_and_whole_set_cells_keep_their_ids(npz):
    kw = dict(dataset=npz, attacks=["badnet"], methods=["finetune"], seeds=1, epochs=1, attack_epochs=1)
    whole, dev, ev = (build_grid(**kw, test_part=p)[0] for p in (None, DEVELOPMENT, EVALUATION))
    assert "test_part" not in whole.identity()  # the identity cells had before the protocol
    assert len({whole.cell_id, dev.cell_id, ev.cell_id}) == 3
    assert len({whole.teacher_id, dev.teacher_id, ev.teacher_id}) == 3  # the teacher's numbers are per part
    with pytest.raises(ValueError, match="test_part must be one of development, evaluation"):
        build_grid(**kw, test_part="holdout")
    cell_splits.cache_clear()
    assert len(cell_splits(npz, None, None, None, EVALUATION).test) == 24
    assert len(cell_splits(npz, None, 10, None, EVALUATION).test) == 10


def test_a_grid_on_the_evaluation_part_measures_there_and_says_so(npz, tmp_path):
    cells = build_grid(dataset=npz, attacks=["badnet"], methods=["finetune"], seeds=1, fraction=0.25, epochs=1,
                       attack_epochs=1, device="cpu", test_part=EVALUATION)
    assert run_grid(cells, tmp_path / "g", log=None).ok
    (row,) = read_runs(tmp_path / "g" / "runs.jsonl")
    assert row["test_part"] == EVALUATION and row["n_clean"] == 24  # half of each class's 12 test images
    assert row["teacher_role"] is None  # a teacher the grid trained has no protocol role


def test_cli_compare_takes_a_test_part(npz, tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["compare", "--dataset", npz, "--attacks", "badnet", "--methods", "finetune", "--seeds", "1",
               "--epochs", "1", "--attack-epochs", "1", "--fraction", "0.25", "--device", "cpu",
               "--test-part", "development", "--out", str(out)])
    assert rc == 0
    (row,) = read_runs(out / "runs.jsonl")
    assert row["test_part"] == DEVELOPMENT and row["n_clean"] == 24
    assert main(["compare", "--dataset", npz, "--attacks", "badnet", "--test-part", "all", "--out",
                 str(tmp_path / "d")]) == 2
    assert "invalid choice: 'all'" in capsys.readouterr().err
