"""Other architectures under the protocol (issue 27 item 4; the paper's Figure 8 asks the same
question): MEDIC's defaults and plain cloning (one global τ = 0) on ResNet-18, VGG-11-BN and
MobileNet-v1 GTSRB teachers of BadNet, SIG and Polygon — *evaluation* teachers (seed 1),
measured on the *evaluation* half of the test set, 5 % clean data, 60 epochs, two seeds.
WRN-16-1's rows are Figure 4's library-cut cells (:mod:`benchmarks.figure4_tau`), read, not re-run —
those ran at ε = 1e-5, MEDIC's default before 2026-12-05, and are shown as such; every other
row runs at the library's default (ε = 0.1), and rows of two ε never share a line; ``--archs
wrn16_1`` runs WRN-16-1's cells at the default ε here (the same cells as Figure 4's but for ε).

    python -m benchmarks.train_teachers --role evaluation --arch resnet18 --attacks badnet sig polygon --device cuda
    python -m benchmarks.architectures --archs resnet18 --device cuda     # a part (resumable)
    python -m benchmarks.architectures --report                           # table + figure

A 30-epoch teacher is 5 (VGG-11-BN) to 18 (ResNet-18) CPU-hours on one core here, so those two
are meant for a GPU. MobileNet-v1 runs on this CPU across sessions: a teacher in 86 min on two
threads, a cell in about 35 min (one thread, two cells at a time); both go on from their last
epoch when the command is run again (:mod:`medic_viz.train_checkpoint`)::

    python -m benchmarks.train_teachers --role evaluation --arch mobilenet_v1 --attacks badnet sig polygon --threads 2
    OMP_NUM_THREADS=1 python -m benchmarks.architectures --archs mobilenet_v1 --threads 2 --workers 2

Target (issue 27, 5 % clean data): ASR ≤ 10 % and clean accuracy within
3 points of the teacher, for the default.
"""

from __future__ import annotations

from benchmarks.common import (
    ARCH_ATTACKS,
    ARCH_DEFAULT,
    ARCH_OUT,
    ARCH_PLAIN,
    ARCH_SHOWN,
    ARCH_TAUS,
    ARCHITECTURES,
    DOCS,
    arch_point,
    arch_rows,
    eps_note,
    late_text,
    mean_std_text,
    protocol_parser,
    run_protocol_part,
    tau_grid,
    write_grid_report,
)
from medic_viz.metrics import mean_std

OUT = ARCH_OUT
FIGURES = DOCS / "architectures"
#: (ASR at most, accuracy drop at most), in points, at 5 % clean data (issue 27's target).
TARGET = (10.0, 3.0)


def grid(teachers: list[str], seeds, device: str = "auto"):
    """The default and τ = 0 per teacher folder and seed (:func:`benchmarks.common.tau_grid`)."""
    return tau_grid(teachers, seeds, device, ARCH_TAUS)


def table(rows: list[dict]) -> str:
    """Markdown: per architecture and attack, the teacher, the default's and plain cloning's
    clean accuracy / ASR (%, mean ± sample std over seeds, n; the highest live ASR after epoch
    20), and whether the default meets the 5 % target (on the final numbers, as printed). Rows
    at another ε than MEDIC's default (ε = 1e-5, before 2026-12-05) are lines of their own, named so."""
    lines = ["| Architecture | Attack | Teacher acc / ASR | MEDIC default | plain cloning (τ = 0) | target (default) |",
             "|---|---|---|---|---|---|"]
    series = sorted({eps_note(r) for r in rows}, key=lambda note: (note != "", note))  # the default ε first
    for arch, note in ((a, n) for a in ARCH_SHOWN for n in series):
        for attack in ARCH_ATTACKS:
            mine = [r for r in rows if r["model"] == arch and r["attack"].startswith(attack + "_")
                    and arch_point(r) is not None and eps_note(r) == note]
            if not mine:
                continue
            t, cells, verdict = mine[0], [], "–"
            for point in (ARCH_DEFAULT, ARCH_PLAIN):
                pr = [r for r in mine if arch_point(r) == point]
                if not pr:
                    cells.append("–")
                    continue
                acc, asr = mean_std([100 * r["clean_acc"] for r in pr]), mean_std([100 * r["asr"] for r in pr])
                cells.append(f"{mean_std_text(acc)} / {mean_std_text(asr)} (n={len(pr)}){late_text(pr)}")
                if point == ARCH_DEFAULT:
                    drop = 100 * t["before_clean_acc"] - acc.mean
                    ok = round(asr.mean, 1) <= TARGET[0] and round(drop, 1) <= TARGET[1]
                    verdict = f"{'met' if ok else 'missed'} (drop {drop:.1f}, ASR {asr.mean:.1f})"
            lines.append(f"| {arch}{note} | {attack} | {100 * t['before_clean_acc']:.1f} / {100 * t['before_asr']:.1f} | "
                         + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]):
    """Clean accuracy and ASR (%) at τ = 0 and the default (drawn at τ = 1 on the axis), one
    pair of curves per architecture × attack, mean ± std over seeds."""
    from medic_viz.viz.summary_figures import tau_sweep_figure  # noqa: PLC0415 — plotly: not on the GPU machine, where the grid runs

    data = [{"tau": 0.0 if arch_point(r) == ARCH_PLAIN else 1.0,
             "series": f"{r['model']}{eps_note(r)} · {r['attack'].split('_', 1)[0]}",
             "clean_acc": r["clean_acc"], "asr": r["asr"]} for r in rows if arch_point(r) is not None]
    fig = tau_sweep_figure(data, group_by="series",
                           title="Architectures, evaluation teachers and test images<br><sup>x = 0: plain cloning; "
                                 "x = 1: the library's default (per-layer τ)</sup>")
    fig.update_xaxes(title_text="plain cloning (0) → MEDIC default (1)", tickvals=[0, 1])
    return fig


def all_rows() -> list[dict]:
    """This grid's finished rows, and WRN-16-1's from Figure 4 (:func:`benchmarks.common.arch_rows`)."""
    return arch_rows()


def report() -> None:
    write_grid_report(OUT, FIGURES, "architectures", table, figure, rows=all_rows())


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, ARCH_ATTACKS)
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCH_SHOWN,
                        help="wrn16_1: WRN-16-1 at MEDIC's default ε (Figure 4's rows ran at 1e-5)")
    args = parser.parse_args(argv)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, args.device), OUT, report, archs=args.archs)


if __name__ == "__main__":
    main()
