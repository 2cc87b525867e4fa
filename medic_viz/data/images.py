"""Decode one image of one's own into the tensor layout of a dataset.

:func:`to_image_tensor` accepts a file path, PNG/JPEG bytes, a PIL image, a uint8 or float
array, or a float tensor, and returns float ``(C, H, W)`` in [0, 1] with the channels and size
of the data it will be compared with (converted and resized). Used by the input picker.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["to_image_tensor"]


def to_image_tensor(source: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """A user's image as float ``(C, H, W)`` in [0, 1] with ``shape = (C, H, W)``'s channels
    (1 = greyscale, 3 = RGB) and size (bilinear resize).

    ``source``: a file path, PNG/JPEG bytes, a PIL image, a uint8 or float (in [0, 1]) array
    ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``, or a float tensor ``(C, H, W)`` / ``(1, C, H, W)``.
    Raises ``ValueError`` (unreadable file or bytes, wrong shape, values outside [0, 1]) or
    ``TypeError`` (another kind of object), each with one line saying what to give.
    """
    from PIL import Image

    c, h, w = shape
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        pil = Image.open(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            pil = Image.open(io.BytesIO(bytes(source)))
        except Exception as exc:
            raise ValueError(f"could not read the image bytes ({exc}); give a PNG or JPEG file") from None
    elif isinstance(source, Image.Image):
        pil = source
    elif isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be (C, H, W) with 1 or 3 channels, got {tuple(t.shape)}")
        pil = _array_to_pil(t.permute(1, 2, 0).numpy())
    elif isinstance(source, np.ndarray):
        pil = _array_to_pil(source)
    else:
        raise TypeError(
            f"cannot read an image from {type(source).__name__}; give a path, bytes, a PIL image, an array or a tensor"
        )
    pil = pil.convert("RGB" if c == 3 else "L")
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _array_to_pil(arr: np.ndarray) -> Any:
    """A uint8 array, or a float one in [0, 1], ``(H, W)``, ``(H, W, 1|3)`` or ``(1|3, H, W)``, as a PIL image."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 1), got shape {np.asarray(arr).shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ValueError("the image array contains NaN or infinite values")
        if f.min() < 0 or f.max() > 1:
            raise ValueError(f"a float image must be in [0, 1], got values in [{f.min():.3g}, {f.max():.3g}]")
        a = np.round(f * 255).astype(np.uint8)
    return Image.fromarray(a)
