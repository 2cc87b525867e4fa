"""Input attributions for clean and triggered inputs with captum: which pixels drive the decision?

Three of captum's methods, each reduced to one non-negative ``(H, W)`` map at the input's
resolution:

- ``"integrated_gradients"``: :class:`captum.attr.IntegratedGradients` from a black baseline
  (``baseline=0``), ``n_steps`` steps; map = sum over colour channels of ``|attribution|``.
- ``"saliency"``: :class:`captum.attr.Saliency` (``|∂ logit / ∂ x|``); map = max over channels
  (the usual saliency-map convention, Simonyan et al.).
- ``"gradcam"``: :class:`captum.attr.LayerGradCam` on a conv layer (default: the last
  ``nn.Conv2d``), ReLU'd, upsampled bilinearly to ``(H, W)`` with
  :meth:`captum.attr.LayerAttribution.interpolate`.

The attributed class is by default what the model predicts for each input (the true class for a
correctly classified clean input, the target class for a successful triggered one).
:func:`attribution_mass_in_region` measures how much of a map falls inside the trigger's mask.
captum is imported only in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode
from medic_viz.device import model_device

__all__ = [
    "ATTRIBUTION_METHODS",
    "attribute",
    "default_gradcam_layer",
    "AttributionComparison",
    "compare_attributions",
    "attribution_mass_in_region",
]

#: Method names accepted by :func:`attribute`.
ATTRIBUTION_METHODS: tuple[str, ...] = ("integrated_gradients", "saliency", "gradcam")
_ALIASES = {"ig": "integrated_gradients", "integratedgradients": "integrated_gradients", "grad_cam": "gradcam",
            "layergradcam": "gradcam"}


def _method(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {name!r}; use one of {ATTRIBUTION_METHODS}")
    return key


def default_gradcam_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` of ``model`` (Grad-CAM's usual layer)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM; pass layer= explicitly")
    return names[-1]


def _as_batch(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a float torch.Tensor (C, H, W) in [0, 1]")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"image must be one image (C, H, W), got shape {tuple(image.shape)}")
    return image.detach().to(device=device, dtype=torch.float32).unsqueeze(0)


def attribute(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    method: str = "integrated_gradients",
    *,
    layer: str | None = None,
    baseline: float = 0.0,
    n_steps: int = 32,
) -> np.ndarray:
    """Attribution map ``(H, W)`` (float64, ≥ 0) of ``model``'s logit for ``target`` on ``image``.

    ``image``: float ``(C, H, W)`` in [0, 1]. ``target``: class id (default: the predicted class).
    ``method``: one of :data:`ATTRIBUTION_METHODS`. ``layer``: Grad-CAM layer name (default
    :func:`default_gradcam_layer`). ``baseline``, ``n_steps``: Integrated Gradients settings.
    The model runs in eval mode and is left in the mode it was in.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    key = _method(method)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2, got {n_steps!r}")
    x = _as_batch(image, model_device(model))
    with eval_mode(model):
        if target is None:
            with torch.no_grad():
                target = int(model(x).argmax(1))
        target = int(target)
        if key == "integrated_gradients":
            attr = IntegratedGradients(model).attribute(x, baselines=float(baseline), target=target, n_steps=n_steps)
            out = attr[0].abs().sum(0)
        elif key == "saliency":
            attr = Saliency(model).attribute(x.requires_grad_(True), target=target, abs=True)
            out = attr[0].amax(0)
        else:
            name = layer or default_gradcam_layer(model)
            modules = dict(model.named_modules())
            if name not in modules or name == "":
                raise ValueError(f"unknown layer {name!r} for Grad-CAM; conv layers: "
                                 f"{[n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-6:]}")
            cam = LayerGradCam(model, modules[name]).attribute(x, target=target, relu_attributions=True)
            if cam.ndim != 4:
                raise ValueError(f"Grad-CAM needs a layer with spatial output (B, C, H, W); {name!r} gave {tuple(cam.shape)}")
            up = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
            out = up[0].sum(0).clamp_min(0)
    return out.detach().cpu().double().numpy()


def attribution_mass_in_region(attr_map: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> float:
    """Share of an attribution map's total ``|mass|`` inside ``mask`` (both ``(H, W)``), in [0, 1].

    ``mask`` may be fractional (e.g. :meth:`Trigger.mask`): each pixel counts with its weight.
    A map with no mass at all gives 0.
    """
    a = attr_map.detach().cpu().numpy() if isinstance(attr_map, torch.Tensor) else np.asarray(attr_map)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    a, m = np.abs(a.astype(np.float64)), m.astype(np.float64)
    if a.shape != m.shape or a.ndim != 2:
        raise ValueError(f"attr_map and mask must both be (H, W) of the same shape, got {a.shape} and {m.shape}")
    if m.min() < 0 or m.max() > 1:
        raise ValueError("mask values must lie in [0, 1]")
    total = float(a.sum())
    return float((a * m).sum() / total) if total > 0 else 0.0


@dataclass
class AttributionComparison:
    """Attribution maps of a clean input and its triggered copy.

    ``maps[method]["clean" | "triggered"]``: ``(H, W)`` arrays; ``targets``: the class each was
    attributed to; ``mask``: the trigger's ``(H, W)`` mask; ``mass[method][which]``: share of
    the map inside the mask (:func:`attribution_mass_in_region`); ``image`` and
    ``triggered_image``: ``(C, H, W)`` float tensors.
    """

    image: torch.Tensor
    triggered_image: torch.Tensor
    mask: np.ndarray
    targets: dict[str, int]
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    mass: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.maps)

    def mass_ratio(self, method: str) -> float:
        """Triggered over clean share of mass inside the trigger region (inf if clean is 0)."""
        m = self.mass[_method(method)]
        return m["triggered"] / m["clean"] if m["clean"] > 0 else float("inf")

    def as_records(self) -> list[dict[str, Any]]:
        return [
            {"method": k, "clean_mass": v["clean"], "triggered_mass": v["triggered"], "ratio": self.mass_ratio(k)}
            for k, v in self.mass.items()
        ]


def compare_attributions(
    model: nn.Module,
    image: torch.Tensor,
    trigger: Trigger,
    *,
    methods: Sequence[str] = ATTRIBUTION_METHODS,
    targets: dict[str, int] | None = None,
    layer: str | None = None,
    n_steps: int = 32,
) -> AttributionComparison:
    """Attributions of ``image`` and ``trigger.apply(image)`` for each of ``methods``.

    ``targets``: ``{"clean": class, "triggered": class}`` to attribute (default: the model's
    prediction for each input).
    """
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a medic_viz Trigger, got {type(trigger).__name__}")
    keys = [_method(m) for m in methods]
    if not keys:
        raise ValueError("methods must name at least one attribution method")
    x = _as_batch(image, model_device(model))
    xt = trigger.apply(x)
    chosen: dict[str, int] = {}
    with eval_mode(model), torch.no_grad():
        for which, inp in (("clean", x), ("triggered", xt)):
            given = (targets or {}).get(which)
            chosen[which] = int(given) if given is not None else int(model(inp).argmax(1))
    mask = trigger.mask(x.shape[2], x.shape[3]).numpy().astype(np.float64)
    result = AttributionComparison(x[0].cpu(), xt[0].cpu(), mask, chosen)
    for key in keys:
        result.maps[key] = {}
        result.mass[key] = {}
        for which, inp in (("clean", x[0]), ("triggered", xt[0])):
            a = attribute(model, inp, chosen[which], key, layer=layer, n_steps=n_steps)
            result.maps[key][which] = a
            result.mass[key][which] = attribution_mass_in_region(a, mask)
    return result
