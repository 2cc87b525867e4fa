"""Reflection (Liu et al. 2020, Refool): a reflection image added as if seen in a window; dirty-label."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from medic_viz import limits
from medic_viz.attacks.base import Trigger, _check_unit_interval, _fit_channels, _image_param, _resize

__all__ = ["ReflectionTrigger"]


def _gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` float64 with reflect padding."""
    k = _gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    c = image.shape[0]
    x = image[None]
    pad_h = min(r, image.shape[1] - 1)
    pad_w = min(r, image.shape[2] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if (pad_h > 0 and pad_w > 0) else x
    kh = k[r - pad_h : r + pad_h + 1] if pad_h < r else k
    kw = k[r - pad_w : r + pad_w + 1] if pad_w < r else k
    kh = kh / kh.sum()
    kw = kw / kw.sum()
    x = F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(C, H, W)`` shifted down ``dy`` and right ``dx`` pixels; the border row/column is
    repeated into the uncovered strip (zeros there would draw a sharp, patch-like edge)."""
    h, w = image.shape[1:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return image[:, rows][:, :, cols]


class ReflectionTrigger(Trigger):
    """Reflection trigger (Liu et al. 2020): ``x' = clip(x + alpha · L(R))``.

    ``R``: the reflection image — ``image`` (``(C, H, W)`` or ``(H, W)`` in [0, 1], resized to
    the batch) or, by default, a smooth synthetic scene drawn from ``seed`` (a ``grid`` x ``grid``
    random colour field upsampled bicubically). ``kind`` selects the reflection model L:

    * ``"focus"``: ``L(R) = R`` (reflection in the same focal plane);
    * ``"blur"``: ``L(R) = G_sigma ⊗ R`` (out of focus: Gaussian blur, reflect padding);
    * ``"ghost"``: ``L(R) = (1 − ghost) R + ghost · shift(R, offset)`` (double reflection of
      thick glass; the copy is shifted ``offset = (down, right)`` pixels, border pixels
      repeated into the uncovered strip).
    """

    name: ClassVar[str] = "reflection"

    def __init__(self, kind: str = "ghost", alpha: float = 0.3, offset: Sequence[int] = (3, 3),
                 ghost: float = 0.5, sigma: float = 1.5, seed: int = 0, grid: int = 6, image: Any = None) -> None:
        super().__init__()
        if kind not in ("focus", "blur", "ghost"):
            raise ValueError(f"kind must be 'focus', 'blur' or 'ghost', got {kind!r}")
        self.kind = kind
        self.alpha = _check_unit_interval(alpha, "alpha")
        try:
            dy, dx = (int(v) for v in offset)
        except (TypeError, ValueError):
            raise ValueError(f"offset must be a (down, right) pair of integers, got {offset!r}") from None
        self.offset = (dy, dx)
        self.ghost = _check_unit_interval(ghost, "ghost", allow_zero=True)
        if not (float(sigma) > 0 and math.isfinite(float(sigma))):
            raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
        self.sigma = float(limits.check_trigger_size(float(sigma), "sigma (blur, pixels)"))
        self.seed = int(seed)
        if isinstance(grid, bool) or int(grid) < 2:
            raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
        self.grid = int(limits.check_trigger_size(int(grid), "grid (reflection scene cells)"))
        self.image = None if image is None else _image_param(image, "image")

    def reflection_image(self, channels: int, height: int, width: int) -> torch.Tensor:
        """R at this size, ``(C, H, W)`` float64 in [0, 1] on the CPU."""
        if self.image is not None:
            image = _fit_channels(self.image, channels, "the reflection image")
            return _resize(image, height, width).clamp(0, 1).contiguous()
        g = torch.Generator().manual_seed(self.seed)
        coarse = torch.rand((3, self.grid, self.grid), generator=g, dtype=torch.float64)
        image = F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        return _fit_channels(image, channels, "the reflection image").contiguous()

    def layer(self, channels: int, height: int, width: int) -> torch.Tensor:
        """The reflection layer ``L(R)`` that is added (before ``alpha``), ``(C, H, W)`` float64."""
        r = self.reflection_image(channels, height, width)
        if self.kind == "focus":
            return r
        if self.kind == "blur":
            return _blur(r, self.sigma)
        return (1 - self.ghost) * r + self.ghost * _shift(r, *self.offset)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        add = self._cached("layer", x, lambda c, h, w: self.alpha * self.layer(c, h, w))
        return x + add

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "alpha": self.alpha, "offset": list(self.offset),
                "ghost": self.ghost, "sigma": self.sigma, "seed": self.seed, "grid": self.grid,
                "image": None if self.image is None else self.image.tolist()}

    def _repr_items(self) -> dict[str, Any]:
        items = super()._repr_items()
        if self.image is not None:
            items["image"] = f"<image {tuple(self.image.shape)}>"
        return items
