"""The experiments' teacher cache (medic_viz.experiments.teachers), the GTSRB presets and the
resumable row folder (medic_viz.experiments.resume), with a cheap stand-in for training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from medic_viz.attacks.registry import attack_spec, check_rate
from medic_viz.cards import ModelCard
from medic_viz.data.arrays import ImageArrays
from medic_viz.experiments.presets import GTSRB_ATTACKS, gtsrb_recipe, surrogate_recipe
from medic_viz.experiments.resume import RowFolder, run_resumable
from medic_viz.experiments.teachers import KEY_FILE, TeacherCache, TeacherRecipe, legacy_card_matches
from medic_viz.io import save_model
from medic_viz.models.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]


def _card(recipe: TeacherRecipe, **fields):
    attack = None if recipe.attack is None else {"name": recipe.attack, **recipe.options}
    base = dict(architecture=recipe.architecture, num_classes=3, input_size=32, in_channels=3, arch_kwargs={},
                classes=["a", "b", "c"], normalize=None, dataset=Path(recipe.dataset).name, attack=attack,
                target_class=recipe.target, poison_rate=recipe.rate, metrics={},
                history=[{"kind": "epoch", "epoch": e + 1} for e in range(recipe.epochs)], notes="")
    return ModelCard(**{**base, **fields})


class CountingTrainer:
    def __init__(self) -> None:
        self.trained: list[str] = []

    def __call__(self, recipe, splits, *, surrogate=None, device="cpu", progress=False, checkpoint=None):
        self.trained.append(recipe.name)
        return build_model("small_cnn", 3, in_channels=3, input_size=32), _card(recipe)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.npz"
    path.write_bytes(b"version 1")
    return path


def _recipe(data: Path, **changes) -> TeacherRecipe:
    base = dict(dataset=str(data), architecture="small_cnn", epochs=2, seed=0, attack="badnet", options={"size": 3},
                rate=0.1, target=1)
    return TeacherRecipe(**{**base, **changes})


def test_trained_once_then_found_with_its_key(tmp_path: Path, data: Path) -> None:
    trainer = CountingTrainer()
    cache = TeacherCache(tmp_path / "teachers", trainer=trainer)
    recipe = _recipe(data)
    model, card = cache.load(recipe, splits=object(), log=None)
    assert card.attack["name"] == "badnet" and trainer.trained == ["badnet_small_cnn_e2_s0"]
    folder = tmp_path / "teachers" / "badnet_small_cnn_e2_s0"
    assert json.loads((folder / KEY_FILE).read_text()) == json.loads(json.dumps(recipe.key()))
    assert not [p for p in (tmp_path / "teachers").iterdir() if p.name.startswith(".")], "no partial folder left"
    cache.load(recipe, splits=object(), log=None)
    assert trainer.trained == ["badnet_small_cnn_e2_s0"], "found again, not retrained"


@pytest.mark.parametrize("change", [{"options": {"size": 4}}, {"rate": 0.2}, {"target": 2}, {"architecture": "wrn16_1"},
                                    {"epochs": 3}, {"seed": 1}, {"attack": "blend", "options": {}}])
def test_every_setting_is_part_of_the_key(data: Path, change: dict) -> None:
    assert _recipe(data, **change).key() != _recipe(data).key()


def test_the_same_name_with_other_settings_or_other_data_is_another_teacher(tmp_path: Path, data: Path) -> None:
    trainer = CountingTrainer()
    cache = TeacherCache(tmp_path, trainer=trainer)
    first = _recipe(data)
    cache.load(first, splits=object(), log=None)
    other = _recipe(data, options={"size": 5})  # same folder name, another trigger
    assert cache.find(other) is None
    cache.load(other, splits=object(), log=None)
    assert cache.find(other) == tmp_path / f"badnet_small_cnn_e2_s0-{other.digest()}"
    data.write_bytes(b"version 2")  # the same file name, edited data: a new key
    assert cache.find(first) is None and cache.find(other) is None


def test_a_folder_without_a_key_file_is_found_when_its_card_agrees(tmp_path: Path, data: Path) -> None:
    recipe = _recipe(data)
    legacy = tmp_path / recipe.name
    save_model(build_model("small_cnn", 3, in_channels=3, input_size=32), legacy, _card(recipe))
    cache = TeacherCache(tmp_path, trainer=CountingTrainer())
    assert cache.find(recipe) == legacy
    for change in ({"options": {"size": 4}}, {"rate": 0.2}, {"target": 2}, {"epochs": 3}):
        other = _recipe(data, **change)
        (tmp_path / other.name).exists() or save_model(build_model("small_cnn", 3, in_channels=3, input_size=32),
                                                       tmp_path / other.name, _card(recipe))
        assert cache.find(other) is None, change


def test_the_committed_gtsrb_teachers_are_found_by_their_presets() -> None:
    cache = TeacherCache(ROOT / "benchmarks" / "results" / "gtsrb_teachers")
    data = "gtsrb32.npz"  # not read: the committed folders predate the key file
    for attack in GTSRB_ATTACKS:
        assert cache.find(gtsrb_recipe(attack, "wrn16_1", data)) == cache.root / f"{attack}_wrn16_1_e30_s0"
    assert cache.find(surrogate_recipe("robust4-wrn", data)) == cache.root / "robust4_wrn16_1_e6_s2"
    assert cache.find(surrogate_recipe("robust-small", data)) == cache.root / "robust_small_cnn_e6_s2"
    assert cache.find(gtsrb_recipe("badnet", "wrn16_1", data, epochs=29)) is None


def test_the_clean_label_preset_names_its_surrogate() -> None:
    recipe = gtsrb_recipe("cleanlabel", "wrn16_1", "gtsrb32.npz")
    assert recipe.options == {"pgd_eps": 16 / 255, "margin": 5} and recipe.target == 1
    assert recipe.rate == pytest.approx(2220 / 39209) and round(recipe.rate * 39209) == 2220  # every class-1 image
    assert recipe.surrogate.name == "robust4_wrn16_1_e6_s2" and recipe.key()["surrogate"] == recipe.surrogate.key()


def test_the_clean_label_preset_is_accepted_by_the_rate_check_and_still_finds_the_capped_teacher() -> None:
    """The preset asked for 0.06 (more than the 2,220 class-1 images) and was refused after the
    rate check; now it asks for exactly the pool, and the seed-0 card (0.06) still matches."""
    labels = torch.cat([torch.ones(2220, dtype=torch.long), torch.zeros(39209 - 2220, dtype=torch.long)])
    data = ImageArrays(torch.zeros(39209, 1, 1, 1, dtype=torch.uint8), labels, ("a", "b"), name="gtsrb-like")
    recipe = gtsrb_recipe("cleanlabel", "wrn16_1", "gtsrb32.npz")
    assert recipe.rate is not None
    check_rate(attack_spec("cleanlabel"), data, 1, recipe.rate)  # refused before: 0.06 · 39209 = 2353 > 2220
    with pytest.raises(ValueError, match="cannot be met"):
        check_rate(attack_spec("cleanlabel"), data, 1, 0.06)
    card = {"architecture": "wrn16_1", "dataset": "gtsrb32.npz", "target_class": 1, "poison_rate": 0.06,
            "attack": {"name": "cleanlabel", "pgd_eps": 16 / 255, "margin": 5}}
    assert legacy_card_matches(card, recipe)
    assert not legacy_card_matches({**card, "poison_rate": 0.05}, recipe)
    assert recipe.key() == dataclasses.replace(recipe, recorded_rate=None).key()  # not in the key


def test_run_resumable_skips_finished_rows(tmp_path: Path) -> None:
    store = RowFolder(tmp_path / "rows")
    done = []

    def compute(item: str) -> dict:
        done.append(item)
        return {"item": item}

    assert run_resumable(["a", "b"], store, str, compute, log=None) == [{"item": "a"}, {"item": "b"}]
    assert run_resumable(["a", "b", "c"], store, str, compute, log=None) == [{"item": "c"}]
    assert done == ["a", "b", "c"] and [r["item"] for r in store.rows()] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        store.path("../escape")


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "mobilenet_v1"])
def test_the_other_architectures_have_gtsrb_presets_of_wrn16_1s_length(arch: str) -> None:
    """Issue 27 item 4: ``train_teachers --arch resnet18`` was refused ("no GTSRB teacher epochs")."""
    recipe = gtsrb_recipe("polygon", arch, "gtsrb32.npz", seed=1)
    assert recipe.epochs == gtsrb_recipe("polygon", "wrn16_1", "gtsrb32.npz", seed=1).epochs == 30
    assert recipe.name == f"polygon_{arch}_e30_s1" and recipe.role == "evaluation"
    assert recipe.key() != gtsrb_recipe("polygon", "wrn16_1", "gtsrb32.npz", seed=1).key()
