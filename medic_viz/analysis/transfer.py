"""Why one cloning keeps a backdoor and another does not: where the trigger's neurons sit, how
much of the cloning weight they get, and how much of the teacher's response to the trigger a
clone kept, layer by layer.

- :func:`compromised_neurons`: a layer's compromised neurons in a
  :class:`~medic_viz.analysis.ranking.NeuronRanking`, selected as
  :func:`~medic_viz.analysis.compromised_importance_statistic` selects them;
- :func:`weight_share`: the share of a layer's clean MEDIC weight (at the ranking's τ) those
  neurons get (τ = 0: their count share) and :func:`centre_share`: how many of them sit in the
  centre of the feature map;
- :func:`trigger_transfer` → :class:`TriggerTransfer`: per layer, how far each clone moves along
  the teacher's trigger-induced shift (1 = as the teacher does, 0 = not at all);
- :func:`target_readout` → :class:`TargetReadout`: per layer, the share of triggered images that
  already look like the target class there (nearest to its clean class mean) — where in the
  network the backdoor arrives, in the teacher and in each clone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.analysis._common import _as_images, _check_trigger, _resolve_stats
from medic_viz.analysis.claim import compromised_count
from medic_viz.analysis.ranking import NeuronRanking
from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode, run_with_cache
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import model_device
from medic_viz.stats import LayerStats

__all__ = ["compromised_neurons", "weight_share", "centre_share", "TriggerTransfer", "trigger_transfer",
           "TargetReadout", "target_readout"]


def _neuron_maps(ranking: NeuronRanking, layer: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(ranking, NeuronRanking):
        raise TypeError(f"ranking must be a NeuronRanking, got {type(ranking).__name__}")
    if layer not in ranking.neuron_shift:
        raise ValueError(f"the ranking has no per-neuron maps for layer {layer!r}; layers: {ranking.layers[:12]}")
    return ranking.neuron_shift[layer], ranking.neuron_importance[layer]


def compromised_neurons(ranking: NeuronRanking, layer: str, *, min_shift: float = 1.0, top_fraction: float = 0.1,
                        top_k: int | None = None) -> np.ndarray:
    """Flat indices (into the layer's ``(C, ...)`` neuron map, most shifted first) of the neurons
    the trigger moves by ``min_shift`` σ or more on average, at most ``top_fraction`` of the
    layer (or ``top_k``) — the units :func:`compromised_importance_statistic` selects by default."""
    if not float(min_shift) >= 0 or not 0 < float(top_fraction) <= 1:
        raise ValueError(f"min_shift must be >= 0 and top_fraction in (0, 1], got {min_shift!r}, {top_fraction!r}")
    shift = np.abs(_neuron_maps(ranking, layer)[0].reshape(-1))
    order = np.argsort(-shift, kind="stable")
    k = compromised_count(shift[order], min_shift=float(min_shift), top_fraction=float(top_fraction), top_k=top_k)
    return order[:k]


def weight_share(ranking: NeuronRanking, layer: str, neurons: Sequence[int] | np.ndarray) -> float:
    """Mean share, over the ranking's clean images, of the layer's MEDIC weight (eq. 4 at the
    ranking's τ and criteria) that falls on ``neurons`` (flat indices): the share of the layer's
    cloning loss they hold. At τ = 0 it is their count share, ``len(neurons) / neurons in the layer``."""
    rel = _neuron_maps(ranking, layer)[1].reshape(-1)
    idx = np.asarray(neurons, dtype=np.int64).reshape(-1)
    return float(rel[idx].sum() / rel.size)


def centre_share(ranking: NeuronRanking, layer: str, neurons: Sequence[int] | np.ndarray, *, centre: float = 0.5) -> float:
    """Share of ``neurons`` (flat indices of a ``(C, H, W)`` map) whose position lies in the central
    ``centre`` fraction of the map's height and width (0.5: the middle half of each side, a
    quarter of the area). NaN for a layer without a spatial map or no neurons."""
    if not 0 < float(centre) <= 1:
        raise ValueError(f"centre must be in (0, 1], got {centre!r}")
    shape = _neuron_maps(ranking, layer)[0].shape
    idx = np.asarray(neurons, dtype=np.int64).reshape(-1)
    if len(shape) != 3 or len(idx) == 0:
        return float("nan")
    _, h, w = shape
    rows, cols = (idx // w) % h, idx % w
    lo_r, hi_r = h * (1 - centre) / 2, h * (1 + centre) / 2
    lo_c, hi_c = w * (1 - centre) / 2, w * (1 + centre) / 2
    inside = (rows + 0.5 >= lo_r) & (rows + 0.5 <= hi_r) & (cols + 0.5 >= lo_c) & (cols + 0.5 <= hi_c)
    return float(inside.mean())


@dataclass(frozen=True)
class TriggerTransfer:
    """How much of the teacher's response to a trigger each clone kept, per layer.

    Per image ``x`` and layer, ``Δ* = (f*(x') − f*(x)) / σ`` is the teacher's trigger-induced
    shift (``x'`` = triggered ``x``, σ = the teacher's clean standard deviation per channel) and
    ``Δ = (f(x') − f(x)) / σ`` a clone's, in the same units (the ones cloning matches).
    ``kept[clone][layer]`` = ``Σ_x ⟨Δ, Δ*⟩ / Σ_x ‖Δ*‖²``: how far the clone moves along the
    teacher's shift (1 = as far as the teacher, 0 = not at all); ``cosine[clone][layer]``: mean
    over images of ``cos(Δ, Δ*)``; ``teacher_shift[layer]`` and ``clone_shift[clone][layer]``:
    mean ``|Δ*|`` and ``|Δ|`` over the layer's neurons and the images.
    ``clean_error[clone][layer]``: how much of the teacher's clean representation the clone did
    not copy, ``Σ_x ‖(f(x) − f*(x))/σ‖² / Σ_x ‖(f*(x) − μ)/σ‖²`` (0 = an exact copy on the clean
    images, 1 = no better than the teacher's mean activation). ``n_images``: images used.
    """

    layers: list[str]
    clones: list[str]
    kept: dict[str, dict[str, float]]
    cosine: dict[str, dict[str, float]]
    teacher_shift: dict[str, float]
    clone_shift: dict[str, dict[str, float]]
    clean_error: dict[str, dict[str, float]]
    n_images: int

    def as_records(self) -> list[dict[str, Any]]:
        """One dict per (clone, layer): clone, layer, kept, cosine, teacher_shift, clone_shift, clean_error."""
        return [{"clone": c, "layer": n, "kept": self.kept[c][n], "cosine": self.cosine[c][n],
                 "teacher_shift": self.teacher_shift[n], "clone_shift": self.clone_shift[c][n],
                 "clean_error": self.clean_error[c][n]} for c in self.clones for n in self.layers]


def trigger_transfer(
    teacher: nn.Module,
    clones: Mapping[str, nn.Module],
    images: ImageArrays | torch.Tensor,
    trigger: Trigger,
    *,
    stats: Mapping[str, LayerStats] | ImageArrays,
    layers: str | Iterable[str] | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    exclude_label: int | None = None,
    batch_size: int = 128,
) -> TriggerTransfer:
    """Measure, per layer, how much of ``teacher``'s trigger-induced shift each of ``clones``
    (``{label: model of the same structure}``, e.g. MEDIC's repaired models) reproduces on
    ``images`` (clean; ``exclude_label``: drop this class first, usually the target). ``stats``:
    the teacher's layer statistics, or clean data to estimate them from (σ is the teacher's for
    every model). See :class:`TriggerTransfer`."""
    _check_trigger(trigger)
    if not isinstance(clones, Mapping) or not clones:
        raise ValueError("clones must be a non-empty {label: model} mapping")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_all, y_all = _as_images(images, labels)
    if exclude_label is not None:
        x_all = x_all[y_all != int(exclude_label)]
    if len(x_all) == 0:
        raise ValueError("no images left to measure on (all were excluded or none were given)")
    if "teacher" in clones:
        raise ValueError("'teacher' is reserved; name the clones otherwise")
    device = model_device(teacher)
    names, layer_stats = _resolve_stats(teacher, stats, layers, device)
    models = {"teacher": teacher, **{str(k): v for k, v in clones.items()}}
    dot = {c: dict.fromkeys(names, 0.0) for c in clones}
    cos = {c: dict.fromkeys(names, 0.0) for c in clones}
    mag = {c: dict.fromkeys(names, 0.0) for c in models}
    norm = dict.fromkeys(names, 0.0)
    err = {c: dict.fromkeys(names, 0.0) for c in clones}
    spread = dict.fromkeys(names, 0.0)
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size].to(device)
        xt = trigger.apply(x)
        shifts: dict[str, dict[str, torch.Tensor]] = {}
        plain: dict[str, dict[str, torch.Tensor]] = {}
        for label, model in models.items():
            dev = model_device(model)
            with eval_mode(model):
                clean, trig = run_with_cache(model, x.to(dev), names), run_with_cache(model, xt.to(dev), names)
            shifts[label], plain[label] = {}, {}
            for n in names:
                shape = (1, -1) + (1,) * (clean[n].ndim - 2)
                std, mu = layer_stats[n].std.reshape(shape), layer_stats[n].mean.reshape(shape)
                d = ((trig[n].to(device) - clean[n].to(device)) / std).reshape(len(x), -1).double()
                shifts[label][n] = d
                plain[label][n] = ((clean[n].to(device) - mu) / std).reshape(len(x), -1).double()
                mag[label][n] += float(d.abs().mean(1).sum())
        for n in names:
            t = shifts["teacher"][n]
            t_norm = (t * t).sum(1)
            norm[n] += float(t_norm.sum())
            spread[n] += float((plain["teacher"][n] ** 2).sum())
            for c in clones:
                err[c][n] += float(((plain[str(c)][n] - plain["teacher"][n]) ** 2).sum())
                s = shifts[str(c)][n]
                dot[c][n] += float((s * t).sum())
                cos[c][n] += float(((s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-12)).sum())
    n_img = len(x_all)
    return TriggerTransfer(
        layers=list(names),
        clones=[str(c) for c in clones],
        kept={str(c): {n: dot[c][n] / norm[n] if norm[n] > 0 else float("nan") for n in names} for c in clones},
        cosine={str(c): {n: cos[c][n] / n_img for n in names} for c in clones},
        teacher_shift={n: mag["teacher"][n] / n_img for n in names},
        clone_shift={str(c): {n: mag[str(c)][n] / n_img for n in names} for c in clones},
        clean_error={str(c): {n: err[c][n] / spread[n] if spread[n] > 0 else float("nan") for n in names} for c in clones},
        n_images=n_img,
    )


@dataclass(frozen=True)
class TargetReadout:
    """Where a backdoor arrives at its target class, per model and layer.

    Each layer's output, divided by the reference σ per channel and flattened, is read by its
    nearest class mean (the model's own mean activation per class on clean data).
    ``target_share[model][layer]``: share of the triggered images (true class not the target)
    nearest to the target class's mean — a per-layer ASR (at the logits it is close to, but not
    the same as, the model's ASR, which reads the largest logit). ``clean_accuracy[model][layer]``:
    share of the clean copies nearest to their own class's mean (how much class information the
    layer holds for this readout). ``n_images``: triggered images; ``n_clean``: images the means
    come from.
    """

    layers: list[str]
    models: list[str]
    target: int
    target_share: dict[str, dict[str, float]]
    clean_accuracy: dict[str, dict[str, float]]
    n_images: int
    n_clean: int

    def as_records(self) -> list[dict[str, Any]]:
        """One dict per (model, layer): model, layer, target_share, clean_accuracy."""
        return [{"model": m, "layer": n, "target_share": self.target_share[m][n],
                 "clean_accuracy": self.clean_accuracy[m][n]} for m in self.models for n in self.layers]


def target_readout(
    models: Mapping[str, nn.Module],
    clean: ImageArrays,
    images: ImageArrays,
    trigger: Trigger,
    target: int,
    *,
    stats: Mapping[str, LayerStats],
    layers: str | Iterable[str] | None = None,
    batch_size: int = 128,
) -> TargetReadout:
    """Per model (``{label: model}``, same structure: a teacher and its clones) and layer: the
    share of ``images`` of non-target classes, triggered, that the layer already places nearest to
    the ``target`` class's mean (see :class:`TargetReadout`). ``clean``: labelled clean images the
    class means come from (e.g. the defender's clean subset; every class needs one); ``stats``:
    the reference (teacher's) statistics whose σ scales every model's activations."""
    _check_trigger(trigger)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty {label: model} mapping")
    if not isinstance(clean, ImageArrays) or not isinstance(images, ImageArrays):
        raise TypeError("clean and images must be ImageArrays (labelled images)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(clean) == 0 or int(target) < 0:
        raise ValueError(f"target must be a class index >= 0 and clean must hold images, got target {target!r}")
    classes = int(max(int(clean.labels.max()), int(images.labels.max()), int(target)) + 1)
    counts = torch.bincount(clean.labels, minlength=classes)
    if int(counts[int(target)]) == 0:
        raise ValueError(f"the clean images hold no image of the target class {target}")
    first = next(iter(models.values()))
    names, layer_stats = _resolve_stats(first, stats, layers, model_device(first))
    keep = images.labels != int(target)
    x_all, y_all = images.floats()[keep], images.labels[keep]
    if len(x_all) == 0:
        raise ValueError("no image of a class other than the target to trigger")
    share: dict[str, dict[str, float]] = {}
    acc: dict[str, dict[str, float]] = {}

    def features(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cache = run_with_cache(model, x.to(model_device(model)), names)
        out = {}
        for n in names:
            a = cache[n].double().cpu()
            std = layer_stats[n].std.double().cpu().reshape((1, -1) + (1,) * (a.ndim - 2))
            out[n] = (a / std).reshape(len(a), -1)
        return out

    for label, model in models.items():
        with eval_mode(model):
            sums: dict[str, torch.Tensor] = {}
            for start in range(0, len(clean), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(clean)))
                y = clean.labels[idx]
                for n, f in features(model, clean.floats(idx)).items():
                    s = torch.zeros(classes, f.shape[1], dtype=torch.float64).index_add_(0, y, f)
                    sums[n] = sums[n] + s if n in sums else s
            present = counts > 0
            means = {n: (v / counts.clamp_min(1).unsqueeze(1).double())[present] for n, v in sums.items()}
            class_ids = torch.nonzero(present).flatten()
            hits = dict.fromkeys(names, 0)
            right = dict.fromkeys(names, 0)
            for start in range(0, len(x_all), batch_size):
                x, y = x_all[start : start + batch_size], y_all[start : start + batch_size]
                trig, plain = features(model, trigger.apply(x)), features(model, x)
                for n in names:
                    hits[n] += int((class_ids[torch.cdist(trig[n], means[n]).argmin(1)] == int(target)).sum())
                    right[n] += int((class_ids[torch.cdist(plain[n], means[n]).argmin(1)] == y).sum())
        share[str(label)] = {n: hits[n] / len(x_all) for n in names}
        acc[str(label)] = {n: right[n] / len(x_all) for n in names}
    return TargetReadout(layers=list(names), models=[str(m) for m in models], target=int(target), target_share=share,
                         clean_accuracy=acc, n_images=len(x_all), n_clean=len(clean))
