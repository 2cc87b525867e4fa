"""Decode one image of one's own into the tensor layout of a dataset.

:func:`read_image_pixels` is the one bounded decoder of image files and bytes from elsewhere
(trigger images, picked inputs): at most :data:`medic_viz.limits.MAX_IMAGE_FILE_BYTES` bytes
and ``max_side`` pixels a side, checked from the header before any pixel is decoded; pixels at
their real range (8-bit / 255, 16-bit / 65535, float images kept in [0, 1], 32-bit integer
refused); every decoder error (a decompression bomb, a huge text chunk) is one ``ValueError``
naming the file.

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
from PIL import Image

from medic_viz import limits

__all__ = ["read_image_pixels", "to_image_tensor"]


def read_image_pixels(source: str | Path | bytes | bytearray | memoryview, *, max_side: int | None = None,
                      what: str = "an image") -> np.ndarray:
    """An image file or encoded image bytes as float64 pixels in [0, 1] at their real range,
    ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB; transparency dropped).

    Refused before decoding: more than :data:`~medic_viz.limits.MAX_IMAGE_FILE_BYTES` bytes, more
    than ``max_side`` (default :data:`~medic_viz.limits.MAX_IMAGE_SIDE`) pixels a side. Every error
    is a ``ValueError`` naming the file (``FileNotFoundError`` when it is missing); ``what`` names
    the kind of image in messages ("a trigger image", "an image")."""
    max_side = limits.MAX_IMAGE_SIDE if max_side is None else max_side
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "the image bytes"
        size = len(data)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            noun = what.split(" ", 1)[-1]  # "a trigger image" → "trigger image"
            raise FileNotFoundError(f"{noun} file not found: {path}")
        data, label, size = None, str(path), path.stat().st_size
    if size == 0:
        raise ValueError(f"{label}: is empty (0 bytes); give a PNG or JPEG file")
    if size > limits.MAX_IMAGE_FILE_BYTES:
        raise ValueError(f"{label}: {size:,} bytes is larger than {what} may be ({limits.MAX_IMAGE_FILE_BYTES:,}, "
                         "limits.MAX_IMAGE_FILE_BYTES); shrink it first")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            width, height = img.size  # read from the header, nothing decoded yet
            if max(width, height) > max_side:
                raise ValueError(f"{label}: {width}x{height} pixels is larger than {what} may be "
                                 f"({max_side} a side); shrink it first")
            return _pixels(img, label)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if text.startswith(label):  # one of the checks above
            raise ValueError(text) from None
        if data is not None:
            raise ValueError(f"could not read the image bytes ({limits.shortened(text)}); give a PNG or JPEG file") from None
        raise ValueError(f"{label}: could not read {what} ({limits.shortened(text)})") from None
    except Exception as exc:  # noqa: BLE001 - PIL's many decoder errors (UnidentifiedImageError, bombs, OSError …)
        reason = limits.shortened(" ".join(str(exc).split())) or type(exc).__name__
        if data is not None:
            raise ValueError(f"could not read the image bytes ({reason}); give a PNG or JPEG file") from None
        raise ValueError(f"{label}: not an image file PIL can read (PNG, JPEG, BMP, TIFF, …): {reason}") from None


def _pixels(img: Any, label: str) -> np.ndarray:
    """The decoded pixels of an open PIL image as float64 in [0, 1], ``(H, W)`` or ``(H, W, 3)``."""
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and img.format == "PNG"):  # 16-bit grey (PIL may say "I")
        values = np.asarray(img, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{label}: a {mode} image holds values outside 0 .. 65535; save it as an 8- or 16-bit PNG")
        return values / 65535.0
    if mode == "I":
        raise ValueError(f"{label}: a 32-bit integer image has no known range; save it as an 8- or 16-bit PNG")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 1)):
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            raise ValueError(f"{label}: a float image must hold values in [0, 1]; this one holds {low:g} .. {high:g}"
                             f"{' and NaN/inf' if not np.isfinite(values).all() else ''}: scale it to [0, 1] or save "
                             "it as an 8- or 16-bit PNG")
        return values
    grey = mode in ("1", "L", "LA")
    return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float64) / 255.0


def to_image_tensor(source: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """A user's image as float ``(C, H, W)`` in [0, 1] with ``shape = (C, H, W)``'s channels
    (1 = greyscale, 3 = RGB) and size (bilinear resize).

    ``source``: a file path, PNG/JPEG bytes, a PIL image, a uint8 or float (in [0, 1]) array
    ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``, or a float tensor ``(C, H, W)`` / ``(1, C, H, W)``.
    Raises ``ValueError`` (unreadable file or bytes, wrong shape, values outside [0, 1]) or
    ``TypeError`` (another kind of object), each with one line saying what to give.
    """
    c, h, w = shape
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        try:
            pixels = read_image_pixels(source)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        pil = _array_to_pil(pixels)
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
        pil = pil.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _array_to_pil(arr: np.ndarray) -> Any:
    """A uint8 array, or a float one in [0, 1], ``(H, W)``, ``(H, W, 1|3)`` or ``(1|3, H, W)``, as a PIL image."""
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
