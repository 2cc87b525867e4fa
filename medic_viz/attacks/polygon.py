"""Polygon (TrojAI style): an opaque, solid-coloured random polygon pasted on the image; dirty-label."""

from __future__ import annotations

import colorsys
import math
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from medic_viz.attacks.base import _MAX_CACHE_ENTRIES, Colour, Trigger, _check_unit_interval, _colour_for_channels, _parse_colour

__all__ = ["PolygonTrigger"]


class PolygonTrigger(Trigger):
    """TrojAI-style trigger: one opaque, solid-coloured random polygon pasted on the image.

    The polygon has ``sides`` vertices (random in 3..8 if None) at jittered angles and random
    radii around its centre (star-shaped; convex for triangles), drawn from ``seed``. It is
    scaled so its bounding box's longer side is ``size * min(H, W)`` pixels and centred at
    ``center`` = (row, col) as fractions of (H, W); the default image centre lands on the
    sign of the synthetic sign dataset. ``color``: floats in [0, 1]; None draws a fully
    saturated colour from ``seed``.

    The mask is rasterised by an even-odd point-in-polygon test on a ``supersample`` x
    ``supersample`` grid of points per pixel (``supersample=1``: pixel centres only, hard
    edges); ``x' = (1 - m) x + m color``, so pixels fully inside get exactly ``color``.
    """

    name: ClassVar[str] = "polygon"

    def __init__(self, sides: int | None = None, color: Any = None, size: float = 0.25, seed: int = 0,
                 center: Sequence[float] = (0.5, 0.5), supersample: int = 4) -> None:
        super().__init__()
        if sides is not None and (isinstance(sides, bool) or not isinstance(sides, (int, np.integer))
                                  or not 3 <= sides <= 64):
            raise ValueError(f"sides must be None (random 3..8) or an integer in [3, 64], got {sides!r}")
        self.size = _check_unit_interval(size, "size (fraction of min(H, W))")
        try:
            cy, cx = (float(v) for v in center)
        except (TypeError, ValueError):
            raise ValueError(f"center must be a (row, col) pair of fractions in [0, 1], got {center!r}") from None
        if not (0.0 <= cy <= 1.0 and 0.0 <= cx <= 1.0):
            raise ValueError(f"center fractions must lie in [0, 1], got {(cy, cx)}")
        self.center = (cy, cx)
        if (isinstance(supersample, bool) or not isinstance(supersample, (int, np.integer))
                or not 1 <= supersample <= 16):
            raise ValueError(f"supersample must be an integer in [1, 16], got {supersample!r}")
        self.supersample = int(supersample)
        self.seed = int(seed)
        self.sides = None if sides is None else int(sides)
        self.color_given: Colour | None = None if color is None else _parse_colour(color, "color")

        # All random draws happen in a fixed order, so the shape does not depend on `color`.
        rng = np.random.default_rng(self.seed)
        random_sides = int(rng.integers(3, 9))
        hue = float(rng.uniform(0.0, 1.0))
        n = self.sides if self.sides is not None else random_sides
        rotation = rng.uniform(0.0, 2.0 * math.pi)
        jitter = rng.uniform(-0.3, 0.3, size=n)  # < 0.5 keeps the angles in order: star-shaped
        radii = rng.uniform(0.55, 1.0, size=n)
        angles = rotation + 2.0 * math.pi * (np.arange(n) + jitter) / n
        points = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)  # (row, col)
        lo, hi = points.min(axis=0), points.max(axis=0)
        #: vertices as (row, col), bounding box centred on 0 with its longer side equal to 1
        self.unit_vertices = (points - (lo + hi) / 2.0) / float((hi - lo).max())
        self.color: Colour = self.color_given or tuple(colorsys.hsv_to_rgb(hue, 1.0, 1.0))

    @property
    def num_sides(self) -> int:
        return len(self.unit_vertices)

    def vertices(self, height: int, width: int) -> torch.Tensor:
        """Polygon vertices in pixel coordinates ``(n, 2)`` as (row, col), float64.

        Pixel ``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``; its centre is ``(r + 0.5, c + 0.5)``.
        """
        scale = self.size * min(height, width)
        origin = np.array([self.center[0] * height, self.center[1] * width])
        return torch.from_numpy(origin + scale * self.unit_vertices)

    def mask(self, height: int, width: int) -> torch.Tensor:
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        key = ("raster", height, width)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            cached = self._rasterise(height, width)
            self._cache[key] = cached
        return cached.to(torch.float32)

    def _rasterise(self, height: int, width: int) -> torch.Tensor:
        k = self.supersample
        verts = self.vertices(height, width)
        yi, xi = verts[:, 0], verts[:, 1]
        yj, xj = torch.roll(yi, 1), torch.roll(xi, 1)
        sub = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        ys = (torch.arange(height, dtype=torch.float64)[:, None] + sub[None]).reshape(-1)  # (H*k,)
        xs = (torch.arange(width, dtype=torch.float64)[:, None] + sub[None]).reshape(-1)  # (W*k,)
        # Crossing x-coordinate of each edge with each horizontal line: (H*k, n).
        straddles = (yi[None] > ys[:, None]) != (yj[None] > ys[:, None])
        dy = torch.where(straddles, yj - yi, torch.ones_like(yi))
        x_cross = xi[None] + (xj - xi)[None] * (ys[:, None] - yi[None]) / dy
        inside_rows = []
        rows_per_chunk = max(1, 2_000_000 // max(1, xs.numel() * len(yi)))
        for start in range(0, ys.numel(), rows_per_chunk):
            stop = start + rows_per_chunk
            hits = straddles[start:stop, None, :] & (xs[None, :, None] < x_cross[start:stop, None, :])
            inside_rows.append(hits.sum(dim=2) % 2 == 1)
        inside = torch.cat(inside_rows).to(torch.float64)  # (H*k, W*k)
        return inside.reshape(height, k, width, k).mean(dim=(1, 3))

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        m = self._cached("mask", x, lambda c, h, w: self.mask(h, w).to(torch.float64)[None])
        colour = self._cached("colour", x, self._build_colour)
        return x * (1.0 - m) + m * colour

    def _build_colour(self, channels: int, height: int, width: int) -> torch.Tensor:
        values = _colour_for_channels(self.color, channels, "color")
        return torch.tensor(values, dtype=torch.float64)[:, None, None]

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sides": self.sides,
            "color": None if self.color_given is None else list(self.color_given),
            "size": self.size,
            "seed": self.seed,
            "center": list(self.center),
            "supersample": self.supersample,
        }
