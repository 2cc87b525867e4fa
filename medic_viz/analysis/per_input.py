"""What a trigger does inside a network for one input: the paper's Figure 2.

:func:`analyze_input` → :class:`InputAnalysis`: one forward + backward pass of the clean input and
one of its triggered copy are cached (activations of every hooked layer and the gradient of the
per-sample cross-entropy with respect to the *true* label). Importance maps at any τ are then
recomputed from that cache with :func:`medic_viz.importance.layer_importance` (eqs. 2–4) without
running the model again, which is what makes a τ slider instant.

Reductions of a ``(C, H, W)`` map to one 2-D map (:func:`reduce_channels`): ``"mean_abs"``
(default, mean of ``|·|`` over channels), ``"max_abs"`` (max of ``|·|``), ``"mean"`` and
``"max"`` (signed), or ``"none"`` (keep every channel). Layers without spatial extent
(``nn.Linear``, shape ``(F,)``) have no channel axis to reduce: their maps are ``(1, F)``
strips, one value per neuron.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz import importance
from medic_viz.analysis._common import _check_trigger, _options, _resolve_stats
from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode, run_with_cache
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import model_device
from medic_viz.stats import LayerStats

__all__ = ["REDUCTIONS", "MAP_KEYS", "Prediction", "InputAnalysis", "analyze_input", "reduce_channels"]

#: Channel reductions accepted by :func:`reduce_channels` and :meth:`InputAnalysis.maps`.
REDUCTIONS: tuple[str, ...] = ("mean_abs", "max_abs", "mean", "max", "none")
#: Keys of :meth:`InputAnalysis.maps`.
MAP_KEYS: tuple[str, ...] = ("clean", "triggered", "difference", "activation", "impact", "combined")


def reduce_channels(t: torch.Tensor | np.ndarray, reduction: str = "mean_abs") -> np.ndarray:
    """One map per layer from a per-sample activation-shaped tensor (no batch axis).

    ``(C, H, W)`` → ``(H, W)``; ``(C, L)`` → ``(1, L)``; ``(F,)`` (linear layer, no channel
    axis to reduce) → ``(1, F)`` unchanged; ``(C, D, H, W)`` → reduced over C, then mean over D.
    ``reduction``: ``"mean_abs"`` mean of ``|·|`` over channels, ``"max_abs"`` max of
    ``|·|``, ``"mean"`` / ``"max"`` signed, ``"none"`` returns the input as float64 numpy.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    a = t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
    if reduction == "none":
        return a
    if a.ndim == 1:
        return a[None, :]
    if a.ndim < 1:
        raise ValueError(f"cannot reduce a scalar map (shape {a.shape})")
    if reduction == "mean_abs":
        r = np.abs(a).mean(axis=0)
    elif reduction == "max_abs":
        r = np.abs(a).max(axis=0)
    elif reduction == "mean":
        r = a.mean(axis=0)
    else:
        r = a.max(axis=0)
    if r.ndim == 1:
        return r[None, :]
    while r.ndim > 2:
        r = r.mean(axis=0)
    return r


@dataclass(frozen=True)
class Prediction:
    """What the model says about one input: class id, its probability, all probabilities ``(K,)``."""

    label: int
    probability: float
    probabilities: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability, "probabilities": self.probabilities.tolist()}


class InputAnalysis:
    """Cached activations of one clean input and its triggered copy, plus gradients.

    Made by :func:`analyze_input`. Attributes: ``layers`` (hooked layer names, all cached),
    ``map_layers`` (those with spatial maps, i.e. 4-D activations), ``image`` / ``triggered_image``
    float ``(C, H, W)`` in [0, 1] on the CPU, ``label`` (true class), ``predictions``
    ``{"clean": Prediction, "triggered": Prediction}``, ``stats`` ``{layer: LayerStats}``,
    ``activations[which][layer]`` and ``gradients[which][layer]`` ``(C, ...)`` tensors for
    ``which`` in ``("clean", "triggered")`` (gradients of the cross-entropy w.r.t. the true label).

    :meth:`importance` and :meth:`maps` never run the model: they recompute eqs.(2)–(4) from
    the cache (results are memoised per layer and options, so repeated calls are free).
    """

    def __init__(
        self,
        *,
        layers: list[str],
        stats: dict[str, LayerStats],
        image: torch.Tensor,
        triggered_image: torch.Tensor,
        label: int,
        activations: dict[str, dict[str, torch.Tensor]],
        gradients: dict[str, dict[str, torch.Tensor]],
        predictions: dict[str, Prediction],
        class_names: Sequence[str] | None = None,
        memo_size: int = 4096,
    ) -> None:
        self.layers = list(layers)
        self.stats = stats
        self.image = image
        self.triggered_image = triggered_image
        self.label = int(label)
        self.activations = activations
        self.gradients = gradients
        self.predictions = predictions
        self.class_names = tuple(class_names) if class_names is not None else None
        self.map_layers = [n for n in self.layers if activations["clean"][n].ndim == 3]
        self._memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._memo_size = int(memo_size)
        self._reduced: dict[tuple, np.ndarray] = {}

    # -- importance -----------------------------------------------------------------------
    def _check_layer(self, layer: str) -> None:
        if layer not in self.activations["clean"]:
            raise ValueError(f"layer {layer!r} was not analysed; analysed layers: {self.layers[:12]}")

    def _check_which(self, which: str) -> None:
        if which not in ("clean", "triggered"):
            raise ValueError(f"which must be 'clean' or 'triggered', got {which!r}")

    def layer_importance(
        self, layer: str, tau: float, criteria: str = "combined", *, which: str = "clean", **options: Any
    ) -> torch.Tensor:
        """Importance of one layer's neurons ``(C, ...)`` at ``tau`` (sums to 1), from the cache."""
        self._check_layer(layer)
        self._check_which(which)
        opts = _options(tau, criteria, options)
        key = (layer, which, opts)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        if opts.criteria == "both" and opts.tau > 0:
            # eq.(4) from the memoised eq.(2) and eq.(3) maps: the same ops as importance.layer_importance
            a = self.layer_importance(layer, opts.tau, "activation", which=which, zscore=opts.zscore)
            g = self.layer_importance(layer, opts.tau, "impact", which=which, impact=opts.impact)
            w = importance.combine_importance(a, g)
        else:
            act = self.activations[which][layer].unsqueeze(0)
            grad = self.gradients[which][layer].unsqueeze(0)
            w = importance.layer_importance(act, grad, self.stats[layer], opts)[0]
        self._memo[key] = w
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return w

    def importance(
        self,
        tau: float,
        criteria: str = "combined",
        *,
        which: str = "clean",
        layers: Sequence[str] | None = None,
        **options: Any,
    ) -> dict[str, torch.Tensor]:
        """``{layer: importance (C, ...)}`` at ``tau`` for every analysed layer (or ``layers``).

        ``criteria``: ``"combined"`` (eq.4, default), ``"activation"`` (eq.2), ``"impact"`` (eq.3).
        ``which``: importance of the clean input (default, as in Figure 2f) or of the triggered one.
        ``options``: other :class:`ImportanceOptions` fields (``zscore``, ``impact``).
        """
        names = self.layers if layers is None else list(layers)
        return {n: self.layer_importance(n, tau, criteria, which=which, **options) for n in names}

    # -- maps -----------------------------------------------------------------------------
    def difference(self, layer: str) -> torch.Tensor:
        """Triggered minus clean activation of ``layer``, ``(C, ...)``."""
        self._check_layer(layer)
        return self.activations["triggered"][layer] - self.activations["clean"][layer]

    def maps(
        self,
        layer: str,
        tau: float,
        reduction: str = "mean_abs",
        *,
        channel: int | None = None,
        which: str = "clean",
        **options: Any,
    ) -> dict[str, np.ndarray]:
        """The Figure-2 maps of one layer as numpy arrays, keyed by :data:`MAP_KEYS`.

        ``"clean"``, ``"triggered"`` activations, ``"difference"`` (triggered − clean, reduced
        after subtracting), and the importance of the ``which`` input at ``tau`` under each
        criterion: ``"activation"`` (eq.2), ``"impact"`` (eq.3), ``"combined"`` (eq.4).
        Each is ``(H, W)`` for conv-like layers (``reduction`` over channels), ``(1, F)`` for
        linear layers, ``(C, H, W)`` with ``reduction="none"``; ``channel=c`` returns channel
        ``c``'s own ``(H, W)`` map instead (no reduction). The three τ-independent maps are
        computed once and shared between calls (read-only arrays: ``.copy()`` to modify).
        """
        self._check_layer(layer)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        tensors = {
            "clean": self.activations["clean"][layer],
            "triggered": self.activations["triggered"][layer],
            "difference": self.difference(layer),
        }
        for crit in ("activation", "impact", "combined"):
            tensors[crit] = self.layer_importance(layer, tau, crit, which=which, **options)
        if channel is None:
            out = {}
            for k, v in tensors.items():
                if k in ("clean", "triggered", "difference"):  # τ-independent: reduce once
                    key = (layer, k, reduction)
                    if key not in self._reduced:
                        arr = reduce_channels(v, reduction)
                        arr.flags.writeable = False  # shared between calls
                        self._reduced[key] = arr
                    out[k] = self._reduced[key]
                else:
                    out[k] = reduce_channels(v, reduction)
            return out
        n_channels = tensors["clean"].shape[0]
        if tensors["clean"].ndim < 2:
            raise ValueError(f"layer {layer!r} has no channel axis (shape {tuple(tensors['clean'].shape)})")
        if not (0 <= int(channel) < n_channels):
            raise ValueError(f"channel must be in 0..{n_channels - 1} for layer {layer!r}, got {channel}")
        return {k: reduce_channels(v[int(channel)].unsqueeze(0), "mean") for k, v in tensors.items()}

    def all_maps(self, tau: float, reduction: str = "mean_abs", **options: Any) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`maps` of every analysed layer: ``{layer: {key: map}}`` (one τ-slider update)."""
        return {n: self.maps(n, tau, reduction, **options) for n in self.layers}

    def layer_shape(self, layer: str) -> tuple[int, ...]:
        """Activation shape of ``layer`` without the batch axis, e.g. ``(C, H, W)`` or ``(F,)``."""
        self._check_layer(layer)
        return tuple(self.activations["clean"][layer].shape)

    def class_name(self, label: int) -> str:
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def clear_memo(self) -> None:
        """Forget memoised importance tensors (the activation cache is kept)."""
        self._memo.clear()

    def __repr__(self) -> str:
        p = self.predictions
        return (
            f"InputAnalysis({len(self.layers)} layers, label={self.label}, clean→{p['clean'].label} "
            f"({p['clean'].probability:.2f}), triggered→{p['triggered'].label} ({p['triggered'].probability:.2f}))"
        )


def analyze_input(
    model: nn.Module,
    image: torch.Tensor,
    trigger: Trigger,
    label: int,
    *,
    stats: Mapping[str, LayerStats] | ImageArrays,
    layers: str | Iterable[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> InputAnalysis:
    """Run ``model`` (eval mode) on ``image`` and ``trigger.apply(image)`` once each, caching the
    activations of ``layers`` and the gradients of the cross-entropy w.r.t. the true ``label``.

    ``image``: float ``(C, H, W)`` in [0, 1] (a ``(1, C, H, W)`` batch is accepted).
    ``stats``: ``{layer: LayerStats}`` of the model over clean data (``compute_layer_stats``), or
    clean :class:`ImageArrays` to estimate them from. ``layers``: default = the layers of
    ``stats`` (or every hookable layer when ``stats`` is data).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_trigger(trigger)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a float torch.Tensor (C, H, W) in [0, 1], got {type(image).__name__}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or not image.is_floating_point():
        raise ValueError(
            f"image must be one float image (C, H, W) in [0, 1], got shape {tuple(image.shape)} dtype {image.dtype}; "
            "use ImageArrays.floats([i])[0] for a dataset image"
        )
    if isinstance(label, bool) or not isinstance(label, (int, np.integer, torch.Tensor)):
        raise TypeError(f"label must be an int class id, got {type(label).__name__}")
    label = int(label)
    device = model_device(model)
    names, layer_stats = _resolve_stats(model, stats, layers, device)
    x = image.detach().to(device=device, dtype=torch.float32).unsqueeze(0)
    xt = trigger.apply(x)
    acts: dict[str, dict[str, torch.Tensor]] = {}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    preds: dict[str, Prediction] = {}
    with eval_mode(model):
        for which, inp in (("clean", x), ("triggered", xt)):
            target = torch.tensor([label], device=device)
            if label < 0:
                raise ValueError(f"label must be a class id >= 0, got {label}")
            try:
                cache = run_with_cache(model, inp, names, target=target, with_grads=True)
            except IndexError as exc:
                raise ValueError(f"label {label} is not a class of this model ({exc})") from None
            acts[which] = {n: cache[n][0] for n in names}
            grads[which] = {n: cache.grads[n][0] for n in names}
            assert cache.output is not None  # run_with_cache always records the output
            probs = torch.softmax(cache.output[0].float(), 0).cpu().numpy()
            k = int(probs.argmax())
            preds[which] = Prediction(k, float(probs[k]), probs)
    return InputAnalysis(
        layers=names,
        stats=layer_stats,
        image=x[0].cpu(),
        triggered_image=xt[0].detach().cpu(),
        label=label,
        activations=acts,
        gradients=grads,
        predictions=preds,
        class_names=class_names,
    )

