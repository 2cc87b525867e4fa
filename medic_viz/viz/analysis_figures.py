"""Figures of what happens inside a network and on its input, as pure functions returning
``go.Figure``: from :mod:`medic_viz.analysis`, :func:`figure2_grid` (paper Figure 2),
:func:`layer_strip`, :func:`neuron_ranking_figure`, :func:`top_activating_figure`; from
:mod:`medic_viz.attribution`, :func:`attribution_figure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # pragma: no cover - typing only
    from medic_viz.analysis import CompromisedStatistic, InputAnalysis, NeuronRanking
    from medic_viz.attribution import AttributionComparison

__all__ = [
    "FIGURE2_COLUMNS",
    "figure2_grid",
    "layer_strip",
    "neuron_ranking_figure",
    "top_activating_figure",
    "attribution_figure",
]

#: Column titles of :func:`figure2_grid`, in order (the paper's panels a, b, d, c, e, f).
FIGURE2_COLUMNS: tuple[str, ...] = (
    "clean input", "triggered input", "clean activation", "triggered activation", "difference", "importance",
)
_ACT_SCALE, _IMP_SCALE, _DIFF_SCALE, _DIV_SCALE = "Viridis", "Inferno", "Magma", "RdBu_r"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _image_rgb(img: Any) -> np.ndarray:
    """Float ``(C, H, W)`` in [0, 1] (tensor or array) → uint8 ``(H, W, 3)`` for ``go.Image``."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {a.shape}")
    a = np.transpose(a, (1, 2, 0))
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    if hi <= lo:
        hi = lo + 1e-12
    return lo, hi


def _heatmap(z: np.ndarray, name: str, coloraxis: str | None = None, **kw: Any) -> go.Heatmap:
    return go.Heatmap(
        z=z, name=name, coloraxis=coloraxis,
        hovertemplate=f"{name}<br>row %{{y}}, col %{{x}}<br>value %{{z:.4g}}<extra></extra>", **kw,
    )


def _square_axes(fig: go.Figure, rows: int, cols: int) -> None:
    """Image orientation (row 0 at the top) and square pixels in every cell."""
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            sub = fig.get_subplot(r, c)
            if sub is None:
                continue
            x_anchor = sub.yaxis.anchor
            fig.update_yaxes(autorange="reversed", scaleanchor=x_anchor, constrain="domain",
                             showticklabels=False, row=r, col=c)
            fig.update_xaxes(showticklabels=False, constrain="domain", row=r, col=c)


def _colorbar(fig: go.Figure, row: int, col: int) -> dict:
    sub = fig.get_subplot(row, col)
    x1 = sub.xaxis.domain[1]
    y0, y1 = sub.yaxis.domain
    return dict(x=x1 + 0.004, xanchor="left", y=(y0 + y1) / 2,
                yanchor="middle", len=(y1 - y0) * 0.9, thickness=10, tickfont=dict(size=9))


def _default_layers(analysis: "InputAnalysis", n: int = 4) -> list[str]:
    pool = analysis.map_layers or analysis.layers
    if len(pool) <= n:
        return list(pool)
    idx = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in dict.fromkeys(idx.tolist())]


def figure2_grid(
    analysis: "InputAnalysis",
    layers: str | Sequence[str] | None = None,
    tau: float = 5.0,
    reduction: str = "mean_abs",
    *,
    importance: str = "combined",
    which: str = "clean",
    title: str | None = None,
    cell_px: int = 150,
) -> go.Figure:
    """The paper's Figure 2 for one input, one row per layer.

    Columns (:data:`FIGURE2_COLUMNS`): clean and triggered inputs (first row only), clean and
    triggered activation maps (one colour scale shared by the two, per row), their difference
    (triggered − clean, reduced), and MEDIC importance at ``tau`` (``importance`` criterion
    of the ``which`` input; Figure 2f shows the clean input's eq.(4)). ``reduction``: see
    :func:`medic_viz.analysis.reduce_channels`. ``layers``: default, up to four layers spread
    over the depth of the network. Hover shows each cell's value.
    """
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers) if layers is not None else _default_layers(analysis)
    if not names:
        raise ValueError("figure2_grid needs at least one layer")
    maps = {n: analysis.maps(n, tau, reduction, which=which) for n in names}
    if importance not in ("combined", "activation", "impact"):
        raise ValueError(f"importance must be 'combined', 'activation' or 'impact', got {importance!r}")
    rows, cols = len(names), len(FIGURE2_COLUMNS)
    fig = make_subplots(
        rows=rows, cols=cols, horizontal_spacing=0.055, vertical_spacing=0.06 / max(1, rows - 1) if rows > 1 else 0.0,
        column_titles=list(FIGURE2_COLUMNS),
    )
    signed = reduction in ("mean", "max", "none")
    for r, n in enumerate(names, start=1):
        m = maps[n]
        if r == 1:
            fig.add_trace(go.Image(z=_image_rgb(analysis.image), name="clean input",
                                   hovertemplate="clean input<br>(%{x}, %{y}): %{z}<extra></extra>"), row=1, col=1)
            fig.add_trace(go.Image(z=_image_rgb(analysis.triggered_image), name="triggered input",
                                   hovertemplate="triggered input<br>(%{x}, %{y}): %{z}<extra></extra>"), row=1, col=2)
        ax_act, ax_diff, ax_imp = (f"coloraxis{3 * (r - 1) + i}" for i in (1, 2, 3))
        ax_act = "coloraxis" if ax_act == "coloraxis1" else ax_act
        fig.add_trace(_heatmap(m["clean"], f"{n}: clean activation", ax_act), row=r, col=3)
        fig.add_trace(_heatmap(m["triggered"], f"{n}: triggered activation", ax_act), row=r, col=4)
        fig.add_trace(_heatmap(m["difference"], f"{n}: difference", ax_diff), row=r, col=5)
        fig.add_trace(_heatmap(m[importance], f"{n}: importance ({importance})", ax_imp), row=r, col=6)
        lo, hi = _range(m["clean"], m["triggered"])
        dlo, dhi = _range(m["difference"])
        ilo, ihi = _range(m[importance])
        if signed:
            bound = max(abs(dlo), abs(dhi))
            diff_axis = dict(colorscale=_DIV_SCALE, cmin=-bound, cmax=bound)
        else:
            diff_axis = dict(colorscale=_DIFF_SCALE, cmin=dlo, cmax=dhi)
        fig.update_layout({
            ax_act: dict(colorscale=_ACT_SCALE, cmin=lo, cmax=hi, colorbar=_colorbar(fig, r, 4)),
            ax_diff: dict(**diff_axis, colorbar=_colorbar(fig, r, 5)),
            ax_imp: dict(colorscale=_IMP_SCALE, cmin=ilo, cmax=ihi, colorbar=_colorbar(fig, r, 6)),
        })
    _square_axes(fig, rows, cols)
    for r, n in enumerate(names, start=1):  # layer name and shape left of the activation maps
        shape = "×".join(str(v) for v in analysis.layer_shape(n))
        fig.update_yaxes(title=dict(text=f"{_short(n)}<br>{shape}", font=dict(size=10), standoff=2), row=r, col=3)
    p = analysis.predictions
    head = title or (
        f"Clean → {analysis.class_name(p['clean'].label)} ({p['clean'].probability:.0%}), "
        f"triggered → {analysis.class_name(p['triggered'].label)} ({p['triggered'].probability:.0%}); "
        f"τ = {tau:g}, reduction = {reduction}, importance = {importance} ({which} input)"
    )
    fig.update_layout(
        title=dict(text=head, font=dict(size=13)), width=cols * cell_px + 140, height=rows * cell_px + 110,
        margin=dict(l=20, r=90, t=80, b=20), showlegend=False,
    )
    fig.update_annotations(font_size=11)
    return fig


def layer_strip(
    analysis: "InputAnalysis",
    tau: float = 5.0,
    *,
    layers: Sequence[str] | None = None,
    reduction: str = "mean_abs",
    importance: str = "combined",
    cell_px: int = 90,
) -> go.Figure:
    """Layer by layer, left to right: the difference map (row 1) and the importance map (row 2).

    Each cell has its own colour range (layers differ in scale); hover shows the raw values.
    Linear layers appear as 1 × F strips. ``layers``: default every analysed layer.
    """
    names = list(layers) if layers is not None else list(analysis.layers)
    if not names:
        raise ValueError("layer_strip needs at least one layer")
    fig = make_subplots(rows=2, cols=len(names), column_titles=[_short(n, 14) for n in names],
                        row_titles=["difference", f"importance τ={tau:g}"], horizontal_spacing=0.2 / max(len(names), 1),
                        vertical_spacing=0.08)
    for c, n in enumerate(names, start=1):
        m = analysis.maps(n, tau, reduction)
        scale = _DIFF_SCALE if reduction.endswith("abs") else _DIV_SCALE
        fig.add_trace(_heatmap(m["difference"], f"{n}: difference", colorscale=scale, showscale=False), row=1, col=c)
        fig.add_trace(_heatmap(m[importance], f"{n}: importance", colorscale=_IMP_SCALE, showscale=False), row=2, col=c)
    _square_axes(fig, 2, len(names))
    fig.update_layout(
        title=dict(text=f"Trigger-induced difference and MEDIC importance ({importance}) per layer, reduction = {reduction}",
                   font=dict(size=13)),
        width=max(500, len(names) * cell_px + 100), height=2 * cell_px + 150, margin=dict(l=20, r=40, t=90, b=20),
    )
    fig.update_annotations(font_size=9)
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = [m * 10.0**e for e in range(-6, 7) for m in (1, 2, 5)]
    return [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]


def neuron_ranking_figure(
    ranking: "NeuronRanking",
    top_n: int = 20,
    *,
    statistic: "CompromisedStatistic | None" = None,
    title: str | None = None,
) -> go.Figure:
    """Which channels the trigger compromises, and how important MEDIC finds them on clean inputs.

    Left: the ``top_n`` most shifted channels (bars = shift in σ units, colour = relative clean
    importance, 1 = layer average). Middle: every channel, |shift| against relative importance
    (log scale), the top ``top_n`` in red; the dashed line marks the layer average. With a
    ``statistic`` (:func:`medic_viz.analysis.compromised_importance_statistic`), a third panel
    shows per layer the importance percentile of the compromised units (50 = no relation).
    """
    if len(ranking) == 0:
        raise ValueError("the ranking is empty")
    top = ranking.top(min(int(top_n), len(ranking)))
    labels = [f"{_short(str(layer), 18)} · ch {c}" for layer, c in zip(top.layer, top.channel)]
    cols = 3 if statistic is not None else 2
    titles = [f"Top {len(top)} shifted channels", "All channels: shift vs clean importance"]
    if statistic is not None:
        titles.append(f"Compromised {statistic.level}s")
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.36, 0.4, 0.24] if cols == 3 else [0.45, 0.55],
                        horizontal_spacing=0.16 if cols == 3 else 0.2, subplot_titles=titles)
    floor = 1e-4
    bar_x = 0.27 if cols == 3 else 0.38
    fig.add_trace(go.Bar(
        x=top.shift, y=labels, orientation="h", name="shift", showlegend=False,
        marker=dict(color=np.clip(top.importance, floor, None), colorscale="Viridis", cmin=0,
                    cmax=max(1.0, float(np.max(top.importance))),
                    colorbar=dict(title=dict(text="clean importance<br>(× layer avg)", side="right"), x=bar_x,
                                  thickness=10, len=0.9)),
        customdata=np.stack([top.importance, top.rank], axis=1),
        hovertemplate=("%{y}<br>shift %{x:.3g} σ<br>clean importance %{customdata[0]:.3g}× avg"
                       "<br>rank %{customdata[1]}<extra></extra>"),
    ), row=1, col=1)
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=1, col=1)
    fig.update_xaxes(title_text=f"shift ({ranking.shift_reduction}, σ units)", row=1, col=1)
    is_top = np.isin(ranking.rank, top.rank)
    imp_all = np.clip(ranking.importance, floor, None)
    for mask, color, name in ((~is_top, "rgba(120,120,120,0.45)", "other channels"), (is_top, "#d62728", f"top {len(top)}")):
        if not mask.any():
            continue
        fig.add_trace(go.Scatter(
            x=np.abs(ranking.shift[mask]), y=imp_all[mask], mode="markers", name=name,
            marker=dict(color=color, size=6 if color == "#d62728" else 4),
            text=[f"{layer} · ch {c}" for layer, c in zip(ranking.layer[mask], ranking.channel[mask])],
            customdata=ranking.importance[mask],
            hovertemplate="%{text}<br>|shift| %{x:.3g} σ<br>clean importance %{customdata:.3g}× avg<extra></extra>",
        ), row=1, col=2)
    fig.add_hline(y=1.0, line_dash="dash", line_color="black", row=1, col=2)
    fig.add_annotation(x=1.0, xref="x2 domain", y=0.0, yref="y2", text="layer average", showarrow=False,
                       xanchor="right", yanchor="bottom", font=dict(size=10))  # y in log10 units
    ticks = _log_ticks(float(imp_all.min()), float(imp_all.max()))
    fig.update_xaxes(title_text="|shift| (σ units)", row=1, col=2)
    fig.update_yaxes(title_text="clean importance (× layer average)", type="log", tickvals=ticks,
                     ticktext=[f"{t:g}" for t in ticks], row=1, col=2)
    if statistic is not None:
        per = [d for d in statistic.per_layer if d["k"]]
        fig.add_trace(go.Bar(
            x=[100 * d["percentile"] for d in per], y=[_short(d["layer"], 14) for d in per], orientation="h",
            name="percentile", showlegend=False,
            marker_color=["#2ca02c" if d["percentile"] < 0.5 else "#d62728" for d in per],
            customdata=[[d["k"], d["units"], d["p_value"], d["ratio"]] for d in per],
            hovertemplate="%{y}: percentile %{x:.0f}<br>%{customdata[0]} of %{customdata[1]} units, "
                          "p %{customdata[2]:.3g}<br>%{customdata[3]:.2f}× avg importance<extra></extra>",
        ), row=1, col=3)
        fig.add_vline(x=50, line_dash="dash", line_color="black", row=1, col=3)
        fig.update_xaxes(range=[0, 100], title_text="percentile (50 = no relation)", row=1, col=3)
        fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=1, col=3)
        verdict = "supports" if statistic.supported else "does not support"
        fig.add_annotation(
            x=0.5, xref="x3 domain", y=-0.16, yref="y3 domain", showarrow=False, font=dict(size=10),
            text=f"all: {100 * statistic.percentile:.0f}, p = {statistic.p_value:.2g} → {verdict} the claim",
        )
    fig.update_layout(
        title=dict(text=title or f"Channels compromised by the trigger ({ranking.n_images} images, τ = {ranking.tau:g}, "
                                 f"{ranking.criteria} importance)", font=dict(size=13)),
        width=1000 if cols == 2 else 1250, height=max(420, 18 * len(top) + 160),
        legend=dict(x=fig.get_subplot(1, 2).xaxis.domain[1], y=1.0, xanchor="right", yanchor="top", font=dict(size=10),
                    bgcolor="rgba(255,255,255,0.7)"),
        margin=dict(l=20, r=40, t=70, b=60),
    )
    return fig


def top_activating_figure(
    top: Mapping[str, Mapping[str, Any]], layer: str, channel: int, *, title: str | None = None, cell_px: int = 90
) -> go.Figure:
    """The images that drive one channel hardest: clean (row 1) and triggered (row 2), each
    titled with its activation. ``top``: :func:`medic_viz.analysis.top_activating_images` output."""
    rows = [w for w in ("clean", "triggered") if w in top]
    if not rows:
        raise ValueError("top must have 'clean' and/or 'triggered' entries (top_activating_images output)")
    k = max(len(top[w]["values"]) for w in rows)
    titles = []
    for w in rows:
        vals = list(top[w]["values"])
        titles += [f"{w} #{int(top[w]['indices'][j])}: {vals[j]:.3g}" if j < len(vals) else "" for j in range(k)]
    fig = make_subplots(rows=len(rows), cols=k, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.12)
    for r, w in enumerate(rows, start=1):
        for j in range(len(top[w]["values"])):
            fig.add_trace(go.Image(z=_image_rgb(top[w]["images"][j]), name=f"{w} {j}",
                                   hovertemplate=f"{w} image #{int(top[w]['indices'][j])}<extra></extra>"), row=r, col=j + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=dict(text=title or f"Top-activating images of {layer}, channel {channel}", font=dict(size=13)),
                      width=k * cell_px + 60, height=len(rows) * (cell_px + 30) + 80, margin=dict(l=20, r=20, t=80, b=10))
    fig.update_annotations(font_size=9)
    return fig


def attribution_figure(comparison: "AttributionComparison", *, title: str | None = None, cell_px: int = 170) -> go.Figure:
    """Input attributions, one row per method: clean input, its map, triggered input, its map.

    The two maps of a row share one colour scale; the trigger region is outlined; subplot titles
    give the share of attribution inside it.
    """
    methods = comparison.methods
    if not methods:
        raise ValueError("the comparison has no attribution maps")
    titles = []
    for m in methods:
        ms = comparison.mass[m]
        titles += ["clean input", f"{m}: clean ({ms['clean']:.0%} in trigger)", "triggered input",
                   f"{m}: triggered ({ms['triggered']:.0%} in trigger)"]
    fig = make_subplots(rows=len(methods), cols=4, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.08)
    ys, xs = np.nonzero(comparison.mask > 0.5)
    for r, m in enumerate(methods, start=1):
        a, b = comparison.maps[m]["clean"], comparison.maps[m]["triggered"]
        lo, hi = _range(a, b)
        axis = "coloraxis" if r == 1 else f"coloraxis{r}"
        fig.add_trace(go.Image(z=_image_rgb(comparison.image), name="clean input"), row=r, col=1)
        fig.add_trace(_heatmap(a, f"{m}: clean", axis), row=r, col=2)
        fig.add_trace(go.Image(z=_image_rgb(comparison.triggered_image), name="triggered input"), row=r, col=3)
        fig.add_trace(_heatmap(b, f"{m}: triggered", axis), row=r, col=4)
        fig.update_layout({axis: dict(colorscale="Hot", cmin=lo, cmax=hi, colorbar=_colorbar(fig, r, 4))})
        if len(xs) and len(xs) < comparison.mask.size:
            for c in (2, 4):
                fig.add_shape(type="rect", x0=xs.min() - 0.5, x1=xs.max() + 0.5, y0=ys.min() - 0.5, y1=ys.max() + 0.5,
                              line=dict(color="cyan", width=2), row=r, col=c)
    _square_axes(fig, len(methods), 4)
    t = comparison.targets
    fig.update_layout(
        title=dict(text=title or f"Input attributions (clean → class {t['clean']}, triggered → class {t['triggered']})",
                   font=dict(size=13)),
        width=4 * cell_px + 120, height=len(methods) * cell_px + 100, margin=dict(l=20, r=80, t=80, b=20),
        showlegend=False,
    )
    fig.update_annotations(font_size=10)
    return fig
