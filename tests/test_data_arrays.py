"""ImageArrays, batching, augmentation and clean subsets."""

import numpy as np
import pytest
import torch

from medic_viz.data import load_dataset
from medic_viz.data.arrays import NO_AUGMENTATION, Augmentation, ImageArrays, clean_subset, iterate_batches


def _arrays(n=40, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % classes
    return ImageArrays(x, y, classes=tuple(str(i) for i in range(classes)))


def test_validation_messages():
    with pytest.raises(ValueError, match="uint8"):
        ImageArrays(torch.zeros(2, 3, 4, 4), torch.zeros(2), classes=("a",))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageArrays(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2), classes=("a",))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageArrays(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), classes=("a",))
    with pytest.raises(ValueError, match="only 1 classes"):
        ImageArrays(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), classes=("a",))


def test_from_numpy_nhwc_matches_nchw():
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 6, 3), dtype=np.uint8)
    a = ImageArrays.from_numpy(x, np.array([0, 1, 0]), layout="NHWC")
    assert a.image_shape == (3, 5, 6)
    assert torch.equal(a.images[1, 2], torch.from_numpy(x[1, :, :, 2]))
    with pytest.raises(ValueError, match="uint8"):
        ImageArrays.from_numpy(x.astype(np.float32), np.array([0, 1, 0]))


def test_floats_are_in_unit_range():
    a = _arrays()
    f = a.floats()
    assert f.dtype == torch.float32 and float(f.min()) >= 0 and float(f.max()) <= 1
    torch.testing.assert_close(f[0, 0, 0, 0] * 255, a.images[0, 0, 0, 0].float())


def test_iterate_batches_covers_every_image_once():
    a = _arrays(37)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in iterate_batches(a, 8, shuffle=True, generator=g)])
    assert len(seen) == 37 and sorted(seen.tolist()) == sorted(a.labels.tolist())
    sizes = [len(y) for _, y in iterate_batches(a, 8)]
    assert sizes == [8, 8, 8, 8, 5]
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(a, 0))


def test_crop_augmentation_is_a_shift_with_zero_padding():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    out = Augmentation(crop_pad=1, hflip=False, rotate_deg=0)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for img in out[:, 0]:
        # every output is the input shifted by (dy, dx) in {-1,0,1}^2 with zeros coming in
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = torch.zeros(6, 6)
                ref[1:5, 1:5] = x[0, 0]
                if torch.equal(img, ref[1 + dy : 5 + dy, 1 + dx : 5 + dx]):
                    shifts.add((dy, dx))
    assert len(shifts) >= 5  # several distinct shifts happen


def test_hflip_only_when_enabled():
    x = torch.rand(200, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    flipped = Augmentation(crop_pad=0, hflip=True)(x, g)
    n_flipped = sum(torch.equal(a, b.flip(2)) and not torch.equal(a, b) for a, b in zip(flipped, x))
    assert 60 < n_flipped < 140
    assert torch.equal(NO_AUGMENTATION(x), x)
    assert torch.equal(Augmentation(crop_pad=0, hflip=False)(x, g), x)


def test_clean_subset_is_class_balanced_and_seeded():
    a = _arrays(400, classes=4)
    s = clean_subset(a, 0.05, seed=1)
    assert len(s) == 20 and torch.bincount(s.labels).tolist() == [5, 5, 5, 5]
    assert torch.equal(clean_subset(a, 0.05, seed=1).images, s.images)
    assert not torch.equal(clean_subset(a, 0.05, seed=2).images, s.images)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            clean_subset(a, bad)


def test_default_dataset_is_the_embedded_signs():
    splits = load_dataset()
    assert splits.train.name == "signs-train" and splits.num_classes >= 8
    assert splits.image_shape == (3, 32, 32)
    assert not splits.train.augmentation.hflip, "traffic signs must not be flipped"
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_cutout_sets_one_clipped_square_per_image_to_its_mean_colour():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, 8, 8, generator=g) + 2.0  # no pixel equals a mean by chance
    out = Augmentation(crop_pad=0, erase=0.5)(x, torch.Generator().manual_seed(1))
    mean = x.mean(dim=(2, 3), keepdim=True)
    heights, widths = set(), set()
    for img, src, m in zip(out, x, mean):
        changed = (img != src).any(0)  # (H, W)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        # one axis-aligned rectangle: every pixel between its first and last row/column changed
        assert int(changed.sum()) == len(rows) * len(cols)
        assert rows.tolist() == list(range(int(rows[0]), int(rows[-1]) + 1))
        assert cols.tolist() == list(range(int(cols[0]), int(cols[-1]) + 1))
        # side round(0.5 * 8) = 4, centred inside the image: clipped to 2..4 pixels per axis
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4
        torch.testing.assert_close(img[:, changed], m[:, :, 0].expand(3, int(changed.sum())))
        heights.add(len(rows))
        widths.add(len(cols))
    assert heights == {2, 3, 4} and widths == {2, 3, 4}  # the clipping happens at both borders


def test_cutout_off_leaves_the_batch_and_out_of_range_is_refused():
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(Augmentation(crop_pad=0, erase=0.0)(x), x)
    one = Augmentation(crop_pad=0, erase=0.1)(x)  # side round(0.8) = 1 pixel
    assert ((one != x).any(1).sum(dim=(1, 2)) == 1).all()
    assert torch.equal(Augmentation(crop_pad=0, erase=0.05)(x), x)  # round(0.4) = 0: nothing
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="erase"):
            Augmentation(erase=bad)
