"""Table 1 under the development / evaluation protocol (issue 28 items 1–4): every method at the
settings the one tuning rule chose on *development* data (:mod:`benchmarks.tune_methods`'
``selections.json``; B = 3 points of clean hold-out accuracy), ANP also at its own fixed
settings, KD and Scratch (nothing to tune) — on the *evaluation* teachers (seed 1) of the
paper's attacks, measured on the *evaluation* half of the test set, three seeds.

    python -m benchmarks.tune_methods --threads 1                                     # first: the choices
    python -m benchmarks.train_teachers --role evaluation --attacks composite reflection filter   # once
    python -m benchmarks.table1_protocol --attacks badnet sig --threads 1             # a part (resumable)
    python -m benchmarks.table1_protocol --report                                     # table + figures
    python -m benchmarks.table1_protocol --eps 0.1 --threads 1 --workers 2            # MEDIC at its default ε
    python -m benchmarks.table1_protocol --eps 0.1 --report                           # rule 9's table

A method the tuning pass has not chosen for yet is left out of a part with a note (its cells
join the grid once ``selections.json`` has it); an attack without an evaluation teacher is
skipped with the command that trains it. Budget: each method's paper epochs, 5 % clean data
(the seed's class-balanced subset), as in Table 1. Finished cells:
``benchmarks/results/table1_protocol/runs.jsonl``; ``--report`` also writes ``cells.csv``, one
row per cell with the options it ran and, for a tuned cell, its tuning record (the chosen
candidate, its development hold-out drop, the budget; the whole record: ``selections.json``).

MEDIC's committed cells ran at the paper's ε = 1e-5, its default until 2026-12-05. ``--eps 0.1``
(BENCHMARKS.md §6, rule 9) runs MEDIC at the library's default ε with the share its own tuning
pass chose at that ε (``tune_methods --methods medic --eps 0.1``: ``selections_eps0_1.json``); the
other methods' cells have no ε, so they are the committed ones (the same ids). Its report writes
``table_eps0_1.md`` and ``cells_eps0_1.csv``, with MEDIC at 1e-5 as a column of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from benchmarks.common import (
    DOCS,
    GTSRB,
    TABLE1_AS_IS,
    TABLE1_ATTACKS,
    TABLE1_PROTOCOL_OUT,
    TABLE1_PROTOCOL_SEEDS,
    TABLE1_TUNED,
    TUNING_OUT,
    _sorted,
    eps_of,
    eps_suffix,
    medic_at,
    protocol_parser,
    protocol_rows,
    run_protocol_part,
)
from medic_viz.defenses.medic import DEFAULT_EPS_MEDIC, PAPER_EPS
from medic_viz.experiments import build_grid, format_table, read_runs
from medic_viz.experiments.protocol import EVALUATION
from medic_viz.experiments.selection import Selection, read_selections, tuned_cells, tuning_record
from medic_viz.experiments.summary import CSV_COLUMNS, write_csv
from medic_viz.viz import export_figure, grid_curves_figure, removal_accuracy_figure

OUT = TABLE1_PROTOCOL_OUT
FIGURES = DOCS / "table1_protocol"
SEEDS, AS_IS, TUNED = TABLE1_PROTOCOL_SEEDS, TABLE1_AS_IS, TABLE1_TUNED
#: what MEDIC's 1e-5 column is named after in a table at another ε
EARLIER_EPS = f", ε = {PAPER_EPS:g}"


def grid(teachers: list[str], seeds, selections: Mapping[str, Selection], device: str = "auto",
         eps: float = PAPER_EPS) -> list[Any]:
    """The as-is cells and the tuned cells of the methods ``selections`` has, per teacher folder
    and seed, on the evaluation half of the test set; MEDIC at ``eps`` (default: the paper's,
    which the committed cells ran with)."""
    common: dict[str, Any] = dict(dataset=str(GTSRB), teachers=teachers, seeds=list(seeds), device=device,
                                  test_part=EVALUATION, medic=medic_at(eps))
    as_is = build_grid(methods=list(AS_IS), **common)
    chosen = [m for m in TUNED if m in selections]
    return as_is + (tuned_cells(build_grid(methods=chosen, **common), selections) if chosen else [])


def load_selections(path: Path = TUNING_OUT / "selections.json", eps: float = PAPER_EPS) -> dict[str, Selection]:
    """The tuning pass's choices, ``{}`` before it has chosen any; at another ε than the paper's,
    MEDIC's is the choice of its pass at that ε (``selections_eps0_1.json``; absent until it has
    chosen), the others' are the same."""
    chosen = read_selections(path) if path.is_file() else {}
    if eps != PAPER_EPS:
        chosen.pop("medic", None)
        at_eps = path.with_name(f"{path.stem}{eps_suffix(eps)}{path.suffix}")
        if at_eps.is_file():
            chosen.update({m: s for m, s in read_selections(at_eps).items() if m == "medic"})
    return chosen


def rows_at(rows: list[dict], eps: float = PAPER_EPS) -> list[dict]:
    """What the table at MEDIC's ``eps`` reports: at the paper's, the committed grid (MEDIC at
    1e-5); at another, every method's rows with MEDIC's at that ε, and MEDIC's at 1e-5 beside
    them as a column of their own (variant "…, ε = 1e-05")."""
    out = protocol_rows(rows, medic_at(eps))
    if eps != PAPER_EPS:
        out += [{**r, "variant": f"{r['variant']}{EARLIER_EPS}"} for r in rows
                if r.get("method") == "medic" and eps_of(r) == PAPER_EPS]
    return out


def report(eps: float = PAPER_EPS) -> None:
    """``table.md`` (the paper's layout, mean ± std, average drops with their 95 % intervals)
    and the figures: removal against accuracy, MEDIC's per-epoch curves; at another ε than the
    paper's, ``table_eps0_1.md``, ``cells_eps0_1.csv`` and figures named so (:func:`rows_at`)."""
    path = OUT / "runs.jsonl"
    rows = rows_at(read_runs(path), eps) if path.is_file() else []
    if not rows:
        print(f"no finished cells in {OUT}; run a part first", file=sys.stderr)
        return
    for r in rows:  # a teacher folder's cells are named after it: "badnet_wrn16_1_e30_s1" → "badnet"
        r["attack"] = r["attack"].split("_", 1)[0]
    rows = _sorted(rows)
    suffix = eps_suffix(eps)
    selections = {e: load_selections(eps=e) for e in {PAPER_EPS, eps}}
    for r in rows:
        old = r["variant"].endswith(EARLIER_EPS)  # MEDIC at 1e-5 beside the table at another ε
        r["tuning"] = tuning_record(r, selections[PAPER_EPS if old else eps], suffix=", tuned" + (EARLIER_EPS if old else ""))
    write_csv(rows, OUT / f"cells{suffix}.csv", columns=[*CSV_COLUMNS, "tuning"])
    title = "Table 1 under the protocol (GTSRB, WRN-16-1, evaluation teachers and test half)"
    text = format_table(rows, title=title if eps == PAPER_EPS else f"{title}, MEDIC at ε = {eps:g}")
    (OUT / f"table{suffix}.md").write_text(text)
    print(text)
    export_figure(removal_accuracy_figure(rows, title="Under the protocol: average ASR drop against accuracy drop"),
                  FIGURES / f"removal_vs_accuracy{suffix}")
    medic = [r for r in rows if r["method"] == "medic" and r.get("curve") and eps_of(r) == eps]
    if medic:
        export_figure(grid_curves_figure(medic, facet="attack", series="seed",
                                         title="MEDIC (tuned), evaluation teachers: per-epoch curves"
                                         + ("" if eps == PAPER_EPS else f", ε = {eps:g}")),
                      FIGURES / f"medic_curves{suffix}")


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, TABLE1_ATTACKS)
    parser.set_defaults(seeds=list(SEEDS))
    parser.add_argument("--eps", type=float, default=PAPER_EPS, choices=(PAPER_EPS, DEFAULT_EPS_MEDIC),
                        help="MEDIC's ε (default: the paper's, which the committed cells ran with)")
    args = parser.parse_args(argv)
    selections = load_selections(eps=args.eps)
    if not args.report:
        for m in TUNED:
            if m not in selections:
                at_eps = "" if args.eps == PAPER_EPS or m != "medic" else f" --eps {args.eps:g}"
                print(f"note: no tuned setting for {m} yet (python -m benchmarks.tune_methods --methods {m}{at_eps}); "
                      "its tuned cells are left out", file=sys.stderr)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, selections, args.device, args.eps), OUT,
                      lambda: report(args.eps))


if __name__ == "__main__":
    main()
