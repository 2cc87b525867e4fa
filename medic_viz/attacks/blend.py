"""Blended trigger (Chen et al. 2017): a fixed full-image pattern mixed into the image; dirty-label."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence, Union

import torch
import torch.nn.functional as F

from medic_viz import limits
from medic_viz.attacks.base import Trigger, _check_unit_interval, _fit_channels, _image_param, _resize

__all__ = ["BlendTrigger"]


class BlendTrigger(Trigger):
    """Blended trigger (Chen et al. 2017): ``x' = (1 - alpha) x + alpha P`` over the whole image.

    ``pattern="noise"``: P is uniform noise drawn from ``seed`` at each image size (the same
    seed and size always give the same P). With ``cells=k > 0`` the noise is drawn on a k×k grid
    and upsampled bilinearly: a smooth pattern that survives the random crops of training-time
    augmentation, which per-pixel noise does not. Or pass your own pattern as a tensor ``(C, H, W)`` or
    ``(H, W)`` in [0, 1] (e.g. a Hello-Kitty-style picture); it is resized bilinearly to the
    batch's size. ``alpha`` in (0, 1].
    """

    name: ClassVar[str] = "blend"

    def __init__(self, pattern: Union[str, torch.Tensor, Sequence[Any]] = "noise", alpha: float = 0.15,
                 seed: int = 0, cells: int = 0) -> None:
        super().__init__()
        self.alpha = _check_unit_interval(alpha, "alpha")
        self.seed = int(seed)
        if int(cells) < 0:
            raise ValueError(f"cells must be >= 0 (0 = per-pixel noise), got {cells}")
        self.cells = int(limits.check_trigger_size(int(cells), "cells (blend pattern grid)"))
        self.pattern_image: torch.Tensor | None = None
        if isinstance(pattern, str):
            if pattern != "noise":
                raise ValueError(
                    f"pattern must be 'noise' or an image tensor (C, H, W) in [0, 1], got {pattern!r}"
                )
        else:  # a tensor, or nested lists read back from a JSON config
            self.pattern_image = _image_param(pattern, "a pattern image")

    @property
    def pattern(self) -> Union[str, torch.Tensor]:
        """"noise" or the pattern image ``(C, H, W)`` (float64, CPU)."""
        return "noise" if self.pattern_image is None else self.pattern_image

    def blend_pattern(self, channels: int, height: int, width: int) -> torch.Tensor:
        """P at this size: ``(C, H, W)`` float64 on the CPU."""
        if self.pattern_image is None:
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            if self.cells:
                coarse = torch.rand((channels, self.cells, self.cells), generator=generator, dtype=torch.float64)
                return F.interpolate(coarse[None], size=(height, width), mode="bilinear", align_corners=False)[0].contiguous()
            return torch.rand((channels, height, width), generator=generator, dtype=torch.float64)
        image = _fit_channels(self.pattern_image, channels, "the pattern")
        return _resize(image, height, width).contiguous()

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        scaled_pattern = self._cached("alpha_pattern", x, lambda c, h, w: self.alpha * self.blend_pattern(c, h, w))
        return x * (1.0 - self.alpha) + scaled_pattern

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def to_config(self) -> dict[str, Any]:
        pattern: Any = "noise" if self.pattern_image is None else self.pattern_image.tolist()
        return {"name": self.name, "pattern": pattern, "alpha": self.alpha, "seed": self.seed, "cells": self.cells}

    def _repr_items(self) -> dict[str, Any]:
        items = super()._repr_items()
        if self.pattern_image is not None:
            items["pattern"] = f"<image {tuple(self.pattern_image.shape)}>"
        return items
