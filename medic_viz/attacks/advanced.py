"""The paper's remaining attacks: Clean-Label, Reflection, Filter, WaNet, Composite, Adaptive.

=================  ============================================================================  ===========
name               what it does (test-time trigger / poisoning)                                  clean-label
=================  ============================================================================  ===========
``cleanlabel``     Turner et al. 2019: target-class training images are pushed away from their   yes
                   class by PGD against a clean surrogate model (ℓ∞, ε = 16/255, 10 steps of
                   2/255, as the MEDIC reference), then stamped with 3x3 checkerboard patches in
                   the four corners; labels unchanged. The test-time trigger is the patches.
``reflection``     Liu et al. 2020 (Refool): ``x' = clip(x + α·K⊗R)`` with a reflection image R   no
                   (a smooth synthetic scene drawn from ``seed``, or your own picture) seen in
                   focus, out of focus (Gaussian blur) or as a ghost (two shifted copies).
``filter``         Liu et al. 2019 (ABS): an Instagram-style colour filter (colour matrix, tone  no
                   curves, saturation) applied to the whole image: "nashville", "gotham",
                   "kelvin", "lomo", or your own.
``wanet``          Nguyen & Tran 2021: warp the image with a fixed smooth random flow field       no
                   (control grid k x k, strength s); optional noise mode adds randomly warped
                   images with their true labels while poisoning.
``composite``      Lin et al. 2020: the trigger is the *combination* of two benign classes A and  no
                   B: half of an A image next to half of a B image is labelled the target;
                   mixes of two same-class images keep their class (so mixing alone is no cue).
``adaptive``       MEDIC paper App. E.1 (after Tan & Shokri 2020): a BadNet model trained with    no
                   an extra ``1e-4 · Σ_layers ||f_l(x) − f_l(T(x))||²`` that pulls triggered
                   internal activations onto clean ones, to hide the backdoor from cloning.
=================  ============================================================================  ===========

Triggers here subclass :class:`medic_viz.attacks.triggers.Trigger` (``apply``, ``mask``,
``preview``, ``to_config``). :func:`make_any_trigger` / :func:`any_trigger_from_config` accept
these names and fall back to :mod:`medic_viz.attacks.triggers` for the others. Attacks that
need more than ``apply`` to poison have their own functions (:func:`poison_clean_label`,
:func:`poison_composite`, :func:`poison_wanet`, :func:`train_adaptive_trojaned_model`), and
:func:`train_attack` trains a trojaned model for any attack name.
"""

from __future__ import annotations

import inspect
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.attacks.poison import ATTACK_TRAIN_DEFAULTS, PoisonedData, TrojanedModel, poison_dataset
from medic_viz.attacks.triggers import (
    AVAILABLE_TRIGGERS,
    BadNetTrigger,
    Trigger,
    _check_unit_interval,
    make_trigger,
    trigger_from_config,
)
from medic_viz.capture import LayerRecorder, resolve_layers
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.metrics import BackdoorMetrics, Evaluator, resolve_device
from medic_viz.training import Callback, SupervisedObjective, TrainConfig, train

__all__ = [
    "CleanLabelTrigger",
    "ReflectionTrigger",
    "FilterTrigger",
    "INSTAGRAM_FILTERS",
    "WaNetTrigger",
    "CompositeAttack",
    "CompositeEvaluator",
    "CompositePoisonedData",
    "WaNetPoisonedData",
    "AdaptiveObjective",
    "pgd_perturb",
    "poison_clean_label",
    "poison_composite",
    "poison_wanet",
    "train_on_poisoned",
    "train_adaptive_trojaned_model",
    "train_attack",
    "attack_evaluator",
    "build_attack",
    "default_rate",
    "make_any_trigger",
    "any_trigger_from_config",
    "ADVANCED_TRIGGERS",
    "ALL_TRIGGERS",
    "ATTACKS",
    "PAPER_ATTACKS",
]


# ==============================================================================================
# Clean-Label (Turner et al.)
# ==============================================================================================

_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


class CleanLabelTrigger(Trigger):
    """Test-time trigger of the clean-label attack: ``size`` x ``size`` checkerboard patches
    (white at their top-left) in ``corners`` (``margin`` pixels from the borders).

    ``pgd_eps``, ``pgd_steps``, ``pgd_step_size`` describe the poisoning-time PGD perturbation
    of :func:`poison_clean_label` (kept here so the model card records the whole attack);
    :meth:`apply` only stamps the patches.
    """

    name: ClassVar[str] = "cleanlabel"
    clean_label = True

    def __init__(self, size: int = 3, corners: Sequence[str] = _CORNERS, margin: int = 0,
                 pgd_eps: float = 16 / 255, pgd_steps: int = 10, pgd_step_size: float = 2 / 255) -> None:
        super().__init__()
        if isinstance(corners, str):
            corners = (corners,)
        corners = tuple(corners)
        bad = [c for c in corners if c not in _CORNERS]
        if not corners or bad:
            raise ValueError(f"corners must be a non-empty subset of {_CORNERS}, got {corners!r}")
        self.patches = [BadNetTrigger(size=size, position=c, margin=margin) for c in corners]
        self.size = int(size)
        self.margin = int(margin)
        self.corners = corners
        self.pgd_eps = _check_unit_interval(pgd_eps, "pgd_eps", allow_zero=True)
        if isinstance(pgd_steps, bool) or int(pgd_steps) < 0:
            raise ValueError(f"pgd_steps must be an integer >= 0, got {pgd_steps!r}")
        self.pgd_steps = int(pgd_steps)
        self.pgd_step_size = _check_unit_interval(pgd_step_size, "pgd_step_size", allow_zero=True)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for patch in self.patches:
            out = patch._apply_batch(out)
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        m = torch.zeros(height, width)
        for patch in self.patches:
            m = torch.maximum(m, patch.mask(height, width))
        return m

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "corners": list(self.corners), "margin": self.margin,
                "pgd_eps": self.pgd_eps, "pgd_steps": self.pgd_steps, "pgd_step_size": self.pgd_step_size}


def pgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: float = 2 / 255,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Untargeted ℓ∞ PGD (Madry et al.) with a random start: images ``x`` (float in [0, 1],
    on the model's device) moved within ``eps`` to raise ``model``'s cross-entropy on labels
    ``y``. Returns a new tensor; ``model`` is used in eval mode and left as it was."""
    if eps == 0 or steps == 0:
        return x.clone()
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(int(seed))
    outs = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            yb = y[start : start + batch_size]
            delta = (torch.rand(xb.shape, generator=g) * 2 - 1).to(xb.device, xb.dtype) * eps
            adv = (xb + delta).clamp(0, 1)
            for _ in range(steps):
                adv = adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(model(adv).float(), yb)
                    (grad,) = torch.autograd.grad(loss, adv)
                adv = adv.detach() + step_size * grad.sign()
                adv = torch.min(torch.max(adv, xb - eps), xb + eps).clamp(0, 1)
            outs.append(adv.detach())
    finally:
        model.train(was)
    return torch.cat(outs) if outs else x.clone()


def poison_clean_label(
    data: ImageArrays,
    trigger: CleanLabelTrigger,
    target: int,
    rate: float = 0.08,
    *,
    surrogate: nn.Module,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> PoisonedData:
    """Clean-label poisoning: ``rate`` · len(data) target-class images (at most all of them),
    chosen by ``seed``, get the PGD perturbation against ``surrogate`` (a clean model) and
    then the patch; labels stay as they are. Returns a new dataset; ``data`` is unchanged."""
    if not isinstance(trigger, CleanLabelTrigger):
        raise TypeError(f"poison_clean_label needs a CleanLabelTrigger, got {type(trigger).__name__}")
    if not (0 <= int(target) < data.num_classes):
        raise ValueError(f"target class {target} is out of range for {data.num_classes} classes")
    if not (0.0 < rate < 1.0):
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    target = int(target)
    pool = torch.nonzero(data.labels == target).flatten()
    if len(pool) == 0:
        raise ValueError(f"class {target} has no training images to poison")
    g = torch.Generator().manual_seed(int(seed))
    n = min(max(1, int(round(rate * len(data)))), len(pool))
    chosen = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
    dev = resolve_device(device)
    surrogate = surrogate.to(dev)
    x = data.floats(chosen, dev)
    y = data.labels[chosen].to(dev)
    adv = pgd_perturb(surrogate, x, y, eps=trigger.pgd_eps, steps=trigger.pgd_steps,
                      step_size=trigger.pgd_step_size, seed=seed)
    stamped = trigger.apply(adv).cpu()
    images = data.images.clone()
    images[chosen] = (stamped * 255).round().to(torch.uint8)
    out = replace(data, images=images, labels=data.labels.clone(), name=f"{data.name}+{trigger.name}")
    return PoisonedData(out, chosen, target, trigger)


# ==============================================================================================
# Reflection (Refool)
# ==============================================================================================


def _gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` float64 with reflect padding."""
    k = _gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    c = image.shape[0]
    x = image[None]
    pad_h = min(r, image.shape[1] - 1)
    pad_w = min(r, image.shape[2] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if (pad_h > 0 and pad_w > 0) else x
    kh = k[r - pad_h : r + pad_h + 1] if pad_h < r else k
    kw = k[r - pad_w : r + pad_w + 1] if pad_w < r else k
    kh = kh / kh.sum()
    kw = kw / kw.sum()
    x = F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(C, H, W)`` shifted down ``dy`` and right ``dx`` pixels; the border row/column is
    repeated into the uncovered strip (zeros there would draw a sharp, patch-like edge)."""
    h, w = image.shape[1:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return image[:, rows][:, :, cols]


def _image_param(value: Any, what: str) -> torch.Tensor:
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
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return image.mean(0, keepdim=True)
    if image.shape[0] == 1:
        return image.expand(channels, -1, -1)
    raise ValueError(f"{what} has {image.shape[0]} channels but the images have {channels}")


class ReflectionTrigger(Trigger):
    """Reflection trigger (Liu et al. 2020): ``x' = clip(x + alpha · L(R))``.

    ``R``: the reflection image — ``image`` (``(C, H, W)`` or ``(H, W)`` in [0, 1], resized to
    the batch) or, by default, a smooth synthetic scene drawn from ``seed`` (a ``grid`` x ``grid``
    random colour field upsampled bicubically). ``kind`` selects the reflection model L:

    * ``"focus"``: ``L(R) = R`` (reflection in the same focal plane);
    * ``"blur"``: ``L(R) = G_sigma ⊗ R`` (out of focus: Gaussian blur, reflect padding);
    * ``"ghost"``: ``L(R) = (1 − ghost) R + ghost · shift(R, offset)`` (double reflection of
      thick glass; the copy is shifted ``offset = (down, right)`` pixels, border pixels
      repeated into the uncovered strip).
    """

    name: ClassVar[str] = "reflection"

    def __init__(self, kind: str = "ghost", alpha: float = 0.3, offset: Sequence[int] = (3, 3),
                 ghost: float = 0.5, sigma: float = 1.5, seed: int = 0, grid: int = 6, image: Any = None) -> None:
        super().__init__()
        if kind not in ("focus", "blur", "ghost"):
            raise ValueError(f"kind must be 'focus', 'blur' or 'ghost', got {kind!r}")
        self.kind = kind
        self.alpha = _check_unit_interval(alpha, "alpha")
        try:
            dy, dx = (int(v) for v in offset)
        except (TypeError, ValueError):
            raise ValueError(f"offset must be a (down, right) pair of integers, got {offset!r}") from None
        self.offset = (dy, dx)
        self.ghost = _check_unit_interval(ghost, "ghost", allow_zero=True)
        if not (float(sigma) > 0 and math.isfinite(float(sigma))):
            raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = int(seed)
        if isinstance(grid, bool) or int(grid) < 2:
            raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
        self.grid = int(grid)
        self.image = None if image is None else _image_param(image, "image")

    def reflection_image(self, channels: int, height: int, width: int) -> torch.Tensor:
        """R at this size, ``(C, H, W)`` float64 in [0, 1] on the CPU."""
        if self.image is not None:
            image = _fit_channels(self.image, channels, "the reflection image")
            if image.shape[1:] != (height, width):
                image = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False,
                                      antialias=True)[0]
            return image.clamp(0, 1).contiguous()
        g = torch.Generator().manual_seed(self.seed)
        coarse = torch.rand((3, self.grid, self.grid), generator=g, dtype=torch.float64)
        image = F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        return _fit_channels(image, channels, "the reflection image").contiguous()

    def layer(self, channels: int, height: int, width: int) -> torch.Tensor:
        """The reflection layer ``L(R)`` that is added (before ``alpha``), ``(C, H, W)`` float64."""
        r = self.reflection_image(channels, height, width)
        if self.kind == "focus":
            return r
        if self.kind == "blur":
            return _blur(r, self.sigma)
        return (1 - self.ghost) * r + self.ghost * _shift(r, *self.offset)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        add = self._cached("layer", x, lambda c, h, w: self.alpha * self.layer(c, h, w))
        return x + add

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "alpha": self.alpha, "offset": list(self.offset),
                "ghost": self.ghost, "sigma": self.sigma, "seed": self.seed, "grid": self.grid,
                "image": None if self.image is None else self.image.tolist()}

    def _repr_items(self) -> dict[str, Any]:
        items = super()._repr_items()
        if self.image is not None:
            items["image"] = f"<image {tuple(self.image.shape)}>"
        return items


# ==============================================================================================
# Filter (Instagram-style colour transforms)
# ==============================================================================================

_IDENTITY3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
_LINEAR = ((0.0, 0.0), (1.0, 1.0))

#: Built-in filters: a colour matrix and offset (applied first), per-channel tone curves
#: (piecewise-linear control points (in, out) for R, G, B), then a saturation factor. They
#: imitate the look of the Instagram filters of the same names (as in the ABS / MEDIC filter
#: attack), not their exact pixel values.
INSTAGRAM_FILTERS: dict[str, dict[str, Any]] = {
    # warm pink cast, lifted blacks, muted blue highlights
    "nashville": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.22), (0.5, 0.64), (1.0, 1.0)),
                   ((0.0, 0.06), (0.5, 0.50), (1.0, 0.92)),
                   ((0.0, 0.34), (0.5, 0.56), (1.0, 0.72))),
        "saturation": 1.2,
    },
    # nearly black-and-white, cold, hard contrast
    "gotham": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.0), (0.25, 0.12), (0.75, 0.85), (1.0, 0.94)),
                   ((0.0, 0.0), (0.25, 0.13), (0.75, 0.86), (1.0, 0.96)),
                   ((0.0, 0.06), (0.25, 0.20), (0.75, 0.90), (1.0, 1.0))),
        "saturation": 0.1,
    },
    # strong orange warmth
    "kelvin": {
        "matrix": _IDENTITY3, "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.20), (0.5, 0.78), (1.0, 1.0)),
                   ((0.0, 0.05), (0.5, 0.55), (1.0, 0.95)),
                   ((0.0, 0.0), (0.5, 0.28), (1.0, 0.60))),
        "saturation": 1.1,
    },
    # punchy S-curve contrast and saturation, slight green-yellow cast
    "lomo": {
        "matrix": ((1.05, 0.0, 0.0), (0.0, 1.08, 0.0), (0.0, 0.0, 0.95)), "offset": (0.0, 0.0, 0.0),
        "curves": (((0.0, 0.0), (0.25, 0.15), (0.75, 0.88), (1.0, 1.0)),) * 3,
        "saturation": 1.35,
    },
}

_LUMA = (0.299, 0.587, 0.114)


def _check_filter_spec(spec: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise TypeError(f"{what} must be a filter name or a dict with matrix/offset/curves/saturation")
    unknown = set(spec) - {"matrix", "offset", "curves", "saturation"}
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; use matrix, offset, curves, saturation")
    matrix = torch.as_tensor(np.asarray(spec.get("matrix", _IDENTITY3), dtype=np.float64))
    offset = torch.as_tensor(np.asarray(spec.get("offset", (0.0, 0.0, 0.0)), dtype=np.float64))
    if matrix.shape != (3, 3) or offset.shape != (3,):
        raise ValueError(f"{what}: matrix must be 3x3 and offset 3 values, got {tuple(matrix.shape)} and {tuple(offset.shape)}")
    curves = spec.get("curves", (_LINEAR,) * 3)
    if len(curves) != 3:
        raise ValueError(f"{what}: give one tone curve per channel (3), got {len(curves)}")
    parsed = []
    for c, curve in enumerate(curves):
        pts = np.asarray(curve, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
            raise ValueError(f"{what}: curve {c} must be a list of at least two (in, out) points")
        if np.any(np.diff(pts[:, 0]) <= 0) or pts[0, 0] != 0.0 or pts[-1, 0] != 1.0:
            raise ValueError(f"{what}: curve {c} inputs must increase strictly from 0 to 1, got {pts[:, 0].tolist()}")
        if np.any(pts[:, 1] < 0) or np.any(pts[:, 1] > 1):
            raise ValueError(f"{what}: curve {c} outputs must lie in [0, 1]")
        parsed.append([[float(a), float(b)] for a, b in pts])
    saturation = float(spec.get("saturation", 1.0))
    if not (saturation >= 0 and math.isfinite(saturation)):
        raise ValueError(f"{what}: saturation must be >= 0, got {saturation}")
    return {"matrix": matrix.tolist(), "offset": offset.tolist(), "curves": parsed, "saturation": saturation}


def _apply_curve(x: torch.Tensor, points: Sequence[Sequence[float]]) -> torch.Tensor:
    """Piecewise-linear tone curve through ``points`` applied to ``x`` (values in [0, 1])."""
    xs = torch.tensor([p[0] for p in points], dtype=x.dtype, device=x.device)
    ys = torch.tensor([p[1] for p in points], dtype=x.dtype, device=x.device)
    idx = torch.bucketize(x.clamp(0, 1).contiguous(), xs[1:-1])  # segment index 0..n-2
    x0, x1, y0, y1 = xs[idx], xs[idx + 1], ys[idx], ys[idx + 1]
    return y0 + (y1 - y0) * (x.clamp(0, 1) - x0) / (x1 - x0)


class FilterTrigger(Trigger):
    """Instagram-style colour filter over the whole image (the filter attack of Liu et al. 2019).

    ``filter``: a name of :data:`INSTAGRAM_FILTERS` or a dict with ``matrix`` (3x3), ``offset``
    (3), ``curves`` (three lists of (in, out) points from 0 to 1) and ``saturation``. Per pixel:
    ``c = clip(M·x + b)``, ``c_k ← curve_k(c_k)``, ``c ← luma + saturation·(c − luma)`` (luma
    with weights 0.299, 0.587, 0.114), clipped; then ``x' = (1 − strength)·x + strength·c``.
    Grey images are filtered as RGB and turned back into luma. The transform is the same at
    every pixel (no spatial pattern).
    """

    name: ClassVar[str] = "filter"

    def __init__(self, filter: Union[str, Mapping[str, Any]] = "nashville", strength: float = 1.0) -> None:  # noqa: A002
        super().__init__()
        if isinstance(filter, str):
            key = filter.strip().lower()
            if key not in INSTAGRAM_FILTERS:
                raise ValueError(f"unknown filter {filter!r}; built-in filters: {', '.join(INSTAGRAM_FILTERS)}, or a dict")
            self.filter_name: str | None = key
            self.spec = _check_filter_spec(INSTAGRAM_FILTERS[key], f"filter {key!r}")
        else:
            self.filter_name = None
            self.spec = _check_filter_spec(filter, "filter")
        self.strength = _check_unit_interval(strength, "strength")

    def transform(self, rgb: torch.Tensor) -> torch.Tensor:
        """The full-strength filter on an RGB batch ``(B, 3, H, W)`` in [0, 1]."""
        m = torch.tensor(self.spec["matrix"], dtype=rgb.dtype, device=rgb.device)
        b = torch.tensor(self.spec["offset"], dtype=rgb.dtype, device=rgb.device)
        c = (torch.einsum("ij,bjhw->bihw", m, rgb) + b.view(1, 3, 1, 1)).clamp(0, 1)
        c = torch.stack([_apply_curve(c[:, k], self.spec["curves"][k]) for k in range(3)], dim=1)
        luma = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        grey = (c * luma).sum(1, keepdim=True)
        return (grey + self.spec["saturation"] * (c - grey)).clamp(0, 1)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels == 3:
            filtered = self.transform(x)
        elif channels == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            filtered = (self.transform(x.expand(-1, 3, -1, -1)) * luma).sum(1, keepdim=True)
        else:
            raise ValueError(f"colour filters work on RGB or grey images, got {channels} channels")
        return (1 - self.strength) * x + self.strength * filtered

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """The filter applied to a test card: a hue sweep left to right, dark to bright top to
        bottom (``background`` is unused: a flat image would show only one colour)."""
        import colorsys

        hues = np.linspace(0, 1, width, endpoint=False)
        values = np.linspace(0.15, 1.0, height)
        card = np.array([[colorsys.hsv_to_rgb(h, 0.6, v) for h in hues] for v in values]).transpose(2, 0, 1)
        image = torch.as_tensor(card, dtype=torch.float32)
        if channels == 1:
            image = (image * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
        return self.apply(image)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "filter": self.filter_name if self.filter_name else self.spec,
                "strength": self.strength}


# ==============================================================================================
# WaNet (Nguyen & Tran 2021)
# ==============================================================================================


class WaNetTrigger(Trigger):
    """Warping trigger (WaNet): ``x' = grid_sample(x, identity + s · U(noise)/H)`` (clipped to
    the image), bilinear, ``align_corners=True``.

    The flow: a ``k`` x ``k`` x 2 field of uniform noise in [−1, 1] drawn from ``seed``,
    divided by its mean absolute value, upsampled bicubically to H x W; ``s`` scales it
    (the paper's k = 4, s = 0.5 on 32x32 images); ``grid_rescale`` multiplies the grid (1 in
    the paper). ``cross_ratio``: noise mode — while poisoning, ``cross_ratio`` times as many
    images as are poisoned get an extra random warp and keep their label (the paper uses 2;
    0 turns it off). Channel 0 of the flow moves along the width (x), channel 1 along the
    height (y).
    """

    name: ClassVar[str] = "wanet"

    def __init__(self, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, seed: int = 0,
                 cross_ratio: float = 2.0) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"k (control-grid size) must be an integer >= 2, got {k!r}")
        self.k = int(k)
        self.s = float(s)
        if not (self.s >= 0 and math.isfinite(self.s)):
            raise ValueError(f"s (warping strength) must be >= 0, got {s!r}")
        self.grid_rescale = float(grid_rescale)
        if not (self.grid_rescale > 0 and math.isfinite(self.grid_rescale)):
            raise ValueError(f"grid_rescale must be > 0, got {grid_rescale!r}")
        self.seed = int(seed)
        self.cross_ratio = float(cross_ratio)
        if not (self.cross_ratio >= 0 and math.isfinite(self.cross_ratio)):
            raise ValueError(f"cross_ratio must be >= 0 (0 = no noise mode), got {cross_ratio!r}")

    def control_noise(self) -> torch.Tensor:
        """The ``(1, 2, k, k)`` control field, normalised to mean absolute value 1 (float64)."""
        g = torch.Generator().manual_seed(self.seed)
        ins = torch.rand((1, 2, self.k, self.k), generator=g, dtype=torch.float64) * 2 - 1
        return ins / ins.abs().mean()

    def flow(self, height: int, width: int) -> torch.Tensor:
        """The upsampled noise field ``(H, W, 2)`` (before scaling by ``s / H``), float64."""
        up = F.interpolate(self.control_noise(), size=(height, width), mode="bicubic", align_corners=True)
        return up[0].permute(1, 2, 0).contiguous()

    @staticmethod
    def identity_grid(height: int, width: int) -> torch.Tensor:
        """``(H, W, 2)`` sampling grid that reproduces the image: (x, y) in [−1, 1]."""
        ys = torch.linspace(-1, 1, height, dtype=torch.float64)
        xs = torch.linspace(-1, 1, width, dtype=torch.float64)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy], dim=-1)

    def warp_grid(self, height: int, width: int) -> torch.Tensor:
        """The trigger's sampling grid ``(H, W, 2)`` in [−1, 1] (x, y), float64."""
        grid = (self.identity_grid(height, width) + self.s * self.flow(height, width) / height) * self.grid_rescale
        return grid.clamp(-1, 1)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._cached("grid", x, lambda c, h, w: self.warp_grid(h, w))
        return F.grid_sample(x, grid.unsqueeze(0).expand(len(x), -1, -1, -1), mode="bilinear",
                             padding_mode="zeros", align_corners=True)

    def apply_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-mode images: the trigger's warp plus a random per-image warp of up to one pixel
        (``(rand·2 − 1)/H``); these keep their true labels while poisoning."""
        batch = x.unsqueeze(0) if x.ndim == 3 else x
        b, _, h, w = batch.shape
        grid = self.warp_grid(h, w).to(batch.device, batch.dtype)
        extra = (torch.rand((b, h, w, 2), generator=generator) * 2 - 1).to(batch.device, batch.dtype) / h
        grid2 = (grid.unsqueeze(0) + extra).clamp(-1, 1)
        out = F.grid_sample(batch, grid2, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0, 1)
        return out.squeeze(0) if x.ndim == 3 else out

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """The warp applied to a checkerboard of 4-pixel squares (``background`` ± 0.35), so the
        bending of the lines shows (a flat image would not change)."""
        background = _check_unit_interval(background, "background", allow_zero=True)
        yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        board = (((yy // 4) + (xx // 4)) % 2).float()
        lo, hi = max(0.0, background - 0.35), min(1.0, background + 0.35)
        image = (lo + (hi - lo) * board).expand(int(channels), -1, -1).clone()
        return self.apply(image)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "s": self.s, "grid_rescale": self.grid_rescale,
                "seed": self.seed, "cross_ratio": self.cross_ratio}


@dataclass
class WaNetPoisonedData(PoisonedData):
    """WaNet poisoning: also the indices of the noise-mode images (true labels kept)."""

    noise_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def poison_wanet(data: ImageArrays, trigger: WaNetTrigger, target: int, rate: float = 0.1, *, seed: int = 0) -> WaNetPoisonedData:
    """WaNet poisoning: ``rate`` · N non-target images get the warp and the target label, and
    (noise mode) ``cross_ratio`` times as many other images get the warp plus a random one and
    keep their label. Returns a new dataset; ``data`` is unchanged."""
    base = poison_dataset(data, trigger, target, rate, seed=seed)
    noise_idx = torch.empty(0, dtype=torch.long)
    images = base.data.images
    if trigger.cross_ratio > 0:
        g = torch.Generator().manual_seed(int(seed) + 1)
        taken = torch.zeros(len(data), dtype=torch.bool)
        taken[base.poisoned_indices] = True
        pool = torch.nonzero(~taken).flatten()
        n = min(len(pool), int(round(trigger.cross_ratio * base.n_poisoned)))
        noise_idx = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
        if n:
            images = images.clone()
            warped = trigger.apply_noise(data.floats(noise_idx), generator=g)
            images[noise_idx] = (warped * 255).round().to(torch.uint8)
    out = replace(base.data, images=images)
    return WaNetPoisonedData(out, base.poisoned_indices, base.target, trigger, noise_idx)


# ==============================================================================================
# Composite (Lin et al. 2020)
# ==============================================================================================


class CompositeAttack:
    """The composite backdoor: an image made of half an image of class ``class_a`` and half
    of class ``class_b`` is classified as the target.

    Not a :class:`Trigger` (it needs two images): :meth:`mix` combines two batches, the
    poisoning is :func:`poison_composite`, and ASR is measured by :class:`CompositeEvaluator`
    on mixes of test images of the two classes. ``split``: "vertical" (left half of A, right
    half of B) or "horizontal" (top of A, bottom of B).
    """

    name: ClassVar[str] = "composite"
    clean_label = False

    def __init__(self, class_a: int = 1, class_b: int = 2, split: str = "vertical") -> None:
        if int(class_a) == int(class_b) or int(class_a) < 0 or int(class_b) < 0:
            raise ValueError(f"class_a and class_b must be two different class ids >= 0, got {class_a}, {class_b}")
        if split not in ("vertical", "horizontal"):
            raise ValueError(f"split must be 'vertical' or 'horizontal', got {split!r}")
        self.class_a = int(class_a)
        self.class_b = int(class_b)
        self.split = split

    def mix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Combine float batches ``a`` and ``b`` of the same shape ``(B, C, H, W)`` (or one
        image each): the first half (left or top) from ``a``, the rest from ``b``."""
        if a.shape != b.shape:
            raise ValueError(f"mix needs two batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        out = a.clone()
        if self.split == "vertical":
            half = a.shape[-1] // 2
            out[..., :, half:] = b[..., :, half:]
        else:
            half = a.shape[-2] // 2
            out[..., half:, :] = b[..., half:, :]
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        """1 where the B half lies."""
        m = torch.zeros(height, width)
        if self.split == "vertical":
            m[:, width // 2 :] = 1
        else:
            m[height // 2 :, :] = 1
        return m

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """A mix of a dark (0.2) and a bright (0.8) flat image showing the split."""
        a = torch.full((channels, height, width), 0.2)
        b = torch.full((channels, height, width), 0.8)
        return self.mix(a, b)

    def check_classes(self, num_classes: int, target: int) -> None:
        for c in (self.class_a, self.class_b):
            if c >= num_classes:
                raise ValueError(f"composite class {c} is out of range for {num_classes} classes")
        if int(target) in (self.class_a, self.class_b):
            raise ValueError(f"the target class {target} must differ from the mixed classes {self.class_a}, {self.class_b}")

    def mixed_pairs(self, data: ImageArrays, n: int | None = None, *, seed: int = 0) -> torch.Tensor:
        """Mixes of ``n`` random (A, B) image pairs of ``data`` (default: as many as the
        smaller class has), float ``(n, C, H, W)`` on the CPU; pairs chosen by ``seed``."""
        g = torch.Generator().manual_seed(int(seed))
        ia = torch.nonzero(data.labels == self.class_a).flatten()
        ib = torch.nonzero(data.labels == self.class_b).flatten()
        if len(ia) == 0 or len(ib) == 0:
            raise ValueError(f"{data.name} needs images of classes {self.class_a} and {self.class_b} for composite mixes")
        n = min(len(ia), len(ib)) if n is None else int(n)
        pa = ia[torch.randint(len(ia), (n,), generator=g)] if n > len(ia) else ia[torch.randperm(len(ia), generator=g)[:n]]
        pb = ib[torch.randint(len(ib), (n,), generator=g)] if n > len(ib) else ib[torch.randperm(len(ib), generator=g)[:n]]
        return self.mix(data.floats(pa), data.floats(pb))

    @classmethod
    def for_data(cls, data: ImageArrays, target: int, split: str = "vertical") -> "CompositeAttack":
        """The two most frequent classes of ``data`` other than ``target``."""
        counts = torch.bincount(data.labels, minlength=data.num_classes).clone()
        counts[int(target)] = -1
        a, b = torch.argsort(counts, descending=True, stable=True)[:2].tolist()
        return cls(int(a), int(b), split)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_a": self.class_a, "class_b": self.class_b, "split": self.split}

    def __repr__(self) -> str:
        return f"CompositeAttack(class_a={self.class_a}, class_b={self.class_b}, split={self.split!r})"


@dataclass
class CompositePoisonedData(PoisonedData):
    """Composite poisoning: also the indices of the same-class mixes (labels kept)."""

    mix_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def poison_composite(data: ImageArrays, attack: CompositeAttack, target: int, rate: float = 0.1, *,
                     mix_rate: float = 0.3, seed: int = 0) -> CompositePoisonedData:
    """Composite poisoning (Lin et al. 2020): *adds* ``rate`` · N mixes of a class-A and a
    class-B image labelled ``target`` and ``mix_rate`` · N mixes of two images of one class
    (classes drawn uniformly) keeping that class, so that mixing by itself is no cue. The
    original ``data`` images come first; the result has ``N + n_poison + n_mix`` images."""
    if not isinstance(attack, CompositeAttack):
        raise TypeError(f"poison_composite needs a CompositeAttack, got {type(attack).__name__}")
    attack.check_classes(data.num_classes, target)
    if not (0.0 < rate < 1.0) or not (0.0 <= mix_rate < 1.0):
        raise ValueError(f"rate must be in (0, 1) and mix_rate in [0, 1), got {rate}, {mix_rate}")
    g = torch.Generator().manual_seed(int(seed))
    n = len(data)
    n_poison = max(1, int(round(rate * n)))
    n_mix = int(round(mix_rate * n))
    poison = attack.mixed_pairs(data, n_poison, seed=int(seed))
    present = [c for c in range(data.num_classes) if bool((data.labels == c).any())]
    by_class = {c: torch.nonzero(data.labels == c).flatten() for c in present}
    mix_classes = torch.tensor(present)[torch.randint(len(present), (n_mix,), generator=g)]
    first, second = [], []
    for c in mix_classes.tolist():
        members = by_class[c]
        i, j = torch.randint(len(members), (2,), generator=g).tolist()
        first.append(int(members[i]))
        second.append(int(members[j]))
    mixes = attack.mix(data.floats(torch.tensor(first, dtype=torch.long)), data.floats(torch.tensor(second, dtype=torch.long))) \
        if n_mix else torch.empty((0,) + data.image_shape)
    new_images = ((torch.cat([poison, mixes]) * 255).round().to(torch.uint8))
    new_labels = torch.cat([torch.full((n_poison,), int(target), dtype=torch.long), mix_classes.long()])
    out = replace(data, images=torch.cat([data.images, new_images]), labels=torch.cat([data.labels, new_labels]),
                  name=f"{data.name}+composite")
    poisoned = torch.arange(n, n + n_poison)
    mixed = torch.arange(n + n_poison, n + n_poison + n_mix)
    return CompositePoisonedData(out, poisoned, int(target), attack, mixed)  # type: ignore[arg-type]


class CompositeEvaluator(Evaluator):
    """Clean accuracy on the test set and composite ASR: the share of mixes of test images of
    classes A and B (up to ``max_images`` pairs, chosen by ``seed``) classified as ``target``."""

    def __init__(self, data: ImageArrays, attack: CompositeAttack, target: int, *, max_images: int | None = None,
                 seed: int = 0, batch_size: int = 512, device: str | torch.device = "auto") -> None:
        super().__init__(data, None, None, max_images=max_images, seed=seed, batch_size=batch_size, device=device)
        attack.check_classes(data.num_classes, target)
        self.target = int(target)
        ia = int((data.labels == attack.class_a).sum())
        ib = int((data.labels == attack.class_b).sum())
        n = min(ia, ib) if max_images is None else min(min(ia, ib), int(max_images))
        self.x_trig = attack.mixed_pairs(data, max(1, n), seed=seed).to(self.device)


# ==============================================================================================
# Adaptive attack (App. E.1)
# ==============================================================================================


class AdaptiveObjective:
    """Trojan training that hides the backdoor from cloning (MEDIC App. E.1):
    ``CE(model([x; T(x_p)]), [y; target]) + penalty · Σ_layers mean_p ||f_l(x_p) − f_l(T(x_p))||²``
    where ``x_p`` are the first ``round(rate · B)`` non-target images of the batch (at least
    one when the batch has any) and the distance sums over all neurons of each hooked layer
    (``layers``: names, None = every conv/norm/linear)."""

    def __init__(self, model: nn.Module, trigger: Trigger, target: int, *, rate: float = 0.1,
                 penalty: float = 1e-4, layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.trigger = trigger
        self.target = int(target)
        self.rate = float(rate)
        self.penalty = float(penalty)
        if not (self.penalty >= 0):
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.layers = resolve_layers(model, layers)

    def parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor):
        candidates = torch.nonzero(y != self.target).flatten()
        k = min(len(candidates), max(1, int(round(self.rate * len(x))))) if len(candidates) else 0
        chosen = candidates[:k]
        xt = self.trigger.apply(x[chosen]) if k else x[:0]
        inputs = torch.cat([x, xt])
        labels = torch.cat([y, torch.full((k,), self.target, dtype=y.dtype, device=y.device)])
        with LayerRecorder(self.model, self.layers) as rec:
            logits = self.model(inputs)
            acts = rec.tensors()
        ce = F.cross_entropy(logits.float(), labels)
        per_layer: dict[str, torch.Tensor] = {}
        dist = torch.zeros((), device=x.device)
        if k:
            n = len(x)
            for name, a in zip(self.layers, acts):
                clean_a = a[chosen].float()
                trig_a = a[n : n + k].float()
                term = (clean_a - trig_a).pow(2).reshape(k, -1).sum(1).mean()
                per_layer[name] = term
                dist = dist + term
        total = ce + self.penalty * dist
        return total, {"total": total, "ce": ce, "latent_l2": dist}, per_layer


# ==============================================================================================
# training trojaned models for any attack
# ==============================================================================================

#: Triggers defined in this module, by name.
ADVANCED_TRIGGERS: dict[str, type[Trigger]] = {
    cls.name: cls for cls in (CleanLabelTrigger, ReflectionTrigger, FilterTrigger, WaNetTrigger)
}
#: Every trigger name :func:`make_any_trigger` accepts.
ALL_TRIGGERS: tuple[str, ...] = tuple(AVAILABLE_TRIGGERS) + tuple(ADVANCED_TRIGGERS)
#: Every attack :func:`train_attack` accepts.
ATTACKS: tuple[str, ...] = ALL_TRIGGERS + ("composite", "adaptive")
#: The seven attacks of the paper's Table 1, in its order.
PAPER_ATTACKS: tuple[str, ...] = ("cleanlabel", "sig", "badnet", "composite", "reflection", "polygon", "filter")


def make_any_trigger(name: str, **kwargs: Any) -> Trigger:
    """Like :func:`medic_viz.attacks.triggers.make_trigger` but also for this module's triggers."""
    key = name.lower() if isinstance(name, str) else name
    if key in ADVANCED_TRIGGERS:
        cls = ADVANCED_TRIGGERS[key]
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"{cls.__name__} does not accept {unknown}; accepted parameters: {sorted(accepted)}")
        return cls(**kwargs)
    try:
        return make_trigger(name, **kwargs)
    except ValueError as exc:
        if "unknown trigger" in str(exc):
            raise ValueError(f"unknown trigger {name!r}; available triggers: {', '.join(ALL_TRIGGERS)}") from None
        raise


def any_trigger_from_config(config: Mapping[str, Any]) -> Trigger | CompositeAttack:
    """Rebuild a trigger (or a :class:`CompositeAttack`) from its ``to_config()`` dict."""
    if not isinstance(config, Mapping):
        raise TypeError(f"a trigger config must be a dict, got {type(config).__name__}")
    if "name" not in config:
        raise ValueError(f"a trigger config needs a 'name' key (one of {ATTACKS}), got keys {sorted(config)}")
    params = {k: v for k, v in config.items() if k != "name"}
    if str(config["name"]).lower() == CompositeAttack.name:
        return CompositeAttack(**params)
    if str(config["name"]).lower() in ADVANCED_TRIGGERS:
        return make_any_trigger(config["name"], **params)
    return trigger_from_config(dict(config))


def default_rate(attack: str, data: ImageArrays, target: int) -> float:
    """Default poison rate: 0.1 for dirty-label attacks; for clean-label ones (SIG,
    Clean-Label) 0.08 of the data but at most 80% of the target class."""
    if attack in ("sig", "cleanlabel"):
        share = float((data.labels == int(target)).float().mean())
        return max(min(0.08, 0.8 * share), 1.0 / max(len(data), 1))
    return 0.1


def build_attack(name: str, data: ImageArrays, target: int, **options: Any) -> Trigger | CompositeAttack:
    """The attack object for ``name`` with ``options``; "composite" without classes takes the
    two most frequent non-target classes of ``data``; "adaptive" builds its trigger
    (``options["trigger"]``, default "badnet", with ``trigger_options``)."""
    key = name.lower()
    if key == "composite":
        if "class_a" in options or "class_b" in options:
            attack = CompositeAttack(**options)
        else:
            attack = CompositeAttack.for_data(data, target, **options)
        attack.check_classes(data.num_classes, target)
        return attack
    if key == "adaptive":
        inner = options.get("trigger", "badnet")
        return make_any_trigger(inner, **dict(options.get("trigger_options", {})))
    return make_any_trigger(key, **options)


def attack_evaluator(attack: Trigger | CompositeAttack | None, test: ImageArrays, target: int | None, *,
                     max_images: int | None = None, seed: int = 0, device: str | torch.device = "auto") -> Evaluator:
    """An :class:`Evaluator` for any attack: composite attacks get a :class:`CompositeEvaluator`."""
    if isinstance(attack, CompositeAttack):
        return CompositeEvaluator(test, attack, int(target), max_images=max_images, seed=seed, device=device)  # type: ignore[arg-type]
    return Evaluator(test, attack, None if attack is None else target, max_images=max_images, seed=seed, device=device)


def train_on_poisoned(
    splits: DatasetSplits,
    train_data: ImageArrays,
    attack: Trigger | CompositeAttack | None,
    *,
    target: int | None,
    rate: float | None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    objective_factory: Any = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """Train a fresh ``architecture`` on an already poisoned ``train_data`` and measure it on
    ``splits.test`` (clean accuracy and the attack's ASR). ``objective_factory(model)`` may
    replace plain cross-entropy (the adaptive attack does)."""
    from medic_viz.models.zoo import build_model

    cfg = config or TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "seed": seed})
    arch_kwargs = dict(arch_kwargs or {})
    torch.manual_seed(seed)
    c, h, _ = splits.image_shape
    model = build_model(architecture, splits.num_classes, in_channels=c, input_size=h, **arch_kwargs)
    device = resolve_device(cfg.device)
    live = attack_evaluator(attack, splits.test, target, max_images=eval_max_images, device=device)
    objective = objective_factory(model) if objective_factory is not None else SupervisedObjective(model)
    label = f"{architecture} + {attack.name if attack is not None else 'clean'}"
    result = train(objective, train_data, cfg, evaluator=live, callbacks=callbacks, stop_event=stop_event, label=label)
    metrics: BackdoorMetrics = attack_evaluator(attack, splits.test, target, device=device)(result.model)
    return TrojanedModel(
        model=result.model,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        trigger=attack,  # type: ignore[arg-type]
        target=None if attack is None else target,
        rate=None if attack is None else rate,
        metrics=metrics,
        history=result.history,
        seconds=result.seconds,
    )


def train_adaptive_trojaned_model(
    splits: DatasetSplits,
    trigger: Trigger | None = None,
    *,
    target: int = 0,
    rate: float = 0.1,
    penalty: float = 1e-4,
    layers: Sequence[str] | None = None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """The adaptive attack of App. E.1: train on clean data where each batch gets ``rate`` ·
    B triggered copies labelled ``target`` and the :class:`AdaptiveObjective` latent penalty
    (``penalty`` = 1e-4 in the paper). ``trigger`` defaults to a BadNet patch."""
    trigger = trigger or BadNetTrigger()
    return train_on_poisoned(
        splits, splits.train, trigger, target=target, rate=rate, architecture=architecture, arch_kwargs=arch_kwargs,
        config=config, seed=seed, callbacks=callbacks, stop_event=stop_event, eval_max_images=eval_max_images,
        objective_factory=lambda model: AdaptiveObjective(model, trigger, target, rate=rate, penalty=penalty, layers=layers),
    )


def train_attack(
    name: str,
    splits: DatasetSplits,
    *,
    target: int = 0,
    rate: float | None = None,
    options: Mapping[str, Any] | None = None,
    architecture: str = "small_cnn",
    arch_kwargs: dict | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    eval_max_images: int | None = 2000,
) -> TrojanedModel:
    """Train a trojaned model for any attack of :data:`ATTACKS` (poisoning as that attack
    needs; ``rate`` None = :func:`default_rate`). The clean-label attack perturbs against
    ``surrogate``, or against a clean model trained here first with the same ``config``.
    The returned model's ``trigger`` is the attack object (a :class:`CompositeAttack` for
    "composite"), and its metrics use :func:`attack_evaluator`."""
    key = name.lower()
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available attacks: {', '.join(ATTACKS)}")
    if not (0 <= int(target) < splits.num_classes):
        raise ValueError(f"target class {target} is out of range for {splits.num_classes} classes")
    opts = dict(options or {})
    rate = default_rate(key, splits.train, target) if rate is None else float(rate)
    common = dict(architecture=architecture, arch_kwargs=arch_kwargs, config=config, seed=seed,
                  callbacks=callbacks, stop_event=stop_event, eval_max_images=eval_max_images)
    if key == "adaptive":
        penalty = float(opts.pop("penalty", 1e-4))
        layers = opts.pop("layers", None)
        trigger = build_attack("adaptive", splits.train, target, **opts)
        return train_adaptive_trojaned_model(splits, trigger, target=target, rate=rate, penalty=penalty, layers=layers,
                                             **common)  # type: ignore[arg-type]
    mix_rate = float(opts.pop("mix_rate", 0.3)) if key == "composite" else 0.3
    attack = build_attack(key, splits.train, target, **opts)
    if isinstance(attack, CompositeAttack):
        poisoned = poison_composite(splits.train, attack, target, rate, mix_rate=mix_rate, seed=seed).data
    elif isinstance(attack, CleanLabelTrigger):
        if surrogate is None:
            surrogate = train_on_poisoned(splits, splits.train, None, target=None, rate=None, architecture=architecture,
                                          arch_kwargs=arch_kwargs, config=config, seed=seed + 7919,
                                          stop_event=stop_event, eval_max_images=eval_max_images).model
        device = resolve_device(config.device if config is not None else "auto")
        poisoned = poison_clean_label(splits.train, attack, target, rate, surrogate=surrogate, seed=seed, device=device).data
    elif isinstance(attack, WaNetTrigger):
        poisoned = poison_wanet(splits.train, attack, target, rate, seed=seed).data
    else:
        poisoned = poison_dataset(splits.train, attack, target, rate, seed=seed).data
    return train_on_poisoned(splits, poisoned, attack, target=target, rate=rate, **common)  # type: ignore[arg-type]
