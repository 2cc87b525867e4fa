"""Where to cut a network without skip connections? (issue 27 item 4, rule 4 of BENCHMARKS.md §6)
MEDIC's default layers (``"auto"`` = ``"conv+bn-inner"``) leave a plain network's last
convolution to the labels; on MobileNet-v1 SIG that clone keeps the backdoor (evaluation: 72 %
ASR, plain cloning 87 %). The candidate ``"conv+bn-inner-res"`` leaves every layer at the last
convolution's resolution to the labels (MobileNet-v1's and VGG-11's 2×2 stage), as the default
already does for a network with skip connections (WRN-16-1's ``block3``). Cells: the default and
the candidate on *development* teachers (seed 0) and the *development* half of the test set,
5 % clean data, 60 epochs — where a default may be chosen. Resumable
(``benchmarks/results/cut_development/``; a cell goes on from its last epoch).

    OMP_NUM_THREADS=1 python -m benchmarks.cut_development --arch mobilenet_v1 --attacks sig --threads 2 --workers 2
    python -m benchmarks.cut_development --arch small_cnn --attacks badnet sig polygon --seeds 0 1
    python -m benchmarks.cut_development --report
"""

from __future__ import annotations

import torch

from benchmarks.common import GTSRB, RESULTS, development_teachers_or_exit, variant_grid_parser
from medic_viz.experiments import build_grid, read_runs, run_grid
from medic_viz.experiments.protocol import DEVELOPMENT
from medic_viz.experiments.summary import LATE_WINDOW, epochs_above, late_asr_mean

OUT = RESULTS / "cut_development"
#: The grid's points: MEDIC's options (everything else at the library's defaults).
VARIANTS: dict[str, dict] = {"default": {}, "cut res": {"layers": "conv+bn-inner-res"}}
#: Other grids whose rows may be this grid's cells (the same id: the same run): MobileNet-v1's
#: development BadNet default cell ran in :mod:`benchmarks.eps_development` as "eps 0.1".
SHARED = (RESULTS / "eps_development",)
#: The zoo's networks without skip connections: the only ones whose layers the candidate moves.
PLAIN = ("small_cnn", "vgg11_bn", "mobilenet_v1")
#: The options every cell of this grid keeps at the library's defaults (as of rule 4).
FIXED = {"lam": 3.0, "share": 0.01, "eps": 0.1}


def grid(teachers: list[str], variants, seeds=(0,), device: str = "auto", fraction: float = 0.05) -> list:
    """One MEDIC cell per teacher folder, variant and seed on ``fraction`` of the training set as
    clean data, on the development half; a teacher's variants next to each other, seed by seed
    (cells run in this order, so a part cut short compares whole pairs)."""
    cells = []
    for teacher in teachers:
        for seed in seeds:
            for name in variants:
                cells += build_grid(dataset=str(GTSRB), teachers=[teacher], methods=["medic"], seeds=[seed],
                                    device=device, test_part=DEVELOPMENT, medic=VARIANTS[name] or None,
                                    fraction=fraction)
    return cells


def variant_of(row: dict) -> str | None:
    """The name of ``row``'s variant (its layer selection; λ, share and ε at :data:`FIXED`, the
    student initialised with the cell's seed), else None."""
    options = row.get("method_options") or {}
    if any(options.get(k) != v for k, v in FIXED.items()) or options.get("student_seed", row.get("seed")) != row.get("seed"):
        return None
    for name, changed in VARIANTS.items():
        if options.get("layers", "auto") == changed.get("layers", "auto"):
            return name
    return None


def known_rows() -> list[dict]:
    """The finished rows of this grid and, from :data:`SHARED`, those of a plain network at 5 %
    clean data that are one of its variants."""
    rows = read_runs(OUT / "runs.jsonl") if (OUT / "runs.jsonl").is_file() else []
    ids = {r["cell_id"] for r in rows}
    for folder in SHARED:
        if (folder / "runs.jsonl").is_file():
            rows += [r for r in read_runs(folder / "runs.jsonl") if r["cell_id"] not in ids and r["model"] in PLAIN
                     and r["fraction"] == 0.05 and variant_of(r) is not None]
    return rows


def table(rows: list[dict]) -> str:
    """Markdown, one line per finished cell: the model, teacher, variant and seed, the whole
    development half's clean accuracy (teacher → clone) and ASR after, the live ASR's mean over the
    last epochs and how many epochs after 20 had it above 10 %."""
    lines = ["| model | attack | variant | seed | clean acc: teacher → clone (drop) | ASR (%) | "
             f"live ASR, last-{LATE_WINDOW} mean (%) | epochs > 10 % after 20 | seconds |", "|" + "---|" * 9]
    order = list(VARIANTS)
    named = [(variant_of(r), r) for r in rows]
    for name, r in sorted(((n, r) for n, r in named if n is not None),
                          key=lambda p: (p[1]["model"], p[1]["attack"], p[1]["seed"], order.index(p[0]))):
        late = late_asr_mean(r.get("curve"))
        drop = 100 * (r["before_clean_acc"] - r["clean_acc"])
        lines.append(f"| {r['model']} | {r['attack']} | {name} | {r['seed']} | {100 * r['before_clean_acc']:.1f} → "
                     f"{100 * r['clean_acc']:.1f} ({drop:.1f}) | {100 * r['asr']:.1f} | "
                     f"{'–' if late is None else f'{100 * late:.1f}'} | {epochs_above(r.get('curve'), 0.10)} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def report() -> None:
    """``table.md`` (also printed) from :func:`known_rows`."""
    OUT.mkdir(parents=True, exist_ok=True)
    text = table(known_rows())
    (OUT / "table.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = variant_grid_parser(__doc__.split("\n")[0], ["sig", "badnet"], VARIANTS, VARIANTS, [0, 1])
    args = parser.parse_args(argv)
    if args.report:
        report()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers = development_teachers_or_exit(parser, args.attacks, args.arch)
    done = {r["cell_id"] for r in known_rows()}
    cells = [c for c in grid(teachers, args.variants, args.seeds, args.device, args.fraction) if c.cell_id not in done]
    result = run_grid(cells, OUT, workers=args.workers, log=print, write=False)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


if __name__ == "__main__":
    main()
