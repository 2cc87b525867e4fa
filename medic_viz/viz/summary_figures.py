"""Figures of experiment summaries, as pure functions returning ``go.Figure``, from plain row
dicts such as ``{"tau": 5, "seed": 0, "clean_acc": 0.9, "asr": 0.02, "criteria": "both",
"lam": 10, "method": "medic", "attack": "badnet"}`` (accuracies and ASR as fractions in [0, 1],
drawn in %; rows that share every other key, e.g. several seeds, are averaged by
:func:`aggregate_rows`, and the sample standard deviation, ddof=1, is drawn):
:func:`tau_sweep_figure` and :func:`tau_panels_figure` (Figure 4), :func:`data_amount_figure` (Figure 3),
:func:`lambda_tau_figure` (Figure 6),
:func:`tradeoff_figure` (Figure 7), :func:`defense_comparison_figure` (Figure 5 / Table 1),
:func:`removal_accuracy_figure` (Table 1's average drops against each other),
:func:`per_run_scatter_figure` (every run's accuracy and ASR, not averaged: seed spread).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.intervals import AverageInterval
from medic_viz.metrics import mean_std
from medic_viz.viz.style import PALETTE, REFERENCE_COLOR, REFERENCE_SERIES

__all__ = [
    "aggregate_rows",
    "tau_sweep_figure",
    "tau_panels_figure",
    "data_amount_figure",
    "lambda_tau_figure",
    "tradeoff_figure",
    "defense_comparison_figure",
    "removal_accuracy_figure",
    "per_run_scatter_figure",
]


def _require_rows(rows: Iterable[Mapping[str, Any]], needed: Sequence[str], what: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"{what}: rows must be dicts, row {i} is {type(r).__name__}")
        missing = [k for k in needed if r.get(k) is None]
        if missing:
            raise ValueError(f"{what}: row {i} lacks {missing}; each row needs {list(needed)} (got keys {sorted(r)})")
        out.append(dict(r))
    if not out:
        raise ValueError(f"{what}: no rows to plot")
    return out


def aggregate_rows(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], metrics: Sequence[str] = ("clean_acc", "asr")
) -> list[dict[str, Any]]:
    """Group ``rows`` by ``keys`` (first-seen order) and average ``metrics`` over each group.

    Returns one dict per group: the key values, ``<metric>`` (mean), ``<metric>_std``
    (sample standard deviation, ddof=1, 0 for one row: :func:`medic_viz.metrics.mean_std`, the
    same definition as the tables of :mod:`medic_viz.experiments`) and ``n`` (rows in the
    group). Rows where a metric is missing do not count for that metric.
    """
    groups: OrderedDict[tuple, list[Mapping[str, Any]]] = OrderedDict()
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, key))
        row["n"] = len(members)
        for m in metrics:
            stat = mean_std(x.get(m) for x in members)
            row[m], row[f"{m}_std"] = stat.mean, stat.std
        out.append(row)
    return out


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float, np.number)) else (1, 0.0, str(v))


def _group_values(rows: Sequence[Mapping[str, Any]], key: str | None) -> list[Any]:
    if key is None:
        return [None]
    seen: list[Any] = []
    for r in rows:
        if r.get(key) not in seen:
            seen.append(r.get(key))
    return seen


def _label(key: str | None, value: Any) -> str:
    if key is None:
        return ""
    names = {"lam": "λ", "tau": "τ"}
    return f"{names.get(key, key)}={value:g}" if isinstance(value, (int, float)) else str(value)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _band_traces(
    fig: go.Figure, xs: Sequence[float], mean: np.ndarray, std: np.ndarray, name: str, color: str,
    dash: str = "solid", row: int | None = None, col: int | None = None, group: str | None = None,
) -> None:
    kw = dict(row=row, col=col) if row is not None else {}
    x = list(xs)
    one_point = len(x) == 1  # a band around one point is a stray mark: an error bar instead
    if np.any(std > 0) and not one_point:
        fig.add_trace(go.Scatter(x=x + x[::-1], y=list(mean + std) + list((mean - std)[::-1]), fill="toself", mode="lines",
                                 fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, name=f"{name} ± std", legendgroup=group or name), **kw)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=name, line=dict(color=color, dash=dash),
                             error_y=dict(type="data", array=list(std), visible=True) if one_point else None,
                             legendgroup=group or name, customdata=std,
                             hovertemplate=f"{name}<br>x %{{x:g}}<br>%{{y:.1f}}% ± %{{customdata:.1f}}<extra></extra>"), **kw)


def tau_sweep_figure(
    rows: Iterable[Mapping[str, Any]], *, group_by: str | None = None, title: str | None = None
) -> go.Figure:
    """Figure 4: clean accuracy (solid) and ASR (dashed) in % against τ, ± std shaded.

    Rows need ``tau``, ``clean_acc``, ``asr``; rows with equal τ (and ``group_by`` value, e.g.
    ``"criteria"`` or ``"lam"`` for one pair of curves per value) are averaged over seeds.
    """
    data = _require_rows(rows, ("tau", "clean_acc", "asr"), "tau_sweep_figure")
    keys = ([group_by] if group_by else []) + ["tau"]
    agg = aggregate_rows(data, keys)
    fig = go.Figure()
    for i, g in enumerate(_group_values(agg, group_by)):
        pts = sorted((r for r in agg if group_by is None or r[group_by] == g), key=lambda r: float(r["tau"]))
        xs = [float(r["tau"]) for r in pts]
        color = PALETTE[i % len(PALETTE)]
        prefix = f"{_label(group_by, g)}: " if group_by else ""
        for metric, dash, label in (("clean_acc", "solid", "clean accuracy"), ("asr", "dash", "ASR")):
            mean = 100 * np.array([r[metric] for r in pts])
            std = 100 * np.array([r[f"{metric}_std"] for r in pts])
            _band_traces(fig, xs, mean, std, prefix + label, color if group_by else PALETTE[0 if metric == "clean_acc" else 1],
                         dash, group=prefix + label)
    n_seeds = max(r["n"] for r in agg)
    fig.update_layout(
        title=title or f"Effect of the temperature τ (mean ± std over up to {n_seeds} runs)",
        xaxis_title="temperature τ", yaxis_title="%", yaxis_range=[0, 101], width=720, height=440,
        hovermode="closest",
    )
    return fig


def tau_panels_figure(
    rows: Iterable[Mapping[str, Any]], *, panel_by: str = "series", columns: int = 3, title: str | None = None,
    default_label: str = "default",
) -> go.Figure:
    """Figure 4 as small multiples: one panel per ``panel_by`` value (e.g. attack × layer set),
    clean accuracy (solid) and ASR (dashed) in % against τ, ± std shaded, and the method's
    default as its own point right of the sweep (tick ``default_label``), ± std as error bars.

    Rows need ``clean_acc``, ``asr``, ``panel_by`` and ``tau`` — a number, or None for the
    default; rows of one panel and τ are averaged over seeds (:func:`aggregate_rows`).
    """
    data = _require_rows(rows, ("clean_acc", "asr", panel_by), "tau_panels_figure")
    if columns < 1:
        raise ValueError(f"tau_panels_figure: columns must be >= 1, got {columns}")
    agg = aggregate_rows(data, (panel_by, "tau"))
    panels = _group_values(agg, panel_by)
    taus = sorted({float(r["tau"]) for r in agg if r["tau"] is not None})
    default_x = (taus[-1] + max(1.0, 0.25 * (taus[-1] - taus[0]))) if taus else 0.0
    n_rows = math.ceil(len(panels) / columns)
    fig = make_subplots(rows=n_rows, cols=min(columns, len(panels)), subplot_titles=[str(p) for p in panels],
                        shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=0.14)
    colors = {"clean_acc": PALETTE[0], "asr": PALETTE[1]}
    for i, panel in enumerate(panels):
        row, col = i // columns + 1, i % columns + 1
        mine = [r for r in agg if r[panel_by] == panel]
        sweep = sorted((r for r in mine if r["tau"] is not None), key=lambda r: float(r["tau"]))
        default = [r for r in mine if r["tau"] is None]
        for metric, dash, label in (("clean_acc", "solid", "clean accuracy"), ("asr", "dash", "ASR")):
            if sweep:
                _band_traces(fig, [float(r["tau"]) for r in sweep], 100 * np.array([r[metric] for r in sweep]),
                             100 * np.array([r[f"{metric}_std"] for r in sweep]), label, colors[metric], dash,
                             row=row, col=col, group=label)
            if default:
                d = default[0]
                fig.add_trace(go.Scatter(
                    x=[default_x], y=[100 * d[metric]], mode="markers", name=f"{label}, {default_label}",
                    marker=dict(color=colors[metric], symbol="diamond" if metric == "clean_acc" else "x", size=10),
                    error_y=dict(type="data", array=[100 * d[f"{metric}_std"]], visible=True),
                    legendgroup=f"{label}, {default_label}",
                    hovertemplate=f"{label}, {default_label}<br>%{{y:.1f}}% (n={d['n']})<extra></extra>"),
                    row=row, col=col)
        fig.update_xaxes(tickvals=taus + ([default_x] if default else []),
                         ticktext=[f"{t:g}" for t in taus] + ([default_label] if default else []), row=row, col=col)
    seen: set[str] = set()
    for trace in fig.data:  # one legend entry per curve, not per panel (the ± std bands have none)
        if trace.showlegend is False:
            continue
        trace.showlegend = trace.name not in seen
        seen.add(trace.name)
    fig.update_yaxes(range=[0, 101])
    fig.update_yaxes(title_text="%", col=1)
    fig.update_xaxes(title_text="temperature τ", row=n_rows)
    n_seeds = max(r["n"] for r in agg)
    fig.update_layout(title=title or f"Effect of the temperature τ (mean ± std over up to {n_seeds} runs)",
                      width=360 * min(columns, len(panels)) + 160, height=300 * n_rows + 140, hovermode="closest",
                      margin=dict(t=110))
    return fig


def data_amount_figure(
    rows: Iterable[Mapping[str, Any]], *, panel_by: str = "attack", series_by: str = "method",
    x_title: str = "clean data (% of the training set)", title: str | None = None,
) -> go.Figure:
    """Figure 3: clean accuracy (solid) and ASR (dashed) in % against the amount of clean data,
    one panel per ``panel_by`` value (e.g. attack), one colour per ``series_by`` value (e.g.
    method), ± std shaded, log x axis.

    Rows need ``percent`` (clean data, % of the training set, > 0), ``clean_acc``, ``asr``,
    ``panel_by`` and ``series_by``; rows of one panel, series and amount are averaged over seeds.
    """
    data = _require_rows(rows, ("percent", "clean_acc", "asr", panel_by, series_by), "data_amount_figure")
    bad = [r["percent"] for r in data if not float(r["percent"]) > 0]
    if bad:
        raise ValueError(f"data_amount_figure: percent must be > 0 (log axis), got {bad[:3]}")
    agg = aggregate_rows(data, (panel_by, series_by, "percent"))
    panels, series = _group_values(agg, panel_by), _group_values(agg, series_by)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[str(p) for p in panels], shared_yaxes=True,
                        horizontal_spacing=0.04)
    amounts = sorted({float(r["percent"]) for r in agg})
    for col, panel in enumerate(panels, start=1):
        for i, name in enumerate(series):
            pts = sorted((r for r in agg if r[panel_by] == panel and r[series_by] == name), key=lambda r: float(r["percent"]))
            if not pts:
                continue
            xs = [float(r["percent"]) for r in pts]
            for metric, dash, label in (("clean_acc", "solid", "clean accuracy"), ("asr", "dash", "ASR")):
                _band_traces(fig, xs, 100 * np.array([r[metric] for r in pts]),
                             100 * np.array([r[f"{metric}_std"] for r in pts]), f"{name}: {label}",
                             PALETTE[i % len(PALETTE)], dash, row=1, col=col, group=f"{name}: {label}")
        fig.update_xaxes(type="log", tickvals=amounts, ticktext=[f"{a:g}" for a in amounts], row=1, col=col)
    seen: set[str] = set()
    for trace in fig.data:  # one legend entry per curve, not per panel
        if trace.showlegend is False:
            continue
        trace.showlegend = trace.name not in seen
        seen.add(trace.name)
    fig.update_yaxes(range=[0, 101])
    fig.update_yaxes(title_text="%", col=1)
    fig.update_xaxes(title_text=x_title)
    n_seeds = max(r["n"] for r in agg)
    fig.update_layout(title=title or f"Accuracy and ASR against the amount of clean data (mean ± std over up to {n_seeds} runs)",
                      width=330 * len(panels) + 220, height=440, hovermode="closest", margin=dict(t=100))
    return fig


def lambda_tau_figure(
    rows: Iterable[Mapping[str, Any]], *, kind: str = "lines", title: str | None = None
) -> go.Figure:
    """Figure 6: ASR (left) and clean accuracy (right) over τ for each λ.

    ``kind="lines"``: one line per λ against τ (the paper's layout, ± std as error bars);
    ``kind="heatmap"``: τ × λ heat maps of the means, values printed in the cells.
    Rows need ``tau``, ``lam``, ``clean_acc``, ``asr``.
    """
    if kind not in ("lines", "heatmap"):
        raise ValueError(f"kind must be 'lines' or 'heatmap', got {kind!r}")
    data = _require_rows(rows, ("tau", "lam", "clean_acc", "asr"), "lambda_tau_figure")
    agg = aggregate_rows(data, ("lam", "tau"))
    taus = sorted({float(r["tau"]) for r in agg})
    lams = sorted({float(r["lam"]) for r in agg})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ASR (%)", "Clean accuracy (%)"), horizontal_spacing=0.14)
    for col, metric in ((1, "asr"), (2, "clean_acc")):
        if kind == "heatmap":
            z = np.full((len(lams), len(taus)), np.nan)
            for r in agg:
                z[lams.index(float(r["lam"])), taus.index(float(r["tau"]))] = 100 * r[metric]
            fig.add_trace(go.Heatmap(
                z=z, x=[f"{t:g}" for t in taus], y=[f"{lam:g}" for lam in lams],
                coloraxis="coloraxis" if col == 1 else "coloraxis2",
                text=np.vectorize(lambda v: "" if math.isnan(v) else f"{v:.1f}")(z), texttemplate="%{text}",
                name=metric, hovertemplate=f"λ=%{{y}}, τ=%{{x}}<br>{metric} %{{z:.1f}}%<extra></extra>"), row=1, col=col)
            fig.update_xaxes(title_text="temperature τ", type="category", row=1, col=col)
            fig.update_yaxes(title_text="λ", type="category", row=1, col=col)
        else:
            for i, lam in enumerate(lams):
                pts = sorted((r for r in agg if float(r["lam"]) == lam), key=lambda r: float(r["tau"]))
                fig.add_trace(go.Scatter(
                    x=[float(r["tau"]) for r in pts], y=[100 * r[metric] for r in pts], mode="lines+markers",
                    name=f"λ={lam:g}", legendgroup=f"λ={lam:g}", showlegend=col == 1,
                    line=dict(color=PALETTE[i % len(PALETTE)]),
                    error_y=dict(type="data", array=[100 * r[f"{metric}_std"] for r in pts], visible=True, thickness=1),
                    hovertemplate=f"λ={lam:g}, τ=%{{x:g}}<br>{metric} %{{y:.1f}}%<extra></extra>"), row=1, col=col)
            fig.update_xaxes(title_text="temperature τ", row=1, col=col)
            fig.update_yaxes(range=[0, 101], row=1, col=col)
    if kind == "heatmap":
        fig.update_layout(
            coloraxis=dict(colorscale="Reds", cmin=0, cmax=100, colorbar=dict(x=0.43, title="ASR %", thickness=10)),
            coloraxis2=dict(colorscale="Blues", cmin=0, cmax=100, colorbar=dict(x=1.0, title="acc %", thickness=10)))
    fig.update_layout(title=title or "Effect of λ and τ", width=960, height=420)
    return fig


def tradeoff_figure(
    rows: Iterable[Mapping[str, Any]], *, group_by: str = "criteria", title: str | None = None
) -> go.Figure:
    """Figure 7: ASR against clean accuracy, one curve per ``group_by`` value (default the
    importance criteria), points ordered by τ and labelled with it; ± std error bars on both
    axes. Lower right is better. Rows need ``tau``, ``clean_acc``, ``asr`` and ``group_by``."""
    data = _require_rows(rows, ("tau", "clean_acc", "asr", group_by), "tradeoff_figure")
    agg = aggregate_rows(data, (group_by, "tau"))
    fig = go.Figure()
    for i, g in enumerate(_group_values(agg, group_by)):
        pts = sorted((r for r in agg if r[group_by] == g), key=lambda r: float(r["tau"]))
        fig.add_trace(go.Scatter(
            x=[100 * r["clean_acc"] for r in pts], y=[100 * r["asr"] for r in pts], mode="lines+markers+text",
            name=_label(group_by, g) if not isinstance(g, str) else str(g),
            text=[f"τ={float(r['tau']):g}" for r in pts], textposition="top right", textfont=dict(size=9),
            line=dict(color=PALETTE[i % len(PALETTE)]),
            error_x=dict(type="data", array=[100 * r["clean_acc_std"] for r in pts], visible=True, thickness=1),
            error_y=dict(type="data", array=[100 * r["asr_std"] for r in pts], visible=True, thickness=1),
            hovertemplate="%{text}<br>clean acc %{x:.1f}%<br>ASR %{y:.1f}%<extra>" + str(g) + "</extra>",
        ))
    fig.update_layout(title=title or "Trade-off between clean accuracy and ASR (lower right is better)",
                      xaxis_title="clean accuracy (%)", yaxis_title="attack success rate (%)", width=720, height=480)
    return fig


def defense_comparison_figure(
    rows: Iterable[Mapping[str, Any]],
    *,
    x: str = "attack",
    group_by: str = "method",
    metrics: Sequence[str] = ("clean_acc", "asr"),
    title: str | None = None,
) -> go.Figure:
    """Figure 5 / Table 1: grouped bars, one group per ``x`` value (attack), one bar per
    ``group_by`` value (method), one panel per metric, mean ± std over seeds as error bars.
    The trojaned model ("Original") is grey; the methods take :data:`PALETTE` in order.
    Rows need ``x``, ``group_by`` and the ``metrics``."""
    if not metrics:
        raise ValueError("metrics must name at least one metric, e.g. ('clean_acc', 'asr')")
    data = _require_rows(rows, (x, group_by, *metrics), "defense_comparison_figure")
    agg = aggregate_rows(data, (x, group_by), metrics)
    xs = _group_values(agg, x)
    names = {"clean_acc": "Clean accuracy (%)", "asr": "Attack success rate (%)"}
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[names.get(m, m) for m in metrics])
    groups = _group_values(agg, group_by)
    methods = [g for g in groups if str(g) not in REFERENCE_SERIES]
    for g in groups:
        color = REFERENCE_COLOR if str(g) in REFERENCE_SERIES else PALETTE[methods.index(g) % len(PALETTE)]
        for r, metric in enumerate(metrics, start=1):
            by_x = {row[x]: row for row in agg if row[group_by] == g}
            fig.add_trace(go.Bar(
                x=[str(v) for v in xs], y=[100 * by_x[v][metric] if v in by_x else None for v in xs],
                error_y=dict(type="data", array=[100 * by_x[v][f"{metric}_std"] if v in by_x else 0 for v in xs], visible=True),
                name=str(g), legendgroup=str(g), showlegend=r == 1, marker_color=color,
                customdata=[by_x[v]["n"] if v in by_x else 0 for v in xs],
                hovertemplate=f"{g}<br>%{{x}}<br>{metric} %{{y:.1f}}%<br>runs %{{customdata}}<extra></extra>",
            ), row=r, col=1)
    fig.update_yaxes(range=[0, 105])
    fig.update_layout(barmode="group", title=title or "Backdoor removal methods compared (mean ± std)",
                      width=max(600, 110 * len(xs) + 200), height=300 * len(metrics) + 80)
    return fig


_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "triangle-down", "pentagon", "star", "hexagon")


def removal_accuracy_figure(rows: Iterable[Mapping[str, Any]], *, title: str | None = None) -> go.Figure:
    """Table 1's last two rows side by side: each defence's average ASR drop (y) against its
    average clean-accuracy drop (x), in points, over the attacks it has, with their seed-only
    95 % intervals (:func:`medic_viz.experiments.summary.aggregate`) as error bars; faint
    markers are the per-attack drops (mean over seeds). Each defence has its own colour and
    marker shape. Upper left is better: removal without
    an accuracy cost. Rows are grid rows: ``attack``, ``variant``, ``seed``,
    ``before_clean_acc``, ``clean_acc``, ``before_asr``, ``asr`` (fractions)."""
    from medic_viz.experiments.summary import aggregate  # noqa: PLC0415 — a view of the core's numbers

    data = _require_rows(rows, ("attack", "variant", "before_clean_acc", "clean_acc", "before_asr", "asr"),
                         "removal_accuracy_figure")
    agg = aggregate(data)
    fig = go.Figure()
    for i, v in enumerate(agg["variants"]):
        color, symbol = PALETTE[i % len(PALETTE)], _SYMBOLS[i % len(_SYMBOLS)]  # a 9th series differs by shape
        cells = [agg["cells"][(a, v)] for a in agg["attacks"] if (a, v) in agg["cells"]]
        fig.add_trace(go.Scatter(
            x=[c["acc_drop"].mean for c in cells], y=[c["asr_drop"].mean for c in cells], mode="markers",
            name=f"{v}: per attack", legendgroup=str(v), showlegend=False, opacity=0.35,
            marker=dict(color=color, size=6, symbol=symbol), text=[a for a in agg["attacks"] if (a, v) in agg["cells"]],
            hovertemplate=f"{v}, %{{text}}<br>accuracy drop %{{x:.1f}}<br>ASR drop %{{y:.1f}}<extra></extra>"))
        d = agg["drops"][v]
        if math.isnan(d["asr"]) or math.isnan(d["acc"]):
            continue

        def bars(ci: AverageInterval) -> dict:
            return (dict(type="data", symmetric=False, array=[ci.high - ci.mean], arrayminus=[ci.mean - ci.low],
                         visible=True, thickness=1.2) if ci.defined else dict(visible=False))

        fig.add_trace(go.Scatter(
            x=[d["acc"]], y=[d["asr"]], mode="markers", name=str(v), legendgroup=str(v),
            marker=dict(color=color, size=13, symbol=symbol, line=dict(color="white", width=1)),
            error_x=bars(d["acc_ci"]), error_y=bars(d["asr_ci"]),
            hovertemplate=(f"{v} (average over {d['n_attacks']} attacks)<br>accuracy drop %{{x:.1f}}"
                           f"<br>ASR drop %{{y:.1f}}<extra></extra>")))
    fig.add_vline(x=0, line=dict(color=REFERENCE_COLOR, width=1, dash="dot"))
    fig.update_layout(title=title or "Removal against its cost: average ASR drop vs accuracy drop (95 % intervals)",
                      xaxis_title="average clean-accuracy drop (points; left is better)",
                      yaxis_title="average ASR drop (points; up is better)", width=760, height=520)
    return fig


def per_run_scatter_figure(
    rows: Iterable[Mapping[str, Any]], *, target: tuple[float, float] | None = None, title: str | None = None
) -> go.Figure:
    """Every run as one marker, not averaged: clean accuracy (x, %) against ASR (y, %), one panel
    per ``panel`` value (e.g. the attack), one colour and marker shape per ``series`` (e.g. the
    setting), ``label`` (e.g. "seed 3") on hover; the panel's teacher accuracy
    (``before_clean_acc``, the first row's) as a dotted line. ``target`` = (ASR at most, accuracy
    drop at most), in points: that corner is shaded. Lower right is better. Rows need ``panel``,
    ``series``, ``label``, ``clean_acc``, ``asr`` and ``before_clean_acc`` (fractions)."""
    data = _require_rows(rows, ("panel", "series", "label", "clean_acc", "asr", "before_clean_acc"),
                         "per_run_scatter_figure")
    panels, series = _group_values(data, "panel"), _group_values(data, "series")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[str(p) for p in panels], horizontal_spacing=0.08)
    for col, panel in enumerate(panels, start=1):
        mine = [r for r in data if r["panel"] == panel]
        teacher = 100 * float(mine[0]["before_clean_acc"])
        if target is not None:
            fig.add_shape(type="rect", x0=teacher - target[1], x1=100, y0=0, y1=target[0], line_width=0,
                          fillcolor=_rgba(REFERENCE_COLOR, 0.15), row=1, col=col)
        fig.add_vline(x=teacher, line=dict(color=REFERENCE_COLOR, width=1, dash="dot"), row=1, col=col)
        for i, g in enumerate(series):
            pts = [r for r in mine if r["series"] == g]
            fig.add_trace(go.Scatter(
                x=[100 * float(r["clean_acc"]) for r in pts], y=[100 * float(r["asr"]) for r in pts], mode="markers",
                name=str(g), legendgroup=str(g), showlegend=col == 1, text=[str(r["label"]) for r in pts],
                marker=dict(color=PALETTE[i % len(PALETTE)], symbol=_SYMBOLS[i % len(_SYMBOLS)], size=10, opacity=0.85),
                hovertemplate=f"{g}, %{{text}}<br>clean acc %{{x:.1f}}%<br>ASR %{{y:.1f}}%<extra>{panel}</extra>"),
                row=1, col=col)
    fig.update_xaxes(title_text="clean accuracy (%)")
    fig.update_yaxes(title_text="attack success rate (%)", row=1, col=1)
    fig.update_yaxes(range=[-3, 103])
    fig.update_layout(title=title or "Every run: clean accuracy against ASR (lower right is better)",
                      width=max(520, 420 * len(panels) + 120), height=480)
    return fig
