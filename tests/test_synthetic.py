"""Tests for the embedded synthetic traffic-sign dataset (medic_viz.data.synthetic)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.data.synthetic import (
    CENTRE_CLEARANCE,
    SIGN_CLASSES,
    make_synthetic_signs,
    render_sign,
    synthesize_signs,
)

K = len(SIGN_CLASSES)
LEFT, RIGHT = SIGN_CLASSES.index("turn left"), SIGN_CLASSES.index("turn right")


@pytest.fixture(scope="module")
def small() -> DatasetSplits:
    return make_synthetic_signs(60, 30, size=32, seed=3)


def _hashes(data: ImageArrays) -> list[str]:
    return [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in data.images]


def test_classes_are_named_and_distinct() -> None:
    assert len(SIGN_CLASSES) >= 10
    assert len(set(SIGN_CLASSES)) == len(SIGN_CLASSES)
    for name in ("stop", "yield", "speed limit 30", "speed limit 50", "turn left", "turn right"):
        assert name in SIGN_CLASSES


def test_splits_shapes_dtypes_metadata(small: DatasetSplits) -> None:
    assert isinstance(small, DatasetSplits)
    tr, te = small.train, small.test
    assert tr.images.shape == (60, 3, 32, 32) and te.images.shape == (30, 3, 32, 32)
    assert tr.images.dtype == torch.uint8 and tr.labels.dtype == torch.int64
    assert tr.classes == SIGN_CLASSES and te.classes == SIGN_CLASSES
    assert (tr.name, te.name) == ("signs-train", "signs-test")
    assert int(tr.labels.min()) >= 0 and int(tr.labels.max()) < K
    # Flips would turn "turn left" into "turn right": the augmentation must not flip.
    assert tr.augmentation.hflip is False
    assert tr.augmentation.crop_pad == 4 and tr.augmentation.rotate_deg == 10
    # Images use the full value range and are not constant.
    assert int(tr.images.max()) > 200 and int(tr.images.min()) < 60


def test_same_seed_same_bytes_other_seed_differs(small: DatasetSplits) -> None:
    again = make_synthetic_signs(60, 30, size=32, seed=3)
    assert torch.equal(again.train.images, small.train.images)
    assert torch.equal(again.train.labels, small.train.labels)
    assert torch.equal(again.test.images, small.test.images)
    other = make_synthetic_signs(60, 30, size=32, seed=4)
    assert not torch.equal(other.train.images, small.train.images)
    assert not torch.equal(other.test.images, small.test.images)


def test_class_balance_and_shuffled_order() -> None:
    s = make_synthetic_signs(50, 5, size=16, seed=0)
    counts = torch.bincount(s.train.labels, minlength=K)
    assert counts.sum() == 50 and counts.max() - counts.min() <= 1  # 50 = 12 * 4 + 2
    assert sorted(counts.tolist()) == [4] * (K - 2) + [5] * 2
    # Fewer images than classes: each image a different class.
    assert len(set(s.test.labels.tolist())) == 5
    # Shuffled: not the label pattern 0, 1, 2, ... of the balanced construction.
    assert not torch.equal(s.train.labels, torch.arange(50) % K)


def test_train_and_test_share_no_image(small: DatasetSplits) -> None:
    train, test = _hashes(small.train), _hashes(small.test)
    assert len(set(train)) == len(train)  # no duplicates within a split either
    assert not set(train) & set(test)
    # Equal sizes would expose train and test drawn from one random stream.
    same_n = make_synthetic_signs(24, 24, size=16, seed=0)
    assert not set(_hashes(same_n.train)) & set(_hashes(same_n.test))


def test_generation_restores_torch_thread_count() -> None:
    before = torch.get_num_threads()
    make_synthetic_signs(12, 12, size=16)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("size", [16, 64])
def test_other_sizes(size: int) -> None:
    s = make_synthetic_signs(24, 12, size=size, seed=1)
    assert s.image_shape == (3, size, size)
    assert s.train.augmentation.crop_pad == max(1, size // 8)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"size": 15}, "size"),
        ({"size": 0}, "size"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": -3}, "n_test"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_synthetic_signs(**{"n_train": 12, "n_test": 12, **kwargs})


def test_non_integer_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match="size"):
        make_synthetic_signs(12, 12, size=32.0)  # type: ignore[call-overload]  # deliberately wrong
    with pytest.raises(ValueError, match="labels"):
        synthesize_signs([0, K], size=32)
    with pytest.raises(ValueError, match="class_index"):
        render_sign(K)


@pytest.mark.parametrize("size", [32, 64])
def test_sign_always_covers_the_image_centre(size: int) -> None:
    labels = np.arange(12 * 16) % K
    _, masks = synthesize_signs(labels, size=size, seed=7)
    assert masks.shape == (len(labels), size, size) and masks.dtype == torch.float32
    # Centre 2x2 pixels are on the sign in every image.
    h = size // 2
    assert float(masks[:, h - 1 : h + 1, h - 1 : h + 1].min()) > 0.99
    # And so is every pixel whose centre lies inside the promised clearance disc (less one
    # pixel for antialiasing at its rim).
    c = torch.arange(size) + 0.5 - size / 2
    radius = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    disc = radius <= CENTRE_CLEARANCE * size - 1.0
    assert int(disc.sum()) >= 4
    assert float(masks[:, disc].min()) > 0.99
    # The sign does not fill the image: every image has background in it.
    assert bool((masks.flatten(1).min(1).values < 0.01).all())
    assert 0.1 < float(masks.mean()) < 0.6


def test_masks_match_the_drawn_sign() -> None:
    # "no entry" is a red disc with a white bar: on-sign pixels are red-dominant on average.
    labels = np.full(40, SIGN_CLASSES.index("no entry"))
    images, masks = synthesize_signs(labels, size=32, seed=2)
    x = images.float()
    on = masks > 0.99
    red_minus_green = (x[:, 0] - x[:, 1])[on].mean()
    assert red_minus_green > 40
    # Backgrounds vary from image to image (they are not a constant that a model could ignore).
    bg_means = torch.stack([x[i][:, masks[i] < 0.01].mean() for i in range(len(x))])
    assert float(bg_means.std()) > 15


def test_synthesize_is_deterministic_and_label_driven() -> None:
    a, ma = synthesize_signs([0, 1, 2], size=32, seed=11)
    b, mb = synthesize_signs(torch.tensor([0, 1, 2]), size=32, seed=11)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    c, _ = synthesize_signs([0, 1, 2], size=32, seed=12)
    assert not torch.equal(a, c)
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.uint8


def test_left_and_right_arrows_are_exact_mirror_images() -> None:
    left, right = render_sign(LEFT, 64), render_sign(RIGHT, 64)
    assert np.array_equal(left, right[:, ::-1])
    assert not np.array_equal(left, right)  # the arrow is not symmetric


def test_speed_limits_differ_only_by_the_numeral() -> None:
    s30 = render_sign(SIGN_CLASSES.index("speed limit 30"), 128).astype(int)
    s50 = render_sign(SIGN_CLASSES.index("speed limit 50"), 128).astype(int)
    differs = np.abs(s30 - s50).sum(-1) > 0
    assert differs.any()
    ys, xs = np.nonzero(differs)
    r = np.sqrt((ys + 0.5 - 64) ** 2 + (xs + 0.5 - 64) ** 2)
    assert r.max() < 0.70 * 64  # inside the white inner disc; the red ring is identical


def test_render_sign_icon() -> None:
    icon = render_sign(SIGN_CLASSES.index("no entry"), 64)
    assert icon.shape == (64, 64, 3) and icon.dtype == np.uint8
    assert tuple(icon[0, 0]) == (255, 255, 255)  # corner outside the disc: background
    r, g, _ = icon[10, 32].astype(int)  # upper part of the disc: red
    assert r > 150 and g < 60
    rgba = render_sign(SIGN_CLASSES.index("no entry"), 64, background=None)
    assert rgba.shape == (64, 64, 4) and rgba[0, 0, 3] == 0 and rgba[32, 32, 3] == 255
