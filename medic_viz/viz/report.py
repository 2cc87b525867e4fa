"""The report of one backdoor-removal run: its curves as an HTML page, written beside the
run's ``result.json`` and repaired ``model/`` (what ``medic-viz defend`` / ``demo`` write)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from medic_viz import pipeline  # pipeline.save_outcome looked up at call time (bench_defend_run times it)
from medic_viz.viz.curves import training_curves_figure

if TYPE_CHECKING:  # pragma: no cover - typing only
    from medic_viz.cards import ModelCard
    from medic_viz.pipeline import RemovalOutcome

__all__ = ["removal_figure", "write_outputs"]


def removal_figure(outcome: "RemovalOutcome") -> go.Figure:
    """Training curves of ``outcome``'s run, titled with its final clean accuracy and ASR,
    the trojaned model's numbers drawn as dotted baselines."""
    after = outcome.after
    return training_curves_figure(
        {outcome.method: outcome.result.history},
        title=f"{outcome.method}: clean accuracy {100 * after.clean_acc:.1f}%, "
        f"ASR {'n/a' if after.asr is None else f'{100 * after.asr:.1f}%'} after",
        baseline={"clean_acc": outcome.before.clean_acc, "asr": outcome.before.asr},
    )


def write_outputs(
    outcome: "RemovalOutcome",
    out_dir: str | Path,
    *,
    teacher_card: "ModelCard | None" = None,
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write ``result.json`` and the repaired model (``model/``, given the teacher's card) with
    :func:`medic_viz.pipeline.save_outcome`, and ``report.html`` (curves, self-contained).
    Returns ``{"result", "report", "model"}`` paths."""
    saved = pipeline.save_outcome(outcome, out_dir, teacher_card=teacher_card, extra=extra)
    report = Path(out_dir) / "report.html"
    removal_figure(outcome).write_html(report, include_plotlyjs=True, full_html=True)
    return {"result": saved["result"], "report": report, "model": saved["model"]}
