"""Normalise less or clone less? (issue 27 item 4) MEDIC's cloning loss divides each channel's
squared difference by σ² = var + ε. On MobileNet-v1 the default ε = 1e-5 stalls the clone (the
12-epoch probes of :mod:`benchmarks.ablate_mobilenet_stall`: 8.5 % clean accuracy, against 36 %
for labels alone and 67 % with ε = 0.3); a larger ε also weakens the whole cloning term, so
this grid sets ε ∈ {0.1, 0.3, 1} beside smaller weights λ at ε = 1e-5, and λ = 0 (labels
only), at the paper's budget (5 % clean data, 60 epochs) on *development* teachers (seed 0) and
the *development* half of the test set — where the default may be chosen (BENCHMARKS.md §6 has
the rules, written before the cells ran; they moved the default ε from 1e-5 to 0.1). Resumable
(``benchmarks/results/eps_development/``; a cell goes on from its last epoch).

    OMP_NUM_THREADS=1 python -m benchmarks.eps_development --arch mobilenet_v1 --threads 2 --workers 2
    python -m benchmarks.eps_development --arch wrn16_1 --attacks badnet sig polygon wanet --variants "eps 1e-5" "eps 0.1"
    OMP_NUM_THREADS=1 python -m benchmarks.eps_development --fraction 0.02 --variants "eps 1e-5" "eps 0.1" "lam 0" --workers 2
    python -m benchmarks.eps_development --arch wrn16_1 --attacks sig --variants "eps 0.1" --seeds 0 1 --student-seeds 0 1
    python -m benchmarks.eps_development --report
"""

from __future__ import annotations

import math

import torch

from benchmarks.common import GTSRB, RESULTS, development_teachers_or_exit, variant_grid_parser, write_table_report
from medic_viz.defenses.medic import DEFAULT_LAM, PAPER_EPS
from medic_viz.experiments import build_grid, run_grid
from medic_viz.experiments.protocol import DEVELOPMENT
from medic_viz.experiments.summary import late_asr_mean

OUT = RESULTS / "eps_development"
#: The grid's points: MEDIC's options over the library's λ = 3, each with its ε named (the
#: default ε was the paper's 1e-5 when these cells ran and is 0.1 since; a named 1e-5 keeps the
#: ids of the cells that ran with it unnamed: :meth:`medic_viz.defenses.medic.Medic.pinned_options`).
VARIANTS: dict[str, dict] = {
    "eps 1e-5": {"eps": PAPER_EPS}, "lam 0": {"lam": 0.0, "eps": PAPER_EPS},
    "lam 0.3": {"lam": 0.3, "eps": PAPER_EPS}, "lam 0.03": {"lam": 0.03, "eps": PAPER_EPS},
    "eps 0.1": {"eps": 0.1}, "eps 0.3": {"eps": 0.3}, "eps 1": {"eps": 1.0},
    # rule 6 (BENCHMARKS.md §6): eq.(3) over its per-sample spread, at the default ε
    "impact scaled": {"eps": 0.1, "impact": "scaled"},
}
#: The ε and λ of a row that names neither (ε: the default when every such row ran).
BASE = {"eps": PAPER_EPS, "lam": DEFAULT_LAM}
#: MobileNet-v1's cells, in the order they run (two at a time: each ε beside a λ).
MOBILENET_VARIANTS = ("eps 0.3", "lam 0.3", "eps 0.1", "eps 1", "lam 0", "lam 0.03")
#: Epochs whose live clean accuracy the table shows.
SHOWN_EPOCHS = (5, 10, 20, 30, 45, 60)


def grid(teachers: list[str], variants, seeds=(0,), device: str = "auto", fraction: float = 0.05,
         student_seeds=None) -> list:
    """One MEDIC cell per teacher folder, variant and seed on ``fraction`` of the training set as
    clean data, on the development half; a teacher's variants next to each other (cells run in
    this order, so a part cut short compares whole teachers). ``student_seeds``: per seed, one cell
    for each of these student initialisations (``student_seed``; by default the cell's seed, which
    also draws the clean subset and the data order) — a cell whose student seed is its seed is the
    plain cell, with its id."""
    cells = []
    for teacher in teachers:
        for name in variants:
            for seed in seeds:
                for init in (seed,) if student_seeds is None else student_seeds:
                    options = {**VARIANTS[name], **({"student_seed": int(init)} if init != seed else {})}
                    cells += build_grid(dataset=str(GTSRB), teachers=[teacher], methods=["medic"], seeds=[seed],
                                        device=device, test_part=DEVELOPMENT, medic=options or None,
                                        fraction=fraction)
    return cells


def _seed_text(row: dict) -> str:
    """``"0"``, or ``"0 (init 1)"`` for a row whose student was initialised with another seed."""
    init = (row.get("method_options") or {}).get("student_seed", row["seed"])
    return f"{row['seed']}" + (f" (init {init})" if init != row["seed"] else "")


def variant_of(row: dict) -> str | None:
    """The name of ``row``'s variant (its ε, λ and impact mode; other options at the library's
    defaults), else None."""
    options = row.get("method_options") or {}
    if str(options.get("layers", "auto")) != "auto" or options.get("sigma_floor"):
        return None
    point = (float(options.get("eps", BASE["eps"])), float(options.get("lam", BASE["lam"])),
             options.get("impact", "signed"))
    for name, changed in VARIANTS.items():
        if point == (float(changed.get("eps", BASE["eps"])), float(changed.get("lam", BASE["lam"])),
                     changed.get("impact", "signed")):
            return name
    return None


def table(rows: list[dict]) -> str:
    """Markdown, one line per finished cell: the teacher, the variant, clean accuracy per epoch
    (1,000 live images of the development half), and the whole half's accuracy and ASR after."""
    shown = " | ".join(f"ep {e}" for e in SHOWN_EPOCHS)
    lines = [f"| teacher | clean data | variant | seed | {shown} | clean acc: teacher → clone (drop) | ASR (%) | seconds |",
             "|" + "---|" * (7 + len(SHOWN_EPOCHS))]
    order = list(VARIANTS)
    named = [(variant_of(r), r) for r in rows]
    for name, r in sorted(((n, r) for n, r in named if n is not None),
                          key=lambda p: (p[1]["attack"], -p[1]["fraction"], order.index(p[0]), p[1]["seed"], _seed_text(p[1]))):
        live = {p["epoch"]: p["clean_acc"] for p in r.get("curve") or [] if p.get("clean_acc") is not None}
        accs = " | ".join(f"{100 * live[e]:.0f}" if e in live else "–" for e in SHOWN_EPOCHS)
        drop = 100 * (r["before_clean_acc"] - r["clean_acc"])
        lines.append(f"| {r['attack']} | {100 * r['fraction']:g} % | {name} | {_seed_text(r)} | {accs} | "
                     f"{100 * r['before_clean_acc']:.1f} → "
                     f"{100 * r['clean_acc']:.1f} ({drop:.1f}) | {100 * r['asr']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


#: Rule 3 B (BENCHMARKS.md §6): its teachers, cell seeds, ε values and threshold (live ASR's
#: last-10-epoch mean, fraction).
RULE3_TEACHERS = ("sig_wrn16_1_e30_s0", "polygon_wrn16_1_e30_s0")
RULE3_SEEDS = (0, 1, 2, 3)
RULE3_VARIANTS = ("eps 1e-5", "eps 0.1")
RULE3_THRESHOLD = 0.10


def _rule_runs(rows: list[dict], fraction: float) -> dict[tuple, dict]:
    """Rule 3 B's / rule 5's runs at ``fraction`` clean data, by (variant, teacher, seed): the
    teachers and seeds of :data:`RULE3_TEACHERS` / :data:`RULE3_SEEDS`, students starting from
    the cell's seed."""
    runs: dict[tuple, dict] = {}
    for r in rows:
        init = (r.get("method_options") or {}).get("student_seed", r["seed"])
        if r["attack"] in RULE3_TEACHERS and math.isclose(r["fraction"], fraction) and init == r["seed"]:
            runs[(variant_of(r), r["attack"], r["seed"])] = r
    return runs


def _above(runs: dict[tuple, dict], name: str) -> tuple[int, int]:
    """(runs of variant ``name`` whose last-10 mean of the live ASR is above the threshold, runs
    with such a mean)."""
    lates = [late_asr_mean(r.get("curve")) for (v, _, _), r in runs.items() if v == name]
    known = [x for x in lates if x is not None]
    return sum(x > RULE3_THRESHOLD for x in known), len(known)


def rule3_table(rows: list[dict], fraction: float = 0.05, variants: tuple[str, ...] = RULE3_VARIANTS) -> str:
    """Rule 3 B's count (rule 5's at ``fraction`` = 0.1; rule 6 B's with ``variants``): per variant,
    each (teacher, seed) run whose student starts from the cell's seed — final ASR / last-10 mean
    of the live ASR (%) — and how many of them have a last-10 mean above the threshold; a missing
    run shows "–". An ε variant is named by its ε alone."""
    runs = _rule_runs(rows, fraction)
    head = [f"{t.split('_')[0]} s{seed}" for t in RULE3_TEACHERS for seed in RULE3_SEEDS]
    first = "ε" if all(name.startswith("eps ") for name in variants) else "variant"
    lines = [f"| {first} | " + " | ".join(head) + " | last-10 mean > 10 % |", "|" + "---|" * (len(head) + 2)]
    for name in variants:
        cells = []
        for teacher in RULE3_TEACHERS:
            for seed in RULE3_SEEDS:
                r = runs.get((name, teacher, seed)) or {}
                late = late_asr_mean(r.get("curve")) if r else None
                cells.append("–" if late is None else f"{100 * r['asr']:.1f} / {100 * late:.1f}")
        above, n = _above(runs, name)
        label = name[4:] if first == "ε" else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {above} of {n} |")
    return "\n".join(lines) + "\n"


#: Rule 5 (BENCHMARKS.md §6): the fractions pooled, and how many fewer runs above the threshold
#: ε = 1e-5 must have than ε = 0.1 for rule 3's per-model ε to be tried.
RULE5_FRACTIONS = (0.05, 0.1)
RULE5_MARGIN = 3


def rule5_verdict(rows: list[dict]) -> str:
    """Rule 5's pooled count over :data:`RULE5_FRACTIONS` and its decision, once every run is in
    (16 per ε), else how many are."""
    counts = {name: [0, 0] for name in RULE3_VARIANTS}
    for fraction in RULE5_FRACTIONS:
        runs = _rule_runs(rows, fraction)
        for name in RULE3_VARIANTS:
            above, n = _above(runs, name)
            counts[name][0] += above
            counts[name][1] += n
    whole = len(RULE5_FRACTIONS) * len(RULE3_TEACHERS) * len(RULE3_SEEDS)
    text = "; ".join(f"ε = {name[4:]}: {above} of {n} above 10 %" for name, (above, n) in counts.items())
    if any(n < whole for _, n in counts.values()):
        return f"Rule 5 (5 % and 10 % pooled): {text} — not decided yet ({whole} runs per ε needed)."
    fewer = counts["eps 0.1"][0] - counts["eps 1e-5"][0]
    move = fewer >= RULE5_MARGIN
    return (f"Rule 5 (5 % and 10 % pooled): {text}; ε = 1e-5 has {fewer} fewer (needed: {RULE5_MARGIN}) — "
            + ("try rule 3's per-model ε on fresh (seed-2) evaluation teachers." if move else "ε stays 0.1."))


#: Rule 6 (BENCHMARKS.md §6, written before its cells): the variant tried, the default it is held
#: against, A's cells (MobileNet-v1 SIG development teacher, 5 % clean data, these seeds; each must
#: end at ≤ 10 % ASR) and B's accuracy guard (mean clean accuracy at most this far below the
#: default's, fraction).
RULE6_VARIANT, RULE6_DEFAULT = "impact scaled", "eps 0.1"
RULE6_A_TEACHER, RULE6_A_SEEDS = "sig_mobilenet_v1_e30_s0", (0, 1)
RULE6_ACC_MARGIN = 0.005


def _pooled(rows: list[dict], name: str) -> tuple[int, list[float], list[float]]:
    """Over rule 5's fractions: (runs of variant ``name`` above the threshold, their last-10 live
    ASR means, their clean accuracies)."""
    above, lates, accs = 0, [], []
    for fraction in RULE5_FRACTIONS:
        for (variant, _, _), r in _rule_runs(rows, fraction).items():
            late = late_asr_mean(r.get("curve")) if variant == name else None
            if late is not None:
                above += late > RULE3_THRESHOLD
                lates.append(late)
                accs.append(r["clean_acc"])
    return above, lates, accs


def rule6_verdict(rows: list[dict]) -> str:
    """Rule 6's decision once A's runs and B's 16 runs are in, else how many are: ``impact="scaled"``
    is a *candidate* default iff B's mean clean accuracy is within :data:`RULE6_ACC_MARGIN` of the
    default's and either every A run ends at ≤ 10 % ASR or B has fewer relapsing runs and a lower
    mean last-10 live ASR than the default."""
    a_runs = [r for r in rows if r["attack"] == RULE6_A_TEACHER and variant_of(r) == RULE6_VARIANT
              and math.isclose(r["fraction"], 0.05) and r["seed"] in RULE6_A_SEEDS
              and (r.get("method_options") or {}).get("student_seed", r["seed"]) == r["seed"]]
    whole = len(RULE5_FRACTIONS) * len(RULE3_TEACHERS) * len(RULE3_SEEDS)
    stats = {name: _pooled(rows, name) for name in (RULE6_DEFAULT, RULE6_VARIANT)}
    if len(a_runs) < len(RULE6_A_SEEDS) or any(len(lates) < whole for _, lates, _ in stats.values()):
        counts = ", ".join(f"{name}: {len(lates)} of {whole}" for name, (_, lates, _) in stats.items())
        return f"Rule 6: not decided yet (A: {len(a_runs)} of {len(RULE6_A_SEEDS)} runs; B: {counts})."
    (d_above, d_lates, d_accs), (v_above, v_lates, v_accs) = stats[RULE6_DEFAULT], stats[RULE6_VARIANT]
    d_acc, v_acc = sum(d_accs) / whole, sum(v_accs) / whole
    d_late, v_late = sum(d_lates) / whole, sum(v_lates) / whole
    a_ok = all(r["asr"] <= RULE3_THRESHOLD for r in a_runs)
    b_better = v_above < d_above and v_late < d_late
    acc_ok = v_acc >= d_acc - RULE6_ACC_MARGIN - 1e-12
    text = (f"Rule 6 (B: 5 % and 10 % pooled, {whole} runs each): {RULE6_DEFAULT} {d_above} of {whole} above 10 %, "
            f"mean last-10 live ASR {100 * d_late:.1f} %, mean clean accuracy {100 * d_acc:.2f} %; {RULE6_VARIANT} "
            f"{v_above} of {whole}, {100 * v_late:.1f} %, {100 * v_acc:.2f} % (guard: within "
            f"{100 * RULE6_ACC_MARGIN:.1f} points: {'met' if acc_ok else 'missed'}); A: "
            + ", ".join(f"{100 * r['asr']:.1f} %" for r in sorted(a_runs, key=lambda r: r["seed"]))
            + f" ASR ({'all' if a_ok else 'not all'} ≤ 10 %); B {'fewer and lower' if b_better else 'not fewer and lower'}")
    if acc_ok and (a_ok or b_better):
        return text + " — a candidate: run it on fresh (seed-2) evaluation teachers before any default changes."
    return text + " — no candidate: the option stays documented and the default does not move."


def report() -> None:
    write_table_report(OUT, lambda rows: table(rows) + "\nRule 3 B (final ASR / last-10 mean, %):\n\n" + rule3_table(rows)
                       + "\nRule 5, 10 % clean data (final ASR / last-10 mean, %):\n\n" + rule3_table(rows, 0.1)
                       + "\n" + rule5_verdict(rows) + "\n"
                       + "".join(f"\nRule 6 B, {100 * f:g} % clean data (final ASR / last-10 mean, %):\n\n"
                                 + rule3_table(rows, f, (RULE6_DEFAULT, RULE6_VARIANT)) for f in RULE5_FRACTIONS)
                       + "\n" + rule6_verdict(rows) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = variant_grid_parser(__doc__.split("\n\n")[0], ["badnet"], VARIANTS, MOBILENET_VARIANTS, [0])
    parser.add_argument("--student-seeds", nargs="+", type=int, default=None,
                        help="per seed, a cell for each of these student initialisations (default: the seed's own)")
    args = parser.parse_args(argv)
    if args.report:
        report()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers = development_teachers_or_exit(parser, args.attacks, args.arch)
    cells = grid(teachers, args.variants, args.seeds, args.device, args.fraction, args.student_seeds)
    result = run_grid(cells, OUT, workers=args.workers, log=print, write=False)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


if __name__ == "__main__":
    main()
