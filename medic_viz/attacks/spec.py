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
from medic_viz.attacks.base import Trigger, _resize
from medic_viz.attacks.blend import BlendTrigger
from medic_viz.attacks.patch import MAX_PATCH_SIDE, PatchTrigger
from medic_viz.attacks.registry import ATTACK_NAMES, make_trigger
from medic_viz.data.images import read_image_pixels

__all__ = ["parse_trigger_spec", "split_params", "read_image_file", "SPEC_HELP", "MAX_SPEC_CHARS", "MAX_FILE_SIDE",
           "MAX_FILE_BYTES", "MAX_BLEND_SIDE"]

#: Longest spec text accepted.
MAX_SPEC_CHARS = 20_000
#: Largest side of an image file read for a trigger, in pixels.
MAX_FILE_SIDE = 4096
#: Largest image file read for a trigger, in bytes (:data:`medic_viz.limits.MAX_IMAGE_FILE_BYTES`).
MAX_FILE_BYTES = limits.MAX_IMAGE_FILE_BYTES
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


def split_params(name: str, body: str) -> dict[str, str]:
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
    3 (RGB), float64 on the CPU, at its real range (8-bit / 255, 16-bit / 65535, a float image as
    it is, refused unless in [0, 1]), read by the one bounded decoder
    :func:`medic_viz.data.images.read_image_pixels` (at most :data:`MAX_FILE_BYTES` bytes and
    ``max_side`` pixels a side, checked before decoding). Every error is a ValueError
    (FileNotFoundError when missing) naming the file."""
    array = read_image_pixels(path, max_side=max_side, what="a trigger image")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _resize_to(image: torch.Tensor, side: int) -> torch.Tensor:
    return _resize(image, side, side).contiguous()


def _patch(params: dict[str, str]) -> Trigger:
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
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a trigger spec must be non-empty text: {SPEC_HELP}")
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"a trigger spec may be at most {MAX_SPEC_CHARS:,} characters, got {len(spec):,}")
    name, _, body = spec.strip().partition(":")
    name = name.strip().lower()
    params = split_params(name, body) if body.strip() else {}
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
