"""Does MEDIC's clean hold-out see what cloning costs? (issue 27 item 3)

``holdout_fraction`` keeps part of the clean data out of training and compares the clone with
the teacher on it — the one measure a defender without test data has. This benchmark runs it
on the *development* teachers (seed 0) and the *development* half of the test set, with scarce
(1 %) and the paper's (5 %) clean data, for the library's layer cut and every conv/norm output,
and sets the hold-out gap beside the test-set drop it is meant to stand for. Nothing is chosen
from it.

    python -m benchmarks.holdout_gap --attacks badnet sig --fractions 0.01 0.05 --threads 1   # a part
    python -m benchmarks.holdout_gap --attacks badnet sig --fractions 0.05 --clean-from tracks --threads 1
    python -m benchmarks.holdout_gap --report                                                 # the table

Two biases, both visible in the table: the teachers trained on the whole training set, hold-out
included, so their hold-out accuracy is training accuracy (the gap reads larger); and GTSRB's
hold-out images come from the same 30-frame tracks as the clone's training images (the clone's
hold-out accuracy reads higher than on new tracks) — except with ``--clean-from tracks``, where
the hold-out is whole tracks of the clean data (``ImageArrays.groups``). Resumable
(``benchmarks/results/holdout_gap/runs.jsonl``).
"""

from __future__ import annotations

from benchmarks.common import (
    GTSRB,
    RESULTS,
    development_parser,
    run_development_part,
    write_table_report,
)
from medic_viz.data.tracks import CLEAN_FROM
from medic_viz.defenses.medic import HOLDOUT_GAP_POINTS
from medic_viz.experiments import build_grid
from medic_viz.experiments.protocol import DEVELOPMENT

OUT = RESULTS / "holdout_gap"
ATTACKS = ("badnet", "sig")
FRACTIONS = (0.01, 0.05)
LAYER_SETS = ("auto", "conv+bn")
#: The share of each cell's clean data held out.
HOLDOUT = 0.2


def grid(teachers: list[str], seeds, fractions=FRACTIONS, layer_sets=LAYER_SETS, device: str = "auto",
         clean_from: str = "images") -> list:
    """MEDIC with a clean hold-out, per teacher × fraction × layer set × seed, development half;
    ``clean_from="tracks"``: the clean data from few tracks, the hold-out whole tracks of it."""
    cells = []
    for fraction in fractions:
        for layers in layer_sets:
            cells += build_grid(dataset=str(GTSRB), teachers=teachers, methods=["medic"], seeds=list(seeds),
                                fraction=fraction, device=device, test_part=DEVELOPMENT,
                                medic={"layers": layers, "holdout_fraction": HOLDOUT},
                                clean_from=None if clean_from == "images" else clean_from)
    return cells


def table(rows: list[dict]) -> str:
    """Markdown, one line per run: test-set accuracy drop against the hold-out gap (points)."""
    lines = ["| teacher | clean data | layers | test acc: teacher → clone (drop) | ASR | hold-out images | "
             "hold-out acc: teacher → clone (gap) | note (gap > 3) |", "|" + "---|" * 8]
    for r in sorted(rows, key=lambda r: (r["attack"], r.get("clean_from") or "images", r["fraction"],
                                         r["method_options"].get("layers", ""), r["seed"])):
        held = (r.get("extra") or {}).get("holdout")
        if not held:
            continue
        drop = 100 * (r["before_clean_acc"] - r["clean_acc"])
        source = " from few tracks" if r.get("clean_from") == "tracks" else ""
        whole = " whole tracks" if held.get("whole_groups") else ""
        lines.append(
            f"| {r['attack']} | {100 * r['fraction']:g} % ({r['n_clean_subset']:,}){source} | "
            f"{r['method_options'].get('layers')} | "
            f"{100 * r['before_clean_acc']:.1f} → {100 * r['clean_acc']:.1f} ({drop:.1f}) | {100 * r['asr']:.1f} | "
            f"{held['images']:,}{whole} | {100 * held['teacher_acc']:.1f} → {100 * held['clone_acc']:.1f} "
            f"({held['gap_points']:.1f}) | {'yes' if held['gap_points'] > HOLDOUT_GAP_POINTS else 'no'} |")
    return "\n".join(lines) + "\n"


def report() -> None:
    write_table_report(OUT, table)


def main(argv: list[str] | None = None) -> None:
    parser = development_parser(__doc__, ATTACKS, FRACTIONS, LAYER_SETS)
    parser.add_argument("--clean-from", default="images", choices=CLEAN_FROM,
                        help="the clean data at random (images) or from few tracks, held out as whole tracks")
    args = parser.parse_args(argv)
    run_development_part(args, parser, lambda teachers: grid(teachers, args.seeds, args.fractions, args.layers,
                                                             args.device, args.clean_from), OUT, report)


if __name__ == "__main__":
    main()
