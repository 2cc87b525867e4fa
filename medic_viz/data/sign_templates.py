"""The embedded traffic signs' class templates: each class drawn once with PIL at 4x resolution
and box-downsampled into an antialiased RGBA template (premultiplied colour + coverage), in
template units ([-1, 1] across the square, y down). :mod:`medic_viz.data.synthetic` warps them
into scenes; :func:`render_sign` gives a clean icon for galleries and legends.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "SIGN_CLASSES",
    "SIGN_EXTENT",
    "CLASS_INCIRCLE",
    "CLASS_SCALE",
    "class_templates",
    "render_sign",
    "check_int",
    "check_class_index",
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

SIGN_EXTENT = 0.94  # the sign spans [-0.94, 0.94] of its template's [-1, 1] frame

# --- geometry of the sign shapes, in template units ([-1, 1], y pointing down) -----------------
_TRI_SIDE = 2 * SIGN_EXTENT
_TRI_HEIGHT = _TRI_SIDE * math.sqrt(3) / 2
_TRI_INRADIUS = _TRI_HEIGHT / 3
_DIAMOND_INRADIUS = SIGN_EXTENT / math.sqrt(2)
# (incentre y, inradius) of each class's outline: the disc that always covers the image centre.
CLASS_INCIRCLE: tuple[tuple[float, float], ...] = (
    (0.0, SIGN_EXTENT),  # stop: octagon, flat-to-flat 2 * extent
    (-_TRI_HEIGHT / 6, _TRI_INRADIUS),  # yield: triangle point-down
    (0.0, SIGN_EXTENT),  # no entry
    (0.0, SIGN_EXTENT),  # speed limit 30
    (0.0, SIGN_EXTENT),  # speed limit 50
    (0.0, SIGN_EXTENT),  # turn left
    (0.0, SIGN_EXTENT),  # turn right
    (0.0, SIGN_EXTENT),  # ahead only
    (_TRI_HEIGHT / 6, _TRI_INRADIUS),  # caution: triangle point-up
    (0.0, _DIAMOND_INRADIUS),  # priority road: diamond
    (0.0, SIGN_EXTENT),  # pedestrian crossing: square
    (0.0, SIGN_EXTENT),  # no parking
)

# Size of each class relative to the sampled diameter. Triangles are drawn with their HEIGHT
# equal to the diameter (side 1.15x), as real warning triangles are larger than round signs
# (900 mm side vs 600 mm disc); this also widens their inscribed disc.
CLASS_SCALE: tuple[float, ...] = tuple(
    2 / math.sqrt(3) if name in ("yield", "caution") else 1.0 for name in SIGN_CLASSES
)

_RED = (200, 22, 32)
_WHITE = (246, 246, 240)
_BLUE = (18, 80, 172)
_YELLOW = (250, 194, 0)
_BLACK = (24, 24, 24)
_DARK = (70, 70, 70)


def check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_class_index(class_index: object) -> None:
    check_int("class_index", class_index, minimum=0)
    if int(class_index) >= len(SIGN_CLASSES):  # type: ignore[call-overload]
        raise ValueError(f"class_index must be in 0..{len(SIGN_CLASSES) - 1}, got {class_index}")


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
    s, h = SIGN_EXTENT, _TRI_HEIGHT / 2
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
    pen.disc(0, 0, SIGN_EXTENT, _WHITE, outline=True)
    pen.disc(0, 0, SIGN_EXTENT - 0.05, fill)


def _turn_arrow(pen: _Pen) -> None:
    """White arrow going up and bending right (the left arrow is its exact mirror image)."""
    pen.line([(-0.28, 0.62), (-0.28, 0.02), (-0.24, -0.10), (-0.12, -0.16), (0.18, -0.16)], 0.24, _WHITE)
    pen.polygon([(0.64, -0.16), (0.14, -0.50), (0.14, 0.18)], _WHITE)


def _draw_class(pen: _Pen, class_index: int) -> None:
    e = SIGN_EXTENT
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
def class_templates(res: int) -> torch.Tensor:
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
    check_class_index(class_index)
    check_int("size", size, minimum=8)
    rgb, alpha = _draw_template(int(class_index), int(size))
    if background is None:
        straight = np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-6), 0.0)
        out = np.concatenate([straight, alpha[..., None]], axis=-1)
    else:
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3) / 255.0
        out = rgb + (1 - alpha[..., None]) * bg
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)

