"""What several benchmarks share: where results, figures and the GTSRB arrays are, the cache of
GTSRB teachers, and the Table-1 declarations read by both ``table1_report`` and
``table1_aligned_tau``. The models and their settings are the library's
(:mod:`medic_viz.experiments.teachers`, :mod:`medic_viz.experiments.presets`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from medic_viz.defenses.medic import DEFAULT_EPS_MEDIC, DEFAULT_LAM, PAPER_EPS
from medic_viz.experiments.grid import DEFAULT_ABLATION_VALUES, build_grid
from medic_viz.experiments.presets import GTSRB_ATTACKS, GTSRB_TABLE1_ATTACKS, gtsrb_recipe
from medic_viz.experiments.protocol import DEVELOPMENT, EVALUATION, ROLE_SEEDS, check_role_seed
from medic_viz.experiments.runner import read_runs, run_grid
from medic_viz.experiments.summary import peak_late_asr
from medic_viz.experiments.teachers import TeacherCache

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
#: The GTSRB arrays: ``$MEDIC_VIZ_GTSRB`` when set (e.g. on a GPU machine, where the file is
#: joined from parts: ``benchmarks/gpu_architectures.sh``), else ``../shared/data/gtsrb32.npz``
#: beside the checkout. Grids identify it by its digest, so every copy keeps the cells' ids.
GTSRB = Path(os.environ.get("MEDIC_VIZ_GTSRB") or ROOT.parent / "shared" / "data" / "gtsrb32.npz")
if "MEDIC_VIZ_GTSRB" not in os.environ and not GTSRB.is_file() and Path("/work/shared/data/gtsrb32.npz").is_file():
    GTSRB = Path("/work/shared/data/gtsrb32.npz")
#: The cached GTSRB teachers, clean models and Clean-Label surrogates.
TEACHERS = TeacherCache(RESULTS / "gtsrb_teachers")

#: MEDIC's options in the WRN-16-1 protocol grids that ran before ε's default moved from the
#: paper's 1e-5 to 0.1 (2026-12-05: Figure 4, Table 1 and its tuning pass): they keep ε = 1e-5, so
#: that each reproduces its committed rows (the same cell ids) and never mixes them with rows of
#: the new default. Re-running them at the new default is open (BENCHMARKS.md §6).
PROTOCOL_MEDIC: dict[str, Any] = {"eps": PAPER_EPS}
#: MEDIC's options in the scarce-data grid: the library's defaults (ε = 0.1), since 2026-12-06;
#: its rows at 1e-5 stay in ``runs.jsonl`` and out of its table.
SCARCE_MEDIC: dict[str, Any] = {}


def medic_at(eps: float) -> dict:
    """MEDIC's options of a WRN-16-1 protocol grid at ``eps``: :data:`PROTOCOL_MEDIC` at the
    paper's (the committed cells), the library's defaults (``{}``) at its default ε."""
    if eps == PAPER_EPS:
        return dict(PROTOCOL_MEDIC)
    return {} if eps == DEFAULT_EPS_MEDIC else {"eps": float(eps)}


def eps_suffix(eps: float) -> str:
    """``""`` at the paper's ε (a committed grid's files), else e.g. ``"_eps0_1"`` ("." would end a
    figure's name)."""
    return "" if eps == PAPER_EPS else f"_eps{eps:g}".replace(".", "_")


def eps_of(row: dict) -> float:
    """The ε a MEDIC row ran with (a row that names none ran before ε was pinned: the paper's)."""
    return float((row.get("method_options") or {}).get("eps", PAPER_EPS))


def protocol_rows(rows: list[dict], medic: dict[str, Any] | None = None) -> list[dict]:
    """``rows`` without MEDIC rows of another ε than ``medic``'s (default :data:`PROTOCOL_MEDIC`;
    ``{}``: the library's): what a WRN-16-1 protocol grid reports, so that rows of two ε are never
    averaged (when a grid moves to the new default, its 1e-5 rows stay in ``runs.jsonl`` and out of
    its table)."""
    eps = float((PROTOCOL_MEDIC if medic is None else medic).get("eps", DEFAULT_EPS_MEDIC))
    return [r for r in rows if r.get("method", "medic") != "medic" or eps_of(r) == eps]


def eps_note(row: dict) -> str:
    """``""`` for a row at MEDIC's default ε or of another method, else ``", ε = 1e-05"``: rows of
    two ε never share a line."""
    if row.get("method", "medic") != "medic":
        return ""
    eps = eps_of(row)
    return "" if eps == DEFAULT_EPS_MEDIC else f", ε = {eps:g}"


#: σ at most this many times the ε floor (√ε) counts as a channel constant on the clean data
#: (the diagnoses of issue 27 item 4).
DEAD_FACTOR = 2.0



def with_block(md: str, begin: str, end: str, block: str) -> str:
    """``md`` (RESULTS.md's text) with the text between the ``begin`` and ``end`` marker lines
    replaced by ``block``; a missing marker is one line saying to add them."""
    if begin not in md or end not in md:
        raise SystemExit(f"RESULTS.md has no {begin!r} … {end!r} block: add the two markers where it goes")
    head, rest = md.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def late_text(rows: list[dict]) -> str:
    """``", live ≤ 18 %"``: the highest live ASR after epoch 20 among ``rows``' curves
    (:func:`~medic_viz.experiments.summary.peak_late_asr`), or ``""`` when none has a curve."""
    peaks = [p for p in (peak_late_asr(r.get("curve")) for r in rows) if p is not None]
    return f", live ≤ {100 * max(peaks):.0f} %" if peaks else ""


def teachers_of_role(attacks, role: str, arch: str = "wrn16_1", seed: int | None = None) -> tuple[list[str], list[str]]:
    """(folders of the cached teachers of ``attacks`` for ``role`` — the GTSRB presets trained
    with ``seed``, by default the role's first (:data:`ROLE_SEEDS`) —, attacks whose teacher of
    that role and seed is not trained yet). A seed of another role is refused (ValueError)."""
    if seed is None:
        seed = ROLE_SEEDS[role][0]
    else:
        try:
            check_role_seed(role, seed)
        except ValueError as exc:
            raise ValueError(f"teacher {exc}") from None
    found, missing = [], []
    for attack in attacks:
        folder = TEACHERS.find(gtsrb_recipe(attack, arch, GTSRB, seed=seed))
        (found.append(str(folder)) if folder is not None else missing.append(attack))
    return found, missing


def variant_grid_parser(description: str, attacks, variants, default_variants, seeds) -> argparse.ArgumentParser:
    """The options of a development grid over MEDIC variants (``eps_development``, ``cut_development``):
    ``--arch``, ``--attacks`` (default ``attacks``), ``--variants`` (of ``variants``), ``--seeds``,
    ``--fraction``, ``--threads``, ``--workers``, ``--device`` and ``--report``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", default="mobilenet_v1")
    parser.add_argument("--attacks", nargs="+", default=list(attacks), choices=sorted(GTSRB_ATTACKS))
    parser.add_argument("--variants", nargs="+", default=list(default_variants), choices=list(variants))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
    parser.add_argument("--fraction", type=float, default=0.05, help="clean data: this share of the training set")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="cells at once, each in its own process")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only write the table from finished cells")
    return parser


def development_teachers_or_exit(parser: argparse.ArgumentParser, attacks, arch: str) -> list[str]:
    """:func:`teachers_of_role` for the development role, a missing teacher being a usage error
    that names the command training it."""
    teachers, missing = teachers_of_role(attacks, DEVELOPMENT, arch)
    if missing:
        parser.error(f"no {arch} development teacher for {', '.join(missing)} (python -m benchmarks.train_teachers "
                     f"--role development --arch {arch} --attacks {' '.join(missing)})")
    return teachers


def evaluation_teachers(attacks, arch: str = "wrn16_1", seed: int | None = None) -> tuple[list[str], list[str]]:
    """:func:`teachers_of_role` for the evaluation role (``seed``: 1 by default, or 2)."""
    return teachers_of_role(attacks, EVALUATION, arch, seed)


def write_grid_report(out: Path, figures: Path, name: str, table: Callable[[list[dict]], str],
                      figure: Callable[[list[dict]], Any], rows: list[dict] | None = None,
                      table_name: str = "table.md") -> None:
    """A protocol benchmark's report from ``rows`` (default: the finished rows of
    ``out/runs.jsonl``): ``out/<table_name>`` (``table(rows)``, also printed) and
    ``figures/<name>.html`` / ``.png`` (``figure(rows)``; the PNG needs kaleido's Chromium, the
    HTML is always written)."""
    if rows is None:
        rows = read_runs(out / "runs.jsonl") if (out / "runs.jsonl").is_file() else []
    if not rows:
        print(f"no finished cells in {out}; run a part first", file=sys.stderr)
        return
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / table_name).write_text(text)
    figures.mkdir(parents=True, exist_ok=True)
    try:
        fig = figure(rows)
    except ImportError as exc:  # a GPU machine's Python without plotly: the table is written, the figure here
        print(f"{name} figure not drawn ({exc}); the table is — run --report where plotly is installed", file=sys.stderr)
        print(text)
        return
    from medic_viz.viz.export import export_figure  # noqa: PLC0415 — plotly only where a figure is drawn (not on a GPU machine)

    if len(export_figure(fig, figures / name)) < 2:  # kaleido needs Chromium; the HTML is always written
        print(f"{name}.png not written; the HTML is", file=sys.stderr)
    print(text)
    print(json.dumps({"rows": len(rows), "table": str(out / table_name)}))


#: The fields in which a scarce-data MEDIC cell at 5 % and Figure 4's default cell of the same
#: teacher and seed differ: labels only — the run is the same computation (same teacher, seed,
#: clean subset, options, test half; BadNet seed 0 was run both ways: bit-identical numbers).
LABEL_FIELDS = ("ablation", "ablation_value", "variant", "series", "x")


def default_cells_as_scarce(fraction: float = 0.05) -> list[dict]:
    """The WRN-16-1 default cells (the library's layer cut, no ablation) of Figure 4's and the
    architectures grid's results, at ``fraction`` clean data, as rows of the scarce-data grid's MEDIC
    column, marked ``read_from`` with their grid — read, not re-run: the same computation under
    other labels (:data:`LABEL_FIELDS`). Architectures first, so a cell both hold is read once."""
    rows = []
    for name, out in (("architectures", ARCH_OUT), ("figure4_tau", FIGURE4_OUT)):
        path = out / "runs.jsonl"
        rows += [{**r, "ablation": "fraction", "ablation_value": fraction, "x": fraction,
                  "variant": f"MEDIC {100 * fraction:g}%", "read_from": name}
                 for r in (read_runs(path) if path.is_file() else [])
                 if r["method"] == "medic" and r.get("ablation", "none") == "none" and r.get("model", "wrn16_1") == "wrn16_1"
                 and (r.get("method_options") or {}).get("layers", "auto") == "auto" and math.isclose(r["fraction"], fraction)]
    return rows


def _scarce_rows_at(medic: dict[str, Any]) -> list[dict]:
    """The scarce-data grid's finished rows at ``medic``'s ε (other methods' rows whatever it is),
    and the default cells of the architectures grid or Figure 4 at that ε for the MEDIC 5 % cells
    it has not run itself (:func:`default_cells_as_scarce`), each (attack, seed) read once."""
    own = protocol_rows(read_runs(SCARCE_OUT / "runs.jsonl") if (SCARCE_OUT / "runs.jsonl").is_file() else [], medic)
    have = {(r["attack"], r["seed"]) for r in own if r["method"] == "medic" and math.isclose(r["fraction"], 0.05)}
    read = []
    for r in protocol_rows(default_cells_as_scarce(0.05), medic):
        if (r["attack"], r["seed"]) not in have and r["attack"].split("_", 1)[0] in SCARCE_ATTACKS:
            have.add((r["attack"], r["seed"]))
            read.append(r)
    return own + read


def scarce_rows() -> list[dict]:
    """The scarce-data table's rows: every method's, MEDIC's at :data:`SCARCE_MEDIC`'s ε."""
    return _scarce_rows_at(SCARCE_MEDIC)


def scarce_earlier_rows() -> list[dict]:
    """MEDIC's scarce-data rows at the paper's ε = 1e-5 (the default until 2026-12-05), each
    marked ``earlier_eps`` — shown beside the default's column, never averaged with it."""
    return [{**r, "earlier_eps": PAPER_EPS} for r in _scarce_rows_at({"eps": PAPER_EPS}) if r["method"] == "medic"]


def run_on_evaluation_teachers(attacks, make_cells: Callable[[list[str]], list], out: Path,
                               report: Callable[[], None], archs=("wrn16_1",), workers: int = 1,
                               teacher_seed: int | None = None) -> None:
    """A protocol benchmark's part: the evaluation teachers of ``attacks`` for each of ``archs``
    (trained with ``teacher_seed``, by default the role's first; a missing one is skipped with a
    note saying how to train it), ``make_cells(teacher folders)`` run resumably into ``out`` by
    ``workers`` local processes, then ``report()``."""
    teachers: list[str] = []
    seed_option = "" if teacher_seed is None else f" --seed {teacher_seed}"
    for arch in archs:
        found, missing = evaluation_teachers(attacks, arch, teacher_seed)
        teachers += found
        for attack in missing:
            print(f"note: no {arch} evaluation teacher for {attack} yet (python -m benchmarks.train_teachers "
                  f"--role evaluation{seed_option} --arch {arch} --attacks {attack}); skipped", file=sys.stderr)
    if not teachers:
        return
    result = run_grid(make_cells(teachers), out, workers=workers, log=print)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


def _add_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1,
                        help="cells at once, each in its own process on cores ÷ workers torch threads (one process "
                             "per results folder: never start a second part on the same folder)")


def development_parser(doc: str, attacks, fractions, layer_sets) -> argparse.ArgumentParser:
    """The options of a benchmark on the *development* teachers and half (nothing chosen from it
    is reported there): ``--attacks``, ``--fractions``, ``--layers``, ``--seeds`` (default 0),
    ``--threads``, ``--workers``, ``--device``, ``--report``; a script adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=list(attacks), choices=sorted(GTSRB_ATTACKS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(fractions))
    parser.add_argument("--layers", nargs="+", default=list(layer_sets), choices=layer_sets)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=None)
    _add_workers(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only write the table from finished cells")
    return parser


def write_table_report(out: Path, table: Callable[[list[dict]], str]) -> None:
    """``out/table.md`` (also printed) from the finished rows of ``out/runs.jsonl``."""
    rows = read_runs(out / "runs.jsonl") if (out / "runs.jsonl").is_file() else []
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    print(text)


def run_development_part(args: argparse.Namespace, parser: argparse.ArgumentParser,
                         make_cells: Callable[[list[str]], list], out: Path, report: Callable[[], None]) -> None:
    """What ``--report`` or a part of a development benchmark does: only ``report()``, or the
    cells ``make_cells(development teacher folders)`` on ``args.threads`` torch threads (in
    ``args.workers`` processes), run resumably into ``out``, then ``report()``; a missing teacher
    is a usage error."""
    if args.report:
        report()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers, missing = teachers_of_role(args.attacks, DEVELOPMENT)
    if missing:
        parser.error(f"no development teacher for {', '.join(missing)} (python -m benchmarks.train_teachers)")
    result = run_grid(make_cells(teachers), out, workers=getattr(args, "workers", 1), log=print)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


def protocol_parser(doc: str, attacks) -> argparse.ArgumentParser:
    """The options every protocol benchmark takes: ``--attacks`` (of ``attacks``), ``--seeds``,
    ``--threads``, ``--workers``, ``--device`` and ``--report``; a script adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=list(attacks), choices=attacks)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(PROTOCOL_SEEDS))
    parser.add_argument("--threads", type=int, default=None)
    _add_workers(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only write the table and figure from finished cells")
    return parser


def run_protocol_part(args: argparse.Namespace, make_cells: Callable[[list[str]], list], out: Path,
                      report: Callable[[], None], archs=("wrn16_1",)) -> None:
    """What ``--report`` or a part does: only ``report()``, or the part on ``args.threads`` torch
    threads (:func:`run_on_evaluation_teachers`; with ``args.workers`` > 1, that many processes)."""
    if args.report:
        report()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    run_on_evaluation_teachers(args.attacks, make_cells, out, report, archs=archs, workers=getattr(args, "workers", 1),
                               teacher_seed=getattr(args, "teacher_seed", None))


def tau_grid(teachers: list[str], seeds, device: str = "auto", taus=DEFAULT_ABLATION_VALUES["tau"]["tau"],
             layers: str = "auto", medic: dict[str, Any] | None = None) -> list:
    """MEDIC's τ sweep (ablation ``tau``, one global τ per point; τ = 0 is plain cloning) and
    the default (a plain MEDIC cell) per teacher folder and seed, on the evaluation half of the
    test set. ``layers``: the cloned layers of every point (``"auto"``, the library's;
    ``"conv+bn"``, every conv/norm output as in the paper) — another series, other cells;
    ``medic``: further MEDIC options of every point (:data:`PROTOCOL_MEDIC`)."""
    options = {**(medic or {}), **({} if layers == "auto" else {"layers": layers})}
    common: dict[str, Any] = dict(dataset=str(GTSRB), teachers=teachers, seeds=list(seeds), device=device,
                                  test_part=EVALUATION, medic=options or None)
    sweep = build_grid(methods=["medic"], ablation="tau", values={"tau": tuple(taus)}, **common)
    default = build_grid(methods=["medic"], **common)
    return default + sweep


# --- the protocol's grids (issues 27, 32): where they are and what they hold when whole ---
SCARCE_OUT, FIGURE4_OUT = RESULTS / "scarce_data", RESULTS / "figure4_tau"
SCARCE_ATTACKS, SCARCE_METHODS = ("badnet", "sig", "polygon"), ("medic", "kd", "scratch")
SCARCE_FRACTIONS = (0.01, 0.02, 0.05, 0.1)
FIGURE4_ATTACKS = ("cleanlabel", "sig", "badnet")
#: Figure 4 (issue 32): plain cloning (τ = 0) and one global τ over the paper's range (its text:
#: τ = 5), with the default per-layer share as its own point, on every conv/norm output — the
#: MEDIC authors' layer set, the paper's figure. The library's default layer cut is the
#: comparison series: its default and τ = 0 only (τ does little there: BENCHMARKS.md §8,
#: RESULTS.md).
FIGURE4_TAUS = (0.0, 1.0, 3.0, 5.0, 7.0)
FIGURE4_LAYERS = "conv+bn"
FIGURE4_DEFAULT_CUT_TAUS = (0.0,)
#: Issue 27 item 4 (the paper's Figure 8): the other architectures, their attacks and points.
ARCH_OUT = RESULTS / "architectures"
ARCHITECTURES, ARCH_ATTACKS, ARCH_TAUS = ("resnet18", "vgg11_bn", "mobilenet_v1"), ("badnet", "sig", "polygon"), (0.0,)
#: The architectures of its table, WRN-16-1 (Figure 4's cells) first, and its two points.
ARCH_SHOWN = ("wrn16_1",) + ARCHITECTURES
ARCH_DEFAULT, ARCH_PLAIN = "default", "τ = 0 (plain cloning)"


def arch_point(row: dict) -> str | None:
    """An architectures-grid row's point (:data:`ARCH_DEFAULT` or :data:`ARCH_PLAIN`, τ = 0) on the
    library's layers, else None (another series)."""
    if str((row.get("method_options") or {}).get("layers", "auto")) != "auto" or row["method"] != "medic":
        return None
    if row.get("ablation", "none") == "none":
        return ARCH_DEFAULT
    return ARCH_PLAIN if row.get("ablation") == "tau" and float(row["x"]) == 0.0 else None


#: Plain cloning at the default's cloning strength (BENCHMARKS.md §6, rules 7 and 8): λ = 3 × 0.033,
#: the default's mean weight mass on clean data (``weight_mass.md``), rounded; its point's name.
MATCHED_LAM = 0.1
MATCHED = "plain cloning at λ = 0.1"
#: The three points of rules 7 and 8, in their tables' column order.
MATCHED_POINTS = (ARCH_DEFAULT, ARCH_PLAIN, MATCHED)
PLAIN_MATCHED_OUT = RESULTS / "plain_matched"
#: Rule 8's more seeds on WRN-16-1 SIG and Polygon (:mod:`benchmarks.seed_spread`).
SEED_SPREAD_OUT = RESULTS / "seed_spread"


def matched_grid(teachers: list[str], seeds, device: str = "auto") -> list:
    """Plain cloning (one global τ = 0) at λ = :data:`MATCHED_LAM` per teacher folder and seed."""
    return [c for c in tau_grid(teachers, seeds, device, (0.0,), medic={"lam": MATCHED_LAM}) if c.ablation == "tau"]


def matched_point(row: dict) -> str | None:
    """The row's point: the architectures grid's (:data:`ARCH_DEFAULT`, :data:`ARCH_PLAIN` at
    λ = 3) or plain cloning at λ = :data:`MATCHED_LAM` (:data:`MATCHED`), at MEDIC's default ε on
    the library's layers; else None."""
    if eps_note(row) or row["method"] != "medic":
        return None
    options = row.get("method_options") or {}
    lam = float(options.get("lam", DEFAULT_LAM))
    if str(options.get("layers", "auto")) != "auto" or lam not in (DEFAULT_LAM, MATCHED_LAM):
        return None
    if lam == DEFAULT_LAM:
        return arch_point(row)
    return MATCHED if row.get("ablation") == "tau" and float(row["x"]) == 0.0 else None


def arch_rows() -> list[dict]:
    """The architectures grid's finished rows, and WRN-16-1's from Figure 4 (the same cells
    there), of :data:`ARCH_ATTACKS`."""
    rows = []
    for folder in (ARCH_OUT, FIGURE4_OUT):
        path = folder / "runs.jsonl"
        if path.is_file():
            rows += [r for r in read_runs(path) if folder == ARCH_OUT or r["model"] == "wrn16_1"]
    return [r for r in rows if r["attack"].split("_", 1)[0] in ARCH_ATTACKS]


def mean_std_text(m) -> str:
    """``"95.0 ± 1.4"`` (one decimal; the ± part only for more than one value) of a MeanStd."""
    return f"{m.mean:.1f}" + (f" ± {m.std:.1f}" if m.n > 1 else "")
#: The seeds each protocol cell runs with.
PROTOCOL_SEEDS = (0, 1)
#: Cells of Figure 4's series on the paper's layers when whole (per ε): attacks × seeds × (τ values + the default).
FIGURE4_CELLS = len(FIGURE4_ATTACKS) * len(PROTOCOL_SEEDS) * (len(FIGURE4_TAUS) + 1)


# --- Table 1 on GTSRB (WRN-16-1): the grid of run_table1.sh, its report and its aligned-τ row ---
TABLE1_OUT = RESULTS / "table1_gtsrb_wrn16_1"
#: The tuning pass (issue 28: :mod:`benchmarks.tune_methods`) and the table it feeds
#: (:mod:`benchmarks.table1_protocol`).
TUNING_OUT, TABLE1_PROTOCOL_OUT = RESULTS / "tuning", RESULTS / "table1_protocol"
#: The tuning pass's development teachers' attacks: the four whose seed-0 teachers chose MEDIC's defaults.
TUNING_ATTACKS = ("badnet", "sig", "polygon", "wanet")
#: Table 1 under the protocol: seeds per cell (issue 28 item 4: three on CPU, five where a GPU is
#: lent); methods run as they are (KD and Scratch: nothing to tune; ANP's own fixed settings ε 0.2,
#: lr 0.1, threshold 0.05 are a row beside its tuned one) and methods whose row is the tuning
#: rule's choice.
TABLE1_PROTOCOL_SEEDS = (0, 1, 2)
TABLE1_AS_IS = ("anp", "kd", "scratch")
TABLE1_TUNED = ("finetune", "fineprune", "nad", "mcr", "anp", "medic")
#: The paper's attacks in its Table 1 order, then WaNet.
TABLE1_ATTACKS = GTSRB_TABLE1_ATTACKS
TABLE1_METHODS = ("finetune", "fineprune", "nad", "mcr", "anp", "kd", "scratch", "medic")
TABLE1_SEEDS = (0, 1)
#: The variant name of the row "MEDIC, τ aligned to the baselines' accuracy".
ALIGNED = "MEDIC, τ aligned"


def _sorted(rows: list[dict]) -> list[dict]:
    """Table-1 rows in the paper's attack order, then method (the aligned row after MEDIC), then seed."""
    def key(r: dict) -> tuple:
        m = TABLE1_METHODS.index(r["method"]) if r["method"] in TABLE1_METHODS else len(TABLE1_METHODS)
        aligned = r["variant"] == ALIGNED
        return (TABLE1_ATTACKS.index(r["attack"]) if r["attack"] in TABLE1_ATTACKS else 99, m + aligned, r["seed"])
    return sorted(rows, key=key)


def load_table1_rows(out: Path = TABLE1_OUT) -> tuple[list[dict], list[dict]]:
    """(grid rows, aligned-τ rows) as committed, each with ``attack`` the attack's name and
    ``teacher_name`` the teacher folder's."""
    grid = read_runs(out / "runs.jsonl") if (out / "runs.jsonl").is_file() else []
    aligned = read_runs(out / "aligned" / "runs.jsonl") if (out / "aligned" / "runs.jsonl").is_file() else []
    for r in grid + aligned:  # a teacher folder's cells are named after it: "badnet_wrn16_1_e30_s0" → "badnet"
        r["teacher_name"] = r["attack"]
        r["attack"] = r["attack"].split("_", 1)[0]
    return _sorted(grid), _sorted(aligned)


def load_selections(path: Path) -> dict:
    """The aligned row's cached sweeps and choices (``aligned_selection.json``), ``{}`` if none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}
