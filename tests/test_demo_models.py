"""The shipped demo models: cards, sizes, and that each attack works as the card says."""

import json

import pytest

from medic_viz.attacks.registry import ATTACK_NAMES
from medic_viz.data import load_dataset
from medic_viz.metrics import evaluate_backdoor
from medic_viz.pipeline import trigger_of
from medic_viz.pretrained import DEMO_ATTACKS, DEMO_MODELS, demo_model_dir, load_demo_model


@pytest.fixture(scope="module")
def splits():
    return load_dataset("signs")


@pytest.fixture(scope="module")
def clean_acc(splits):
    model, _ = load_demo_model("clean")
    return evaluate_backdoor(model, splits.test, device="cpu").clean_acc


def test_files_are_small_and_cards_complete():
    for name in DEMO_MODELS:
        d = demo_model_dir(name)
        size = (d / "model.safetensors").stat().st_size
        assert 50_000 < size < 600_000, (name, size)
        card = json.loads((d / "card.json").read_text())
        assert card["architecture"] == "small_cnn" and card["dataset"] == "signs"
        assert (card["attack"] is None) == (name == "clean")


def test_clean_reference_is_accurate(clean_acc):
    assert clean_acc >= 0.90, "the small CNN must reach 90% on the embedded dataset"


@pytest.mark.parametrize("name", DEMO_ATTACKS)
def test_each_attack_works_and_keeps_clean_accuracy(name, splits, clean_acc):
    model, card = load_demo_model(name)
    trigger, target = trigger_of(card)
    assert trigger.name == name and target == 0
    m = evaluate_backdoor(model, splits.test, trigger, target, device="cpu")  # type: ignore[arg-type]  # one-image
    assert m.asr >= 0.90, f"{name}: ASR {m.asr:.3f} < 90%"
    assert clean_acc - m.clean_acc <= 0.02, f"{name}: clean accuracy {m.clean_acc:.3f} vs clean model {clean_acc:.3f}"
    # the card's recorded metrics are the ones we measure
    assert card.metrics["clean_acc"] == pytest.approx(m.clean_acc, abs=1e-6)
    assert card.metrics["asr"] == pytest.approx(m.asr, abs=1e-6)


def test_unknown_demo_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="badnet"):
        load_demo_model("trojan-horse")


def test_the_demo_attacks_are_registry_attacks_named_by_their_cards():
    # one list of attack names (the registry); the demo list names shipped folders, each card says which attack
    assert set(DEMO_ATTACKS) <= set(ATTACK_NAMES) and "clean" not in ATTACK_NAMES
    for name in DEMO_ATTACKS:
        card = json.loads((demo_model_dir(name) / "card.json").read_text())
        assert card["attack"]["name"] == name
