"""Experiment grids: attacks × methods × seeds (× an ablation value), resumable, on one machine
or on a Ray cluster; and several defences side by side on one model.

Each *cell* of a grid is a pure function of its :class:`CellSpec` and of its trojaned
*teacher* (trained once per attack, seed and architecture, cached under ``DIR/teachers/``):
:func:`run_cell` builds the clean subset, runs the defence and measures clean accuracy and
ASR on the test set. Finished cells are appended to ``DIR/runs.jsonl`` as they complete, keyed
by :attr:`CellSpec.cell_id`, so running the same grid again skips them (resume after an
interruption); failed cells go to ``DIR/errors.jsonl`` and are retried next time. From the
finished cells :func:`run_grid` writes ``DIR/results.csv`` (one row per run), ``DIR/table.md``
(mean ± sample std, ddof=1, per attack and method, plus the average-drop rows of the paper's
Table 1) and ``DIR/comparison.html`` (grouped bars, or curves over τ / the data fraction for
ablations).

Modules, one concept each:

* :mod:`~medic_viz.experiments.grid`: :class:`CellSpec`, :func:`build_grid`, :func:`method_options`;
* :mod:`~medic_viz.experiments.cells`: :func:`train_teacher`, :func:`run_cell` (through
  :func:`medic_viz.pipeline.remove_backdoor`);
* :mod:`~medic_viz.experiments.executors`: ``"local"`` (in turn, or ``workers`` > 1 processes)
  and ``"ray"`` (each cell a Ray task; ``pip install 'medic-viz[ray]'``);
* :mod:`~medic_viz.experiments.runner`: the resumable runner (no figures);
* :mod:`~medic_viz.experiments.summary`: :func:`aggregate`, :func:`format_table`, the CSV;
* :mod:`~medic_viz.experiments.report` (a view, draws with :mod:`medic_viz.viz`):
  :func:`comparison_figure`, :func:`write_reports`, and :func:`run_grid` / :func:`compare`
  (the runner, then the report);
* :mod:`~medic_viz.experiments.side_by_side`: :func:`compare_defenses`, several defences on one
  trojaned model in this process (notebook 04);
* :mod:`~medic_viz.experiments.selection`: the one tuning rule — every method's free settings
  chosen on development teachers and a clean hold-out, within one accuracy budget.

Ablations of the paper, as options of the same grid (``ablation=``): ``"tau"`` (Figure 4),
``"lambda_tau"`` (Figure 6), ``"fraction"`` (Table 4), ``"criteria"`` (Figure 7), ``"arch"``
(Figure 8).
"""

from medic_viz.experiments.cells import run_cell, train_teacher
from medic_viz.experiments.grid import (
    ABLATIONS,
    ALL_METHODS,
    DEFAULT_ABLATION_VALUES,
    TABLE1_METHODS,
    CellSpec,
    build_grid,
    method_options,
)
from medic_viz.experiments.report import compare, comparison_figure, run_grid, write_reports
from medic_viz.experiments.runner import GridResult, read_runs
from medic_viz.experiments.side_by_side import compare_defenses
from medic_viz.experiments.summary import aggregate, column_labels, format_table

__all__ = [
    "CellSpec",
    "GridResult",
    "ABLATIONS",
    "DEFAULT_ABLATION_VALUES",
    "TABLE1_METHODS",
    "ALL_METHODS",
    "build_grid",
    "method_options",
    "run_cell",
    "train_teacher",
    "run_grid",
    "compare",
    "read_runs",
    "aggregate",
    "column_labels",
    "format_table",
    "comparison_figure",
    "write_reports",
    "compare_defenses",
]
