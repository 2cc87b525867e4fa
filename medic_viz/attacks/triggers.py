"""Backdoor triggers: deterministic image transformations applied to float batches.

A trigger turns clean images into triggered ones. Every trigger here

* works on float tensors ``(B, C, H, W)`` (or one image ``(C, H, W)``) with values in ``[0, 1]``,
  on any device and floating dtype, of any image size it fits on, and returns a *new* tensor of
  the same shape, device and dtype, clipped to ``[0, 1]`` (the input is never modified);
* is fully determined by its configuration (:meth:`Trigger.to_config`), never by the global
  random state, so a trigger stored in a model card can be rebuilt exactly with
  :func:`trigger_from_config`;
* caches its pattern/mask tensors per ``(height, width, channels, device, dtype)`` so applying it
  to many batches costs one vectorised tensor operation each.

The four attacks (after BadNet, Blended, SIG and the TrojAI polygon triggers used in the MEDIC
paper):

=============  ===================================================================  ===========
name           what it does                                                          clean-label
=============  ===================================================================  ===========
``badnet``     stamps a small (checkerboard) patch near a corner                     no
``blend``      ``x' = (1 - alpha) x + alpha P`` with a fixed full-image pattern P     no
``sig``        adds a horizontal sinusoid (Barni et al. 2019) to every channel       yes
``polygon``    pastes an opaque, solid-coloured random polygon on the image centre   no
=============  ===================================================================  ===========

``clean_label = True`` tells the poisoning code to trigger only images of the target class and
keep their labels (the SIG recipe); otherwise images from other classes are triggered and
relabelled to the target.
"""

from __future__ import annotations

import colorsys
import inspect
import math
from typing import Any, Callable, ClassVar, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AVAILABLE_TRIGGERS",
    "Trigger",
    "BadNetTrigger",
    "BlendTrigger",
    "SIGTrigger",
    "PolygonTrigger",
    "make_trigger",
    "trigger_from_config",
]

Colour = tuple[float, ...]
_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
_LAYOUTS = ("NCHW", "NHWC", "CHW", "HWC")
_MAX_CACHE_ENTRIES = 32


def _parse_colour(value: Any, what: str) -> Colour:
    """A colour as a tuple of floats in [0, 1] (1 value for grey, 3 for RGB, or any channel count)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values: tuple[float, ...] = (float(value),)
    elif isinstance(value, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(value, str):
        values = tuple(float(v) for v in (value.tolist() if hasattr(value, "tolist") else value))
    else:
        raise TypeError(f"{what} must be a number or a sequence of numbers in [0, 1], got {value!r}")
    if not values:
        raise ValueError(f"{what} must have at least one channel value, got {value!r}")
    if any(not (0.0 <= v <= 1.0) or math.isnan(v) for v in values):
        raise ValueError(f"{what} values must lie in [0, 1] (floats, not 0-255), got {values}")
    return values


def _colour_for_channels(colour: Colour, channels: int, what: str) -> list[float]:
    """Adapt a colour to ``channels``: exact match, grey from the mean, or a repeated grey value."""
    if len(colour) == channels:
        return list(colour)
    if channels == 1:
        return [sum(colour) / len(colour)]
    if len(colour) == 1:
        return [colour[0]] * channels
    raise ValueError(
        f"{what} has {len(colour)} channel values but the images have {channels} channels; "
        f"give a colour with 1 or {channels} values"
    )


def _check_unit_interval(value: float, what: str, *, allow_zero: bool = False) -> float:
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{what} must lie in {interval}, got {value}")
    return value


class Trigger:
    """Base class of all triggers; subclasses implement ``_apply_batch``, ``mask`` and ``to_config``.

    ``name`` identifies the trigger type (the key of :func:`make_trigger`); ``clean_label`` says
    whether the attack poisons target-class images without changing their labels.
    """

    name: ClassVar[str] = ""
    clean_label: bool = False

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], torch.Tensor] = {}

    # ----------------------------------------------------------------------------- public API
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Trigger a float batch ``(B, C, H, W)`` or one image ``(C, H, W)`` with values in [0, 1].

        Returns a new tensor of the same shape, device and dtype, clipped to [0, 1].
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.apply expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__}.apply expects float images in [0, 1], got dtype {x.dtype}; "
                "use apply_uint8 for uint8 images"
            )
        if x.ndim not in (3, 4):
            raise ValueError(
                f"expected a batch (B, C, H, W) or one image (C, H, W), got shape {tuple(x.shape)}"
            )
        single = x.ndim == 3
        batch = x.unsqueeze(0) if single else x
        if batch.shape[1] < 1:
            raise ValueError(f"images need at least one channel, got shape {tuple(x.shape)}")
        out = self._apply_batch(batch)
        out = out.clamp(0.0, 1.0)
        return out.squeeze(0) if single else out

    __call__ = apply

    def apply_uint8(
        self, x: Union[np.ndarray, torch.Tensor], layout: str = "NCHW"
    ) -> Union[np.ndarray, torch.Tensor]:
        """Trigger uint8 images (0-255) given as a numpy array or tensor; returns the same type.

        ``layout`` is one of "NCHW", "NHWC" (batches) or "CHW", "HWC" (one image). Values are
        converted to floats in [0, 1], triggered, and rounded back to uint8.
        """
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        is_numpy = isinstance(x, np.ndarray)
        if is_numpy:
            if x.dtype != np.uint8:
                raise TypeError(f"apply_uint8 expects a uint8 array, got dtype {x.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(x))
        elif isinstance(x, torch.Tensor):
            if x.dtype != torch.uint8:
                raise TypeError(f"apply_uint8 expects a uint8 tensor, got dtype {x.dtype}")
            tensor = x
        else:
            raise TypeError(f"apply_uint8 expects a numpy array or torch.Tensor, got {type(x).__name__}")
        if tensor.ndim != len(layout):
            raise ValueError(f"layout {layout!r} needs {len(layout)} dimensions, got shape {tuple(tensor.shape)}")
        channels_last = layout.endswith("HWC")
        batch = tensor if tensor.ndim == 4 else tensor.unsqueeze(0)
        if channels_last:
            batch = batch.permute(0, 3, 1, 2)
        triggered = self.apply(batch.to(torch.float32) / 255.0)
        result = (triggered * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        if channels_last:
            result = result.permute(0, 2, 3, 1)
        if tensor.ndim == 3:
            result = result.squeeze(0)
        result = result.contiguous()
        return result.numpy() if is_numpy else result

    def mask(self, height: int, width: int) -> torch.Tensor:
        """Where the trigger changes an image of this size: ``(H, W)`` float in [0, 1] on the CPU.

        1 inside a patch/polygon (fractions on antialiased edges), all ones for whole-image triggers.
        """
        raise NotImplementedError

    def preview(
        self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5
    ) -> torch.Tensor:
        """The trigger applied to a flat image of value ``background``: ``(C, H, W)`` float32."""
        background = _check_unit_interval(background, "background", allow_zero=True)
        flat = torch.full((int(channels), int(height), int(width)), background, dtype=torch.float32)
        return self.apply(flat)

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable parameters including ``"name"``; :func:`trigger_from_config` inverts it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._repr_items().items())
        return f"{type(self).__name__}({params})"

    # ----------------------------------------------------------------------------- helpers
    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Trigger a float batch ``(B, C, H, W)``; must return a new tensor (no in-place edits)."""
        raise NotImplementedError

    def _repr_items(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_config().items() if k != "name"}

    def _cached(
        self, kind: str, x: torch.Tensor, build: Callable[[int, int, int], torch.Tensor]
    ) -> torch.Tensor:
        """``build(C, H, W)`` (float64, CPU) cast to ``x``'s device/dtype, cached per size/device/dtype."""
        _, channels, height, width = x.shape
        key = (kind, channels, height, width, x.device, x.dtype)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            cached = build(channels, height, width).to(device=x.device, dtype=x.dtype)
            self._cache[key] = cached
        return cached


# --------------------------------------------------------------------------------- BadNet
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


# --------------------------------------------------------------------------------- Blend
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
        self.cells = int(cells)
        self.pattern_image: torch.Tensor | None = None
        if isinstance(pattern, str):
            if pattern != "noise":
                raise ValueError(
                    f"pattern must be 'noise' or an image tensor (C, H, W) in [0, 1], got {pattern!r}"
                )
        else:
            if isinstance(pattern, torch.Tensor):
                image = pattern.detach().to(device="cpu", dtype=torch.float64).clone()
            else:  # nested lists, e.g. read back from a JSON config
                image = torch.as_tensor(np.asarray(pattern, dtype=np.float64))
            if image.ndim == 2:
                image = image.unsqueeze(0)
            if image.ndim != 3 or min(image.shape) < 1:
                raise ValueError(f"a pattern image must have shape (C, H, W) or (H, W), got {tuple(image.shape)}")
            if torch.isnan(image).any() or image.min() < 0 or image.max() > 1:
                raise ValueError("a pattern image must hold values in [0, 1] (floats, not 0-255)")
            self.pattern_image = image

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
        image = self.pattern_image
        if image.shape[0] != channels:
            if channels == 1:
                image = image.mean(dim=0, keepdim=True)
            elif image.shape[0] == 1:
                image = image.expand(channels, -1, -1)
            else:
                raise ValueError(
                    f"the pattern has {image.shape[0]} channels but the images have {channels}; "
                    "give a pattern with 1 or matching channels"
                )
        if image.shape[1:] != (height, width):
            image = F.interpolate(image[None], size=(height, width), mode="bilinear",
                                  align_corners=False, antialias=True)[0].clamp(0.0, 1.0)
        return image.contiguous()

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


# --------------------------------------------------------------------------------- SIG
class SIGTrigger(Trigger):
    """Sinusoidal-signal trigger (Barni et al. 2019), a clean-label attack by default.

    The signal varies along the width only: ``s(j) = sin(2 pi j frequency / W)`` for column
    ``j = 0 .. W-1`` (``frequency`` cycles over the image width), the same for every row and
    channel.

    * ``mode="additive"`` (default, Barni et al.): ``x' = clip(x + delta * s(j))``.
    * ``mode="blend"`` (the MEDIC reference code): ``x' = (1 - alpha) x + alpha (0.5 + 0.5 s(j))``,
      i.e. ``0.8 x + 0.2 stripes`` for the default ``alpha = 0.2``; ``delta`` is unused.
    """

    name: ClassVar[str] = "sig"

    def __init__(self, delta: float = 0.2, frequency: float = 6, clean_label: bool = True,
                 mode: str = "additive", alpha: float = 0.2) -> None:
        super().__init__()
        self.delta = _check_unit_interval(delta, "delta")
        frequency = float(frequency)
        if not (frequency > 0 and math.isfinite(frequency)):
            raise ValueError(f"frequency (cycles over the image width) must be positive, got {frequency}")
        self.frequency = frequency
        if mode not in ("additive", "blend"):
            raise ValueError(f"mode must be 'additive' or 'blend', got {mode!r}")
        self.mode = mode
        self.alpha = _check_unit_interval(alpha, "alpha")
        self.clean_label = bool(clean_label)

    def signal(self, width: int) -> torch.Tensor:
        """``sin(2 pi j frequency / W)`` for ``j = 0 .. W-1``: ``(W,)`` float64."""
        j = torch.arange(width, dtype=torch.float64)
        return torch.sin(2.0 * math.pi * j * self.frequency / width)

    def _build_offset(self, channels: int, height: int, width: int) -> torch.Tensor:
        s = self.signal(width)
        row = self.delta * s if self.mode == "additive" else self.alpha * (0.5 + 0.5 * s)
        return row.expand(channels, height, width).clone()

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        offset = self._cached("offset", x, self._build_offset)
        if self.mode == "additive":
            return x + offset
        return x * (1.0 - self.alpha) + offset

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "delta": self.delta, "frequency": self.frequency,
                "clean_label": self.clean_label, "mode": self.mode, "alpha": self.alpha}


# --------------------------------------------------------------------------------- Polygon
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


# --------------------------------------------------------------------------------- factory
_REGISTRY: dict[str, type[Trigger]] = {
    cls.name: cls for cls in (BadNetTrigger, BlendTrigger, SIGTrigger, PolygonTrigger)
}
AVAILABLE_TRIGGERS: tuple[str, ...] = tuple(_REGISTRY)


def _trigger_class(name: Any) -> type[Trigger]:
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"unknown trigger {name!r}; available triggers: {', '.join(AVAILABLE_TRIGGERS)}")
    return _REGISTRY[name.lower()]


def make_trigger(name: str, **kwargs: Any) -> Trigger:
    """Build a trigger by name (one of :data:`AVAILABLE_TRIGGERS`) with its constructor arguments."""
    cls = _trigger_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} does not accept {unknown}; accepted parameters: {sorted(accepted)}")
    return cls(**kwargs)


def trigger_from_config(config: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.to_config` output (e.g. read back from JSON)."""
    if not isinstance(config, dict):
        raise TypeError(f"a trigger config must be a dict, got {type(config).__name__}")
    if "name" not in config:
        raise ValueError(
            f"a trigger config needs a 'name' key (one of {AVAILABLE_TRIGGERS}), got keys {sorted(config)}"
        )
    params = {k: v for k, v in config.items() if k != "name"}
    return make_trigger(config["name"], **params)
