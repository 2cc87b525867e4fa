"""The paper's Figure 4 on GTSRB: MEDIC's clean accuracy and ASR against one global
temperature τ (τ = 0 is plain cloning: every neuron weighted alike), with the library's
default (τ calibrated per layer to a 1 % share) as its own point, for Clean-Label, SIG and
BadNet on *evaluation* teachers (seed 1), measured on the *evaluation* half of the test set.
The figure clones every conv/norm output (``--layers conv+bn``, the paper's layers, the
default here); ``--layers auto --taus 0`` runs the comparison series on the library's layer cut.

    python -m benchmarks.train_teachers --role evaluation --attacks badnet sig cleanlabel   # once
    python -m benchmarks.figure4_tau --attacks badnet --seeds 0 1 --threads 1                # a part
    python -m benchmarks.figure4_tau --layers auto --taus 0 --seeds 0 1 --threads 1         # the cut's series
    python -m benchmarks.figure4_tau --report                                                # figure + table
    python -m benchmarks.figure4_tau --eps 0.1 --layers auto --taus 0 --attacks cleanlabel   # at the new ε
    python -m benchmarks.figure4_tau --eps 0.1 --report                                      # its table

The committed cells ran at the paper's ε = 1e-5, MEDIC's default until 2026-12-05; ``--eps 0.1``
(the library's default now) runs and reports the same points at it: other cells in the same
``runs.jsonl``, never averaged with the 1e-5 ones. Its table also reads the architectures grid's
WRN-16-1 rows, which are this grid's library-cut cells at ε = 0.1 (the same cell ids).

Resumable (``benchmarks/results/figure4_tau/runs.jsonl``); every row keeps its per-epoch
curve. 60 epochs, 5 % clean data, λ = 3 (the library's) for every point.
"""

from __future__ import annotations

import sys

from benchmarks.common import (
    ARCH_OUT,
    DOCS,
    FIGURE4_ATTACKS,
    FIGURE4_CELLS,
    FIGURE4_LAYERS,
    FIGURE4_OUT,
    FIGURE4_TAUS,
    eps_suffix,
    late_text,
    medic_at,
    protocol_parser,
    protocol_rows,
    run_protocol_part,
    tau_grid,
    write_grid_report,
)
from medic_viz.defenses.medic import DEFAULT_EPS_MEDIC, PAPER_EPS
from medic_viz.experiments import read_runs
from medic_viz.metrics import mean_std
from medic_viz.viz.summary_figures import tau_panels_figure

OUT = FIGURE4_OUT
FIGURES = DOCS / "figure4_tau"
ATTACKS, TAUS = FIGURE4_ATTACKS, FIGURE4_TAUS
DEFAULT = "default share"
_ATTACK_NAMES = {"cleanlabel": "Clean-Label", "sig": "SIG", "badnet": "BadNet"}


def grid(teachers: list[str], seeds, device: str = "auto", taus=TAUS, layers: str = "auto", eps: float = PAPER_EPS):
    """The τ sweep and the default per teacher and seed (:func:`benchmarks.common.tau_grid`) at
    ``eps`` (default: the paper's, which the committed cells ran with: :func:`medic_at`)."""
    return tau_grid(teachers, seeds, device, taus, layers, medic=medic_at(eps))


def _layers(row: dict) -> str:
    return str((row.get("method_options") or {}).get("layers", "auto"))


def _series(row: dict) -> str:
    """The attack, and the layer set when it is not the library's default."""
    attack = row["attack"].split("_", 1)[0]
    return attack if _layers(row) == "auto" else f"{attack}, layers {_layers(row)}"


def _point(row: dict) -> str:
    return DEFAULT if row.get("ablation", "none") == "none" else f"τ = {float(row['x']):g}"


def _text(m) -> str:
    """``mean ± std`` (%), the std only over more than one seed."""
    return f"{m.mean:.1f}" + (f" ± {m.std:.1f}" if m.n > 1 else "")


def table(rows: list[dict]) -> str:
    """Markdown: per attack and point, clean accuracy and ASR (%, mean ± sample std over seeds),
    and the highest live ASR after epoch 20 of any of its runs (the curves' 1,000 test images)."""
    points = [DEFAULT] + [f"τ = {t:g}" for t in sorted({float(r["x"]) for r in rows if r.get("ablation") == "tau"})]
    lines = ["| Attack | Teacher acc / ASR | " + " | ".join(points) + " |", "|" + "---|" * (len(points) + 2)]
    for series in sorted({_series(r) for r in rows}):
        mine = [r for r in rows if _series(r) == series]
        cells = []
        for p in points:
            pr = [r for r in mine if _point(r) == p]
            if not pr:
                cells.append("–")
                continue
            cells.append(f"{_text(mean_std([100 * r['clean_acc'] for r in pr]))} / "
                         f"{_text(mean_std([100 * r['asr'] for r in pr]))} (n={len(pr)}){late_text(pr)}")
        t = mine[0]
        lines.append(f"| {series} | {100 * t['before_clean_acc']:.1f} / {100 * t['before_asr']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]):
    """Small multiples: one panel per attack and layer set, accuracy and ASR against τ with the
    default per-layer share as its own point (mean ± std over seeds)."""
    def title(row: dict) -> str:
        attack, layers = row["attack"].split("_", 1)[0], _layers(row)
        where = {FIGURE4_LAYERS: "every conv/norm output", "auto": "the library's layers"}.get(layers, f"layers {layers}")
        return f"{_ATTACK_NAMES.get(attack, attack)}: {where}"

    data = [{"series": title(r), "tau": None if r.get("ablation", "none") == "none" else float(r["x"]),
             "clean_acc": r["clean_acc"], "asr": r["asr"], "order": (_layers(r) != FIGURE4_LAYERS,
                                                                     FIGURE4_ATTACKS.index(r["attack"].split("_", 1)[0]))}
            for r in rows]
    data.sort(key=lambda d: d["order"])
    return tau_panels_figure(data, columns=len(FIGURE4_ATTACKS), default_label="default share",
                             title="Figure 4, GTSRB evaluation teachers and test images (mean ± std over seeds)<br>"
                                   "<sup>τ = 0: plain cloning; top: every conv/norm output (the paper's layers); "
                                   "bottom: the library's default layer cut</sup>")


def _is_library_cut_cell(row: dict) -> bool:
    """An architectures-grid row that is one of this grid's cells: a WRN-16-1 teacher of a Figure-4
    attack, the library's layers, the default or τ = 0."""
    return (row.get("model") == "wrn16_1" and row["attack"].split("_", 1)[0] in FIGURE4_ATTACKS
            and _layers(row) == "auto" and (row.get("ablation", "none") == "none" or float(row["x"]) == 0.0))


def paper_layer_rows(rows: list[dict]) -> list[dict]:
    """The rows of the series on the paper's layers (every conv/norm output)."""
    return [r for r in rows if _layers(r) == FIGURE4_LAYERS]


def rows_at(eps: float) -> list[dict]:
    """The finished rows of the grid at ``eps`` (at ε = 0.1 with the architectures grid's
    WRN-16-1 rows of the same cells, each cell once). At ε = 0.1 the paper's-layers series is
    left out until all its :data:`FIGURE4_CELLS` cells have run (rule 10 of BENCHMARKS.md §6:
    shown once whole, the 1e-5 series until then)."""
    path = OUT / "runs.jsonl"
    rows = protocol_rows(read_runs(path), medic_at(eps)) if path.is_file() else []
    if eps == DEFAULT_EPS_MEDIC and len(paper_layer_rows(rows)) < FIGURE4_CELLS:
        rows = [r for r in rows if _layers(r) != FIGURE4_LAYERS]
    if eps == DEFAULT_EPS_MEDIC and (ARCH_OUT / "runs.jsonl").is_file():
        seen = {r["cell_id"] for r in rows}
        for r in protocol_rows(read_runs(ARCH_OUT / "runs.jsonl"), {}):
            if _is_library_cut_cell(r) and r["cell_id"] not in seen:
                seen.add(r["cell_id"])
                rows.append(r)
    return rows


def report(eps: float = PAPER_EPS) -> None:
    """The table and figure at ``eps``: ``table.md`` / ``figure4_tau.*`` at the paper's ε (the
    committed grid), ``table_eps0_1.md`` / ``figure4_tau_eps0_1.*`` at ε = 0.1."""
    suffix = eps_suffix(eps)
    rows = rows_at(eps)
    if not rows:
        print(f"no finished cells at ε = {eps:g} in {OUT}; run a part first", file=sys.stderr)
        return
    write_grid_report(OUT, FIGURES, f"figure4_tau{suffix}", table, figure, rows=rows, table_name=f"table{suffix}.md")


def main(argv: list[str] | None = None) -> None:
    parser = protocol_parser(__doc__, ATTACKS)
    parser.add_argument("--taus", nargs="+", type=float, default=list(TAUS))
    parser.add_argument("--layers", default=FIGURE4_LAYERS, choices=("auto", "conv+bn"),
                        help="cloned layers of every point: every conv/norm output (the paper's; default), or the "
                             "library's default cut (the comparison series: run it with --taus 0)")
    parser.add_argument("--eps", type=float, default=PAPER_EPS, choices=(PAPER_EPS, DEFAULT_EPS_MEDIC),
                        help="MEDIC's ε of every point: the paper's 1e-5 (the committed cells; default) or 0.1, "
                             "the library's default since 2026-12-05 (other cells, their own table)")
    args = parser.parse_args(argv)
    run_protocol_part(args, lambda teachers: grid(teachers, args.seeds, args.device, args.taus, args.layers, args.eps),
                      OUT, lambda: report(args.eps))


if __name__ == "__main__":
    main()
