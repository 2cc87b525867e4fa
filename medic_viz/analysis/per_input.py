"""What a trigger does inside a network: Figure-2 quantities for one input, and a ranking of the
channels a trigger shifts most (the "compromised neurons") with the importance MEDIC gives them.

Per input (:func:`analyze_input` → :class:`InputAnalysis`): one forward + backward pass of the
clean input and one of its triggered copy are cached (activations of every hooked layer and the
gradient of the per-sample cross-entropy with respect to the *true* label). Importance maps at
any τ are then recomputed from that cache with :func:`medic_viz.importance.layer_importance`
(eqs. 2–4) without running the model again, which is what makes a τ slider instant.

Over many inputs (:func:`rank_compromised_neurons` → :class:`NeuronRanking`): for each channel
``c`` of each hooked layer, the trigger-induced shift ``s_c`` = mean over images of a spatial
reduction of ``(f_c(x') − f_c(x)) / σ_c`` (``x'`` = triggered ``x``, ``σ_c`` = the clean
standard deviation), and the mean MEDIC importance the channel gets on the *clean* inputs,
as *relative* importance: ``C × (the channel's share of the layer's importance)``, so that 1
is the layer average, < 1 below it; the same per neuron (feature-map element, the paper's unit).
:func:`compromised_importance_statistic` tests the paper's claim ("compromised neurons are
unimportant on clean inputs") against a permutation baseline, per neuron (default) or per
channel; it reports whatever the data say, including a refutation.

Reductions of a ``(C, H, W)`` map to one 2-D map (:func:`reduce_channels`): ``"mean_abs"``
(default, mean of ``|·|`` over channels), ``"max_abs"`` (max of ``|·|``), ``"mean"`` and
``"max"`` (signed), or ``"none"`` (keep every channel). Layers without spatial extent
(``nn.Linear``, shape ``(F,)``) have no channel axis to reduce: their maps are ``(1, F)``
strips, one value per neuron.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.attacks.triggers import Trigger
from medic_viz.capture import eval_mode, resolve_layers, run_with_cache
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import compute_layer_stats
from medic_viz.importance import ImportanceOptions, LayerStats, combine_importance, layer_importance, validate_tau

__all__ = [
    "REDUCTIONS",
    "MAP_KEYS",
    "CRITERIA",
    "Prediction",
    "InputAnalysis",
    "analyze_input",
    "reduce_channels",
    "NeuronRanking",
    "rank_compromised_neurons",
    "top_activating_images",
    "CompromisedStatistic",
    "compromised_importance_statistic",
    "spearman",
]

#: Channel reductions accepted by :func:`reduce_channels` and :meth:`InputAnalysis.maps`.
REDUCTIONS: tuple[str, ...] = ("mean_abs", "max_abs", "mean", "max", "none")
#: Keys of :meth:`InputAnalysis.maps`.
MAP_KEYS: tuple[str, ...] = ("clean", "triggered", "difference", "activation", "impact", "combined")
#: Importance criteria: eq.(2) alone, eq.(3) alone, eq.(4) (``"both"`` is an alias of ``"combined"``).
CRITERIA: tuple[str, ...] = ("combined", "activation", "impact")
_SHIFTS: tuple[str, ...] = ("mean_abs", "max_abs", "mean")

_CRITERIA_TO_OPTIONS = {"combined": "both", "both": "both", "activation": "activation", "impact": "impact"}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


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


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


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
            "stats must be {layer: LayerStats} (medic_viz.defenses.medic.compute_layer_stats) or clean "
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


# ------------------------------------------------------------------------------------------
# per-input analysis (Figure 2)
# ------------------------------------------------------------------------------------------


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
            # eq.(4) from the memoised eq.(2) and eq.(3) maps: the same ops as layer_importance
            a = self.layer_importance(layer, opts.tau, "activation", which=which, zscore=opts.zscore)
            g = self.layer_importance(layer, opts.tau, "impact", which=which, impact=opts.impact)
            w = combine_importance(a, g)
        else:
            act = self.activations[which][layer].unsqueeze(0)
            grad = self.gradients[which][layer].unsqueeze(0)
            w = layer_importance(act, grad, self.stats[layer], opts)[0]
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
    device = _model_device(model)
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


# ------------------------------------------------------------------------------------------
# neuron ranking over a set of inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeuronRanking:
    """Channels of the hooked layers ranked by trigger-induced shift (largest first).

    Parallel arrays, one entry per (layer, channel): ``layer``, ``channel``, ``shift`` (σ
    units, see :func:`rank_compromised_neurons`), ``importance`` (mean *relative* clean
    importance: ``C ×`` the channel's importance share; 1 = layer average), ``importance_mass``
    (mean share of the layer's total importance held by the channel), ``rank`` (1 = most shifted,
    across layers, by ``|shift|``), ``layer_rank`` (rank within the layer).
    ``layer_sizes``: channels per layer. Settings: ``tau``, ``criteria``, ``shift_reduction``,
    ``n_images``.

    Per neuron (each element of a feature map is a neuron, the paper's unit), averaged over the
    images: ``neuron_shift[layer]`` ``(C, ...)`` = mean ``|Δ|/σ`` (signed mean for
    ``shift_reduction="mean"``) and ``neuron_importance[layer]`` ``(C, ...)`` = relative clean
    importance (``m ×`` the neuron's share of the layer's importance, m = neurons in the layer;
    1 = layer average). These are what :func:`compromised_importance_statistic` tests by default.
    ``image_percentile[layer]`` ``(N,)``: per image, the mean importance percentile of the
    neurons its trigger compromises, within that same clean image (see
    :func:`rank_compromised_neurons`; NaN where none).
    """

    layer: np.ndarray
    channel: np.ndarray
    shift: np.ndarray
    importance: np.ndarray
    importance_mass: np.ndarray
    rank: np.ndarray
    layer_rank: np.ndarray
    layer_sizes: dict[str, int]
    tau: float
    criteria: str
    shift_reduction: str
    n_images: int
    neuron_shift: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    neuron_importance: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    image_percentile: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.layer)

    @property
    def layers(self) -> list[str]:
        """Layer names in model order."""
        return list(self.layer_sizes)

    def _take(self, idx: np.ndarray) -> "NeuronRanking":
        idx = np.asarray(idx, dtype=np.int64)
        keep = set(self.layer[idx].tolist())
        return NeuronRanking(
            self.layer[idx], self.channel[idx], self.shift[idx], self.importance[idx], self.importance_mass[idx],
            self.rank[idx], self.layer_rank[idx], {k: v for k, v in self.layer_sizes.items() if k in keep},
            self.tau, self.criteria, self.shift_reduction, self.n_images,
            {k: v for k, v in self.neuron_shift.items() if k in keep},
            {k: v for k, v in self.neuron_importance.items() if k in keep},
            {k: v for k, v in self.image_percentile.items() if k in keep},
        )

    def top(self, n: int) -> "NeuronRanking":
        """The ``n`` most shifted channels across layers, most shifted first."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        return self._take(np.argsort(self.rank, kind="stable")[: int(n)])

    def for_layer(self, name: str) -> "NeuronRanking":
        """The channels of one layer, most shifted first."""
        if name not in self.layer_sizes:
            raise ValueError(f"layer {name!r} is not in this ranking; layers: {self.layers[:12]}")
        idx = np.flatnonzero(self.layer == name)
        return self._take(idx[np.argsort(self.layer_rank[idx], kind="stable")])

    def as_records(self) -> list[dict[str, Any]]:
        """One dict per row: layer, channel, shift, importance, importance_mass, rank, layer_rank."""
        return [
            {
                "layer": str(self.layer[i]),
                "channel": int(self.channel[i]),
                "shift": float(self.shift[i]),
                "importance": float(self.importance[i]),
                "importance_mass": float(self.importance_mass[i]),
                "rank": int(self.rank[i]),
                "layer_rank": int(self.layer_rank[i]),
            }
            for i in range(len(self))
        ]

    def __repr__(self) -> str:
        return (
            f"NeuronRanking({len(self)} channels in {len(self.layer_sizes)} layers, {self.n_images} images, "
            f"τ={self.tau:g}, shift={self.shift_reduction})"
        )


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


def _spatial_shift(diff: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample, per-channel reduction of a σ-normalised difference ``(B, C, ...)`` → ``(B, C)``."""
    flat = diff.reshape(diff.shape[0], diff.shape[1], -1)
    if reduction == "mean_abs":
        return flat.abs().mean(2)
    if reduction == "max_abs":
        return flat.abs().amax(2)
    return flat.mean(2)


def _ranks_desc(values: np.ndarray) -> np.ndarray:
    """1-based ranks, 1 = largest value (stable for ties)."""
    order = np.argsort(-values, kind="stable")
    r = np.empty(len(values), dtype=np.int64)
    r[order] = np.arange(1, len(values) + 1)
    return r


def rank_compromised_neurons(
    model: nn.Module,
    images: ImageArrays | torch.Tensor,
    trigger: Trigger,
    *,
    stats: Mapping[str, LayerStats] | ImageArrays,
    layers: str | Iterable[str] | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    tau: float = 5.0,
    criteria: str = "combined",
    shift: str = "mean_abs",
    exclude_label: int | None = None,
    batch_size: int = 64,
    per_image_min_shift: float = 1.0,
    per_image_top_fraction: float = 0.1,
    **options: Any,
) -> NeuronRanking:
    """Rank every channel of ``layers`` by how far ``trigger`` moves it, with its clean importance.

    ``images``: clean images (ImageArrays, or a float tensor ``(N, C, H, W)`` plus ``labels``).
    ``exclude_label``: drop images of this class first (usually the attack's target class).
    ``shift``: per image and channel, the spatial ``"mean_abs"`` (default), ``"max_abs"`` or
    signed ``"mean"`` of ``(f(trigger(x)) − f(x)) / σ``; averaged over images. Channels are
    ranked by ``|shift|``. Importance: MEDIC's weights at ``tau`` / ``criteria`` on the clean
    images (gradient of the per-sample cross-entropy w.r.t. the true label), summed over each
    channel's neurons as a share of the layer's total (eq.(4) weights do not sum to 1),
    averaged over images (``importance_mass``), times the number of channels (``importance``,
    whose layer average is exactly 1).

    Per image, too (the paper's "for this example"): the neurons that image's trigger moves by at
    least ``per_image_min_shift`` σ (at most the ``per_image_top_fraction`` most shifted of the
    layer) and their mean importance percentile among that same clean image's neurons
    (``image_percentile[layer]``, ``(N,)``, NaN where no neuron qualifies).
    """
    _check_trigger(trigger)
    if not per_image_min_shift >= 0 or not 0 < per_image_top_fraction <= 1:
        raise ValueError("per_image_min_shift must be >= 0 and per_image_top_fraction in (0, 1]")
    if shift not in _SHIFTS:
        raise ValueError(f"shift must be one of {_SHIFTS}, got {shift!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    opts = _options(tau, criteria, options)
    x_all, y_all = _as_images(images, labels)
    if exclude_label is not None:
        keep = y_all != int(exclude_label)
        x_all, y_all = x_all[keep], y_all[keep]
    if len(x_all) == 0:
        raise ValueError("no images left to rank neurons on (all were excluded or none were given)")
    device = _model_device(model)
    names, layer_stats = _resolve_stats(model, stats, layers, device)
    shift_sum: dict[str, torch.Tensor] = {}
    mass_sum: dict[str, torch.Tensor] = {}
    neuron_shift_sum: dict[str, torch.Tensor] = {}
    neuron_share_sum: dict[str, torch.Tensor] = {}
    image_pct: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with eval_mode(model):
        for start in range(0, len(x_all), batch_size):
            x = x_all[start : start + batch_size].to(device)
            y = y_all[start : start + batch_size].to(device)
            clean = run_with_cache(model, x, names, target=y, with_grads=opts.needs_gradients)
            trig = run_with_cache(model, trigger.apply(x), names)
            for n in names:
                a, at = clean[n], trig[n]
                std = layer_stats[n].std.reshape((1, -1) + (1,) * (a.ndim - 2))
                d = (at - a) / std
                s = _spatial_shift(d, shift).double().sum(0)
                ns = (d if shift == "mean" else d.abs()).double().sum(0)
                w = layer_importance(a, clean.grads.get(n), layer_stats[n], opts).double()
                share = w / w.reshape(w.shape[0], -1).sum(1).clamp_min(1e-300).reshape((-1,) + (1,) * (w.ndim - 1))
                m = share.reshape(w.shape[0], w.shape[1], -1).sum(2).sum(0)  # channel's share of the layer's importance
                for acc, val in ((shift_sum, s), (mass_sum, m), (neuron_shift_sum, ns), (neuron_share_sum, share.sum(0))):
                    acc[n] = acc[n] + val if n in acc else val
                image_pct[n].append(_image_percentiles(d, share, per_image_min_shift, per_image_top_fraction))
    n_img = len(x_all)
    rows_layer, rows_ch, rows_shift, rows_mass, rows_rel, rows_lrank = [], [], [], [], [], []
    sizes = {}
    neuron_shift, neuron_importance = {}, {}
    for n in names:
        neuron_shift[n] = (neuron_shift_sum[n] / n_img).cpu().numpy()
        share = (neuron_share_sum[n] / n_img).cpu().numpy()
        neuron_importance[n] = share * share.size
        s = (shift_sum[n] / n_img).cpu().numpy()
        m = (mass_sum[n] / n_img).cpu().numpy()
        c = len(s)
        sizes[n] = c
        rows_layer += [n] * c
        rows_ch.append(np.arange(c))
        rows_shift.append(s)
        rows_mass.append(m)
        rows_rel.append(m * c)
        rows_lrank.append(_ranks_desc(np.abs(s)))
    shift_arr = np.concatenate(rows_shift)
    rank = _ranks_desc(np.abs(shift_arr))
    order = np.argsort(rank, kind="stable")
    ranking = NeuronRanking(
        layer=np.asarray(rows_layer, dtype=object),
        channel=np.concatenate(rows_ch).astype(np.int64),
        shift=shift_arr,
        importance=np.concatenate(rows_rel),
        importance_mass=np.concatenate(rows_mass),
        rank=rank,
        layer_rank=np.concatenate(rows_lrank),
        layer_sizes=sizes,
        tau=opts.tau,
        criteria=criteria if criteria != "both" else "combined",
        shift_reduction=shift,
        n_images=n_img,
        neuron_shift=neuron_shift,
        neuron_importance=neuron_importance,
        image_percentile={n: torch.cat(image_pct[n]).numpy() for n in names},
    )
    return ranking._take(order)


def _image_percentiles(diff: torch.Tensor, share: torch.Tensor, min_shift: float, top_fraction: float) -> torch.Tensor:
    """Per sample: mean importance percentile (0–1, within the sample's layer) of the neurons
    whose ``|diff|`` is ≥ ``min_shift`` and among the ``top_fraction`` largest. ``(B,)`` float64
    on the CPU, NaN where none qualifies."""
    b = diff.shape[0]
    d = diff.reshape(b, -1).abs().double()
    w = share.reshape(b, -1)
    m = d.shape[1]
    if m < 2:
        return torch.full((b,), float("nan"), dtype=torch.float64)
    k = max(1, round(top_fraction * m))
    kth = d.topk(k, dim=1).values[:, -1:]
    selected = (d >= kth) & (d >= min_shift) & (d > 0)
    pct = w.argsort(1).argsort(1).double() / (m - 1)
    count = selected.sum(1)
    mean = (pct * selected).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan"))).cpu()


@torch.no_grad()
def top_activating_images(
    model: nn.Module,
    images: ImageArrays | torch.Tensor,
    trigger: Trigger,
    layer: str,
    channel: int,
    k: int = 8,
    *,
    reduction: Literal["max", "mean"] = "max",
    batch_size: int = 128,
) -> dict[str, dict[str, Any]]:
    """The ``k`` clean and ``k`` triggered images that drive one channel hardest.

    A channel's activation on an image is the spatial ``"max"`` (default) or ``"mean"`` of its
    map. Returns ``{"clean": {...}, "triggered": {...}}``, each with ``"indices"`` (into
    ``images``, int64 ``(k,)``), ``"values"`` ``(k,)`` (descending) and ``"images"`` float
    ``(k, C, H, W)`` (the triggered copies for ``"triggered"``).
    """
    _check_trigger(trigger)
    if reduction not in ("max", "mean"):
        raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    x_all = images.floats() if isinstance(images, ImageArrays) else _as_images(images, [0] * len(images))[0]
    (name,) = resolve_layers(model, layer)
    device = _model_device(model)
    scores: dict[str, list[torch.Tensor]] = {"clean": [], "triggered": []}
    with eval_mode(model):
        for start in range(0, len(x_all), batch_size):
            x = x_all[start : start + batch_size].to(device)
            for which, inp in (("clean", x), ("triggered", trigger.apply(x))):
                a = run_with_cache(model, inp, [name])[name]
                if a.ndim < 2 or not 0 <= int(channel) < a.shape[1]:
                    raise ValueError(f"channel must be in 0..{a.shape[1] - 1} for layer {name!r}, got {channel}")
                a = a[:, int(channel)].reshape(a.shape[0], -1)
                scores[which].append((a.amax(1) if reduction == "max" else a.mean(1)).cpu())
    k = min(int(k), len(x_all))
    out: dict[str, dict[str, Any]] = {}
    for which in ("clean", "triggered"):
        vals, idx = torch.cat(scores[which]).topk(k)
        imgs = x_all[idx]
        out[which] = {
            "indices": idx,
            "values": vals.numpy(),
            "images": trigger.apply(imgs) if which == "triggered" else imgs,
        }
    return out


# ------------------------------------------------------------------------------------------
# the paper's claim, as a test that can fail
# ------------------------------------------------------------------------------------------


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, ascending, ties sharing their average rank."""
    _, inverse, counts = np.unique(np.asarray(v), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    return ((ends - counts + 1 + ends) / 2.0)[inverse.reshape(-1)]


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class CompromisedStatistic:
    """Do the most trigger-shifted units get low MEDIC importance on clean inputs?

    ``level``: the units compared, ``"neuron"`` (each element of a feature map, the paper's
    unit) or ``"channel"``. In every layer the ``k`` most shifted units are selected.
    Importance is heavy-tailed (a few units hold most of a layer's importance), so an average and
    a rank-based view are both reported:

    ``percentile``: mean within-layer importance percentile of the selected units (0 = the
    layer's least important unit, 1 = its most important; 0.5 under no relation; the claim
    predicts < 0.5). ``p_value``: one-sided permutation p-value of a percentile this low when the
    ``k`` units of every layer are drawn at random. ``ratio``: mean relative clean importance of
    the selected units, pooled (1 = the layer average); ``null_ratio``: the median of the same
    for random units (what "no relation" gives; usually below 1 because of the tail).
    ``spearman``: rank correlation of |shift| and relative importance over all units, pooled
    (the claim predicts < 0); ``spearman_within``: the mean of the per-layer correlations.
    ``layers_below``: layers whose selected units sit below the median (percentile < 0.5), out of
    ``n_layers`` layers with at least one selected unit.
    ``supported``: percentile < 0.5 and p_value < alpha. ``per_layer``: one dict per layer
    (layer, units, k, ratio, percentile, spearman, p_value).

    Paired per image (the paper's "for this example"; from ``ranking.image_percentile``, same
    layers): ``image_percentile``, the mean over images of each image's mean percentile of its
    compromised neurons within its own clean importance; ``images_below`` of
    ``n_images_tested`` images have it < 0.5; ``image_p_value``: one-sided sign test of that
    count (NaN where the ranking has no per-image data).
    """

    level: str
    percentile: float
    p_value: float
    ratio: float
    null_ratio: float
    spearman: float
    spearman_within: float
    layers_below: int
    n_layers: int
    n_units: int
    n_selected: int
    n_images: int
    tau: float
    criteria: str
    alpha: float
    supported: bool
    per_layer: list[dict[str, Any]]
    image_percentile: float = float("nan")
    images_below: int = 0
    n_images_tested: int = 0
    image_p_value: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary(self) -> str:
        verdict = "supports" if self.supported else "does NOT support"
        unit = self.level + "s"
        return (
            f"the {self.n_selected} most trigger-shifted of {self.n_units} {unit} sit at importance percentile "
            f"{100 * self.percentile:.0f} of their layers (50 = no relation; permutation p = {self.p_value:.3g}; "
            f"{self.layers_below}/{self.n_layers} layers below the median) and get {self.ratio:.2f}× the average "
            f"clean importance (random {unit}: {self.null_ratio:.2f}×); Spearman(|shift|, importance) = "
            f"{self.spearman:+.2f} pooled, {self.spearman_within:+.2f} within layers ({self.n_images} images, "
            f"τ={self.tau:g}, {self.criteria}). This {verdict} the claim that compromised neurons are "
            "unimportant on clean inputs."
            + (
                f" Per image: percentile {100 * self.image_percentile:.0f}, {self.images_below}/{self.n_images_tested} "
                f"images below 50 (sign test p = {self.image_p_value:.3g})."
                if self.n_images_tested else ""
            )
        )


def _sign_test(below: int, n: int) -> float:
    """One-sided P(X >= below) for X ~ Binomial(n, 1/2)."""
    if n == 0:
        return float("nan")
    return float(sum(math.comb(n, i) for i in range(below, n + 1)) / 2**n)


def _layer_units(ranking: NeuronRanking, layer: str, level: str) -> tuple[np.ndarray, np.ndarray]:
    """``(|shift|, relative importance)`` of a layer's units, most shifted first."""
    if level == "channel":
        sub = ranking.for_layer(layer)
        return np.abs(sub.shift), sub.importance
    if layer not in ranking.neuron_shift:
        raise ValueError(f"the ranking has no per-neuron maps for layer {layer!r}; use level='channel'")
    shift = np.abs(ranking.neuron_shift[layer].reshape(-1))
    imp = ranking.neuron_importance[layer].reshape(-1)
    order = np.argsort(-shift, kind="stable")
    return shift[order], imp[order]


def compromised_importance_statistic(
    ranking: NeuronRanking,
    *,
    level: Literal["neuron", "channel"] = "neuron",
    top_k: int | None = None,
    top_fraction: float = 0.1,
    min_shift: float | None = None,
    layers: Sequence[str] | None = None,
    n_permutations: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CompromisedStatistic:
    """Test "compromised neurons get low importance on clean inputs" on a :class:`NeuronRanking`.

    ``level="neuron"`` (default) compares single neurons (feature-map elements), the paper's
    unit; ``"channel"`` whole channels. Per layer, the compromised units are the most shifted ones
    with ``|shift| ≥ min_shift`` (σ units; default 1.0 for neurons, i.e. the trigger moves them by a
    clean standard deviation or more on average, and > 0 for channels, whose shift is diluted over
    positions), at most ``top_k`` (or ``max(1, round(top_fraction · units))``) of them; a layer
    with none is left out (``per_layer`` lists it with ``k = 0``). They are compared with ``n_permutations``
    random selections of ``k`` units per layer (without replacement; with replacement where a
    layer has so many units that this would take too much memory, which slightly widens the null
    and so errs towards not supporting the claim). ``layers``: restrict to these layers (default
    all in the ranking; layers with < 2 units are skipped). The test is one-sided: a ranking
    where shifted units are *more* important than average gives a percentile > 0.5, p ≈ 1 and
    ``supported=False``.
    """
    if not isinstance(ranking, NeuronRanking):
        raise TypeError(f"ranking must be a NeuronRanking, got {type(ranking).__name__}")
    if level not in ("neuron", "channel"):
        raise ValueError(f"level must be 'neuron' or 'channel', got {level!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if not 0 < float(top_fraction) <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if min_shift is None:
        min_shift = 1.0 if level == "neuron" else 0.0
    if not (float(min_shift) >= 0):
        raise ValueError(f"min_shift must be >= 0 (σ units), got {min_shift!r}")
    names = ranking.layers if layers is None else list(layers)
    rng = np.random.default_rng(seed)
    sel_imp, sel_pct, sel_n = 0.0, 0.0, 0
    perm_imp = np.zeros(n_permutations)
    perm_pct = np.zeros(n_permutations)
    per_layer: list[dict[str, Any]] = []
    all_shift, all_imp, rhos = [], [], []
    for n in names:
        shift, imp = _layer_units(ranking, n, level)  # most shifted first
        c = len(imp)
        if c < 2:
            continue
        cap = int(top_k) if top_k is not None else max(1, round(top_fraction * c))
        eligible = int(np.count_nonzero(shift >= min_shift)) if min_shift > 0 else int(np.count_nonzero(shift > 0))
        k = min(c, cap, eligible)
        rho = spearman(shift, imp)
        all_shift.append(shift)
        all_imp.append(imp)
        if not math.isnan(rho):
            rhos.append(rho)
        if k == 0:
            per_layer.append({"layer": n, "units": c, "k": 0, "ratio": float("nan"), "percentile": float("nan"),
                              "spearman": rho, "p_value": float("nan")})
            continue
        pct = (_average_ranks(imp) - 1.0) / (c - 1)
        if k == c:
            pick = np.tile(np.arange(c), (n_permutations, 1))
        elif n_permutations * c <= 4_000_000:
            pick = np.argpartition(rng.random((n_permutations, c)), k - 1, axis=1)[:, :k]
        else:
            pick = rng.integers(0, c, size=(n_permutations, k))
        perm_imp += imp[pick].sum(1)
        layer_perm_pct = pct[pick].sum(1)
        perm_pct += layer_perm_pct
        observed_pct = float(pct[:k].sum())
        p_layer = (1 + int((layer_perm_pct <= observed_pct + 1e-9).sum())) / (1 + n_permutations)
        per_layer.append({
            "layer": n, "units": c, "k": k, "ratio": float(imp[:k].mean()), "percentile": observed_pct / k,
            "spearman": rho, "p_value": p_layer,
        })
        sel_imp += float(imp[:k].sum())
        sel_pct += observed_pct
        sel_n += k
    if sel_n == 0:
        raise ValueError(
            f"no layer has a unit shifted by at least min_shift={min_shift:g} σ (or no layer has 2 units); "
            "lower min_shift, or check that the trigger changes the model's activations"
        )
    percentile = sel_pct / sel_n
    p = (1 + int((perm_pct <= sel_pct + 1e-9).sum())) / (1 + n_permutations)
    per_image = [ranking.image_percentile[n] for n in names if n in ranking.image_percentile]
    image_mean, below, tested = float("nan"), 0, 0
    if per_image:
        stacked = np.stack(per_image)  # (layers, N)
        has = ~np.isnan(stacked)
        counts = has.sum(0)
        per_img = np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), np.nan)
        valid = per_img[~np.isnan(per_img)]
        tested = int(len(valid))
        if tested:
            image_mean = float(valid.mean())
            below = int((valid < 0.5).sum())
    return CompromisedStatistic(
        level=level,
        percentile=percentile,
        p_value=p,
        ratio=sel_imp / sel_n,
        null_ratio=float(np.median(perm_imp / sel_n)),
        spearman=spearman(np.concatenate(all_shift), np.concatenate(all_imp)),
        spearman_within=float(np.mean(rhos)) if rhos else float("nan"),
        layers_below=sum(1 for r in per_layer if r["k"] and r["percentile"] < 0.5),
        n_layers=sum(1 for r in per_layer if r["k"]),
        n_units=int(sum(r["units"] for r in per_layer)),
        n_selected=sel_n,
        n_images=ranking.n_images,
        tau=ranking.tau,
        criteria=ranking.criteria,
        alpha=float(alpha),
        supported=bool(percentile < 0.5 and p < alpha),
        per_layer=per_layer,
        image_percentile=image_mean,
        images_below=below,
        n_images_tested=tested,
        image_p_value=_sign_test(below, tested),
    )
