"""Embedded synthetic traffic-sign dataset (TrojAI-style): no download, deterministic, fast.

Each image shows one traffic sign (stop, yield, speed limits, arrows, …) over a random
scene: smooth gradients, sky/ground bands, low-contrast clutter or textured noise, sometimes
a sign pole. The sign varies in size (diameter, or a triangle's height, 45–85 % of the
image side), position, rotation (±15°), slight off-axis squash and paint fading; the whole
image then gets brightness, contrast, a colour cast, blur and Gaussian noise.

The sign ALWAYS covers the image centre: a disc of radius ``CENTRE_CLEARANCE * size`` pixels
around the centre lies on the sign in every image, so a trigger stamped near the centre
(TrojAI's polygon attack) lands on the sign. :func:`synthesize_signs` also returns the
per-pixel sign coverage masks for placing triggers on the sign exactly.

How it is made, for speed: every class is drawn once with PIL at 4x resolution and
box-downsampled into an antialiased RGBA template (premultiplied colour + coverage;
:mod:`medic_viz.data.sign_templates`). Images
are then composed in vectorised chunks: one ``grid_sample`` affine warp of the templates into
a 2x supersampled canvas, 2x average pooling, alpha compositing over backgrounds built with
tensor ops, and per-image blur as one grouped convolution. All randomness comes from a numpy
``SeedSequence`` (parameters) and seeded ``torch.Generator`` objects (pixel noise), so the same
seed gives the same bytes; train and test use different child streams of the seed.

Left/right turn signs are exact mirror images of each other, so horizontal flips change the
label: the dataset's augmentation has ``hflip=False``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal, Sequence, overload

import numpy as np
import torch
import torch.nn.functional as F

from medic_viz import limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays
from medic_viz.data.sign_templates import (
    CLASS_INCIRCLE,
    CLASS_SCALE,
    SIGN_CLASSES,
    SIGN_EXTENT,
    check_int,
    class_templates,
    render_sign,
)

__all__ = [
    "SIGN_CLASSES",
    "MIN_SIZE",
    "CENTRE_CLEARANCE",
    "make_synthetic_signs",
    "synthesize_signs",
    "render_sign",
]

MIN_SIZE = 16
"""Smallest supported image side in pixels."""

# --- sampling ranges (fractions are of the image side unless stated) ------------------------
_DIAMETER_RANGE = (0.45, 0.85)  # sign bounding diameter / image side
_ROTATION_DEG = 15.0
_SQUASH_RANGE = (0.88, 1.0)  # horizontal scale of the sign (seen slightly off-axis)
_JITTER_FRACTION = 0.3  # sign-centre offset, as a fraction of the sign's inscribed radius

CENTRE_CLEARANCE: float = (
    (1 - _JITTER_FRACTION)
    * (_DIAMETER_RANGE[0] / SIGN_EXTENT)  # smallest image units ([-1, 1]) per template unit
    * min(scale * r for scale, (_, r) in zip(CLASS_SCALE, CLASS_INCIRCLE))
    * _SQUASH_RANGE[0]
    / 2  # image units -> fraction of the image side
)
"""Radius, as a fraction of the image side, of the centred disc that lies on the sign in every
image (about 0.09: 2.9 px at 32x32, 5.9 px at 64x64). Coverage is exact geometry; the outermost
pixels of the disc may be partly antialiased."""


# ============================================================================================
# Composing dataset images
# ============================================================================================
def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1] (align_corners=False convention), ``(1, size, size)``."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return xs[None], ys[None]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _random_colours(rng: np.random.Generator, n: int, lum: tuple[float, float], sat: tuple[float, float]) -> np.ndarray:
    """``(n, 3)`` colours with luminance and saturation in the given ranges."""
    hue = rng.random((n, 3))
    grey = rng.uniform(*lum, size=(n, 1))
    s = rng.uniform(*sat, size=(n, 1))
    return np.clip(grey + s * (hue - hue.mean(1, keepdims=True)), 0, 1)


def _smooth_noise(gen: torch.Generator, b: int, channels: int, cells: int, size: int) -> torch.Tensor:
    """Zero-mean smooth noise ``(b, channels, size, size)`` in [-1, 1]: random values on a
    ``cells`` grid, bilinearly upsampled."""
    coarse = torch.rand(b, channels, cells, cells, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _backgrounds(rng: np.random.Generator, gen: torch.Generator, b: int, size: int) -> torch.Tensor:
    """Random scenes ``(b, 3, size, size)`` in [0, 1]: one of gradient, sky/ground, clutter,
    texture, each with some low-frequency variation on top."""
    xs, ys = _pixel_grid(size)
    kind = rng.integers(0, 4, size=b)
    out = torch.empty(b, 3, size, size)

    idx = np.flatnonzero(kind == 0)  # smooth gradient between two colours
    if len(idx):
        n = len(idx)
        c0 = _t(_random_colours(rng, n, (0.15, 0.85), (0.1, 0.9)))[:, :, None, None]
        c1 = _t(_random_colours(rng, n, (0.15, 0.85), (0.1, 0.9)))[:, :, None, None]
        phi = rng.uniform(0, 2 * np.pi, n)
        steep = _t(rng.uniform(0.4, 1.5, n))[:, None, None]
        t = (xs * _t(np.cos(phi))[:, None, None] + ys * _t(np.sin(phi))[:, None, None]) * steep * 0.5 + 0.5
        out[idx] = c0 + (c1 - c0) * t.clamp(0, 1)[:, None]

    idx = np.flatnonzero(kind == 1)  # sky above ground, tilted horizon
    if len(idx):
        n = len(idx)
        skies = np.array([[0.45, 0.65, 0.92], [0.72, 0.76, 0.80], [0.90, 0.66, 0.45], [0.60, 0.78, 0.95]])
        grounds = np.array([[0.25, 0.45, 0.15], [0.45, 0.36, 0.22], [0.36, 0.36, 0.38], [0.55, 0.55, 0.50]])
        sky = skies[rng.integers(0, len(skies), n)] + rng.normal(0, 0.05, (n, 3))
        ground = grounds[rng.integers(0, len(grounds), n)] + rng.normal(0, 0.05, (n, 3))
        horizon = _t(rng.uniform(-0.6, 0.6, n))[:, None, None]
        tilt = _t(rng.uniform(-0.3, 0.3, n))[:, None, None]
        softness = _t(rng.uniform(0.02, 0.15, n))[:, None, None]
        below = torch.sigmoid((ys - horizon - tilt * xs) / softness)[:, None]
        sky_t = _t(sky)[:, :, None, None] * (1 + 0.25 * (ys[:, None] - 1) / 2)  # darker towards the top
        ground_t = _t(ground)[:, :, None, None] * (1 + 0.3 * _smooth_noise(gen, n, 1, 8, size))
        out[idx] = sky_t + (ground_t - sky_t) * below

    idx = np.flatnonzero(kind == 2)  # low-contrast clutter: rectangles and ellipses
    if len(idx):
        n = len(idx)
        base = _random_colours(rng, n, (0.2, 0.8), (0.0, 0.6))
        img = _t(base)[:, :, None, None].expand(n, 3, size, size).clone()
        for _ in range(7):
            cx, cy = _t(rng.uniform(-1, 1, n))[:, None, None], _t(rng.uniform(-1, 1, n))[:, None, None]
            rx, ry = _t(rng.uniform(0.08, 0.6, n))[:, None, None], _t(rng.uniform(0.08, 0.6, n))[:, None, None]
            dx, dy = (xs - cx) / rx, (ys - cy) / ry
            is_rect = torch.from_numpy(rng.random(n) < 0.5)[:, None, None]
            inside = torch.where(is_rect, torch.maximum(dx.abs(), dy.abs()) < 1, dx * dx + dy * dy < 1)
            colour = _t(np.clip(base + rng.normal(0, 0.14, (n, 3)), 0, 1))[:, :, None, None]
            img = torch.where(inside[:, None], colour, img)
        out[idx] = img

    idx = np.flatnonzero(kind == 3)  # textured noise at two scales
    if len(idx):
        n = len(idx)
        tint = _t(_random_colours(rng, n, (0.2, 0.8), (0.0, 0.7)))[:, :, None, None]
        amp = _t(rng.uniform(0.05, 0.2, n))[:, None, None, None]
        grain = torch.rand(n, 1, size, size, generator=gen) * 2 - 1
        blobs = _smooth_noise(gen, n, 3, 4, size)
        blobs = blobs.mean(1, keepdim=True) + 0.4 * (blobs - blobs.mean(1, keepdim=True))  # mostly luminance
        texture = blobs + 0.6 * _smooth_noise(gen, n, 1, max(4, size // 4), size)
        out[idx] = tint + amp * (texture + 0.5 * grain)

    return out + 0.05 * _smooth_noise(gen, b, 3, 3, size)


def _gaussian_blur(x: torch.Tensor, sigma_px: np.ndarray) -> torch.Tensor:
    """Blur each image of ``x`` ``(b, c, h, w)`` with its own Gaussian (sigma in pixels; 0 = none)
    as one separable grouped convolution with reflect padding."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(2.5 * float(sigma_px.max(initial=0.0)))))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    sigma = _t(np.maximum(sigma_px, 1e-3))[:, None]
    k = torch.exp(-0.5 * (taps[None] / sigma) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (b*c, taps)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _render_chunk(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(b, 3, size, size)`` and sign coverage float32 ``(b, size, size)``."""
    b = len(labels)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    templates = class_templates(size)

    # -- sign pose: template frame -> image frame (both in [-1, 1] units) --------------------
    diameter = rng.uniform(*_DIAMETER_RANGE, b)
    k = diameter / SIGN_EXTENT * np.asarray(CLASS_SCALE)[labels]  # image units per template unit
    theta = np.radians(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, b))
    squash = rng.uniform(*_SQUASH_RANGE, b)
    incircle = np.asarray(CLASS_INCIRCLE)[labels]  # (b, 2): incentre y, inradius
    # The sign's incentre sits within _JITTER_FRACTION of its (squashed) inradius of the centre.
    jitter_r = _JITTER_FRACTION * k * incircle[:, 1] * squash * np.sqrt(rng.random(b))
    jitter_phi = rng.uniform(0, 2 * np.pi, b)
    centre = np.stack([jitter_r * np.cos(jitter_phi), jitter_r * np.sin(jitter_phi)], 1)
    cos, sin = np.cos(theta), np.sin(theta)
    # inverse map M = (k R(theta) diag(squash, 1))^-1 = diag(1/squash, 1) R(-theta) / k
    inv = np.empty((b, 2, 2))
    inv[:, 0, 0], inv[:, 0, 1] = cos / (squash * k), sin / (squash * k)
    inv[:, 1, 0], inv[:, 1, 1] = -sin / k, cos / k
    anchor = np.stack([np.zeros(b), incircle[:, 0]], 1)
    affine = np.concatenate([inv, (anchor - np.einsum("bij,bj->bi", inv, centre))[:, :, None]], 2)
    grid = F.affine_grid(_t(affine), [b, 4, size, size], align_corners=False)
    sign = F.grid_sample(templates[torch.from_numpy(labels)], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # (b, 4, size, size), premultiplied RGB + coverage
    rgb, alpha = sign[:, :3], sign[:, 3:4]

    # -- faded / dirty paint: darken and desaturate the sign a little ---------------------------
    paint_gain = _t(rng.uniform(0.72, 1.08, b))[:, None, None, None]
    fade = _t(rng.uniform(0.0, 0.3, b))[:, None, None, None]
    rgb = (rgb + fade * (rgb.mean(1, keepdim=True) - rgb)) * paint_gain

    # -- scene: background, sometimes a pole under the sign --------------------------------------
    scene = _backgrounds(rng, gen, b, size)
    xs, ys = _pixel_grid(size)
    has_pole = _t(rng.random(b) < 0.45)[:, None, None]
    pole_half = _t(k * rng.uniform(0.05, 0.09, b) * size / 2)[:, None, None]  # in pixels
    pole_grey = _t(rng.uniform(0.35, 0.75, b))[:, None, None, None]
    cxt, cyt = _t(centre[:, 0])[:, None, None], _t(centre[:, 1])[:, None, None]
    across = ((xs - cxt) * _t(cos)[:, None, None] + (ys - cyt) * _t(sin)[:, None, None]) * size / 2
    along = -(xs - cxt) * _t(sin)[:, None, None] + (ys - cyt) * _t(cos)[:, None, None]
    pole = has_pole * (pole_half + 0.5 - across.abs()).clamp(0, 1) * (along > 0)
    scene = scene + pole[:, None] * (pole_grey - scene)

    img = rgb + (1 - alpha) * scene

    # -- camera: illumination gradient, brightness, contrast, colour cast, blur, noise ----------
    light_dir = rng.uniform(0, 2 * np.pi, b)
    light = _t(rng.uniform(0, 0.3, b))[:, None, None]
    img = img * (1 + light * (xs * _t(np.cos(light_dir))[:, None, None]
                              + ys * _t(np.sin(light_dir))[:, None, None]))[:, None]
    mean = img.mean((1, 2, 3), keepdim=True)
    contrast = _t(rng.uniform(0.7, 1.2, b))[:, None, None, None]
    gain = _t(rng.uniform(0.65, 1.25, b)[:, None] * rng.normal(1.0, 0.06, (b, 3)))[:, :, None, None]  # brightness x cast
    img = torch.addcmul((1 - contrast) * mean * gain, img, contrast * gain)  # ((img - mean) c + mean) gain
    blur_sigma = rng.uniform(0.0, 0.9, b) * (size / 32) * (rng.random(b) < 0.7)
    img = _gaussian_blur(img, blur_sigma)
    noise_sigma = _t(rng.uniform(0.0, 0.06, b))[:, None, None, None]
    img = img + noise_sigma * torch.randn(img.shape, generator=gen)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, alpha[:, 0].contiguous()


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch CPU ops on one thread, restoring the previous count afterwards.

    Makes the bytes independent of the machine's thread count (parallel reductions sum in a
    thread-dependent order) and avoids thread oversubscription, which on a busy machine made
    these small per-chunk ops up to 50x slower; the chunks are too small to gain from threads.
    """
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def _synthesize(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(labels)
    # uint8 RGB images and float32 coverage masks: 7 bytes a pixel, checked before allocating
    limits.check_dataset_bytes(n * size * size * (3 + 4), f"{n:,} synthetic signs of {size}x{size} pixels")
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.float32)
    chunk = max(8, (1 << 18) // (size * size))  # ~256 kpixel chunks: cache-friendly, bounded memory
    with _single_torch_thread():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            images[start:stop], masks[start:stop] = _render_chunk(labels[start:stop], size, rng)
    return images, masks


# ============================================================================================
# Public entry points
# ============================================================================================
def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels, counts per class differing by at most one, in random order."""
    k = len(SIGN_CLASSES)
    labels = np.arange(n, dtype=np.int64) % k
    return labels[rng.permutation(n)]


def synthesize_signs(labels: Sequence[int] | np.ndarray | torch.Tensor, *, size: int = 32,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one random sign image per entry of ``labels`` (class indices into SIGN_CLASSES).

    Returns ``(images, masks)``: uint8 ``(N, 3, size, size)`` and float32 ``(N, size, size)``,
    the sign's coverage of each pixel in [0, 1] (1 = on the sign; before blur). Deterministic
    in ``(labels, size, seed)``.
    """
    check_int("size", size, minimum=MIN_SIZE)
    check_int("seed", seed, minimum=0)
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab.ndim != 1 or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D sequence of class indices, got shape {lab.shape} dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= len(SIGN_CLASSES)):
        raise ValueError(f"labels must be in 0..{len(SIGN_CLASSES) - 1}, got {lab.min()}..{lab.max()}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    return _synthesize(lab.astype(np.int64), int(size), rng)


@overload
def make_synthetic_signs(n_train: int = ..., n_test: int = ..., *, size: int = ..., seed: int = ...,
                         return_masks: Literal[False] = ...) -> DatasetSplits: ...
@overload
def make_synthetic_signs(n_train: int = ..., n_test: int = ..., *, size: int = ..., seed: int = ...,
                         return_masks: Literal[True]) -> tuple[DatasetSplits, torch.Tensor, torch.Tensor]: ...
def make_synthetic_signs(n_train: int = 12000, n_test: int = 3000, *, size: int = 32, seed: int = 0,
                         return_masks: bool = False) -> DatasetSplits | tuple[DatasetSplits, torch.Tensor, torch.Tensor]:
    """The default medic_viz dataset: class-balanced synthetic traffic signs, RGB uint8.

    ``n_train``/``n_test`` images of ``size x size`` pixels (``size >= 16``), in shuffled
    order with per-class counts differing by at most one. Train and test come from different
    random streams of ``seed``. Takes about 2 s on one CPU core for the defaults.

    Returns ``DatasetSplits`` (train named "signs-train" with crop/rotate augmentation and
    no horizontal flip, test "signs-test"); with ``return_masks=True`` returns
    ``(splits, train_masks, test_masks)``, the masks float32 ``(N, size, size)`` sign coverage.
    """
    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test, minimum=1)
    check_int("size", size, minimum=MIN_SIZE)
    check_int("seed", seed, minimum=0)
    train_seq, test_seq = np.random.SeedSequence([int(seed), 1]).spawn(2)
    augmentation = Augmentation(crop_pad=max(1, size // 8), hflip=False, rotate_deg=10.0)
    parts = []
    for n, seq, name in ((n_train, train_seq, "signs-train"), (n_test, test_seq, "signs-test")):
        rng = np.random.default_rng(seq)
        labels = _balanced_labels(int(n), rng)
        images, masks = _synthesize(labels, int(size), rng)
        data = ImageArrays(images, torch.from_numpy(labels), SIGN_CLASSES, name=name, augmentation=augmentation)
        parts.append((data, masks))
    splits = DatasetSplits(train=parts[0][0], test=parts[1][0])
    if return_masks:
        return splits, parts[0][1], parts[1][1]
    return splits
