"""Tests for medic_viz.attacks.triggers: hand-computed pixels, formulas and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medic_viz.attacks.base import Trigger
from medic_viz.attacks.blend import BlendTrigger
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.polygon import PolygonTrigger
from medic_viz.attacks.registry import make_trigger, trigger_from_config
from medic_viz.attacks.sig import SIGTrigger
from medic_viz.pretrained import DEMO_ATTACKS as AVAILABLE_TRIGGERS

# 3x3 checkerboard, white (1) at the patch's top-left.
CHECKER_3x3 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


def random_batch(b: int = 2, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand((b, c, h, w), generator=torch.Generator().manual_seed(seed))


def all_triggers() -> list[Trigger]:
    return [
        BadNetTrigger(),
        BlendTrigger(),
        SIGTrigger(),
        SIGTrigger(mode="blend"),
        PolygonTrigger(seed=1),
    ]


def shoelace_area(vertices: torch.Tensor) -> float:
    y, x = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float((x * torch.roll(y, -1) - torch.roll(x, -1) * y).sum()))


# ----------------------------------------------------------------------------- BadNet
@pytest.mark.parametrize("size", [32, 40])
def test_badnet_checkerboard_exact_pixels_and_nothing_else(size: int) -> None:
    trigger = BadNetTrigger()  # 3x3, bottom-right, margin 1; same instance for both sizes is fine
    x = torch.full((2, 3, size, size), 0.5)
    out = trigger.apply(x)
    r0 = size - 4  # rows/cols size-4 .. size-2
    for ch in range(3):
        torch.testing.assert_close(out[:, ch, r0 : r0 + 3, r0 : r0 + 3], CHECKER_3x3.expand(2, 3, 3), rtol=0, atol=0)
    expected_changed = torch.zeros(size, size, dtype=torch.bool)
    expected_changed[r0 : r0 + 3, r0 : r0 + 3] = True
    changed = (out != x).any(dim=0).any(dim=0)
    assert torch.equal(changed, expected_changed)


def test_badnet_explicit_32x32_coordinates() -> None:
    out = BadNetTrigger().apply(torch.full((1, 3, 32, 32), 0.5))[0, 0]
    assert out[28, 28] == 1 and out[28, 29] == 0 and out[28, 30] == 1
    assert out[29, 28] == 0 and out[29, 29] == 1 and out[30, 30] == 1
    assert out[27, 28] == 0.5 and out[31, 31] == 0.5 and out[28, 27] == 0.5


@pytest.mark.parametrize(
    ("position", "margin", "origin"),
    [
        ("top-left", 1, (1, 1)),
        ("top-right", 1, (1, 28)),
        ("bottom-left", 1, (28, 1)),
        ("bottom-right", 0, (29, 29)),
        ("top-left", 2, (2, 2)),
        ((5, 7), 1, (5, 7)),
    ],
)
def test_badnet_positions(position, margin: int, origin: tuple[int, int]) -> None:
    trigger = BadNetTrigger(position=position, margin=margin)
    assert trigger.patch_origin(32, 32) == origin
    expected = torch.zeros(32, 32)
    expected[origin[0] : origin[0] + 3, origin[1] : origin[1] + 3] = 1
    assert torch.equal(trigger.mask(32, 32), expected)
    out = trigger.apply(torch.full((3, 32, 32), 0.5))
    assert out[0, origin[0], origin[1]] == 1.0  # colors[0] at the patch's top-left
    assert out[0, origin[0], origin[1] + 1] == 0.0


def test_badnet_too_small_image_raises_and_smallest_fits() -> None:
    trigger = BadNetTrigger(size=3, margin=1)
    with pytest.raises(ValueError, match="at least 4x4"):
        trigger.apply(torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError):
        trigger.mask(3, 10)
    out = trigger.apply(torch.full((1, 1, 4, 4), 0.5))
    assert out[0, 0, 0, 0] == 1.0 and out[0, 0, 2, 2] == 1.0 and out[0, 0, 3, 3] == 0.5
    with pytest.raises(ValueError, match="does not fit"):
        BadNetTrigger(position=(30, 0)).apply(torch.zeros(1, 3, 32, 32))


def test_badnet_solid_and_grey_colour_mean() -> None:
    trigger = BadNetTrigger(size=2, pattern="solid", colors=((0.9, 0.0, 0.3),), position="top-left", margin=0)
    rgb = trigger.apply(torch.zeros(1, 3, 8, 8))
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([0.9, 0.0, 0.3]))
    torch.testing.assert_close(rgb[0, :, 1, 1], torch.tensor([0.9, 0.0, 0.3]))
    grey = trigger.apply(torch.zeros(1, 1, 8, 8))
    torch.testing.assert_close(grey[0, 0, :2, :2], torch.full((2, 2), 0.4))
    assert grey[0, 0, 2:, :].abs().sum() == 0


def test_badnet_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        BadNetTrigger(size=0)
    with pytest.raises(ValueError):
        BadNetTrigger(position="middle")
    with pytest.raises(ValueError):
        BadNetTrigger(colors=((2.0, 0, 0), (0, 0, 0)))
    with pytest.raises(ValueError):
        BadNetTrigger(pattern="stripes")


# ----------------------------------------------------------------------------- Blend
def test_blend_formula_on_constant_image_with_given_pattern() -> None:
    pattern = torch.full((3, 4, 4), 0.9)
    out = BlendTrigger(pattern=pattern, alpha=0.2).apply(torch.full((1, 3, 4, 4), 0.4))
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 0.8 * 0.4 + 0.2 * 0.9))


def test_blend_noise_pattern_recovered_and_deterministic() -> None:
    trigger = BlendTrigger(alpha=0.25, seed=3)
    torch.manual_seed(123)
    out = trigger.apply(torch.full((2, 3, 16, 16), 0.2, dtype=torch.float64))
    recovered = (out - 0.75 * 0.2) / 0.25
    pattern = trigger.blend_pattern(3, 16, 16)
    torch.testing.assert_close(recovered[0], pattern)
    torch.testing.assert_close(recovered[1], pattern)
    assert 0 <= pattern.min() and pattern.max() <= 1 and pattern.std() > 0.2  # uniform noise
    torch.manual_seed(999)  # the global RNG must not matter
    assert torch.equal(BlendTrigger(alpha=0.25, seed=3).blend_pattern(3, 16, 16), pattern)
    assert not torch.equal(BlendTrigger(alpha=0.25, seed=4).blend_pattern(3, 16, 16), pattern)


def test_blend_pattern_resized_to_batch_size() -> None:
    pattern = torch.zeros(3, 8, 8)
    pattern[:, :, 4:] = 1.0  # left half black, right half white
    out = BlendTrigger(pattern=pattern, alpha=1.0).apply(torch.full((1, 3, 16, 16), 0.3))
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[0, :, :, :6], torch.zeros(3, 16, 6))
    assert torch.allclose(out[0, :, :, 10:], torch.ones(3, 16, 6))


def test_blend_invalid_alpha_and_pattern() -> None:
    for alpha in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            BlendTrigger(alpha=alpha)
    with pytest.raises(ValueError):
        BlendTrigger(pattern="hello_kitty")
    with pytest.raises(ValueError):
        BlendTrigger(pattern=torch.full((3, 4, 4), 2.0))


# ----------------------------------------------------------------------------- SIG
def test_sig_additive_row_values_by_hand() -> None:
    # frequency=1 over W=8: sin(pi j / 4) = 0, r, 1, r, 0, -r, -1, -r with r = sqrt(2)/2.
    r = math.sqrt(2) / 2
    expected_row = torch.tensor([0.5, 0.5 + 0.1 * r, 0.6, 0.5 + 0.1 * r, 0.5, 0.5 - 0.1 * r, 0.4, 0.5 - 0.1 * r])
    out = SIGTrigger(delta=0.1, frequency=1).apply(torch.full((2, 3, 5, 8), 0.5))
    torch.testing.assert_close(out, expected_row.expand(2, 3, 5, 8))


def test_sig_additive_clips() -> None:
    # frequency=2 over W=8: sin(pi j / 2) = 0, 1, 0, -1, ...
    trigger = SIGTrigger(delta=0.2, frequency=2)
    high = trigger.apply(torch.full((1, 1, 2, 8), 0.95))[0, 0, 0]
    torch.testing.assert_close(high, torch.tensor([0.95, 1.0, 0.95, 0.75] * 2))
    low = trigger.apply(torch.full((1, 1, 2, 8), 0.05))[0, 0, 0]
    torch.testing.assert_close(low, torch.tensor([0.05, 0.25, 0.05, 0.0] * 2))


def test_sig_blend_mode() -> None:
    # 0.8 x + 0.2 (0.5 + 0.5 sin): stripes 0.5, 1, 0.5, 0 for frequency=2, W=8.
    out = SIGTrigger(frequency=2, mode="blend").apply(torch.full((1, 3, 4, 8), 0.25))
    expected_row = torch.tensor([0.3, 0.4, 0.3, 0.2] * 2)
    torch.testing.assert_close(out, expected_row.expand(1, 3, 4, 8))


def test_sig_clean_label_flags_and_validation() -> None:
    assert SIGTrigger().clean_label is True
    assert SIGTrigger(clean_label=False).clean_label is False
    assert not BadNetTrigger().clean_label and not BlendTrigger().clean_label and not PolygonTrigger().clean_label
    with pytest.raises(ValueError):
        SIGTrigger(mode="multiply")
    with pytest.raises(ValueError):
        SIGTrigger(frequency=0)


# ----------------------------------------------------------------------------- Polygon
@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_polygon_mask_area_matches_shoelace(seed: int) -> None:
    trigger = PolygonTrigger(seed=seed, size=0.4)
    mask = trigger.mask(64, 64)
    area = shoelace_area(trigger.vertices(64, 64))
    assert area > 50
    assert abs(float(mask.sum()) - area) / area < 0.04
    hard = PolygonTrigger(seed=seed, size=0.4, supersample=1).mask(64, 64)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(hard.sum()) - area) / area < 0.12


def test_polygon_lies_around_centre_with_requested_size() -> None:
    trigger = PolygonTrigger(seed=4, size=0.25)
    mask = trigger.mask(64, 64)
    rows = torch.nonzero(mask.sum(dim=1) > 0).flatten()
    cols = torch.nonzero(mask.sum(dim=0) > 0).flatten()
    row_centre = (rows.min() + rows.max() + 1) / 2
    col_centre = (cols.min() + cols.max() + 1) / 2
    assert abs(float(row_centre) - 32) <= 1 and abs(float(col_centre) - 32) <= 1
    longest = max(int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))
    assert 15 <= longest <= 17  # 0.25 * 64 = 16 pixels
    assert mask[32, 32] > 0 or mask[31, 31] > 0
    assert mask[:8].sum() == 0 and mask[-8:].sum() == 0
    off_centre = PolygonTrigger(seed=4, size=0.25, center=(0.25, 0.75)).mask(64, 64)
    assert off_centre[:, :32].sum() == 0 and off_centre[32:].sum() == 0


def test_polygon_deterministic_per_seed_and_different_across_seeds() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    first = PolygonTrigger(seed=5)
    torch.manual_seed(1)
    np.random.seed(1)
    second = PolygonTrigger(seed=5)
    assert torch.equal(first.mask(32, 32), second.mask(32, 32))
    assert first.color == second.color
    assert not torch.equal(first.mask(32, 32), PolygonTrigger(seed=6).mask(32, 32))
    # The shape does not depend on whether a colour is given.
    assert torch.equal(PolygonTrigger(seed=5, color=(1, 0, 0)).mask(32, 32), first.mask(32, 32))
    sides = {PolygonTrigger(seed=s).num_sides for s in range(20)}
    assert sides <= set(range(3, 9)) and len(sides) >= 3
    assert PolygonTrigger(sides=5).num_sides == 5


def test_polygon_colour_inside_and_unchanged_outside() -> None:
    colour = torch.tensor([0.2, 0.4, 0.6])
    trigger = PolygonTrigger(seed=2, color=colour.tolist(), size=0.5)
    x = random_batch(h=32, w=32)
    out = trigger.apply(x)
    m = trigger.mask(32, 32)
    inside, outside = m == 1, m == 0
    assert inside.sum() > 30
    assert torch.equal(out[:, :, inside], colour[None, :, None].expand(2, 3, int(inside.sum())))
    assert torch.equal(out[:, :, outside], x[:, :, outside])
    torch.testing.assert_close(out, x * (1 - m) + m * colour[:, None, None])
    random_colour = PolygonTrigger(seed=2).color  # fully saturated
    assert max(random_colour) == pytest.approx(1.0) and min(random_colour) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- shared behaviour
def test_mask_matches_where_apply_changes_a_random_image() -> None:
    x = random_batch(h=32, w=32, seed=1)
    for trigger in (BadNetTrigger(), BadNetTrigger(size=5, position="top-left"), PolygonTrigger(seed=3, supersample=1)):
        changed = (trigger.apply(x) != x).any(dim=0).any(dim=0)
        assert torch.equal(changed, trigger.mask(32, 32) > 0), trigger
    soft = PolygonTrigger(seed=3)
    changed = (soft.apply(x) != x).any(dim=0).any(dim=0)
    m = soft.mask(32, 32)
    assert not changed[m == 0].any() and changed[m == 1].all()
    for whole in (BlendTrigger(), SIGTrigger()):
        changed = (whole.apply(x) != x).any(dim=0).any(dim=0)
        assert torch.equal(whole.mask(32, 32), torch.ones(32, 32))
        assert changed.float().mean() > 0.8


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_apply_uint8_numpy_layouts(layout: str) -> None:
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    data = nchw if layout == "NCHW" else nchw.transpose(0, 2, 3, 1).copy()
    original = data.copy()
    out = BadNetTrigger().apply_uint8(data, layout=layout)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == data.shape
    assert np.array_equal(data, original)
    out_nchw = out if layout == "NCHW" else out.transpose(0, 3, 1, 2)
    assert (out_nchw[:, :, 28, 28] == 255).all() and (out_nchw[:, :, 28, 29] == 0).all()
    untouched = np.ones((32, 32), dtype=bool)
    untouched[28:31, 28:31] = False
    assert np.array_equal(out_nchw[:, :, untouched], nchw[:, :, untouched])


def test_apply_uint8_tensor_and_errors() -> None:
    x = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    out = BlendTrigger(pattern=torch.ones(3, 2, 2), alpha=0.5).apply_uint8(x, layout="CHW")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == x.shape
    assert (out == 178).all()  # round(255 * (0.5 * 100/255 + 0.5)) = round(177.5) = 178
    with pytest.raises(TypeError):
        BadNetTrigger().apply_uint8(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        BadNetTrigger().apply_uint8(np.zeros((3, 8, 8), dtype=np.uint8), layout="NCHW")
    with pytest.raises(ValueError):
        BadNetTrigger().apply_uint8(np.zeros((1, 3, 8, 8), dtype=np.uint8), layout="NCWH")


def test_config_round_trip_gives_identical_outputs() -> None:
    triggers = [
        BadNetTrigger(size=4, position=(2, 3), pattern="checkerboard", colors=((1, 0, 0), (0, 0, 1))),
        BadNetTrigger(position="top-right", margin=2, pattern="solid", colors=((0.3, 0.6, 0.9),)),
        BlendTrigger(alpha=0.3, seed=11),
        BlendTrigger(pattern=random_batch(1, 3, 8, 8, seed=5)[0], alpha=0.2),
        SIGTrigger(delta=0.1, frequency=3.5, clean_label=False),
        SIGTrigger(mode="blend", alpha=0.3),
        PolygonTrigger(sides=6, size=0.4, seed=9, center=(0.4, 0.6), supersample=2),
        PolygonTrigger(color=(0.1, 0.9, 0.2), seed=3),
    ]
    x = random_batch(h=24, w=24, seed=2)
    for trigger in triggers:
        config = json.loads(json.dumps(trigger.to_config()))
        assert config["name"] == trigger.name
        rebuilt = trigger_from_config(config)
        assert type(rebuilt) is type(trigger) and rebuilt.clean_label == trigger.clean_label
        assert rebuilt.to_config() == trigger.to_config()
        assert torch.equal(rebuilt.apply(x), trigger.apply(x)), trigger


def test_factory_and_config_errors() -> None:
    assert AVAILABLE_TRIGGERS == ("badnet", "blend", "sig", "polygon")
    for name in AVAILABLE_TRIGGERS:
        assert make_trigger(name).name == name
    assert isinstance(make_trigger("badnet", size=5), BadNetTrigger) and make_trigger("badnet", size=5).size == 5
    # one registry: every attack name builds, an unknown one lists all ten
    assert make_trigger("wanet").name == "wanet"
    with pytest.raises(ValueError, match="badnet, blend, sig, polygon, cleanlabel, .*composite, adaptive"):
        make_trigger("warp-me")
    with pytest.raises(ValueError, match="delta"):
        make_trigger("badnet", delta=0.1)
    with pytest.raises(ValueError):
        trigger_from_config({"name": "nope"})
    with pytest.raises(ValueError, match="name"):
        trigger_from_config({"size": 3})


def test_input_not_modified_and_new_tensor_returned() -> None:
    x = random_batch(seed=3)
    before = x.clone()
    for trigger in all_triggers():
        out = trigger.apply(x)
        assert torch.equal(x, before), trigger
        assert out.data_ptr() != x.data_ptr()
        assert out.min() >= 0 and out.max() <= 1


def test_dtype_device_and_single_image() -> None:
    x32 = random_batch(seed=4)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for trigger in all_triggers():
        ref = trigger.apply(x32)
        out64 = trigger.apply(x32.double())
        assert out64.dtype == torch.float64 and out64.shape == x32.shape
        torch.testing.assert_close(out64.float(), ref, rtol=0, atol=1e-6)
        single = trigger.apply(x32[1])
        assert single.shape == (3, 32, 32)
        torch.testing.assert_close(single, ref[1], rtol=0, atol=0)
        for device in devices:
            out = trigger.apply(x32.to(device))
            assert out.device.type == device and out.dtype == torch.float32
            torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-6)


def test_grey_images() -> None:
    x = random_batch(c=1, seed=5)
    for trigger in all_triggers():
        out = trigger.apply(x)
        assert out.shape == (2, 1, 32, 32)
    out = PolygonTrigger(seed=1, color=(0.3, 0.6, 0.9), size=0.5).apply(x)
    inside = PolygonTrigger(seed=1, size=0.5).mask(32, 32) == 1
    assert torch.allclose(out[:, 0, inside], torch.tensor(0.6))
    assert BlendTrigger().preview(channels=1).shape == (1, 32, 32)


def test_preview_and_bad_inputs() -> None:
    preview = BadNetTrigger().preview(height=10, width=12, background=0.5)
    assert preview.shape == (3, 10, 12)
    assert preview[0, 6, 8] == 1.0 and preview[0, 6, 9] == 0.0 and preview[0, 0, 0] == 0.5
    assert PolygonTrigger().preview().shape == (3, 32, 32)
    with pytest.raises(TypeError, match="apply_uint8"):
        BadNetTrigger().apply(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        BadNetTrigger().apply(torch.zeros(8, 8))
    with pytest.raises(TypeError):
        BadNetTrigger().apply(np.zeros((1, 3, 8, 8), dtype=np.float32))  # type: ignore[arg-type]  # deliberately wrong


def test_blend_cells_gives_a_smooth_deterministic_pattern():
    smooth = BlendTrigger(alpha=0.2, seed=3, cells=4).blend_pattern(3, 32, 32)
    rough = BlendTrigger(alpha=0.2, seed=3).blend_pattern(3, 32, 32)
    step = lambda p: (p[:, :, 1:] - p[:, :, :-1]).abs().mean()  # noqa: E731
    assert step(smooth) < 0.25 * step(rough)
    assert smooth.min() >= 0 and smooth.max() <= 1
    again = trigger_from_config(BlendTrigger(alpha=0.2, seed=3, cells=4).to_config())
    assert again.cells == 4 and torch.equal(again.blend_pattern(3, 32, 32), smooth)
    with pytest.raises(ValueError, match="cells"):
        BlendTrigger(cells=-1)
