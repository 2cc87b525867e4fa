"""The report of a grid (a view): ``results.csv`` (one row per run), ``table.md`` (the paper's
Table-1 layout) and ``comparison.html`` (a figure drawn by :mod:`medic_viz.viz`), and
:func:`run_grid` / :func:`compare`, which run a grid with :mod:`medic_viz.experiments.runner`
and then write this report.

Nothing in the runner, the cells or the grid imports this module or :mod:`medic_viz.viz`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medic_viz.experiments import runner
from medic_viz.experiments.grid import CellSpec, build_grid
from medic_viz.experiments.summary import format_table, write_csv
from medic_viz.outdir import replace_file

__all__ = ["comparison_figure", "write_reports", "run_grid", "compare"]

_XLABELS = {"fraction": "clean data fraction"}


def comparison_figure(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Any:
    """Plotly figure of finished rows, mean ± sample std (ddof=1) over seeds: for a comparison
    grouped bars (:func:`medic_viz.viz.defense_comparison_figure`: one group per attack, one
    bar per method, the trojaned models as "Original"); for an ablation, clean accuracy and
    ASR against the swept value, one pair of curves per series
    (:func:`medic_viz.viz.tau_sweep_figure`)."""
    # the experiments package (core) re-exports this view: importing the core must load no plotting
    from medic_viz.viz import summary_figures  # noqa: PLC0415 — plotly, loaded only when a figure is drawn

    if not rows:
        raise ValueError("comparison_figure: no finished rows to draw")
    ablation = rows[0].get("ablation", "none")
    if ablation == "none":
        teachers: dict[str, Mapping[str, Any]] = {}
        for r in rows:
            teachers.setdefault(r["teacher_id"], r)
        data = [{"attack": r["attack"], "variant": "Original", "clean_acc": r["before_clean_acc"], "asr": r["before_asr"]}
                for r in teachers.values()]
        data += [{"attack": r["attack"], "variant": r["variant"], "clean_acc": r["clean_acc"], "asr": r["asr"]}
                 for r in rows]
        metrics = ("clean_acc", "asr") if all(d["asr"] is not None for d in data) else ("clean_acc",)
        return summary_figures.defense_comparison_figure(
            data, x="attack", group_by="variant", metrics=metrics,
            title=title or "Backdoor removal: clean accuracy and ASR (mean ± sample std over seeds)")
    data = [{"tau": r["x"], "series": r["series"], "clean_acc": r["clean_acc"], "asr": r["asr"]} for r in rows]
    fig = summary_figures.tau_sweep_figure(
        data, group_by="series", title=title or f"Ablation {ablation}: clean accuracy and ASR (mean ± sample std over seeds)")
    fig.update_xaxes(title_text=_XLABELS.get(ablation, "temperature τ"))
    return fig


def write_reports(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``table.md`` and ``comparison.html`` (self-contained) for ``rows``
    into ``out_dir``; returns ``{"csv", "table", "figure"}`` paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "table": out / "table.md", "figure": out / "comparison.html"}
    # each file is written beside its name and renamed over it: a report is never half-written
    table = format_table(rows, title=title)
    figure = comparison_figure(rows, title=title)
    replace_file(paths["csv"], lambda tmp: write_csv(rows, tmp))
    replace_file(paths["table"], lambda tmp: tmp.write_text(table))
    replace_file(paths["figure"], lambda tmp: figure.write_html(tmp, include_plotlyjs=True, full_html=True))
    return paths


def run_grid(
    cells: Sequence[CellSpec],
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    log: Callable[[str], None] | None = print,
    write: bool = True,
) -> runner.GridResult:
    """:func:`medic_viz.experiments.runner.run_grid` (every cell not already in
    ``out_dir/runs.jsonl``, teachers first, failures listed and retried next time), then —
    with ``write=True`` — the CSV, table and figure of :func:`write_reports`."""
    return runner.run_grid(cells, out_dir, executor=executor, workers=workers, address=address, log=log,
                           report=write_reports if write else None)


def compare(out_dir: str | Path, *, executor: str = "local", workers: int = 1, address: str | None = None,
            log: Callable[[str], None] | None = print, **grid: Any) -> runner.GridResult:
    """:func:`build_grid` with ``grid`` keyword options, then :func:`run_grid`."""
    return run_grid(build_grid(**grid), out_dir, executor=executor, workers=workers, address=address, log=log)
