"""Training curves: clean accuracy, ASR and losses over epochs, for one or several runs."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medic_viz.viz.style import PALETTE

__all__ = ["training_curves_figure", "event_rows", "grid_curves_figure"]



def event_rows(history: Iterable[object]) -> list[dict]:
    """Events (TrainEvent objects or their dicts) that carry metrics, as dicts, in order."""
    rows = []
    for ev in history:
        d = ev if isinstance(ev, Mapping) else ev.as_dict()  # type: ignore[attr-defined]
        if d.get("kind") in ("start", "epoch", "step"):
            rows.append(dict(d))
    return rows


def _x(row: Mapping) -> float:
    total, steps = row.get("total_steps") or 0, row.get("step") or 0
    epochs = row.get("epochs") or 1
    return epochs * steps / total if total else float(row.get("epoch", 0))


def training_curves_figure(
    runs: Mapping[str, Sequence[object]] | Sequence[object],
    *,
    title: str = "Backdoor removal: clean accuracy and attack success rate",
    baseline: Mapping[str, float | None] | None = None,
) -> go.Figure:
    """Two panels over epochs: (left) clean accuracy and ASR in %, (right) loss terms (log y).

    ``runs``: one history (list of events) or ``{label: history}`` for several overlaid runs.
    ``baseline``: optional ``{"clean_acc": .., "asr": ..}`` of the trojaned model, drawn as
    dotted horizontal lines. Accuracy traces are solid, ASR dashed, accuracy on a clean hold-out
    (MEDIC's ``holdout_fraction``) dotted; one colour per run.
    """
    if not isinstance(runs, Mapping):
        runs = {"run": runs}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy / ASR (%)", "Loss"), horizontal_spacing=0.1)
    for i, (label, history) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        rows = [r for r in event_rows(history) if r.get("clean_acc") is not None]
        xs = [_x(r) for r in rows]
        fig.add_trace(
            go.Scatter(x=xs, y=[100 * r["clean_acc"] for r in rows], name=f"{label}: clean acc", mode="lines+markers",
                       line=dict(color=color), legendgroup=label,
                       hovertemplate="epoch %{x:.2f}<br>clean acc %{y:.1f}%<extra>" + label + "</extra>"),
            row=1, col=1,
        )
        asr_rows = [r for r in rows if r.get("asr") is not None]
        if asr_rows:
            fig.add_trace(
                go.Scatter(x=[_x(r) for r in asr_rows], y=[100 * r["asr"] for r in asr_rows], name=f"{label}: ASR",
                           mode="lines+markers", line=dict(color=color, dash="dash"), legendgroup=label,
                           hovertemplate="epoch %{x:.2f}<br>ASR %{y:.1f}%<extra>" + label + "</extra>"),
                row=1, col=1,
            )
        held = [r for r in event_rows(history) if r.get("holdout_acc") is not None]
        if held:  # MEDIC's clean hold-out (holdout_fraction): clean images the run did not train on
            fig.add_trace(
                go.Scatter(x=[_x(r) for r in held], y=[100 * r["holdout_acc"] for r in held],
                           name=f"{label}: clean hold-out acc", mode="lines+markers",
                           line=dict(color=color, dash="dot"), legendgroup=label,
                           hovertemplate="epoch %{x:.2f}<br>hold-out acc %{y:.1f}%<extra>" + label + "</extra>"),
                row=1, col=1,
            )
        loss_rows = [r for r in event_rows(history) if r.get("losses")]
        for j, key in enumerate(sorted({k for r in loss_rows for k in r["losses"]})):
            pts = [(_x(r), r["losses"][key]) for r in loss_rows if key in r["losses"]]
            fig.add_trace(
                go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=f"{label}: {key}", mode="lines",
                           line=dict(color=color, dash=("solid", "dot", "dashdot", "longdash")[j % 4]),
                           legendgroup=label, showlegend=True),
                row=1, col=2,
            )
    if baseline:
        for key, dash, name in (("clean_acc", "dot", "trojaned model: clean acc"), ("asr", "dot", "trojaned model: ASR")):
            value = baseline.get(key)
            if value is not None:
                fig.add_hline(y=100 * value, line=dict(color="grey", dash=dash), row=1, col=1,
                              annotation_text=name, annotation_position="top left")
    fig.update_yaxes(range=[-2, 102], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, template="plotly_white", height=420, legend=dict(font=dict(size=10)))
    return fig


def grid_curves_figure(
    rows: Sequence[Mapping],
    *,
    facet: str = "attack",
    series: str = "seed",
    title: str = "Per-epoch clean accuracy (solid) and ASR (dashed)",
    asr_line: float | None = 0.10,
) -> go.Figure:
    """Small multiples of grid runs that carry a per-epoch ``curve`` (list of ``{"epoch",
    "clean_acc", "asr"}``, fractions): one panel per ``facet`` value (in order of appearance),
    one colour per ``series`` value, accuracy solid and ASR dashed, in %. ``asr_line``: a
    dotted reference line (e.g. a 10 % target). Rows without a curve are skipped; no row
    with one is an error."""
    runs = [r for r in rows if r.get("curve")]
    if not runs:
        raise ValueError("grid_curves_figure: no row has a per-epoch 'curve'")
    facets: list = []
    for r in runs:
        if r.get(facet) not in facets:
            facets.append(r.get(facet))
    labels = sorted({r.get(series) for r in runs}, key=str)
    cols = min(4, len(facets))
    nrows = -(-len(facets) // cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[str(f) for f in facets],
                        horizontal_spacing=0.05, vertical_spacing=0.12 if nrows > 1 else 0.1)
    for i, f in enumerate(facets):
        row, col = i // cols + 1, i % cols + 1
        for r in (r for r in runs if r.get(facet) == f):
            k = labels.index(r.get(series))
            color = PALETTE[k % len(PALETTE)]
            name = f"{series} {r.get(series)}"
            pts = [p for p in r["curve"] if p.get("clean_acc") is not None]
            xs = [p["epoch"] for p in pts]
            fig.add_trace(go.Scatter(x=xs, y=[100 * p["clean_acc"] for p in pts], mode="lines", line=dict(color=color),
                                     name=f"{name}: clean acc", legendgroup=f"{name}acc", showlegend=i == 0,
                                     hovertemplate=f"{f} {name}<br>epoch %{{x}}<br>clean acc %{{y:.1f}}%<extra></extra>"),
                          row=row, col=col)
            asr = [p for p in pts if p.get("asr") is not None]
            if asr:
                fig.add_trace(go.Scatter(x=[p["epoch"] for p in asr], y=[100 * p["asr"] for p in asr], mode="lines",
                                         line=dict(color=color, dash="dash"), name=f"{name}: ASR",
                                         legendgroup=f"{name}asr", showlegend=i == 0,
                                         hovertemplate=f"{f} {name}<br>epoch %{{x}}<br>ASR %{{y:.1f}}%<extra></extra>"),
                              row=row, col=col)
        if asr_line is not None:
            fig.add_hline(y=100 * asr_line, line_dash="dot", line_color="grey", row=row, col=col)
    fig.update_yaxes(range=[0, 102])
    fig.update_xaxes(title_text="epoch", row=nrows)
    fig.update_layout(title=title, template="plotly_white", width=330 * cols + 160, height=290 * nrows + 110)
    return fig
