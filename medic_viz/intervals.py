"""Confidence intervals on an average over groups of repeated runs — Table 1's average drops.

An average drop is the mean over attacks (groups) of the mean over seeds (runs) of one
drop each. Its interval here is **seed-only**: it says how much the average would move with
other training seeds of the defence (other clean subsets and initialisations), the teachers
and test images held fixed. The standard error is that of a mean of independent group means,
``sqrt(sum_g s_g^2 / n_g) / G`` (``s_g``: the sample std, ddof=1, of group ``g``'s ``n_g``
runs), and the interval is Student's t with the Welch–Satterthwaite degrees of freedom
``(sum_g v_g)^2 / sum_g (v_g^2 / (n_g - 1))``, ``v_g = s_g^2 / n_g``. Pure Python (no SciPy):
the t quantile inverts the regularised incomplete beta function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["AverageInterval", "average_interval", "t_quantile"]


@dataclass(frozen=True)
class AverageInterval:
    """The mean over ``groups`` of the group means, with its seed-only ``level`` interval
    ``[low, high]`` (same units as the values), standard error ``se`` and degrees of freedom
    ``df``. ``low``/``high`` are NaN when a group has fewer than two runs (no spread to
    measure); ``df`` is infinite and the interval a point when every group's runs agree."""

    mean: float
    low: float
    high: float
    se: float
    df: float
    level: float
    groups: int

    @property
    def defined(self) -> bool:
        return not math.isnan(self.low)

    def text(self, digits: int = 1) -> str:
        """``"96.4 [93.1, 99.7]"``, or only the mean when the interval is undefined."""
        if math.isnan(self.mean):
            return "–"
        if not self.defined:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``, ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (any real ``df``;
    ``math.inf`` gives the normal quantile). E.g. ``t_quantile(0.975, 2)`` = 4.303."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p!r}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        cdf = lambda t: 0.5 * math.erfc(-t / math.sqrt(2.0))  # noqa: E731 - the normal limit
    else:
        cdf = lambda t: _t_cdf(t, df)  # noqa: E731 - one expression, used once below
    hi = 1.0
    while cdf(hi) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def average_interval(groups: Iterable[Sequence[float]], level: float = 0.95) -> AverageInterval:
    """The mean over ``groups`` (e.g. attacks) of each group's mean over its runs (e.g. seeds),
    with a seed-only ``level`` confidence interval (see the module). Empty groups are left out;
    no groups give NaN throughout."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    kept = [[float(v) for v in g] for g in groups]
    kept = [g for g in kept if g]
    nan = float("nan")
    if not kept:
        return AverageInterval(nan, nan, nan, nan, nan, level, 0)
    count = len(kept)
    means = [math.fsum(g) / len(g) for g in kept]
    mean = math.fsum(means) / count
    if any(len(g) < 2 for g in kept):
        return AverageInterval(mean, nan, nan, nan, nan, level, count)
    # the variance of each group's mean: sample variance (ddof=1) / n
    variances = [math.fsum((v - m) ** 2 for v in g) / (len(g) - 1) / len(g) for g, m in zip(kept, means)]
    total = math.fsum(variances)
    se = math.sqrt(total) / count
    if total == 0.0:
        return AverageInterval(mean, mean, mean, 0.0, math.inf, level, count)
    df = total ** 2 / math.fsum(v * v / (len(g) - 1) for v, g in zip(variances, kept))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return AverageInterval(mean, mean - half, mean + half, se, df, level, count)
