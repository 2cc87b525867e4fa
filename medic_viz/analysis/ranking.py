"""Which channels a trigger compromises, over many inputs, and the importance MEDIC gives them.

:func:`rank_compromised_neurons` → :class:`NeuronRanking`: for each channel ``c`` of each hooked
layer, the trigger-induced shift ``s_c`` = mean over images of a spatial reduction of
``(f_c(x') − f_c(x)) / σ_c`` (``x'`` = triggered ``x``, ``σ_c`` = the clean standard deviation),
and the mean MEDIC importance the channel gets on the *clean* inputs, as *relative* importance:
``C × (the channel's share of the layer's importance)``, so that 1 is the layer average, < 1
below it; the same per neuron (feature-map element, the paper's unit).
:func:`top_activating_images`: the clean and triggered images that drive one channel hardest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.analysis._common import _as_images, _check_trigger, _options, _resolve_stats
from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode, resolve_layers, run_with_cache
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import model_device
from medic_viz.importance import layer_importance
from medic_viz.stats import LayerStats

__all__ = ["NeuronRanking", "rank_compromised_neurons", "top_activating_images"]

_SHIFTS: tuple[str, ...] = ("mean_abs", "max_abs", "mean")


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
    device = model_device(model)
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
    neuron_shift: dict[str, np.ndarray] = {}
    neuron_importance: dict[str, np.ndarray] = {}
    for n in names:
        neuron_shift[n] = (neuron_shift_sum[n] / n_img).cpu().numpy()
        share_np = (neuron_share_sum[n] / n_img).cpu().numpy()
        neuron_importance[n] = share_np * share_np.size
        shift_np = (shift_sum[n] / n_img).cpu().numpy()
        mass_np = (mass_sum[n] / n_img).cpu().numpy()
        c = len(shift_np)
        sizes[n] = c
        rows_layer += [n] * c
        rows_ch.append(np.arange(c))
        rows_shift.append(shift_np)
        rows_mass.append(mass_np)
        rows_rel.append(mass_np * c)
        rows_lrank.append(_ranks_desc(np.abs(shift_np)))
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
    device = model_device(model)
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
