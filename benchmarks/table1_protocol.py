"""Table 1 under the development / evaluation protocol (issue 28 items 1–4): every method at the
settings the one tuning rule chose on *development* data (:mod:`benchmarks.tune_methods`'
``selections.json``; B = 3 points of clean hold-out accuracy), ANP also at its own fixed
settings, KD and Scratch (nothing to tune) — on the *evaluation* teachers (seed 1) of the
paper's attacks, measured on the *evaluation* half of the test set, three seeds.

    python -m benchmarks.tune_methods --threads 1                                     # first: the choices
    python -m benchmarks.train_teachers --role evaluation --attacks composite reflection filter   # once
    python -m benchmarks.table1_protocol --attacks badnet sig --threads 1             # a part (resumable)
    python -m benchmarks.table1_protocol --report                                     # table + figures

A method the tuning pass has not chosen for yet is left out of a part with a note (its cells
join the grid once ``selections.json`` has it); an attack without an evaluation teacher is
skipped with the command that trains it. Budget: each method's paper epochs, 5 % clean data
(the seed's class-balanced subset), as in Table 1. Finished cells:
``benchmarks/results/table1_protocol/runs.jsonl``; ``--report`` also writes ``cells.csv``, one
row per cell with the options it ran and, for a tuned cell, its tuning record (the chosen
candidate, its development hold-out drop, the budget; the whole record: ``selections.json``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from benchmarks.common import (
    DOCS,
    GTSRB,
    PROTOCOL_MEDIC,
    TABLE1_AS_IS,
    TABLE1_ATTACKS,
    TABLE1_PROTOCOL_OUT,
    TABLE1_PROTOCOL_SEEDS,
    TABLE1_TUNED,
    TUNING_OUT,
    _sorted,
    protocol_parser,
    protocol_rows,
    run_protocol_part,
)
from medic_viz.experiments import build_grid, format_table, read_runs
from medic_viz.experiments.protocol import EVALUATION
from medic_viz.experiments.selection import Selection, read_selections, tuned_cells, tuning_record
from medic_viz.experiments.summary import CSV_COLUMNS, write_csv
from medic_viz.viz import export_figure, grid_curves_figure, removal_accuracy_figure

OUT = TABLE1_PROTOCOL_OUT
FIGURES = DOCS / "table1_protocol"
SEEDS, AS_IS, TUNED = TABLE1_PROTOCOL_SEEDS, TABLE1_AS_IS, TABLE1_TUNED


def grid(teachers: list[str], seeds, selections: Mapping[str, Selection], device: str = "auto") -> list[Any]:
    """The as-is cells and the tuned cells of the methods ``selections`` has, per teacher folder
    and seed, on the evaluation half of the test set."""
    common: dict[str, Any] = dict(dataset=str(GTSRB), teachers=teachers, seeds=list(seeds), device=device,
                                  test_part=EVALUATION, medic=PROTOCOL_MEDIC)
    as_is = build_grid(methods=list(AS_IS), **common)
    chosen = [m for m in TUNED if m in selections]
    return as_is + (tuned_cells(build_grid(methods=chosen, **common), selections) if chosen else [])


def load_selections(path: Path = TUNING_OUT / "selections.json") -> dict[str, Selection]:
    """The tuning pass's choices, ``{}`` before it has chosen any."""
    return read_selections(path) if path.is_file() else {}


def report() -> None:
    """``table.md`` (the paper's layout, mean ± std, average drops with their 95 % intervals)
    and the figures: removal against accuracy, MEDIC's per-epoch curves."""
    path = OUT / "runs.jsonl"
    rows = protocol_rows(read_runs(path)) if path.is_file() else []  # MEDIC at the grid's ε only
    if not rows:
        print(f"no finished cells in {OUT}; run a part first", file=sys.stderr)
        return
    for r in rows:  # a teacher folder's cells are named after it: "badnet_wrn16_1_e30_s1" → "badnet"
        r["attack"] = r["attack"].split("_", 1)[0]
    rows = _sorted(rows)
    selections = load_selections()
    for r in rows:
        r["tuning"] = tuning_record(r, selections)
    write_csv(rows, OUT / "cells.csv", columns=[*CSV_COLUMNS, "tuning"])
    text = format_table(rows, title="Table 1 under the protocol (GTSRB, WRN-16-1, evaluation teachers and test half)")
    (OUT / "table.md").write_text(text)
    print(text)
    export_figure(removal_accuracy_figure(rows, title="Under the protocol: average ASR drop against accuracy drop"),
                  FIGURES / "removal_vs_accuracy")
    medic = [r for r in rows if r["method"] == "medic" and r.get("curve")]
    if medic:
        export_figure(grid_curves_figure(medic, facet="attack", series="seed",
                                         title="MEDIC (tuned), evaluation teachers: per-epoch curves"),
                      FIGURES / "medic_curves")


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, TABLE1_ATTACKS)
    parser.set_defaults(seeds=list(SEEDS))
    args = parser.parse_args(argv)
    selections = load_selections()
    if not args.report:
        for m in TUNED:
            if m not in selections:
                print(f"note: no tuned setting for {m} yet (python -m benchmarks.tune_methods --methods {m}); "
                      "its tuned cells are left out", file=sys.stderr)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, selections, args.device), OUT, report)


if __name__ == "__main__":
    main()
