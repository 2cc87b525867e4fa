"""medic_viz.intervals: Student's t quantile and the seed-only interval of an average over
groups, against tabulated values and a case computed by hand."""

from __future__ import annotations

import math

import pytest

from medic_viz.intervals import average_interval, t_quantile


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (5, 2.5706), (30, 2.0423), (math.inf, 1.9600)])
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def _t_cdf_by_simpson(t: float, df: float, steps: int = 20_000) -> float:
    """An independent check: integrate the t density from 0 to t (Simpson), plus 1/2."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / steps
    s = f(0) + f(t) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 + s * h / 3


@pytest.mark.parametrize("df", [1.3286, 2.5, 7.7])
def test_t_quantile_at_fractional_df_inverts_the_density(df):
    q = t_quantile(0.975, df)
    assert _t_cdf_by_simpson(q, df) == pytest.approx(0.975, abs=1e-6)


def test_average_interval_computed_by_hand():
    # group means 95 and 82 (mean 88.5); variances of the means 50/2 = 25 and 12/3 = 4;
    # se = sqrt(29) / 2; Welch df = 29² / (25²/1 + 4²/2) = 841 / 633
    ci = average_interval([[90, 100], [80, 80, 86]])
    assert ci.mean == pytest.approx(88.5) and ci.groups == 2
    assert ci.se == pytest.approx(math.sqrt(29) / 2) and ci.df == pytest.approx(841 / 633)
    half = t_quantile(0.975, 841 / 633) * math.sqrt(29) / 2
    assert (ci.low, ci.high) == pytest.approx((88.5 - half, 88.5 + half))
    assert ci.text() == f"88.5 [{88.5 - half:.1f}, {88.5 + half:.1f}]"
    wider = average_interval([[90, 100], [80, 80, 86]], level=0.99)
    assert wider.low < ci.low and wider.high > ci.high


def test_average_interval_needs_two_runs_per_group_and_says_so():
    ci = average_interval([[90, 100], [80]])
    assert ci.mean == pytest.approx((95 + 80) / 2) and not ci.defined and ci.text() == "87.5"
    assert average_interval([[97.0, 97.0], [99.0, 99.0]]).text() == "98.0 [98.0, 98.0]"  # every seed agreed
    assert math.isnan(average_interval([[], []]).mean) and average_interval([]).text() == "–"
    with pytest.raises(ValueError, match="level"):
        average_interval([[1, 2]], level=95)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.9, 0)
