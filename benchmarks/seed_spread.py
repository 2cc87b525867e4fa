"""More seeds where two cannot tell (BENCHMARKS.md §6, rule 8): on WRN-16-1's SIG and Polygon
evaluation teachers the default's ASR moved by ±30 points between the protocol's two seeds
(late relapses), more than any difference between importance weighting and uniform weights.
Here seeds 2–5 of the three points of rule 7 — MEDIC's default, plain cloning (τ = 0) at
λ = 3 and at λ = 0.1, the default's cloning strength — run beside seeds 0–1 (the architectures
grid's and ``plain_matched``'s cells, read, not re-run): evaluation teachers, the evaluation
half of the test set, 5 % clean data, 60 epochs, MEDIC's default ε. The architectures table
keeps its protocol seeds (every row the same chance); this table has every seed, per seed and
paired by seed (the same seed: the same clean images and the same fresh clone).

    OMP_NUM_THREADS=1 python -m benchmarks.seed_spread --seeds 2 3 --threads 2 --workers 2   # a part (resumable)
    OMP_NUM_THREADS=1 python -m benchmarks.seed_spread --seeds 4 5 --threads 2 --workers 2
    python -m benchmarks.seed_spread --report
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from benchmarks.common import (
    ARCH_DEFAULT,
    ARCH_PLAIN,
    ARCH_TAUS,
    DOCS,
    MATCHED,
    MATCHED_POINTS,
    PLAIN_MATCHED_OUT,
    SEED_SPREAD_OUT,
    arch_rows,
    late_text,
    matched_grid,
    matched_point,
    mean_std_text,
    protocol_parser,
    run_protocol_part,
    tau_grid,
    write_grid_report,
)
from medic_viz.experiments import read_runs
from medic_viz.experiments.summary import late_asr_mean
from medic_viz.metrics import mean_std, paired_sign_test

OUT = SEED_SPREAD_OUT
FIGURES = DOCS / "seed_spread"
ATTACKS = ("sig", "polygon")
SEEDS = (2, 3, 4, 5)
POINTS = MATCHED_POINTS
#: (ASR at most, accuracy drop at most), in points: issue 27's target at 5 % clean data, per seed.
TARGET = (10.0, 3.0)
#: Paired ASRs closer than this (points) are a tie in the sign test.
TIE = 1.0


def grid(teachers: list[str], seeds, device: str = "auto") -> list:
    """Per teacher folder and seed: the default and τ = 0 at λ = 3 (the architectures grid's
    cells) and τ = 0 at λ = 0.1 (``plain_matched``'s)."""
    return tau_grid(teachers, seeds, device, ARCH_TAUS) + matched_grid(teachers, seeds, device)


def spread_rows(rows: Iterable[dict], attacks=ATTACKS) -> list[dict]:
    """WRN-16-1 rows of ``attacks`` at one of :data:`POINTS`, each (attack, point, seed) once
    (the first given wins), with ``point`` and ``attack_name`` added."""
    seen: set[tuple] = set()
    out = []
    for r in rows:
        name, pt = r["attack"].split("_", 1)[0], matched_point(r)
        key = (name, pt, int(r["seed"]))
        if r["model"] != "wrn16_1" or name not in attacks or pt is None or key in seen:
            continue
        seen.add(key)
        out.append({**r, "point": pt, "attack_name": name})
    return out


def _meets(r: dict) -> bool:
    drop = 100 * (r["before_clean_acc"] - r["clean_acc"])
    return round(100 * r["asr"], 1) <= TARGET[0] and round(drop, 1) <= TARGET[1]


def table(rows: list[dict]) -> str:
    """Markdown, from :func:`spread_rows` rows: per attack and point, n, clean accuracy and ASR
    (%, mean ± sample std; the highest live ASR after epoch 20), the median ASR and the seeds
    meeting the target on their own; then each seed's clean / ASR (and its last 10 epochs' mean
    live ASR); then the default paired by seed against each plain point (sign test,
    ties within :data:`TIE` points left out, two-sided)."""
    lines = ["| Attack | Point | n | clean acc | ASR | median ASR | seeds meeting the target |", "|---|---|---|---|---|---|---|"]
    attacks = [a for a in ATTACKS if any(r["attack_name"] == a for r in rows)]
    for attack in attacks:
        for pt in POINTS:
            mine = [r for r in rows if r["attack_name"] == attack and r["point"] == pt]
            if not mine:
                continue
            acc, asr = mean_std([100 * r["clean_acc"] for r in mine]), mean_std([100 * r["asr"] for r in mine])
            median = statistics.median(100 * r["asr"] for r in mine)
            lines.append(f"| {attack} | {pt} | {len(mine)} | {mean_std_text(acc)} | {mean_std_text(asr)}{late_text(mine)} | "
                         f"{median:.1f} | "
                         f"{sum(map(_meets, mine))} of {len(mine)} |")
    lines += ["", "| Attack | seed | " + " | ".join(POINTS) + " |", "|---|---|" + "---|" * len(POINTS)]
    for attack in attacks:
        for seed in sorted({int(r["seed"]) for r in rows if r["attack_name"] == attack}):
            by = {r["point"]: r for r in rows if r["attack_name"] == attack and int(r["seed"]) == seed}
            cells = [_seed_cell(by[p]) if p in by else "–" for p in POINTS]
            lines.append(f"| {attack} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired by seed, final ASR (ties: within {TIE:g} points):", ""]
    for other in (ARCH_PLAIN, MATCHED):
        pairs = _pairs(rows, ARCH_DEFAULT, other)
        test = paired_sign_test([a for a, _ in pairs], [b for _, b in pairs], tie=TIE)
        lines.append(f"- default vs {other}: {len(pairs)} pairs; the default lower in {test.wins}, higher in "
                     f"{test.losses}, tied in {test.ties}; sign test p = {test.p_value:.3g}")
    return "\n".join(lines) + "\n"


def _seed_cell(row: dict) -> str:
    """``"97.0 / 39.6 (last 10: 42)"``: clean accuracy / final ASR and the mean live ASR of the
    last 10 epochs (%), when the row has a curve."""
    late = late_asr_mean(row.get("curve"))
    return f"{100 * row['clean_acc']:.1f} / {100 * row['asr']:.1f}" + ("" if late is None else f" (last 10: {100 * late:.0f})")


def _pairs(rows: list[dict], a: str, b: str) -> list[tuple[float, float]]:
    """(ASR at ``a``, ASR at ``b``) in points for every attack and seed that has both."""
    by = {(r["attack_name"], int(r["seed"]), r["point"]): 100 * r["asr"] for r in rows}
    return [(by[(at, s, a)], by[(at, s, b)]) for (at, s, p) in sorted(by) if p == a and (at, s, b) in by]


def figure(rows: list[dict]):
    """Each run's clean accuracy against its ASR, one panel per attack, one colour per point,
    the target's corner shaded."""
    from medic_viz.viz.summary_figures import per_run_scatter_figure  # noqa: PLC0415 — plotly: not on the GPU machine

    data = [{"panel": r["attack_name"], "series": r["point"], "label": f"seed {r['seed']}", "clean_acc": r["clean_acc"],
             "asr": r["asr"], "before_clean_acc": r["before_clean_acc"]} for r in rows]
    return per_run_scatter_figure(data, target=TARGET, title="WRN-16-1, evaluation teachers: one marker per seed"
                                  "<br><sup>shaded: ASR ≤ 10 % and clean accuracy within 3 points of the teacher</sup>")


def all_rows() -> list[dict]:
    """This grid's finished rows, then the architectures grid's and ``plain_matched``'s (seeds 0–1)."""
    rows = []
    for path in (OUT / "runs.jsonl", PLAIN_MATCHED_OUT / "runs.jsonl"):
        rows += read_runs(path) if path.is_file() else []
    return spread_rows(rows + arch_rows())


def report() -> None:
    write_grid_report(OUT, FIGURES, "seed_spread", table, figure, rows=all_rows())


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, ATTACKS)
    parser.set_defaults(seeds=list(SEEDS))
    args = parser.parse_args(argv)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, args.device), OUT, report)


if __name__ == "__main__":
    main()
