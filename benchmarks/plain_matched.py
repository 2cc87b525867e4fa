"""Does importance matter at the same cloning strength? (issue 27 item 5; BENCHMARKS.md §6, rule 7)
Eq.(4)'s weights are not renormalised: MEDIC's default weights sum to 0.027–0.035 per image and
layer on clean data (:mod:`benchmarks.diag_weight_mass`), plain cloning's (τ = 0) to 1, so at the
same λ plain cloning's cloning term is ~30× the default's, and the architectures grid's "plain
cloning" column compares uniform weights *and* a ~30× stronger term. Here plain cloning runs at
λ = 0.1 — 3 × 0.033, the default's mean mass on the three architectures' clean data, chosen on
clean data alone — beside the default and plain cloning at λ = 3 of the architectures grid
(read, not re-run): evaluation teachers, the evaluation half of the test set, 5 % clean data,
60 epochs, two seeds, MEDIC's default ε.

    OMP_NUM_THREADS=1 python -m benchmarks.plain_matched --archs wrn16_1 --threads 2 --workers 2
    OMP_NUM_THREADS=1 python -m benchmarks.plain_matched --archs mobilenet_v1 --attacks sig --threads 2 --workers 2
    python -m benchmarks.plain_matched --report
"""

from __future__ import annotations

from benchmarks.common import (
    ARCH_ATTACKS,
    ARCH_SHOWN,
    MATCHED,
    MATCHED_POINTS,
    PLAIN_MATCHED_OUT,
    arch_rows,
    late_text,
    matched_grid,
    matched_point,
    mean_std_text,
    protocol_parser,
    run_protocol_part,
    write_table_report,
)
from medic_viz.experiments import read_runs
from medic_viz.metrics import mean_std

OUT = PLAIN_MATCHED_OUT
POINTS = MATCHED_POINTS
grid, point = matched_grid, matched_point


def _cell(rows: list[dict]) -> str:
    if not rows:
        return "–"
    acc, asr = mean_std([100 * r["clean_acc"] for r in rows]), mean_std([100 * r["asr"] for r in rows])
    return f"{mean_std_text(acc)} / {mean_std_text(asr)} (n={len(rows)}){late_text(rows)}"


def table(rows: list[dict]) -> str:
    """Markdown: per architecture and attack with a row of this grid, the teacher and each point's
    clean accuracy / ASR (%, mean ± sample std over seeds, n; the highest live ASR after epoch 20)."""
    lines = ["| Architecture | Attack | Teacher acc / ASR | MEDIC default (λ = 3) | plain cloning, λ = 3 | "
             f"{MATCHED} |", "|---|---|---|---|---|---|"]
    for arch in ARCH_SHOWN:
        for attack in ARCH_ATTACKS:
            mine = [r for r in rows if r["model"] == arch and r["attack"].startswith(attack + "_") and point(r)]
            if not any(point(r) == MATCHED for r in mine):
                continue
            t = mine[0]
            cells = [_cell([r for r in mine if point(r) == p]) for p in POINTS]
            lines.append(f"| {arch} | {attack} | {100 * t['before_clean_acc']:.1f} / {100 * t['before_asr']:.1f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def all_rows() -> list[dict]:
    """This grid's finished rows and the architectures grid's (:func:`benchmarks.common.arch_rows`)."""
    path = OUT / "runs.jsonl"
    return arch_rows() + (read_runs(path) if path.is_file() else [])


def report() -> None:
    write_table_report(OUT, lambda _: table(all_rows()))


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, ARCH_ATTACKS)
    parser.add_argument("--archs", nargs="+", default=["wrn16_1"], choices=ARCH_SHOWN)
    args = parser.parse_args(argv)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, args.device), OUT, report, archs=args.archs)


if __name__ == "__main__":
    main()
