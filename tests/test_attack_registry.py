"""The one attack registry: every attack name builds, round-trips through its config with the
same pixels, has its default poison rate as data, trains from the CLI and shows in the picker."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import medic_viz as mv
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.composite import CompositeAttack, CompositeTrigger
from medic_viz.attacks.registry import (
    ATTACK_NAMES,
    ATTACK_SPECS,
    attack_evaluator,
    attack_spec,
    build_attack,
    default_rate,
    image_trigger,
    make_trigger,
    spec_of,
    trigger_from_config,
)
from medic_viz.attacks.sig import SIGTrigger
from medic_viz.cli import main
from medic_viz.data import load_dataset
from medic_viz.data.arrays import ImageArrays
from medic_viz.widgets.state import PickerState

TEN = ("badnet", "blend", "sig", "polygon", "cleanlabel", "reflection", "filter", "wanet", "composite", "adaptive")


def _batch(seed=0, c=3, size=16):
    return torch.rand(4, c, size, size, generator=torch.Generator().manual_seed(seed))


def _arrays(labels, size=8, seed=0):
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(len(labels), 3, size, size, generator=g) * 255).to(torch.uint8)
    k = int(labels.max()) + 1
    return ImageArrays(x, labels, classes=tuple(f"c{i}" for i in range(k)), name="tiny")


# ------------------------------------------------------------------------------ one registry


def test_the_registry_knows_the_ten_attacks_everywhere():
    assert ATTACK_NAMES == TEN
    assert mv.ATTACK_NAMES == TEN
    assert mv.trigger_from_config is trigger_from_config
    # one factory under its old (deprecated) names too
    with pytest.warns(DeprecationWarning, match="is deprecated; use medic_viz.attacks.registry"):
        from medic_viz.attacks import advanced, triggers  # noqa: PLC0415 — deprecated paths: importing them must warn

        assert advanced.ATTACKS == TEN
        assert triggers.make_trigger is make_trigger and advanced.make_any_trigger is make_trigger
        assert advanced.any_trigger_from_config is trigger_from_config


@pytest.mark.parametrize("name", TEN)
def test_every_attack_round_trips_through_its_config_with_the_same_pixels(name):
    attack = make_trigger(name)
    config = json.loads(json.dumps(attack.to_config()))
    rebuilt = trigger_from_config(config)
    assert type(rebuilt) is type(attack) and rebuilt.to_config() == attack.to_config()
    x = _batch(1)
    if isinstance(attack, Trigger):
        out = attack.apply(x)
        assert not torch.equal(out, x), f"{name}'s trigger changes nothing"
        assert torch.equal(rebuilt.apply(x), out)
    else:  # composite: a mix of two batches
        assert torch.equal(rebuilt.mix(x, x.flip(0)), attack.mix(x, x.flip(0)))
    # the mv entry point rebuilds what the card records
    assert mv.trigger_from_config(config).to_config() == config


def test_a_changed_parameter_gives_other_pixels_and_unknown_input_is_refused():
    x = _batch(2)
    for name, change in [("badnet", {"size": 4}), ("wanet", {"seed": 1}), ("filter", {"filter": "gotham"}),
                         ("reflection", {"kind": "blur"}), ("cleanlabel", {"corners": ["top-left"]})]:
        config = {**make_trigger(name).to_config(), **change}  # type: ignore[dict-item]
        assert not torch.equal(trigger_from_config(config).apply(x), make_trigger(name).apply(x)), name
    with pytest.raises(ValueError, match="unknown attack 'trojannn'.*badnet.*adaptive"):
        make_trigger("trojannn")
    with pytest.raises(ValueError, match="does not accept"):
        make_trigger("composite", size=3)
    with pytest.raises(ValueError, match="name"):
        trigger_from_config({"class_a": 1})
    with pytest.raises(ValueError, match="one-image trigger"):
        make_trigger("adaptive", trigger="composite")
    assert make_trigger("adaptive", trigger="blend", trigger_options={"alpha": 0.3}).to_config() == \
        make_trigger("blend", alpha=0.3).to_config()


def test_a_bound_composite_round_trips_and_mixes_by_hand():
    partner = torch.zeros(3, 4, 4)
    partner[:, :, 2:] = 0.5
    bound = make_trigger("composite", class_a=0, class_b=3, partner=partner)
    assert isinstance(bound, CompositeTrigger) and bound.attack.class_b == 3
    x = torch.ones(1, 3, 4, 4)
    out = bound.apply(x)
    assert torch.equal(out[0, :, :, :2], torch.ones(3, 4, 2)) and torch.equal(out[0, :, :, 2:], torch.full((3, 4, 2), 0.5))
    again = trigger_from_config(json.loads(json.dumps(bound.to_config())))
    assert isinstance(again, CompositeTrigger) and torch.equal(again.apply(x), out)
    # a grey 8x8 batch: the partner is turned grey and resized bilinearly (its 0 | 0.5 edge
    # blurs into column 4; from column 5 on it is 0.5), the input keeps the left half
    grey = bound.apply(torch.ones(1, 1, 8, 8))
    assert grey.shape == (1, 1, 8, 8) and torch.equal(grey[0, 0, :, :4], torch.ones(8, 4))
    assert torch.allclose(grey[0, 0, :, 5:], torch.tensor(0.5)) and 0 < float(grey[0, 0, 0, 4]) < 0.5


# -------------------------------------------------------------------------- defaults as data


def test_default_rates_are_data_on_the_entries_and_computed_by_hand():
    clean_label = {n for n, s in ATTACK_SPECS.items() if s.clean_label}
    assert clean_label == {"sig", "cleanlabel"}
    assert {n: s.rate for n, s in ATTACK_SPECS.items()} == {n: (0.08 if n in clean_label else 0.1) for n in TEN}
    assert [n for n, s in ATTACK_SPECS.items() if s.needs_model] == ["cleanlabel"]
    assert [n for n, s in ATTACK_SPECS.items() if s.needs_data] == ["composite"]
    # 40 images; class 0 has 10 (share 0.25), class 1 has 2 (share 0.05)
    data = _arrays([0] * 10 + [1] * 2 + [2] * 14 + [3] * 14)
    assert default_rate("badnet", data, 1) == 0.1 and default_rate("composite", data, 1) == 0.1
    assert default_rate("sig", data, 0) == 0.08  # min(0.08, 0.8 · 0.25)
    assert default_rate("cleanlabel", data, 1) == pytest.approx(0.04)  # 0.8 · 0.05
    one = _arrays([0] + [2] * 99)
    assert default_rate("sig", one, 0) == pytest.approx(0.01)  # floor: one image of 100 (0.8 · 0.01 < 1/100)
    # an object gets its class's entry; its own clean-label flag wins
    assert spec_of(SIGTrigger()).name == "sig" and spec_of(SIGTrigger()).default_rate(data, 0) == 0.08
    assert spec_of(SIGTrigger(clean_label=False)).default_rate(data, 0) == 0.1
    assert spec_of(make_trigger("composite").bind(torch.zeros(3, 2, 2))).name == "composite"


def test_build_attack_fits_the_data_and_the_evaluator_follows_the_attack():
    data = _arrays([0] * 4 + [1] * 6 + [2] * 12 + [3] * 9)
    composite = build_attack("composite", data, target=2)
    assert (composite.class_a, composite.class_b) == (3, 1)  # most frequent classes other than 2
    with pytest.raises(ValueError, match="differ"):
        build_attack("composite", data, target=1, class_a=1, class_b=3)
    assert type(attack_evaluator(composite, data, 2, device="cpu")).__name__ == "CompositeEvaluator"
    bound = image_trigger("composite", data, target=2)
    assert isinstance(bound, CompositeTrigger)
    first_b = int(torch.nonzero(data.labels == 1)[0])
    x = data.floats(torch.tensor([0]))
    torch.testing.assert_close(bound.apply(x)[0, :, :, 4:], data.floats(torch.tensor([first_b]))[0, :, :, 4:])
    assert type(attack_evaluator(bound, data, 2, device="cpu")).__name__ == "CompositeEvaluator"


# --------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    """160 training images of 4 classes, 12 of the target class 0 (share 0.075, where
    min(0.08, share) and the registry's min(0.08, 0.8 · share) differ)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    y_train = np.concatenate([np.zeros(12, dtype=np.int64), 1 + np.arange(148) % 3])
    np.savez(path, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", TEN)
def test_cli_attack_trains_every_attack_with_the_registry_default_rate(name, npz, tmp_path, capsys):
    out = tmp_path / name
    rc = main(["attack", "--dataset", npz, "--attack", name, "--epochs", "1", "--batch-size", "64",
               "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    train = load_dataset(npz).train
    requested = default_rate(name, train, 0)
    assert res["rate_requested"] == requested
    if attack_spec(name).poison_pool(train, 0) is not None:  # existing images stamped: the real share is recorded
        assert res["rate"] == pytest.approx(round(requested * len(train)) / len(train))
    else:
        assert res["rate"] == requested
    if attack_spec(name).clean_label:
        assert res["rate_requested"] == pytest.approx(0.06)  # 0.8 · 12/160
    assert res["n_clean"] == 48 and res["n_asr"] > 0 and 0 <= res["asr"] <= 1
    card = json.loads((out / "card.json").read_text())
    assert card["attack"] == res["attack"] and card["poison_rate"] == res["rate"]
    assert card["attack"]["name"] == (name if name != "adaptive" else "badnet")
    rebuilt = trigger_from_config(card["attack"])
    assert rebuilt.to_config() == card["attack"]
    if name == "composite":
        assert isinstance(rebuilt, CompositeAttack) and 0 not in (rebuilt.class_a, rebuilt.class_b)


@pytest.mark.slow
def test_cli_defends_a_composite_teacher(npz, tmp_path):
    atk, dfd = tmp_path / "atk", tmp_path / "dfd"
    common = ["--dataset", npz, "--device", "cpu", "--no-progress"]
    assert main(["attack", "--attack", "composite", "--epochs", "1", "--out", str(atk), *common]) == 0
    assert main(["defend", "--method", "finetune", "--teacher", str(atk), "--out", str(dfd), "--epochs", "1",
                 "--fraction", "0.25", *common]) == 0
    after = json.loads((dfd / "result.json").read_text())["after"]
    assert after["asr"] is not None and after["n_asr"] == 12  # the 12 test pairs of the two classes


def test_cli_attack_refuses_unknown_names_and_targets(npz, tmp_path, capsys):
    assert main(["attack", "--attack", "trojannn", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown attack 'trojannn'" in err and ", ".join(TEN) in err
    assert main(["attack", "--dataset", npz, "--target", "4", "--out", str(tmp_path / "y")]) == 2
    assert "0..3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------- the picker


def test_the_picker_lists_every_attack_of_the_registry():
    data = _arrays([0, 1, 2, 3] * 6, size=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 4))
    picker = PickerState(model, data, target=0)
    assert tuple(picker.triggers) == TEN
    x = picker.image
    for name, trig in picker.triggers.items():
        assert isinstance(trig, Trigger) and not torch.equal(trig.apply(x), x), name
    # a composite teacher's attack is shown bound to a class-B image
    picker2 = PickerState(model, data, trigger=CompositeAttack(1, 2), target=0, triggers={})
    assert list(picker2.triggers) == ["model: composite"] and isinstance(picker2.trigger, CompositeTrigger)
    # two-class data cannot show the composite attack: it is left out, the rest stay
    two = PickerState(model, _arrays([0, 1] * 6, size=16), target=0)
    assert tuple(two.triggers) == tuple(n for n in TEN if n != "composite")
