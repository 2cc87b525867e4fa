"""Helpers shared by the analysis modules: criteria names, importance options, argument checks,
layer statistics (from :mod:`medic_viz.stats`) and image batches. Private to :mod:`medic_viz.analysis`."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.attacks.base import Trigger
from medic_viz.capture import resolve_layers
from medic_viz.data.arrays import ImageArrays
from medic_viz.importance import ImportanceOptions, validate_tau
from medic_viz.stats import LayerStats, compute_layer_stats

__all__ = ["CRITERIA"]

#: Importance criteria: eq.(2) alone, eq.(3) alone, eq.(4) (``"both"`` is an alias of ``"combined"``).
CRITERIA: tuple[str, ...] = ("combined", "activation", "impact")

_CRITERIA_TO_OPTIONS = {"combined": "both", "both": "both", "activation": "activation", "impact": "impact"}


def _criteria(criteria: str) -> str:
    key = str(criteria).strip().lower()
    if key not in _CRITERIA_TO_OPTIONS:
        raise ValueError(f"criteria must be one of {CRITERIA} (or 'both' = 'combined'), got {criteria!r}")
    return _CRITERIA_TO_OPTIONS[key]


def _options(tau: float, criteria: str, overrides: Mapping[str, Any]) -> ImportanceOptions:
    allowed = {f.name for f in fields(ImportanceOptions)} - {"tau", "criteria"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown importance option(s) {sorted(unknown)}; options are {sorted(allowed)}")
    return ImportanceOptions(tau=validate_tau(tau), criteria=_criteria(criteria), **overrides)  # type: ignore[arg-type]


def _check_trigger(trigger: Trigger) -> None:
    if not isinstance(trigger, Trigger):
        raise TypeError(
            f"trigger must be a medic_viz Trigger (e.g. make_trigger('badnet')), got {type(trigger).__name__}"
        )


def _resolve_stats(
    model: nn.Module,
    stats: Mapping[str, LayerStats] | ImageArrays,
    layers: str | Iterable[str] | None,
    device: torch.device,
) -> tuple[list[str], dict[str, LayerStats]]:
    """Layer names and their statistics; ``stats`` may be clean data to estimate them from."""
    if isinstance(stats, ImageArrays):
        names = resolve_layers(model, layers)
        return names, compute_layer_stats(model, stats, names, device=device)
    if not isinstance(stats, Mapping):
        raise TypeError(
            "stats must be {layer: LayerStats} (medic_viz.stats.compute_layer_stats) or clean "
            f"ImageArrays to estimate them from, got {type(stats).__name__}"
        )
    names = list(stats) if layers is None else resolve_layers(model, layers)
    names = resolve_layers(model, names)
    missing = [n for n in names if n not in stats]
    if missing:
        raise ValueError(
            f"no statistics for layer(s) {missing[:6]}; compute them with "
            "compute_layer_stats(model, clean_data, layers) over the same layers"
        )
    out = {}
    for n in names:
        s = stats[n]
        if not isinstance(s, LayerStats):
            raise TypeError(f"stats[{n!r}] must be a LayerStats, got {type(s).__name__}")
        out[n] = s.to(device)
    return names, out


def _as_images(
    images: ImageArrays | torch.Tensor, labels: torch.Tensor | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(images, ImageArrays):
        return images.floats(), images.labels
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError(
            "images must be ImageArrays or a float tensor (N, C, H, W) in [0, 1]"
            + (f", got shape {tuple(images.shape)} dtype {images.dtype}" if isinstance(images, torch.Tensor) else "")
        )
    if labels is None:
        raise ValueError("labels= is needed with a tensor of images (the clean importance uses the true labels)")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    if len(y) != len(images):
        raise ValueError(f"{len(images)} images but {len(y)} labels")
    return images, y

