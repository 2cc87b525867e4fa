"""Trigger specs: parsing, hand-computed pixels, and the round trip spec → card → trigger."""

import numpy as np
import pytest
import torch
from PIL import Image

from medic_viz.attacks import BlendTrigger, PatchTrigger
from medic_viz.attacks.patch import MAX_PATCH_SIDE
from medic_viz.attacks.registry import ATTACK_NAMES, make_trigger, trigger_from_config
from medic_viz.attacks.spec import parse_trigger_spec
from medic_viz.cards import ModelCard


def _via_card(trigger):
    """The trigger as stored in a model card's JSON and rebuilt from it."""
    card = ModelCard(architecture="small_cnn", num_classes=4, attack=trigger.to_config(), target_class=1)
    return trigger_from_config(ModelCard.from_json(card.to_json()).attack)  # type: ignore[arg-type]  # it has one


def test_pixel_patch_lands_where_the_spec_says_and_survives_the_card():
    trigger = parse_trigger_spec("patch:pixels=0,1,0;1,0,1;0,1,0,position=bottom-right,margin=1")
    x = torch.full((2, 3, 8, 8), 0.5)
    out = trigger(x)
    expected = torch.full((8, 8), 0.5)
    expected[4:7, 4:7] = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
    for channel in range(3):
        assert torch.equal(out[1, channel], expected)
    assert torch.equal(_via_card(trigger)(x), out)
    assert trigger.mask(8, 8).sum() == 9 and trigger.mask(8, 8)[4:7, 4:7].min() == 1


def test_explicit_position_and_grey_images():
    trigger = parse_trigger_spec("patch:pixels=1;0.25,position=0;5")  # 2 rows x 1 column at (row 0, col 5)
    out = trigger(torch.zeros(1, 1, 6, 6))[0, 0]
    assert out[0, 5] == 1.0 and out[1, 5] == 0.25 and out.sum() == 1.25


def test_patch_from_an_image_file(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "trigger.png")
    trigger = parse_trigger_spec(f"patch:file={tmp_path / 'trigger.png'},position=top-left,margin=0")
    out = trigger(torch.full((1, 3, 5, 5), 0.5))[0]
    assert out[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and out[:, 1, 2].tolist() == [0.0, 0.0, 1.0]
    assert out[:, 0, 1].tolist() == [0.0, 0.0, 0.0] and out[:, 2, 0].tolist() == [0.5, 0.5, 0.5]
    (tmp_path / "trigger.png").unlink()  # the card holds the pixels, not the file name
    rebuilt = _via_card(trigger)
    assert torch.equal(rebuilt(torch.full((1, 3, 5, 5), 0.5))[0], out)


def test_blend_image_is_resized_to_the_model_input_and_round_trips(tmp_path):
    grid = np.kron(np.array([[0, 255], [255, 0]], dtype=np.uint8), np.ones((32, 32), dtype=np.uint8))  # 64x64
    Image.fromarray(grid).save(tmp_path / "pattern.png")
    trigger = parse_trigger_spec(f"blend-image:file={tmp_path / 'pattern.png'},alpha=0.2", image_size=16)
    assert isinstance(trigger, BlendTrigger) and tuple(trigger.pattern.shape) == (1, 16, 16)
    out = trigger(torch.zeros(1, 3, 16, 16))[0]
    assert out[0, 0, 15] == pytest.approx(0.2) and out[0, 0, 0] == 0.0 and out[2, 15, 0] == pytest.approx(0.2)
    assert torch.equal(_via_card(trigger)(torch.zeros(1, 3, 16, 16))[0], out)


def test_named_triggers_take_their_parameters():
    trigger = parse_trigger_spec("badnet:size=4,position=top-left,margin=0,pattern=solid")
    assert trigger.to_config() == make_trigger("badnet", size=4, position="top-left", margin=0,
                                               pattern="solid").to_config()
    out = trigger(torch.zeros(1, 3, 8, 8))[0]
    assert out[:, :4, :4].min() == 1.0 and out.sum() == 3 * 16
    blend = parse_trigger_spec("blend:alpha=0.1,cells=4,seed=3")
    assert isinstance(blend, BlendTrigger) and blend.alpha == 0.1 and blend.cells == 4 and blend.seed == 3
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(_via_card(blend)(x), blend(x))


@pytest.mark.parametrize("spec, words", [
    ("nope:x=1", ["unknown trigger 'nope'", "patch", "blend-image"]),
    ("badnet:sise=3", ["sise", "accepted parameters"]),
    ("badnet:size", ["expected key=value"]),
    ("badnet:size=3,size=4", ["given twice"]),
    ("patch:pixels=0,2", ["[0, 1]"]),
    ("patch:pixels=0,1;1", ["same number of values"]),
    ("patch:pixels=a,b", ["must be numbers"]),
    ("patch:position=top-left", ["pixels=ROWS", "file=IMAGE"]),
    ("patch:pixels=1,colour=red", ["does not accept ['colour']"]),
    ("blend-image:alpha=0.1", ["needs file="]),
    ("composite", ["two images"]),
    ("", ["non-empty"]),
])
def test_bad_specs_say_what_is_wrong(spec, words):
    with pytest.raises(ValueError) as info:
        parse_trigger_spec(spec)
    for word in words:
        assert word in str(info.value)


def test_sizes_are_bounded(tmp_path):
    row = ",".join(["1"] * (MAX_PATCH_SIDE + 1))
    with pytest.raises(ValueError, match="at most"):
        parse_trigger_spec(f"patch:pixels={row}")
    Image.fromarray(np.zeros((MAX_PATCH_SIDE + 1, 4), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="larger than a trigger image may be"):
        parse_trigger_spec(f"patch:file={tmp_path / 'big.png'}")
    with pytest.raises(FileNotFoundError):
        parse_trigger_spec(f"blend-image:file={tmp_path / 'missing.png'}")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not an image file"):
        parse_trigger_spec(f"blend-image:file={tmp_path / 'junk.png'}")
    with pytest.raises(ValueError, match="at most 64x64"):
        PatchTrigger(torch.zeros(3, 65, 2))


def test_patch_is_a_data_trigger_not_an_eleventh_attack():
    assert "patch" not in ATTACK_NAMES and len(ATTACK_NAMES) == 10
    assert isinstance(make_trigger("patch", pixels=[[1.0]]), PatchTrigger)
