"""Filter (Liu et al. 2019, ABS): an Instagram-style colour filter over the whole image; dirty-label."""

from __future__ import annotations

import colorsys
import math
from typing import Any, ClassVar, Mapping, Sequence, Union

import numpy as np
import torch

from medic_viz.attacks.base import Trigger, _check_unit_interval

__all__ = ["FilterTrigger", "INSTAGRAM_FILTERS"]


_IDENTITY3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
_LINEAR = ((0.0, 0.0), (1.0, 1.0))

#: Built-in filters: a colour matrix and offset (applied first), per-channel tone curves
#: (piecewise-linear control points (in, out) for R, G, B), then a saturation factor. They
#: imitate the look of the Instagram filters of the same names (as in the ABS / MEDIC filter
#: attack), not their exact pixel values.
INSTAGRAM_FILTERS: dict[str, dict[str, Any]] = {
    # warm pink cast, lifted blacks, muted blue highlights
    "nashville": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.22), (0.5, 0.64), (1.0, 1.0)),
                   ((0.0, 0.06), (0.5, 0.50), (1.0, 0.92)),
                   ((0.0, 0.34), (0.5, 0.56), (1.0, 0.72))),
        "saturation": 1.2,
    },
    # nearly black-and-white, cold, hard contrast
    "gotham": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.0), (0.25, 0.12), (0.75, 0.85), (1.0, 0.94)),
                   ((0.0, 0.0), (0.25, 0.13), (0.75, 0.86), (1.0, 0.96)),
                   ((0.0, 0.06), (0.25, 0.20), (0.75, 0.90), (1.0, 1.0))),
        "saturation": 0.1,
    },
    # strong orange warmth
    "kelvin": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.20), (0.5, 0.78), (1.0, 1.0)),
                   ((0.0, 0.05), (0.5, 0.55), (1.0, 0.95)),
                   ((0.0, 0.0), (0.5, 0.28), (1.0, 0.60))),
        "saturation": 1.1,
    },
    # punchy S-curve contrast and saturation, slight green-yellow cast
    "lomo": {
        "matrix": ((1.05, 0.0, 0.0), (0.0, 1.08, 0.0), (0.0, 0.0, 0.95)), "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.0), (0.25, 0.15), (0.75, 0.88), (1.0, 1.0)),) * 3,
        "saturation": 1.35,
    },
}

_LUMA = (0.299, 0.587, 0.114)


def _check_filter_spec(spec: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise TypeError(f"{what} must be a filter name or a dict with matrix/offset/curves/saturation")
    unknown = set(spec) - {"matrix", "offset", "curves", "saturation"}
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; use matrix, offset, curves, saturation")
    matrix = torch.as_tensor(np.asarray(spec.get("matrix", _IDENTITY3), dtype=np.float64))
    offset = torch.as_tensor(np.asarray(spec.get("offset", (0.0, 0.0, 0.0)), dtype=np.float64))
    if matrix.shape != (3, 3) or offset.shape != (3,):
        raise ValueError(f"{what}: matrix must be 3x3 and offset 3 values, got {tuple(matrix.shape)} and {tuple(offset.shape)}")
    curves = spec.get("curves", (_LINEAR,) * 3)
    if len(curves) != 3:
        raise ValueError(f"{what}: give one tone curve per channel (3), got {len(curves)}")
    parsed = []
    for c, curve in enumerate(curves):
        pts = np.asarray(curve, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
            raise ValueError(f"{what}: curve {c} must be a list of at least two (in, out) points")
        if np.any(np.diff(pts[:, 0]) <= 0) or pts[0, 0] != 0.0 or pts[-1, 0] != 1.0:
            raise ValueError(f"{what}: curve {c} inputs must increase strictly from 0 to 1, got {pts[:, 0].tolist()}")
        if np.any(pts[:, 1] < 0) or np.any(pts[:, 1] > 1):
            raise ValueError(f"{what}: curve {c} outputs must lie in [0, 1]")
        parsed.append([[float(a), float(b)] for a, b in pts])
    saturation = float(spec.get("saturation", 1.0))
    if not (saturation >= 0 and math.isfinite(saturation)):
        raise ValueError(f"{what}: saturation must be >= 0, got {saturation}")
    return {"matrix": matrix.tolist(), "offset": offset.tolist(), "curves": parsed, "saturation": saturation}


def _apply_curve(x: torch.Tensor, points: Sequence[Sequence[float]]) -> torch.Tensor:
    """Piecewise-linear tone curve through ``points`` applied to ``x`` (values in [0, 1])."""
    xs = torch.tensor([p[0] for p in points], dtype=x.dtype, device=x.device)
    ys = torch.tensor([p[1] for p in points], dtype=x.dtype, device=x.device)
    idx = torch.bucketize(x.clamp(0, 1).contiguous(), xs[1:-1])  # segment index 0..n-2
    x0, x1, y0, y1 = xs[idx], xs[idx + 1], ys[idx], ys[idx + 1]
    return y0 + (y1 - y0) * (x.clamp(0, 1) - x0) / (x1 - x0)


class FilterTrigger(Trigger):
    """Instagram-style colour filter over the whole image (the filter attack of Liu et al. 2019).

    ``filter``: a name of :data:`INSTAGRAM_FILTERS` or a dict with ``matrix`` (3x3), ``offset``
    (3), ``curves`` (three lists of (in, out) points from 0 to 1) and ``saturation``. Per pixel:
    ``c = clip(M·x + b)``, ``c_k ← curve_k(c_k)``, ``c ← luma + saturation·(c − luma)`` (luma
    with weights 0.299, 0.587, 0.114), clipped; then ``x' = (1 − strength)·x + strength·c``.
    Grey images are filtered as RGB and turned back into luma. The transform is the same at
    every pixel (no spatial pattern).
    """

    name: ClassVar[str] = "filter"

    def __init__(self, filter: Union[str, Mapping[str, Any]] = "nashville", strength: float = 1.0) -> None:
        super().__init__()
        if isinstance(filter, str):
            key = filter.strip().lower()
            if key not in INSTAGRAM_FILTERS:
                raise ValueError(f"unknown filter {filter!r}; built-in filters: {', '.join(INSTAGRAM_FILTERS)}, or a dict")
            self.filter_name: str | None = key
            self.spec = _check_filter_spec(INSTAGRAM_FILTERS[key], f"filter {key!r}")
        else:
            self.filter_name = None
            self.spec = _check_filter_spec(filter, "filter")
        self.strength = _check_unit_interval(strength, "strength")

    def transform(self, rgb: torch.Tensor) -> torch.Tensor:
        """The full-strength filter on an RGB batch ``(B, 3, H, W)`` in [0, 1]."""
        m = torch.tensor(self.spec["matrix"], dtype=rgb.dtype, device=rgb.device)
        b = torch.tensor(self.spec["offset"], dtype=rgb.dtype, device=rgb.device)
        c = (torch.einsum("ij,bjhw->bihw", m, rgb) + b.view(1, 3, 1, 1)).clamp(0, 1)
        c = torch.stack([_apply_curve(c[:, k], self.spec["curves"][k]) for k in range(3)], dim=1)
        luma = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        grey = (c * luma).sum(1, keepdim=True)
        return (grey + self.spec["saturation"] * (c - grey)).clamp(0, 1)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels == 3:
            filtered = self.transform(x)
        elif channels == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            filtered = (self.transform(x.expand(-1, 3, -1, -1)) * luma).sum(1, keepdim=True)
        else:
            raise ValueError(f"colour filters work on RGB or grey images, got {channels} channels")
        return (1 - self.strength) * x + self.strength * filtered

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """The filter applied to a test card: a hue sweep left to right, dark to bright top to
        bottom (``background`` is unused: a flat image would show only one colour)."""
        hues = np.linspace(0, 1, width, endpoint=False)
        values = np.linspace(0.15, 1.0, height)
        card = np.array([[colorsys.hsv_to_rgb(h, 0.6, v) for h in hues] for v in values]).transpose(2, 0, 1)
        image = torch.as_tensor(card, dtype=torch.float32)
        if channels == 1:
            image = (image * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
        return self.apply(image)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "filter": self.filter_name if self.filter_name else self.spec,
                "strength": self.strength}
