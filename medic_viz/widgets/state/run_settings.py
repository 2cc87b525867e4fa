"""The launcher's run settings: the choices it offers (devices, methods, how MEDIC's τ is set,
layer presets), the checks of its parameters, and the label a run gets from them."""

from __future__ import annotations

from typing import Any

import torch

from medic_viz.calibration import validate_share
from medic_viz.capture import LAYER_PRESETS, resolve_layers
from medic_viz.defenses.medic import DEFAULT_LAYERS, validate_lambda
from medic_viz.defenses.registry import DISPLAY_NAMES, available_defenses, defense_class
from medic_viz.device import resolve_device

__all__ = [
    "DEVICE_CHOICES",
    "TAU_MODES",
    "LAYER_CHOICES",
    "method_choices",
    "method_key",
    "run_label",
    "layers_text",
    "method_check",
    "lam_check",
    "share_check",
    "layers_check",
    "device_check",
    "as_float",
]

#: Device choices offered by the launcher ("auto" = CUDA, else MPS, else CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: How a MEDIC run's τ is set: ``"share"`` — calibrated per layer so that each layer's weights
#: match ``share`` of its neurons (the library's default, :data:`medic_viz.defenses.medic.DEFAULT_SHARE`);
#: ``"global"`` — the one ``tau`` for every layer (the paper's way).
TAU_MODES: tuple[str, ...] = ("share", "global")
#: The layer presets the launcher offers (:data:`medic_viz.capture.LAYER_PRESETS`; ``"auto"`` first,
#: MEDIC's default).
LAYER_CHOICES: tuple[str, ...] = (DEFAULT_LAYERS,) + tuple(p for p in LAYER_PRESETS if p != DEFAULT_LAYERS)


def method_choices() -> list[str]:
    """Method names the launcher runs, MEDIC first, then the baselines (``"finetune"``, ``"nad"`` …)."""
    names = available_defenses()
    return ["medic"] + [n for n in names if n != "medic"]


def method_key(method: Any) -> str | None:
    """The canonical method name (aliases such as ``"Fine-tuning"`` accepted), None if unknown."""
    try:
        return defense_class(method).name
    except (TypeError, ValueError):
        return None


def layers_text(layers: Any) -> str:
    """A layer selection in a few characters: the preset's name, or up to three module names
    (``"conv2,bn2,conv3,… (6)"``)."""
    if isinstance(layers, str):
        return layers
    try:
        names = [str(n) for n in layers]
    except TypeError:
        return repr(layers)
    shown = ",".join(names[:3])
    return shown if len(names) <= 3 else f"{shown},… ({len(names)})"


def run_label(tau: Any, lam: Any, method: str = "medic", *, share: Any = None, layers: Any = DEFAULT_LAYERS) -> str:
    """The label of a run: for MEDIC ``"MEDIC τ=5 λ=10"`` (one global τ) or, given ``share``,
    ``"MEDIC share=1% λ=10"`` (τ calibrated per layer; ``tau`` is then not shown), with
    ``" layers=conv+bn"`` appended when ``layers`` is not the default; the method's display name
    for a baseline (``"NAD"``, ``"Fine-tuning"``: these settings do not apply); an unknown
    method as given."""

    def fmt(v: Any, scale: float = 1.0, unit: str = "") -> str:
        if isinstance(v, (str, bytes, bool)):
            return repr(v)
        try:
            return f"{scale * float(v):g}{unit}"
        except (TypeError, ValueError):
            return repr(v)

    key = method_key(method)
    if key is None:
        return str(method)
    if key != "medic":
        return DISPLAY_NAMES.get(key, key)
    sharp = f"τ={fmt(tau)}" if share is None else f"share={fmt(share, 100.0, '%')}"
    label = f"MEDIC {sharp} λ={fmt(lam)}"
    if not (isinstance(layers, str) and layers == DEFAULT_LAYERS):
        label += f" layers={layers_text(layers)}"
    return label


# -- parameter checks ------------------------------------------------------------------------


def method_check(_state: Any, value: Any) -> str:
    key = method_key(value)
    if key is None:
        raise ValueError(f"unknown method {value!r}; choose one of {method_choices()}")
    return key


def lam_check(_state: Any, value: Any) -> float:
    return validate_lambda(value)


def share_check(_state: Any, value: Any) -> float:
    return validate_share(value)


def layers_check(state: Any, value: Any) -> str | tuple[str, ...]:
    """A preset of :data:`LAYER_CHOICES`, or module names of the teacher (kept as a tuple)."""
    if isinstance(value, str) and value in LAYER_PRESETS:
        return value
    if isinstance(value, (str, bytes)) or callable(value) or value is None:
        raise ValueError(f"layers must be a preset {list(LAYER_CHOICES)} or a list of the teacher's module names, "
                         f"got {value!r}")
    try:
        names = tuple(value)
    except TypeError:
        raise ValueError(f"layers must be a preset {list(LAYER_CHOICES)} or a list of the teacher's module names, "
                         f"got {value!r}") from None
    return tuple(resolve_layers(state.teacher, names))  # one line naming the valid layers if one is not


def device_check(_state: Any, value: Any) -> str:
    if not isinstance(value, (str, torch.device)):
        raise ValueError(f"device must be one of {list(DEVICE_CHOICES)} or a torch device string, got {value!r}")
    try:
        resolve_device(value)  # raises ValueError naming what is available
    except RuntimeError as exc:  # torch's own parse error, e.g. "gpu"
        raise ValueError(f"device must be one of {list(DEVICE_CHOICES)} or a torch device string, got {value!r}"
                         f" ({str(exc).splitlines()[0]})") from None
    return str(value)


def as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got bool")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
