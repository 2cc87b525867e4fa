"""What several benchmarks share: where results, figures and the GTSRB arrays are, the cache of
GTSRB teachers, and the Table-1 declarations read by both ``table1_report`` and
``table1_aligned_tau``. The models and their settings are the library's
(:mod:`medic_viz.experiments.teachers`, :mod:`medic_viz.experiments.presets`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from medic_viz.experiments.grid import DEFAULT_ABLATION_VALUES
from medic_viz.experiments.presets import GTSRB_TABLE1_ATTACKS, gtsrb_recipe
from medic_viz.experiments.protocol import EVALUATION, ROLE_SEEDS
from medic_viz.experiments.runner import read_runs, run_grid
from medic_viz.experiments.summary import peak_late_asr
from medic_viz.experiments.teachers import TeacherCache

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
#: The GTSRB arrays (``../shared/data/gtsrb32.npz`` beside the checkout).
GTSRB = ROOT.parent / "shared" / "data" / "gtsrb32.npz"
if not GTSRB.is_file() and Path("/work/shared/data/gtsrb32.npz").is_file():
    GTSRB = Path("/work/shared/data/gtsrb32.npz")
#: The cached GTSRB teachers, clean models and Clean-Label surrogates.
TEACHERS = TeacherCache(RESULTS / "gtsrb_teachers")



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


def teachers_of_role(attacks, role: str, arch: str = "wrn16_1") -> tuple[list[str], list[str]]:
    """(folders of the cached teachers of ``attacks`` for ``role`` — the GTSRB presets trained
    with the role's seed —, attacks whose teacher of that role is not trained yet)."""
    found, missing = [], []
    for attack in attacks:
        folder = TEACHERS.find(gtsrb_recipe(attack, arch, GTSRB, seed=ROLE_SEEDS[role][0]))
        (found.append(str(folder)) if folder is not None else missing.append(attack))
    return found, missing


def evaluation_teachers(attacks, arch: str = "wrn16_1") -> tuple[list[str], list[str]]:
    """:func:`teachers_of_role` for the evaluation role."""
    return teachers_of_role(attacks, EVALUATION, arch)


def write_grid_report(out: Path, figures: Path, name: str, table: Callable[[list[dict]], str],
                      figure: Callable[[list[dict]], Any]) -> None:
    """A protocol benchmark's report from the finished rows of ``out/runs.jsonl``:
    ``out/table.md`` (``table(rows)``, also printed) and ``figures/<name>.html`` / ``.png``
    (``figure(rows)``; the PNG needs kaleido's Chromium, the HTML is always written)."""
    rows = read_runs(out / "runs.jsonl") if (out / "runs.jsonl").is_file() else []
    if not rows:
        print(f"no finished cells in {out}; run a part first", file=sys.stderr)
        return
    text = table(rows)
    (out / "table.md").write_text(text)
    figures.mkdir(parents=True, exist_ok=True)
    fig = figure(rows)
    fig.write_html(str(figures / f"{name}.html"), include_plotlyjs="cdn")
    try:
        fig.write_image(str(figures / f"{name}.png"), scale=1)
    except Exception as exc:  # noqa: BLE001 - kaleido needs Chromium; the HTML is always written
        print(f"{name}.png not written ({type(exc).__name__}); the HTML is", file=sys.stderr)
    print(text)
    print(json.dumps({"rows": len(rows), "table": str(out / "table.md")}))


def run_on_evaluation_teachers(attacks, make_cells: Callable[[list[str]], list], out: Path,
                               report: Callable[[], None]) -> None:
    """A protocol benchmark's part: the evaluation teachers of ``attacks`` (a missing one is
    skipped with a note saying how to train it), ``make_cells(teacher folders)`` run resumably
    into ``out``, then ``report()``."""


    teachers, missing = evaluation_teachers(attacks)
    for attack in missing:
        print(f"note: no evaluation teacher for {attack} yet (python -m benchmarks.train_teachers "
              f"--role evaluation --attacks {attack}); skipped", file=sys.stderr)
    if not teachers:
        return
    result = run_grid(make_cells(teachers), out, log=print)
    print(f"{result.computed} computed, {result.skipped} skipped, {len(result.errors)} failed")
    report()


# --- the protocol's grids (issues 27, 32): where they are and what they hold when whole ---
SCARCE_OUT, FIGURE4_OUT = RESULTS / "scarce_data", RESULTS / "figure4_tau"
SCARCE_ATTACKS, SCARCE_METHODS = ("badnet", "sig", "polygon"), ("medic", "kd", "scratch")
SCARCE_FRACTIONS = (0.01, 0.02, 0.05, 0.1)
FIGURE4_ATTACKS = ("cleanlabel", "sig", "badnet")
FIGURE4_TAUS = DEFAULT_ABLATION_VALUES["tau"]["tau"]
#: The seeds each protocol cell runs with.
PROTOCOL_SEEDS = (0, 1)


# --- Table 1 on GTSRB (WRN-16-1): the grid of run_table1.sh, its report and its aligned-τ row ---
TABLE1_OUT = RESULTS / "table1_gtsrb_wrn16_1"
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
