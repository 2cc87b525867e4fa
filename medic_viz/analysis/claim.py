"""The paper's claim, as a test that can fail: do the neurons a trigger compromises get low MEDIC
importance on clean inputs?

:func:`compromised_importance_statistic` tests it on a :class:`~medic_viz.analysis.ranking.NeuronRanking`
against a permutation baseline, per neuron (default) or per channel, and reports whatever the
data say, including a refutation (:class:`CompromisedStatistic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, Sequence

import numpy as np

from medic_viz.analysis.ranking import NeuronRanking

__all__ = ["CompromisedStatistic", "compromised_importance_statistic", "compromised_count", "spearman"]

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


def compromised_count(shift_desc: np.ndarray, *, min_shift: float, top_fraction: float, top_k: int | None) -> int:
    """How many of a layer's units count as compromised, given their ``|shift|`` sorted largest
    first: those with ``|shift| ≥ min_shift`` (> 0 when ``min_shift`` is 0), at most ``top_k``
    (default ``max(1, round(top_fraction · units))``)."""
    c = len(shift_desc)
    cap = int(top_k) if top_k is not None else max(1, round(top_fraction * c))
    eligible = int(np.count_nonzero(shift_desc >= min_shift)) if min_shift > 0 else int(np.count_nonzero(shift_desc > 0))
    return min(c, cap, eligible)


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
        k = compromised_count(shift, min_shift=min_shift, top_fraction=top_fraction, top_k=top_k)
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
