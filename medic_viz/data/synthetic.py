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
box-downsampled into an antialiased RGBA template (premultiplied colour + coverage). Images
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
import functools
import math
from typing import Iterator, Literal, Sequence, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from medic_viz import limits
from medic_viz.data.arrays import Augmentation, DatasetSplits, ImageArrays

__all__ = [
    "SIGN_CLASSES",
    "MIN_SIZE",
    "CENTRE_CLEARANCE",
    "make_synthetic_signs",
    "synthesize_signs",
    "render_sign",
]

SIGN_CLASSES: tuple[str, ...] = (
    "stop",
    "yield",
    "no entry",
    "speed limit 30",
    "speed limit 50",
    "turn left",
    "turn right",
    "ahead only",
    "caution",
    "priority road",
    "pedestrian crossing",
    "no parking",
)

MIN_SIZE = 16
"""Smallest supported image side in pixels."""

# --- sampling ranges (fractions are of the image side unless stated) ------------------------
_DIAMETER_RANGE = (0.45, 0.85)  # sign bounding diameter / image side
_ROTATION_DEG = 15.0
_SQUASH_RANGE = (0.88, 1.0)  # horizontal scale of the sign (seen slightly off-axis)
_JITTER_FRACTION = 0.3  # sign-centre offset, as a fraction of the sign's inscribed radius
_SIGN_EXTENT = 0.94  # the sign spans [-0.94, 0.94] of its template's [-1, 1] frame

# --- geometry of the sign shapes, in template units ([-1, 1], y pointing down) -----------------
_TRI_SIDE = 2 * _SIGN_EXTENT
_TRI_HEIGHT = _TRI_SIDE * math.sqrt(3) / 2
_TRI_INRADIUS = _TRI_HEIGHT / 3
_DIAMOND_INRADIUS = _SIGN_EXTENT / math.sqrt(2)
# (incentre y, inradius) of each class's outline: the disc that always covers the image centre.
_CLASS_INCIRCLE: tuple[tuple[float, float], ...] = (
    (0.0, _SIGN_EXTENT),  # stop: octagon, flat-to-flat 2 * extent
    (-_TRI_HEIGHT / 6, _TRI_INRADIUS),  # yield: triangle point-down
    (0.0, _SIGN_EXTENT),  # no entry
    (0.0, _SIGN_EXTENT),  # speed limit 30
    (0.0, _SIGN_EXTENT),  # speed limit 50
    (0.0, _SIGN_EXTENT),  # turn left
    (0.0, _SIGN_EXTENT),  # turn right
    (0.0, _SIGN_EXTENT),  # ahead only
    (_TRI_HEIGHT / 6, _TRI_INRADIUS),  # caution: triangle point-up
    (0.0, _DIAMOND_INRADIUS),  # priority road: diamond
    (0.0, _SIGN_EXTENT),  # pedestrian crossing: square
    (0.0, _SIGN_EXTENT),  # no parking
)

# Size of each class relative to the sampled diameter. Triangles are drawn with their HEIGHT
# equal to the diameter (side 1.15x), as real warning triangles are larger than round signs
# (900 mm side vs 600 mm disc); this also widens their inscribed disc.
_CLASS_SCALE: tuple[float, ...] = tuple(
    2 / math.sqrt(3) if name in ("yield", "caution") else 1.0 for name in SIGN_CLASSES
)

CENTRE_CLEARANCE: float = (
    (1 - _JITTER_FRACTION)
    * (_DIAMETER_RANGE[0] / _SIGN_EXTENT)  # smallest image units ([-1, 1]) per template unit
    * min(scale * r for scale, (_, r) in zip(_CLASS_SCALE, _CLASS_INCIRCLE))
    * _SQUASH_RANGE[0]
    / 2  # image units -> fraction of the image side
)
"""Radius, as a fraction of the image side, of the centred disc that lies on the sign in every
image (about 0.09: 2.9 px at 32x32, 5.9 px at 64x64). Coverage is exact geometry; the outermost
pixels of the disc may be partly antialiased."""

_RED = (200, 22, 32)
_WHITE = (246, 246, 240)
_BLUE = (18, 80, 172)
_YELLOW = (250, 194, 0)
_BLACK = (24, 24, 24)
_DARK = (70, 70, 70)


# ============================================================================================
# Drawing the class templates with PIL
# ============================================================================================
@functools.lru_cache(maxsize=4)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # scalable embedded font, Pillow >= 10.1 with FreeType
        return ImageFont.load_default(size=px)
    except (TypeError, OSError, ImportError):  # bitmap fallback; glyphs are resized anyway
        return ImageFont.load_default()


class _Pen:
    """Draws in template units ([-1, 1] across the square, y down) on an RGB canvas over
    black (so box-downsampling yields premultiplied colour) plus an ``L`` silhouette mask."""

    def __init__(self, res: int) -> None:
        self.res = res
        self.rgb = Image.new("RGB", (res, res), (0, 0, 0))
        self.mask = Image.new("L", (res, res), 0)
        self._draw = ImageDraw.Draw(self.rgb)
        self._mask_draw = ImageDraw.Draw(self.mask)

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return ((x + 1) * self.res / 2, (y + 1) * self.res / 2)

    def _len(self, v: float) -> float:
        return v * self.res / 2

    def _targets(self, outline: bool) -> list[tuple[ImageDraw.ImageDraw, int | None]]:
        return [(self._draw, None)] + ([(self._mask_draw, 255)] if outline else [])

    def disc(self, cx: float, cy: float, r: float, fill: tuple[int, int, int], outline: bool = False) -> None:
        (x0, y0), (x1, y1) = self._xy(cx - r, cy - r), self._xy(cx + r, cy + r)
        for draw, colour in self._targets(outline):
            draw.ellipse([x0, y0, x1, y1], fill=colour or fill)

    def polygon(self, pts: Sequence[tuple[float, float]], fill: tuple[int, int, int], outline: bool = False) -> None:
        xy = [self._xy(x, y) for x, y in pts]
        for draw, colour in self._targets(outline):
            draw.polygon(xy, fill=colour or fill)

    def line(self, pts: Sequence[tuple[float, float]], width: float, fill: tuple[int, int, int],
             outline: bool = False) -> None:
        xy = [self._xy(x, y) for x, y in pts]
        for draw, colour in self._targets(outline):
            draw.line(xy, fill=colour or fill, width=max(1, round(self._len(width))), joint="curve")

    def rounded_polygon(self, pts: Sequence[tuple[float, float]], centre: tuple[float, float], inradius: float,
                        corner: float, fill: tuple[int, int, int], outline: bool = False) -> None:
        """A tangential convex polygon (incircle ``centre``/``inradius``) with round corners:
        the polygon shrunk by ``corner`` about its incentre, dilated by a disc of ``corner``."""
        f = (inradius - corner) / inradius
        inner = [(centre[0] + (x - centre[0]) * f, centre[1] + (y - centre[1]) * f) for x, y in pts]
        self.polygon(inner, fill, outline)
        self.line(inner + inner[:1], 2 * corner, fill, outline)
        for x, y in inner:
            self.disc(x, y, corner, fill, outline)

    def text(self, s: str, cx: float, cy: float, w: float, h: float, fill: tuple[int, int, int],
             bold: float = 0.05) -> None:
        """Write ``s`` stretched to fill the box of width ``w`` and height ``h`` at (cx, cy)."""
        font_px = 160
        font = _font(font_px)
        stroke = max(0, round(bold * font_px))
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        x0, y0, x1, y1 = probe.textbbox((0, 0), s, font=font, stroke_width=stroke)
        glyphs = Image.new("L", (x1 - x0 + 2, y1 - y0 + 2), 0)  # type: ignore[arg-type]  # ints from (0, 0)
        ImageDraw.Draw(glyphs).text((1 - x0, 1 - y0), s, fill=255, font=font, stroke_width=stroke,
                                    stroke_fill=255)
        glyphs = glyphs.crop(glyphs.getbbox())
        bw, bh = max(1, round(self._len(w))), max(1, round(self._len(h)))
        glyphs = glyphs.resize((bw, bh), Image.Resampling.LANCZOS)
        px, py = self._xy(cx, cy)
        self.rgb.paste(fill, (round(px - bw / 2), round(py - bh / 2)), glyphs)


def _regular_polygon(n: int, circumradius: float, phase_deg: float, cy: float = 0.0) -> list[tuple[float, float]]:
    return [
        (circumradius * math.cos(math.radians(phase_deg + 360 * k / n)),
         cy + circumradius * math.sin(math.radians(phase_deg + 360 * k / n)))
        for k in range(n)
    ]


def _triangle(point_up: bool) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """Equilateral triangle of side ``2 * extent`` centred by its bounding box; returns the
    vertices and the incentre."""
    s, h = _SIGN_EXTENT, _TRI_HEIGHT / 2
    if point_up:
        return [(0.0, -h), (s, h), (-s, h)], (0.0, h - _TRI_HEIGHT / 3)
    return [(0.0, h), (-s, -h), (s, -h)], (0.0, -h + _TRI_HEIGHT / 3)


def _bordered_triangle(pen: _Pen, point_up: bool, border: tuple[int, int, int], inner_fill: tuple[int, int, int],
                       inner_scale: float) -> tuple[float, float]:
    pts, centre = _triangle(point_up)
    pen.rounded_polygon(pts, centre, _TRI_INRADIUS, 0.10, border, outline=True)
    inner = [(centre[0] + (x - centre[0]) * inner_scale, centre[1] + (y - centre[1]) * inner_scale) for x, y in pts]
    pen.rounded_polygon(inner, centre, _TRI_INRADIUS * inner_scale, 0.06, inner_fill)
    return centre


def _rimmed_disc(pen: _Pen, fill: tuple[int, int, int]) -> None:
    pen.disc(0, 0, _SIGN_EXTENT, _WHITE, outline=True)
    pen.disc(0, 0, _SIGN_EXTENT - 0.05, fill)


def _turn_arrow(pen: _Pen) -> None:
    """White arrow going up and bending right (the left arrow is its exact mirror image)."""
    pen.line([(-0.28, 0.62), (-0.28, 0.02), (-0.24, -0.10), (-0.12, -0.16), (0.18, -0.16)], 0.24, _WHITE)
    pen.polygon([(0.64, -0.16), (0.14, -0.50), (0.14, 0.18)], _WHITE)


def _draw_class(pen: _Pen, class_index: int) -> None:
    e = _SIGN_EXTENT
    if class_index == 0:  # stop
        octagon = _regular_polygon(8, e / math.cos(math.pi / 8), 22.5)
        pen.rounded_polygon(octagon, (0, 0), e, 0.05, _WHITE, outline=True)
        inner = [(x * 0.9, y * 0.9) for x, y in octagon]
        pen.rounded_polygon(inner, (0, 0), e * 0.9, 0.04, _RED)
        pen.text("STOP", 0, 0.0, 1.36, 0.52, _WHITE, bold=0.06)
    elif class_index == 1:  # yield
        _bordered_triangle(pen, point_up=False, border=_RED, inner_fill=_WHITE, inner_scale=0.6)
    elif class_index == 2:  # no entry
        pen.disc(0, 0, e, _WHITE, outline=True)
        pen.disc(0, 0, e - 0.05, _RED)
        pen.rounded_polygon([(-0.66, -0.17), (0.66, -0.17), (0.66, 0.17), (-0.66, 0.17)], (0, 0), 0.17, 0.03, _WHITE)
    elif class_index in (3, 4):  # speed limits
        pen.disc(0, 0, e, _RED, outline=True)
        pen.disc(0, 0, 0.70, _WHITE)
        pen.text("30" if class_index == 3 else "50", 0, 0.0, 0.86, 0.74, _BLACK, bold=0.07)
    elif class_index == 6:  # turn right (turn left is drawn as its mirror image)
        _rimmed_disc(pen, _BLUE)
        _turn_arrow(pen)
    elif class_index == 7:  # ahead only
        _rimmed_disc(pen, _BLUE)
        pen.line([(0, 0.64), (0, -0.14)], 0.26, _WHITE)
        pen.polygon([(0, -0.66), (0.36, -0.12), (-0.36, -0.12)], _WHITE)
    elif class_index == 8:  # caution
        c = _bordered_triangle(pen, point_up=True, border=_RED, inner_fill=_WHITE, inner_scale=0.64)
        pen.polygon([(-0.075, c[1] - 0.40), (0.075, c[1] - 0.40), (0.04, c[1] + 0.10), (-0.04, c[1] + 0.10)], _BLACK)
        pen.disc(0, c[1] + 0.22, 0.07, _BLACK)
    elif class_index == 9:  # priority road
        diamond = [(0, -e), (e, 0), (0, e), (-e, 0)]
        for scale, fill, corner, outline in ((1.0, _DARK, 0.07, True), (0.95, _WHITE, 0.06, False),
                                             (0.72, _BLACK, 0.04, False), (0.67, _YELLOW, 0.03, False)):
            pts = [(x * scale, y * scale) for x, y in diamond]
            pen.rounded_polygon(pts, (0, 0), _DIAMOND_INRADIUS * scale, corner, fill, outline)
    elif class_index == 10:  # pedestrian crossing
        square = [(-e, -e), (e, -e), (e, e), (-e, e)]
        pen.rounded_polygon(square, (0, 0), e, 0.12, _WHITE, outline=True)
        pen.rounded_polygon([(x * 0.93, y * 0.93) for x, y in square], (0, 0), e * 0.93, 0.09, _BLUE)
        pen.polygon([(0, -0.74), (0.74, 0.58), (-0.74, 0.58)], _WHITE)
        for x in (-0.36, -0.12, 0.12, 0.36):  # zebra stripes
            pen.polygon([(x - 0.07, 0.38), (x + 0.07, 0.38), (x + 0.07, 0.50), (x - 0.07, 0.50)], _BLACK)
        pen.disc(0.04, -0.30, 0.075, _BLACK)  # walking figure
        pen.line([(0.02, -0.20), (-0.03, 0.08)], 0.09, _BLACK)
        pen.line([(-0.03, 0.08), (-0.17, 0.32)], 0.08, _BLACK)
        pen.line([(-0.03, 0.08), (0.13, 0.32)], 0.08, _BLACK)
        pen.line([(-0.16, 0.02), (0.00, -0.14), (0.16, 0.00)], 0.06, _BLACK)
    elif class_index == 11:  # no parking
        pen.disc(0, 0, e, _RED, outline=True)
        pen.disc(0, 0, 0.72, _BLUE)
        d = 0.72 / math.sqrt(2)
        pen.line([(-d, -d), (d, d)], 0.17, _RED)
    else:
        raise ValueError(f"class_index must be in 0..{len(SIGN_CLASSES) - 1}, got {class_index}")


def _draw_template(class_index: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied RGB ``(res, res, 3)`` and coverage ``(res, res)``, float32 in [0, 1],
    drawn at 4x and box-downsampled (exact area antialiasing)."""
    if class_index == 5:  # turn left: exact mirror image of turn right
        rgb, alpha = _draw_template(6, res)
        return np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(alpha[:, ::-1])
    pen = _Pen(4 * res)
    _draw_class(pen, class_index)
    rgb = np.asarray(pen.rgb.reduce(4), dtype=np.float32) / 255.0
    alpha = np.asarray(pen.mask.reduce(4), dtype=np.float32) / 255.0
    return np.minimum(rgb, alpha[..., None]), alpha  # glyph paste can exceed the outline by a hair


@functools.lru_cache(maxsize=8)
def _templates(res: int) -> torch.Tensor:
    """All class templates ``(K, 4, res, res)``: premultiplied RGB + coverage."""
    out = np.empty((len(SIGN_CLASSES), 4, res, res), dtype=np.float32)
    for k in range(len(SIGN_CLASSES)):
        rgb, alpha = _draw_template(k, res)
        out[k, :3] = rgb.transpose(2, 0, 1)
        out[k, 3] = alpha
    return torch.from_numpy(out)


def render_sign(class_index: int, size: int = 128, *,
                background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """A clean, centred icon of one sign class (for galleries and legends).

    Returns uint8 ``(size, size, 3)`` composited over ``background`` (RGB 0–255), or
    ``(size, size, 4)`` RGBA with straight alpha when ``background`` is None.
    """
    _check_class_index(class_index)
    _check_int("size", size, minimum=8)
    rgb, alpha = _draw_template(int(class_index), int(size))
    if background is None:
        straight = np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-6), 0.0)
        out = np.concatenate([straight, alpha[..., None]], axis=-1)
    else:
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3) / 255.0
        out = rgb + (1 - alpha[..., None]) * bg
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


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
    templates = _templates(size)

    # -- sign pose: template frame -> image frame (both in [-1, 1] units) --------------------
    diameter = rng.uniform(*_DIAMETER_RANGE, b)
    k = diameter / _SIGN_EXTENT * np.asarray(_CLASS_SCALE)[labels]  # image units per template unit
    theta = np.radians(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, b))
    squash = rng.uniform(*_SQUASH_RANGE, b)
    incircle = np.asarray(_CLASS_INCIRCLE)[labels]  # (b, 2): incentre y, inradius
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
def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_class_index(class_index: object) -> None:
    _check_int("class_index", class_index, minimum=0)
    if int(class_index) >= len(SIGN_CLASSES):  # type: ignore[call-overload]
        raise ValueError(f"class_index must be in 0..{len(SIGN_CLASSES) - 1}, got {class_index}")


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
    _check_int("size", size, minimum=MIN_SIZE)
    _check_int("seed", seed, minimum=0)
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
    _check_int("n_train", n_train, minimum=1)
    _check_int("n_test", n_test, minimum=1)
    _check_int("size", size, minimum=MIN_SIZE)
    _check_int("seed", seed, minimum=0)
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
