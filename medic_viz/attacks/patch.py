"""Patch triggers, dirty-label: BadNet (Gu et al. 2017), a small patch stamped near a corner, and
:class:`PatchTrigger`, any small patch given as pixel values (a third-party trigger as data)."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence, Union

import numpy as np
import torch

from medic_viz import limits
from medic_viz.attacks.base import _CORNERS, Colour, Trigger, _colour_for_channels, _fit_channels, _image_param, _parse_colour

__all__ = ["BadNetTrigger", "PatchTrigger", "MAX_PATCH_SIDE"]


class BadNetTrigger(Trigger):
    """A ``size`` x ``size`` pixel patch stamped near a corner (Gu et al., BadNets).

    ``position``: "bottom-right", "bottom-left", "top-right", "top-left" (``margin`` pixels from
    both borders), or an explicit ``(row, col)`` of the patch's top-left pixel (margin ignored).
    ``pattern``: "checkerboard" alternates ``colors[0]`` / ``colors[1]``, starting with
    ``colors[0]`` at the patch's top-left; "solid" fills the patch with ``colors[0]``.
    Colours are floats in [0, 1] (3 values for RGB or 1 for grey); 1-channel images use a
    colour's mean.
    """

    name: ClassVar[str] = "badnet"

    def __init__(
        self,
        size: int = 3,
        position: Union[str, Sequence[int]] = "bottom-right",
        margin: int = 1,
        pattern: str = "checkerboard",
        colors: Sequence[Any] = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    ) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
        limits.check_trigger_size(int(size), "size (patch side, pixels)")
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"margin must be a non-negative integer number of pixels, got {margin!r}")
        if isinstance(position, str):
            if position not in _CORNERS:
                raise ValueError(f"position must be one of {_CORNERS} or a (row, col) pair, got {position!r}")
            self.position: Union[str, tuple[int, int]] = position
        else:
            try:
                row, col = (int(v) for v in position)
            except (TypeError, ValueError):
                raise ValueError(
                    f"position must be one of {_CORNERS} or a (row, col) pair of integers, got {position!r}"
                ) from None
            if row < 0 or col < 0:
                raise ValueError(f"explicit position (row, col) must be non-negative, got {(row, col)}")
            self.position = (row, col)
        if pattern not in ("checkerboard", "solid"):
            raise ValueError(f"pattern must be 'checkerboard' or 'solid', got {pattern!r}")
        if isinstance(colors, str) or not isinstance(colors, (Sequence, np.ndarray)) or len(colors) < 1:
            raise TypeError(f"colors must be a sequence of colours, e.g. ((1, 1, 1), (0, 0, 0)), got {colors!r}")
        parsed = tuple(_parse_colour(c, f"colors[{i}]") for i, c in enumerate(colors))
        if pattern == "checkerboard" and len(parsed) != 2:
            raise ValueError(f"a checkerboard needs exactly two colours, got {len(parsed)}")
        self.size = int(size)
        self.margin = int(margin)
        self.pattern = pattern
        self.colors: tuple[Colour, ...] = parsed

    def patch_origin(self, height: int, width: int) -> tuple[int, int]:
        """``(row, col)`` of the patch's top-left pixel in an image of this size."""
        if isinstance(self.position, tuple):
            row, col = self.position
            if row + self.size > height or col + self.size > width:
                raise ValueError(
                    f"a {self.size}x{self.size} patch at (row, col)={self.position} does not fit "
                    f"in a {height}x{width} image; use a smaller size or position"
                )
            return row, col
        needed = self.size + self.margin
        if height < needed or width < needed:
            raise ValueError(
                f"a {self.size}x{self.size} patch with margin {self.margin} needs images of at least "
                f"{needed}x{needed} pixels, got {height}x{width}"
            )
        row = self.margin if self.position.startswith("top") else height - self.margin - self.size
        col = self.margin if self.position.endswith("left") else width - self.margin - self.size
        return row, col

    def _build_patch(self, channels: int, height: int, width: int) -> torch.Tensor:
        colours = [
            torch.tensor(_colour_for_channels(c, channels, f"colors[{i}]"), dtype=torch.float64)
            for i, c in enumerate(self.colors)
        ]
        if self.pattern == "solid":
            return colours[0][:, None, None].expand(channels, self.size, self.size).clone()
        idx = torch.arange(self.size)
        odd = ((idx[:, None] + idx[None, :]) % 2).bool()  # False (colors[0]) at the top-left
        return torch.where(odd[None], colours[1][:, None, None], colours[0][:, None, None])

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        row, col = self.patch_origin(x.shape[2], x.shape[3])
        patch = self._cached("patch", x, self._build_patch)
        out = x.clone()
        out[:, :, row : row + self.size, col : col + self.size] = patch
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        row, col = self.patch_origin(height, width)
        m = torch.zeros(height, width)
        m[row : row + self.size, col : col + self.size] = 1.0
        return m

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "position": self.position if isinstance(self.position, str) else list(self.position),
            "margin": self.margin,
            "pattern": self.pattern,
            "colors": [list(c) for c in self.colors],
        }


#: Largest side, in pixels, of a :class:`PatchTrigger`'s patch (it is stored inline in model cards).
MAX_PATCH_SIDE = 64


def _corner_origin(position: Union[str, tuple[int, int]], margin: int, ph: int, pw: int,
                   height: int, width: int) -> tuple[int, int]:
    """``(row, col)`` of a ``ph`` x ``pw`` patch's top-left pixel in a ``height`` x ``width`` image."""
    if isinstance(position, tuple):
        row, col = position
        if row + ph > height or col + pw > width:
            raise ValueError(f"a {ph}x{pw} patch at (row, col)={position} does not fit in a {height}x{width} image; "
                             "use a smaller patch or another position")
        return row, col
    if height < ph + margin or width < pw + margin:
        raise ValueError(f"a {ph}x{pw} patch with margin {margin} needs images of at least "
                         f"{ph + margin}x{pw + margin} pixels, got {height}x{width}")
    row = margin if position.startswith("top") else height - margin - ph
    col = margin if position.endswith("left") else width - margin - pw
    return row, col


class PatchTrigger(Trigger):
    """A patch given as pixel values, stamped near a corner: a third-party trigger as data.

    ``pixels``: the patch, ``(C, h, w)`` or ``(h, w)`` (grey) floats in [0, 1] (a tensor or
    nested lists), at most :data:`MAX_PATCH_SIDE` pixels a side; a grey patch is repeated on
    every channel, an RGB patch on grey images uses its channel mean. ``position`` and
    ``margin`` as in :class:`BadNetTrigger`. The patch replaces the pixels under it.
    """

    name: ClassVar[str] = "patch"

    def __init__(self, pixels: Any, position: Union[str, Sequence[int]] = "bottom-right", margin: int = 1) -> None:
        super().__init__()
        image = _image_param(pixels, "the patch's pixels")
        if max(image.shape[1:]) > MAX_PATCH_SIDE:
            raise ValueError(f"a patch may be at most {MAX_PATCH_SIDE}x{MAX_PATCH_SIDE} pixels, got "
                             f"{image.shape[1]}x{image.shape[2]}; crop or shrink it first")
        if image.shape[0] not in (1, 3):
            raise ValueError(f"the patch's pixels must have 1 (grey) or 3 (RGB) channels, got {image.shape[0]}")
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"margin must be a non-negative integer number of pixels, got {margin!r}")
        if isinstance(position, str):
            if position not in _CORNERS:
                raise ValueError(f"position must be one of {_CORNERS} or a (row, col) pair, got {position!r}")
            self.position: Union[str, tuple[int, int]] = position
        else:
            try:
                row, col = (int(v) for v in position)
            except (TypeError, ValueError):
                raise ValueError(f"position must be one of {_CORNERS} or a (row, col) pair of integers, "
                                 f"got {position!r}") from None
            if row < 0 or col < 0:
                raise ValueError(f"explicit position (row, col) must be non-negative, got {(row, col)}")
            self.position = (row, col)
        self.pixels = image
        self.margin = int(margin)

    def patch_origin(self, height: int, width: int) -> tuple[int, int]:
        """``(row, col)`` of the patch's top-left pixel in an image of this size."""
        return _corner_origin(self.position, self.margin, self.pixels.shape[1], self.pixels.shape[2], height, width)

    def _build_patch(self, channels: int, height: int, width: int) -> torch.Tensor:
        return _fit_channels(self.pixels, channels, "the patch").clone()

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        row, col = self.patch_origin(x.shape[2], x.shape[3])
        patch = self._cached("patch", x, self._build_patch)
        out = x.clone()
        out[:, :, row : row + patch.shape[1], col : col + patch.shape[2]] = patch
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        row, col = self.patch_origin(height, width)
        m = torch.zeros(height, width)
        m[row : row + self.pixels.shape[1], col : col + self.pixels.shape[2]] = 1.0
        return m

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pixels": self.pixels.tolist(),
            "position": self.position if isinstance(self.position, str) else list(self.position),
            "margin": self.margin,
        }

    def _repr_items(self) -> dict[str, Any]:
        items = super()._repr_items()
        items["pixels"] = f"<patch {tuple(self.pixels.shape)}>"
        return items
