"""Trigger specs: a trigger described in one line of text, for triggers made elsewhere.

Grammar: ``NAME`` or ``NAME:key=value,key=value,...``.

* ``NAME`` is a registry attack with its own parameters, e.g. ``badnet:size=3,position=bottom-right``,
  ``blend:alpha=0.1,cells=8`` or ``filter:filter=nashville`` (see
  :data:`~medic_viz.attacks.registry.ATTACK_NAMES`);
* ``patch:pixels=ROWS,position=...,margin=...`` — a small patch given as grey values in [0, 1],
  rows separated by ``;`` and values by ``,`` (``patch:pixels=0,1,0;1,0,1;0,1,0``), or
  ``patch:file=trigger.png,...`` — the patch read from an image file (RGB or grey);
* ``blend-image:file=pattern.png,alpha=0.1`` — a blend pattern read from an image file.

Values are read as integers, floats, ``true``/``false`` or text; a value with ``;`` is a list
(``position=3;4`` is the explicit ``(row, col)``). A comma followed by text without ``=``
continues the previous value, which is how ``pixels`` holds commas. Image files are read with
PIL, at most :data:`MAX_FILE_SIDE` pixels a side and :data:`MAX_FILE_BYTES` bytes; their pixels
become data in the trigger (and the model card), so the file is not needed afterwards: a
patch image at most :data:`~medic_viz.attacks.patch.MAX_PATCH_SIDE` a side, a blend pattern
resized to ``image_size`` when given (else at most :data:`MAX_BLEND_SIDE` a side).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medic_viz import limits
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.patch import MAX_PATCH_SIDE

__all__ = ["parse_trigger_spec", "read_image_file", "SPEC_HELP", "MAX_SPEC_CHARS", "MAX_FILE_SIDE",
           "MAX_FILE_BYTES", "MAX_BLEND_SIDE"]

#: Longest spec text accepted.
MAX_SPEC_CHARS = 20_000
#: Largest side of an image file read for a trigger, in pixels.
MAX_FILE_SIDE = 4096
#: Largest image file read for a trigger, in bytes.
MAX_FILE_BYTES = 32 * 2**20
#: Largest side of a blend pattern kept from a file when no image size is given.
MAX_BLEND_SIDE = 256

#: One-paragraph summary of the grammar, for ``--help`` texts and error messages.
SPEC_HELP = ("NAME[:key=value,...]: a registry attack with parameters (badnet:size=3,position=bottom-right), "
             "patch:pixels=0,1,0;1,0,1;0,1,0,position=bottom-right (grey values in [0, 1], rows split by ';'), "
             "patch:file=trigger.png,position=bottom-right, or blend-image:file=pattern.png,alpha=0.1")


def _value(text: str) -> Any:
    text = text.strip()
    if ";" in text:
        return [_value(part) for part in text.split(";")]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise ValueError(f"trigger spec: {text!r} is not a finite number")
        return value
    return text


def _split_params(name: str, body: str) -> dict[str, str]:
    """``key=value,key=value`` into raw strings; a piece without ``=`` continues the last value."""
    params: dict[str, str] = {}
    last: str | None = None
    for piece in body.split(","):
        if "=" in piece:
            key, _, raw = piece.partition("=")
            key = key.strip().lower().replace("-", "_")
            if not key.isidentifier():
                raise ValueError(f"trigger spec {name!r}: {key!r} is not a parameter name; write key=value pairs "
                                 "separated by commas")
            if key in params:
                raise ValueError(f"trigger spec {name!r}: parameter {key!r} is given twice")
            params[key] = raw
            last = key
        elif last is None:
            raise ValueError(f"trigger spec {name!r}: expected key=value after ':', got {piece!r}")
        else:
            params[last] += "," + piece
    return params


def _pixel_rows(text: str) -> list[list[float]]:
    rows = [row for row in text.split(";")]
    try:
        values = [[float(v) for v in row.split(",")] for row in rows]
    except ValueError:
        raise ValueError(f"trigger spec patch: pixels must be numbers in [0, 1], rows split by ';' and values by ',' "
                         f"(e.g. pixels=0,1,0;1,0,1;0,1,0), got {text[:60]!r}") from None
    widths = {len(row) for row in values}
    if len(widths) != 1:
        raise ValueError(f"trigger spec patch: every pixel row needs the same number of values, got row lengths "
                         f"{[len(row) for row in values]}")
    if len(values) > MAX_PATCH_SIDE or widths.pop() > MAX_PATCH_SIDE:
        raise ValueError(f"trigger spec patch: a patch may be at most {MAX_PATCH_SIDE}x{MAX_PATCH_SIDE} pixels")
    flat = [v for row in values for v in row]
    if any(not (0.0 <= v <= 1.0) for v in flat):
        raise ValueError("trigger spec patch: pixel values must lie in [0, 1] (0 = black, 1 = white)")
    return values


def read_image_file(path: str | Path, *, max_side: int = MAX_FILE_SIDE) -> torch.Tensor:
    """An image file (PNG, JPEG, TIFF, …) as floats in [0, 1], ``(C, H, W)`` with C = 1 (grey) or
    3 (RGB), float64 on the CPU, at its real range: 8-bit / 255, 16-bit / 65535, a float image
    as it is (refused unless in [0, 1]). Files larger than :data:`MAX_FILE_BYTES` or ``max_side``
    pixels a side are refused before their pixels are decoded; transparency is dropped. Every
    error is a ValueError (FileNotFoundError when missing) naming the file."""
    from PIL import Image

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes is larger than a trigger image may be "
                         f"({MAX_FILE_BYTES:,})")
    try:
        with Image.open(path) as img:
            width, height = img.size  # read from the header, nothing decoded yet
            if max(width, height) > max_side:
                raise ValueError(f"{path}: {width}x{height} pixels is larger than a trigger image may be "
                                 f"({max_side} a side); shrink it first")
            array = _pixels(img, path)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        raise ValueError(text if text.startswith(str(path)) else f"{path}: could not read the image ({text})") from None
    except Exception as exc:  # noqa: BLE001 - PIL's many decoder errors (UnidentifiedImageError, bombs, OSError …)
        raise ValueError(f"{path}: not an image file PIL can read (PNG, JPEG, BMP, TIFF, …): "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _pixels(img: Any, path: Path) -> np.ndarray:
    """The decoded pixels of an open PIL image as float64 in [0, 1], ``(H, W)`` or ``(H, W, 3)``."""
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and img.format == "PNG"):  # 16-bit grey (PIL may say "I")
        values = np.asarray(img, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{path}: a {mode} image holds values outside 0 .. 65535; save it as an 8- or 16-bit PNG")
        return values / 65535.0
    if mode == "I":
        raise ValueError(f"{path}: a 32-bit integer image has no known range; save it as an 8- or 16-bit PNG")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 1)):
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            raise ValueError(f"{path}: a float image must hold values in [0, 1]; this one holds {low:g} .. {high:g}"
                             f"{' and NaN/inf' if not np.isfinite(values).all() else ''}: scale it to [0, 1] or save "
                             "it as an 8- or 16-bit PNG")
        return values
    grey = mode in ("1", "L", "LA")
    return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float64) / 255.0


def _resize_to(image: torch.Tensor, side: int) -> torch.Tensor:
    from medic_viz.attacks.base import _resize

    return _resize(image, side, side).contiguous()


def _patch(params: dict[str, str]) -> Trigger:
    from medic_viz.attacks.patch import PatchTrigger

    sources = [k for k in ("pixels", "file") if k in params]
    if len(sources) != 1:
        raise ValueError("trigger spec patch: give the patch as pixels=ROWS (e.g. pixels=0,1,0;1,0,1;0,1,0) or "
                         "file=IMAGE, exactly one of them")
    pixels: Any = (_pixel_rows(params.pop("pixels")) if sources[0] == "pixels"
                   else read_image_file(params.pop("file"), max_side=MAX_PATCH_SIDE))
    options = {k: _value(v) for k, v in params.items()}
    unknown = sorted(set(options) - {"position", "margin"})
    if unknown:
        raise ValueError(f"trigger spec patch does not accept {unknown}; accepted: pixels or file, position, margin")
    return PatchTrigger(pixels, **options)


def _blend_image(params: dict[str, str], image_size: int | None) -> Trigger:
    from medic_viz.attacks.blend import BlendTrigger

    if image_size is not None:
        limits.check_image_side(int(image_size), "trigger spec blend-image: image_size")
    if "file" not in params:
        raise ValueError("trigger spec blend-image needs file=IMAGE (and alpha=, e.g. 0.1)")
    image = read_image_file(params.pop("file"))
    options = {k: _value(v) for k, v in params.items()}
    unknown = sorted(set(options) - {"alpha"})
    if unknown:
        raise ValueError(f"trigger spec blend-image does not accept {unknown}; accepted: file, alpha")
    side = image_size if image_size is not None else min(max(image.shape[1:]), MAX_BLEND_SIDE)
    if image.shape[1:] != (side, side):
        image = _resize_to(image, int(side))
    return BlendTrigger(pattern=image, **options)


def parse_trigger_spec(spec: str, *, image_size: int | None = None) -> Trigger:
    """Build the trigger a spec describes (grammar in the module docstring).

    ``image_size``: the model's input side; a blend pattern from a file is stored at this size.
    Raises ValueError naming what is wrong (unknown name or parameter, bad value, bad pixels)
    and FileNotFoundError for a missing image file.
    """
    from medic_viz.attacks.registry import ATTACK_NAMES, make_trigger

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a trigger spec must be non-empty text: {SPEC_HELP}")
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"a trigger spec may be at most {MAX_SPEC_CHARS:,} characters, got {len(spec):,}")
    name, _, body = spec.strip().partition(":")
    name = name.strip().lower()
    params = _split_params(name, body) if body.strip() else {}
    if name == "patch":
        return _patch(params)
    if name in ("blend-image", "blend_image"):
        return _blend_image(params, image_size)
    if name not in ATTACK_NAMES:
        raise ValueError(f"trigger spec: unknown trigger {name!r}; use one of {', '.join(ATTACK_NAMES)}, "
                         f"patch or blend-image ({SPEC_HELP})")
    trigger = make_trigger(name, **{k: _value(v) for k, v in params.items()})
    if not isinstance(trigger, Trigger):
        raise ValueError(f"trigger spec: {name!r} needs two images of the data set, not a trigger of its own; "
                         "it cannot be given as a spec")
    return trigger
