"""Rule 6 C (BENCHMARKS.md §6, written before its cells): rule 6's candidate, ``impact="scaled"``
(eq.(3)'s score over its per-sample spread, at the library's ε and 1 % share), against MEDIC's
default on *evaluation* teachers — WRN-16-1 SIG and Polygon, MobileNet-v1 SIG — of seed 1 (the
default's cells are the architectures grid's, read, not re-run) and of seed 2 (fresh teachers no
choice has looked at; both settings run here), on the evaluation half, 5 % clean data, 60 epochs,
student seeds 0 and 1: 12 runs per setting. Resumable (``benchmarks/results/impact_evaluation/``).

    python -m benchmarks.train_teachers --role evaluation --seed 2 --arch wrn16_1 --attacks sig polygon --threads 2
    python -m benchmarks.train_teachers --role evaluation --seed 2 --arch mobilenet_v1 --attacks sig --threads 2
    OMP_NUM_THREADS=1 python -m benchmarks.impact_evaluation --archs wrn16_1 --teacher-seed 1 --threads 2 --workers 2
    OMP_NUM_THREADS=1 python -m benchmarks.impact_evaluation --archs wrn16_1 --teacher-seed 2 --threads 2 --workers 2
    OMP_NUM_THREADS=1 python -m benchmarks.impact_evaluation --archs mobilenet_v1 --teacher-seed 1 --threads 2 --workers 2
    python -m benchmarks.impact_evaluation --report

The rule: the scaled impact becomes the default only if it meets issue 27's 5 % target (ASR
≤ 10 %, clean accuracy at most 3 points below the teacher) on more of the 12 runs than the
default does, and its mean clean accuracy over them is within 0.5 points of the default's;
otherwise the option stays documented and the default does not move.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ARCH_DEFAULT,
    GTSRB,
    RESULTS,
    arch_rows,
    eps_note,
    late_text,
    mean_std_text,
    protocol_parser,
    run_protocol_part,
    write_table_report,
)
from medic_viz.defenses.medic import DEFAULT_LAM
from medic_viz.experiments import build_grid, read_runs
from medic_viz.experiments.protocol import EVALUATION, ROLE_SEEDS
from medic_viz.metrics import mean_std

OUT = RESULTS / "impact_evaluation"
#: The candidate's options (everything else the library's defaults).
SCALED_OPTIONS = {"impact": "scaled"}
SCALED = 'impact="scaled"'
POINTS = (ARCH_DEFAULT, SCALED)
#: Rule 6 C's teachers (attack, architecture), teacher seeds, student seeds, clean-data share and
#: thresholds (ASR at most, accuracy drop at most, candidate's mean accuracy at most this far below
#: the default's; fractions).
RULE6C_TEACHERS = (("sig", "wrn16_1"), ("polygon", "wrn16_1"), ("sig", "mobilenet_v1"))
RULE6C_TEACHER_SEEDS, RULE6C_SEEDS, FRACTION = ROLE_SEEDS[EVALUATION], (0, 1), 0.05
MAX_ASR, MAX_DROP, ACC_MARGIN = 0.10, 0.03, 0.005


def teacher_seed(name: str) -> int | None:
    """The training seed in a teacher folder's name (``sig_wrn16_1_e30_s2`` → 2), else None."""
    found = re.search(r"_e\d+_s(\d+)$", Path(name).name)
    return int(found.group(1)) if found else None


def grid(teachers: list[str], seeds, device: str = "auto") -> list:
    """Per teacher folder and seed: the candidate's cell, and the default's where the teacher is
    not the first evaluation seed's (those are the architectures grid's cells, read)."""
    cells = []
    for teacher in teachers:
        common: dict[str, Any] = dict(dataset=str(GTSRB), teachers=[teacher], methods=["medic"], seeds=list(seeds), device=device,
                      test_part=EVALUATION, fraction=FRACTION)
        if teacher_seed(teacher) != RULE6C_TEACHER_SEEDS[0]:
            cells += build_grid(**common)
        cells += build_grid(medic=dict(SCALED_OPTIONS), **common)
    return cells


def point(row: dict) -> str | None:
    """The row's point (:data:`ARCH_DEFAULT` or :data:`SCALED`): a MEDIC row at the library's ε,
    λ and layers on 5 % clean data, no ablation, no other student seed; else None."""
    options = row.get("method_options") or {}
    if (row.get("method") != "medic" or eps_note(row) or row.get("ablation", "none") != "none"
            or str(options.get("layers", "auto")) != "auto" or float(options.get("lam", DEFAULT_LAM)) != DEFAULT_LAM
            or abs(float(row.get("fraction", FRACTION)) - FRACTION) > 1e-9
            or options.get("student_seed", row["seed"]) != row["seed"]):
        return None
    impact = options.get("impact", "signed")
    return ARCH_DEFAULT if impact == "signed" else SCALED if impact == "scaled" else None


def all_rows() -> list[dict]:
    """This grid's finished rows and the architectures grid's (:func:`benchmarks.common.arch_rows`)."""
    path = OUT / "runs.jsonl"
    return arch_rows() + (read_runs(path) if path.is_file() else [])


def _runs(rows: list[dict]) -> dict[tuple, dict]:
    """Rule 6 C's runs by (point, attack, architecture, teacher seed, seed)."""
    wanted = {(a, m) for a, m in RULE6C_TEACHERS}
    runs = {}
    for r in rows:
        key = (point(r), r["attack"].split("_", 1)[0], r["model"], teacher_seed(r["attack"]), r["seed"])
        if key[0] and key[1:3] in wanted and key[3] in RULE6C_TEACHER_SEEDS and key[4] in RULE6C_SEEDS:
            runs[key] = r
    return runs


def meets_target(row: dict) -> bool:
    """Issue 27's 5 % target on one run: ASR ≤ 10 % and clean accuracy at most 3 points below the teacher."""
    return row["asr"] <= MAX_ASR + 1e-12 and row["before_clean_acc"] - row["clean_acc"] <= MAX_DROP + 1e-12


def _cell(rows: list[dict]) -> str:
    if not rows:
        return "–"
    acc, asr = mean_std([100 * r["clean_acc"] for r in rows]), mean_std([100 * r["asr"] for r in rows])
    met = sum(meets_target(r) for r in rows)
    return f"{mean_std_text(acc)} / {mean_std_text(asr)} (n={len(rows)}, target {met} of {len(rows)}){late_text(rows)}"


def table(rows: list[dict]) -> str:
    """Markdown: per teacher (attack, architecture, seed) the teacher's clean accuracy / ASR and
    each point's (%, mean ± sample std over seeds, n, runs meeting the target; the highest live
    ASR after epoch 20), then the rule's verdict."""
    runs = _runs(rows)
    lines = ["| Architecture | Attack | teacher seed | Teacher acc / ASR | MEDIC default | " + SCALED + " |",
             "|---|---|---|---|---|---|"]
    for attack, arch in RULE6C_TEACHERS:
        for tseed in RULE6C_TEACHER_SEEDS:
            mine = {p: [r for k, r in sorted(runs.items()) if k[:4] == (p, attack, arch, tseed)] for p in POINTS}
            first = next((rs[0] for rs in mine.values() if rs), None)
            if first is None:
                continue
            lines.append(f"| {arch} | {attack} | {tseed} | {100 * first['before_clean_acc']:.1f} / "
                         f"{100 * first['before_asr']:.1f} | " + " | ".join(_cell(mine[p]) for p in POINTS) + " |")
    return "\n".join(lines) + "\n\n" + verdict(rows) + "\n"


def verdict(rows: list[dict]) -> str:
    """Rule 6 C's decision once all 12 runs of each point are in, else how many are."""
    runs = _runs(rows)
    whole = len(RULE6C_TEACHERS) * len(RULE6C_TEACHER_SEEDS) * len(RULE6C_SEEDS)
    by_point = {p: [r for k, r in runs.items() if k[0] == p] for p in POINTS}
    if any(len(rs) < whole for rs in by_point.values()):
        counts = ", ".join(f"{p}: {len(rs)} of {whole}" for p, rs in by_point.items())
        return f"Rule 6 C: not decided yet ({counts} runs)."
    met = {p: sum(meets_target(r) for r in rs) for p, rs in by_point.items()}
    acc = {p: sum(r["clean_acc"] for r in rs) / whole for p, rs in by_point.items()}
    more = met[SCALED] > met[ARCH_DEFAULT]
    acc_ok = acc[SCALED] >= acc[ARCH_DEFAULT] - ACC_MARGIN - 1e-12
    text = (f"Rule 6 C ({whole} runs each): the default meets the target on {met[ARCH_DEFAULT]}, {SCALED} on "
            f"{met[SCALED]}; mean clean accuracy {100 * acc[ARCH_DEFAULT]:.2f} % against {100 * acc[SCALED]:.2f} % "
            f"(guard: within {100 * ACC_MARGIN:.1f} points: {'met' if acc_ok else 'missed'})")
    if more and acc_ok:
        return text + f" — {SCALED} becomes the default."
    return text + " — the default does not move; the option stays documented."


def report() -> None:
    write_table_report(OUT, lambda _: table(all_rows()))


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, ("sig", "polygon"))
    parser.add_argument("--archs", nargs="+", default=["wrn16_1"], choices=sorted({m for _, m in RULE6C_TEACHERS}))
    parser.add_argument("--teacher-seed", type=int, default=RULE6C_TEACHER_SEEDS[0], choices=RULE6C_TEACHER_SEEDS,
                        help="the evaluation teachers' training seed (2: the fresh set)")
    args = parser.parse_args(argv)
    run_protocol_part(args, lambda teachers: grid([t for t in teachers if _in_rule(t)], args.seeds, args.device),
                      OUT, report, archs=args.archs)


def _in_rule(teacher: str) -> bool:
    """Whether a teacher folder is one of rule 6 C's (MobileNet-v1 runs SIG only)."""
    name = Path(teacher).name
    return any(name.startswith(f"{attack}_{arch}_") for attack, arch in RULE6C_TEACHERS)


if __name__ == "__main__":
    main()
