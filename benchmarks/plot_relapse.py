"""Plot the per-epoch ASR and clean-accuracy curves of the relapse ablation
(``python -m benchmarks.ablate_relapse``) and print its table.

    python -m benchmarks.plot_relapse [--results benchmarks/results/relapse] [--out docs/relapse]

Writes ``OUT.html`` always and ``OUT.png`` where a Chromium for kaleido is available, plus
``benchmarks/results/relapse/table.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmarks.common import DOCS, RESULTS


def load_runs(folder: Path) -> list[dict]:
    """Finished runs (``*.json``) and, marked ``partial``, runs stopped before the end (``*.partial``)."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    for p in sorted(folder.glob("*.partial")):
        r = json.loads(p.read_text())
        last = r["curve"][-1]
        r.update(partial=True, epochs=last["epoch"], final_acc=last["acc"], final_asr=last["asr"], seconds=last["seconds"],
                 variant=r["variant"] + f" (stopped at epoch {last['epoch']})")
        runs.append(r)
    return runs


def table(runs: list[dict]) -> str:
    lines = [
        "| teacher | variant | seed | epochs | final acc (whole test set; live for stopped runs) | final ASR "
        "| max live ASR after epoch 20 | live ASR at epochs 10/20/30/40/50/60 | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        curve = {c["epoch"]: c for c in r["curve"]}
        marks = "/".join(f"{curve[e]['asr'] * 100:.0f}" if e in curve and curve[e]["asr"] is not None else "–"
                         for e in (10, 20, 30, 40, 50, 60))
        late = [c["asr"] for c in r["curve"] if c["epoch"] > 20 and c["asr"] is not None]
        lines.append(
            f"| {Path(r['teacher']).name} | {r['variant']} | {r['seed']} | {r['epochs']} | {r['final_acc'] * 100:.2f}% | "
            f"{r['final_asr'] * 100:.2f}% | {max(late) * 100 if late else float('nan'):.1f}% | {marks} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def figure(runs: list[dict]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("attack success rate (live, 1,000 test images)", "clean accuracy (live)"))
    for r in runs:
        name = f"{Path(r['teacher']).name.split('_')[0]} · {r['variant']} · s{r['seed']}"
        xs = [c["epoch"] for c in r["curve"]]
        fig.add_trace(go.Scatter(x=xs, y=[c["asr"] for c in r["curve"]], name=name, legendgroup=name, mode="lines"), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=[c["acc"] for c in r["curve"]], name=name, legendgroup=name, mode="lines",
                                 showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(width=1300, height=520, template="plotly_white", title="MEDIC relapse ablation (GTSRB)")
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=str(RESULTS / "relapse"))
    p.add_argument("--out", default=str(DOCS / "relapse" / "relapse_ablation"))
    args = p.parse_args(argv)
    runs = load_runs(Path(args.results))
    if not runs:
        raise SystemExit(f"no results in {args.results}")
    md = table(runs)
    print(md)
    (Path(args.results) / "table.md").write_text(md + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(runs)
    fig.write_html(str(out.with_suffix(".html")), include_plotlyjs="cdn")
    try:
        fig.write_image(str(out.with_suffix(".png")), scale=1)
    except Exception as exc:  # noqa: BLE001 - kaleido needs a Chromium; HTML is always written
        print(f"PNG not written ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
