"""Does MEDIC's clean hold-out see what cloning costs? (issue 27 item 3)

``holdout_fraction`` keeps part of the clean data out of training and compares the clone with
the teacher on it — the one measure a defender without test data has. This benchmark runs it
on the *development* teachers (seed 0) and the *development* half of the test set, with scarce
(1 %) and the paper's (5 %) clean data, for the library's layer cut and every conv/norm output,
and sets the hold-out gap beside the test-set drop it is meant to stand for. Nothing is chosen
from it.

    python -m benchmarks.holdout_gap --attacks badnet sig --fractions 0.01 0.05 --threads 1   # a part
    python -m benchmarks.holdout_gap --report                                                 # the table

Two biases, both visible in the table: the teachers trained on the whole training set, hold-out
included, so their hold-out accuracy is training accuracy (the gap reads larger); and GTSRB's
hold-out images come from the same 30-frame tracks as the clone's training images (the clone's
hold-out accuracy reads higher than on new tracks). Resumable
(``benchmarks/results/holdout_gap/runs.jsonl``).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import GTSRB, RESULTS, teachers_of_role
from medic_viz.defenses.medic import HOLDOUT_GAP_POINTS
from medic_viz.experiments import build_grid, read_runs, run_grid
from medic_viz.experiments.protocol import DEVELOPMENT

OUT = RESULTS / "holdout_gap"
ATTACKS = ("badnet", "sig")
FRACTIONS = (0.01, 0.05)
LAYER_SETS = ("auto", "conv+bn")
#: The share of each cell's clean data held out.
HOLDOUT = 0.2


def grid(teachers: list[str], seeds, fractions=FRACTIONS, layer_sets=LAYER_SETS, device: str = "auto") -> list:
    """MEDIC with a clean hold-out, per teacher × fraction × layer set × seed, development half."""
    cells = []
    for fraction in fractions:
        for layers in layer_sets:
            cells += build_grid(dataset=str(GTSRB), teachers=teachers, methods=["medic"], seeds=list(seeds),
                                fraction=fraction, device=device, test_part=DEVELOPMENT,
                                medic={"layers": layers, "holdout_fraction": HOLDOUT})
    return cells


def table(rows: list[dict]) -> str:
    """Markdown, one line per run: test-set accuracy drop against the hold-out gap (points)."""
    lines = ["| teacher | clean data | layers | test acc: teacher → clone (drop) | ASR | hold-out images | "
             "hold-out acc: teacher → clone (gap) | note (gap > 3) |", "|" + "---|" * 8]
    for r in sorted(rows, key=lambda r: (r["attack"], r["fraction"], r["method_options"].get("layers", ""), r["seed"])):
        held = (r.get("extra") or {}).get("holdout")
        if not held:
            continue
        drop = 100 * (r["before_clean_acc"] - r["clean_acc"])
        lines.append(
            f"| {r['attack']} | {100 * r['fraction']:g} % ({r['n_clean_subset']:,}) | {r['method_options'].get('layers')} | "
            f"{100 * r['before_clean_acc']:.1f} → {100 * r['clean_acc']:.1f} ({drop:.1f}) | {100 * r['asr']:.1f} | "
            f"{held['images']:,} | {100 * held['teacher_acc']:.1f} → {100 * held['clone_acc']:.1f} "
            f"({held['gap_points']:.1f}) | {'yes' if held['gap_points'] > HOLDOUT_GAP_POINTS else 'no'} |")
    return "\n".join(lines) + "\n"


def report() -> None:
    rows = read_runs(OUT / "runs.jsonl") if (OUT / "runs.jsonl").is_file() else []
    text = table(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--layers", nargs="+", default=list(LAYER_SETS), choices=LAYER_SETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only write the table from finished cells")
    args = parser.parse_args(argv)
    if args.report:
        report()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers, missing = teachers_of_role(args.attacks, DEVELOPMENT)
    if missing:
        parser.error(f"no development teacher for {', '.join(missing)} (python -m benchmarks.train_teachers)")
    result = run_grid(grid(teachers, args.seeds, args.fractions, args.layers, args.device), OUT, log=print)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


if __name__ == "__main__":
    main()
