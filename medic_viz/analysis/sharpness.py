"""How sharp each MEDIC criterion is on a model's clean data, and how much weight it gives a set
of neurons — eq.(2) (activation), eq.(3) (impact) and eq.(4) (both) side by side, at the τ a
run uses (one per layer, e.g. :func:`medic_viz.defenses.medic.preview_layer_taus`).

Sharpness is the effective share of a layer's neurons the weights match
(:func:`medic_viz.importance.effective_neurons` ÷ neurons): 1 for uniform weights (plain cloning),
``1/m`` for one neuron. The impact criterion scales with the teacher's loss gradient, which
vanishes where the teacher is confident: on images it fits, eq.(3) can be uniform at the τ that
makes eq.(4) match 1 %, so the weights are eq.(2)'s alone — :func:`criteria_sharpness` measures it,
with the teacher's per-image cross-entropy beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.analysis._common import _resolve_stats
from medic_viz.capture import eval_mode, resolve_layers, run_with_cache
from medic_viz.data.arrays import ImageArrays, iterate_batches
from medic_viz.device import model_device
from medic_viz.importance import ImportanceOptions, effective_neurons, layer_importance, validate_tau
from medic_viz.stats import DEFAULT_EPS_MEDIC, LayerStats, compute_layer_stats

__all__ = ["SHARPNESS_CRITERIA", "CriteriaSharpness", "criteria_sharpness"]

#: The criteria compared, by their :class:`~medic_viz.importance.ImportanceOptions` names.
SHARPNESS_CRITERIA: tuple[str, ...] = ("activation", "impact", "both")


@dataclass(frozen=True)
class CriteriaSharpness:
    """What :func:`criteria_sharpness` measured over ``n_images`` images.

    ``effective_share[criterion][layer]``: mean over images of the effective share of the layer's
    neurons the weights match (1 = uniform). ``neuron_weight[criterion][layer]``: mean over images
    of the weight on the given neurons as a multiple of what uniform weights give them (1 = no
    preference, < 1 = down-weighted; empty without ``neurons``); ``neuron_weight_p99`` its 99th
    percentile over images. ``loss_mean`` / ``loss_median``: the model's per-image cross-entropy
    on the true labels (nats)."""

    layers: tuple[str, ...]
    effective_share: dict[str, dict[str, float]]
    neuron_weight: dict[str, dict[str, float]]
    neuron_weight_p99: dict[str, dict[str, float]]
    loss_mean: float
    loss_median: float
    n_images: int

    def mean_share(self, criterion: str) -> float:
        """``effective_share[criterion]`` averaged over layers."""
        values = list(self.effective_share[criterion].values())
        return sum(values) / len(values)

    def mean_neuron_weight(self, criterion: str) -> float:
        """``neuron_weight[criterion]`` averaged over the layers that have neurons given (NaN if none)."""
        values = list(self.neuron_weight.get(criterion, {}).values())
        return sum(values) / len(values) if values else float("nan")


def _neuron_index(neurons: Mapping[str, torch.Tensor | Iterable[int]], layer: str, m: int) -> torch.Tensor | None:
    if layer not in neurons:
        return None
    idx = torch.as_tensor(list(neurons[layer]) if not isinstance(neurons[layer], torch.Tensor) else neurons[layer])
    idx = idx.long().reshape(-1)
    if len(idx) == 0:
        return None
    if int(idx.min()) < 0 or int(idx.max()) >= m:
        raise ValueError(f"neurons[{layer!r}] must be flat indices in 0..{m - 1} (C·H·W of the layer's output)")
    if len(torch.unique(idx)) != len(idx):
        raise ValueError(f"neurons[{layer!r}] lists a neuron twice")
    return idx


def criteria_sharpness(
    model: nn.Module,
    data: ImageArrays,
    *,
    taus: Mapping[str, float] | float,
    stats: Mapping[str, LayerStats] | ImageArrays | None = None,
    layers: str | Iterable[str] | None = None,
    neurons: Mapping[str, torch.Tensor | Iterable[int]] | None = None,
    augment: bool = False,
    seed: int = 0,
    batch_size: int = 128,
    eps: float = DEFAULT_EPS_MEDIC,
    **options: object,
) -> CriteriaSharpness:
    """Each criterion's sharpness, and its weight on ``neurons``, on ``data`` (true labels).

    ``taus``: one τ, or ``{layer: τ}`` for every layer (its keys are the layers unless ``layers``
    is given). ``stats``: per-layer statistics, or clean data to estimate them from (default
    ``data``) with ``σ = sqrt(var + eps)`` — by default MEDIC's ε, as a run estimates them
    (:data:`medic_viz.stats.DEFAULT_EPS_MEDIC`; ``eps`` is ignored when ``stats`` is a mapping).
    ``neurons``: ``{layer: flat indices into the layer's C·H·W outputs}`` (e.g. the neurons a
    trigger moves most). ``augment``: the data's augmentation, seeded by ``seed``, as a
    training run sees it. ``options``: further :class:`~medic_viz.importance.ImportanceOptions`
    (``zscore``, ``impact``, ``loss_reduction``), the same for every criterion."""
    if not isinstance(data, ImageArrays) or len(data) == 0:
        raise ValueError("data must be non-empty ImageArrays (clean images with their true labels)")
    if layers is None and isinstance(taus, Mapping):
        layers = list(taus)
    device = model_device(model)
    source = data if stats is None else stats
    if isinstance(source, ImageArrays):
        source = compute_layer_stats(model, source, resolve_layers(model, layers), device=device, eps=eps)
    names, layer_stats = _resolve_stats(model, source, layers, device)
    if isinstance(taus, Mapping):
        missing = [n for n in names if n not in taus]
        if missing:
            raise ValueError(f"taus has no τ for layer(s) {missing[:6]}")
        tau_of = {n: validate_tau(float(taus[n])) for n in names}
    else:
        tau_of = {n: validate_tau(float(taus)) for n in names}
    opts = {c: {n: ImportanceOptions(tau=tau_of[n], criteria=c, **options) for n in names}  # type: ignore[arg-type]
            for c in SHARPNESS_CRITERIA}
    share: dict[tuple[str, str], list[torch.Tensor]] = {(c, n): [] for c in SHARPNESS_CRITERIA for n in names}
    weight: dict[tuple[str, str], list[torch.Tensor]] = {(c, n): [] for c in SHARPNESS_CRITERIA for n in names}
    losses: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(int(seed))
    with eval_mode(model):
        for x, y in iterate_batches(data, batch_size, shuffle=augment, generator=generator, augment=augment):
            x, y = x.to(device), y.to(device)
            cache = run_with_cache(model, x, names, target=y, with_grads=True)
            logits = cache.output if cache.output is not None else model(x)
            losses.append(F.cross_entropy(logits.detach(), y, reduction="none").double().cpu())
            for n in names:
                act = cache[n]
                m = act[0].numel()
                idx = None if neurons is None else _neuron_index(neurons, n, m)
                for c in SHARPNESS_CRITERIA:
                    w = layer_importance(act, cache.grads.get(n), layer_stats[n], opts[c][n])
                    share[(c, n)].append((effective_neurons(w) / m).double().cpu())
                    if idx is not None:
                        flat = w.reshape(len(x), -1).double()
                        part = flat[:, idx.to(flat.device)].sum(1) / flat.sum(1).clamp_min(1e-300)
                        weight[(c, n)].append((part / (len(idx) / m)).cpu())
    loss = torch.cat(losses)
    out_share = {c: {n: float(torch.cat(share[(c, n)]).mean()) for n in names} for c in SHARPNESS_CRITERIA}
    out_weight: dict[str, dict[str, float]] = {c: {} for c in SHARPNESS_CRITERIA}
    out_p99: dict[str, dict[str, float]] = {c: {} for c in SHARPNESS_CRITERIA}
    for (c, n), parts in weight.items():
        if parts:
            values = torch.cat(parts)
            out_weight[c][n] = float(values.mean())
            out_p99[c][n] = float(torch.quantile(values, 0.99))
    return CriteriaSharpness(layers=tuple(names), effective_share=out_share, neuron_weight=out_weight,
                             neuron_weight_p99=out_p99, loss_mean=float(loss.mean()), loss_median=float(loss.median()),
                             n_images=len(loss))
