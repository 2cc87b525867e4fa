"""The trigger contract: :class:`Trigger`, the base of every test-time trigger, and the small
parameter checks the trigger families share.

A trigger turns clean images into triggered ones. Every trigger

* works on float tensors ``(B, C, H, W)`` (or one image ``(C, H, W)``) with values in ``[0, 1]``,
  on any device and floating dtype, of any image size it fits on, and returns a *new* tensor of
  the same shape, device and dtype, clipped to ``[0, 1]`` (the input is never modified);
* is fully determined by its configuration (:meth:`Trigger.to_config`), never by the global
  random state, so a trigger stored in a model card can be rebuilt exactly with
  :func:`medic_viz.attacks.registry.trigger_from_config`;
* caches its pattern/mask tensors per ``(height, width, channels, device, dtype)`` so applying it
  to many batches costs one vectorised tensor operation each.

``clean_label = True`` tells the poisoning code to trigger only images of the target class and
keep their labels (the SIG recipe); otherwise images from other classes are triggered and
relabelled to the target. Which attacks exist, and their default poison rates, is
:mod:`medic_viz.attacks.registry`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Trigger"]

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


def _image_param(value: Any, what: str) -> torch.Tensor:
    """A user's image parameter (tensor or nested lists, ``(C, H, W)`` or ``(H, W)``, values in
    [0, 1]) as a float64 CPU tensor ``(C, H, W)``."""
    image = value.detach().to("cpu", torch.float64).clone() if isinstance(value, torch.Tensor) else torch.as_tensor(
        np.asarray(value, dtype=np.float64))
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"{what} must have shape (C, H, W) or (H, W), got {tuple(image.shape)}")
    if torch.isnan(image).any() or image.min() < 0 or image.max() > 1:
        raise ValueError(f"{what} must hold values in [0, 1] (floats, not 0-255)")
    return image


def _fit_channels(image: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    """``image`` ``(C', H, W)`` with ``channels`` channels: as is, grey from the mean, or a grey repeated."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return image.mean(0, keepdim=True)
    if image.shape[0] == 1:
        return image.expand(channels, -1, -1)
    raise ValueError(
        f"{what} has {image.shape[0]} channels but the images have {channels}; "
        f"give one with 1 or {channels} channels"
    )


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, H', W')`` resized bilinearly (antialiased) to ``(C, height, width)``, clipped to [0, 1]."""
    if image.shape[1:] == (height, width):
        return image
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0.0, 1.0)


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
