"""How much does one run's final ASR say? (issue 27 item 4: the ε choice and its evaluation)

Every committed grid row (``benchmarks/results/*/runs.jsonl``) carries its per-epoch live curve
(clean accuracy and ASR on 1,000 test images after each epoch). This reads them — it trains
nothing — and asks two questions of MEDIC's default (library layers, 1 % share, λ = 3; any ε):

1. **The same cell, run twice.** A cell id is the hash of everything the run is given (teacher,
   data, seeds, options); two grids that ran the same cell hold two rows of it. On the CPU the
   numbers also depend on the thread count (summed in another order), which the id leaves out.
   Where the two rows differ, the difference is run-to-run noise, not any setting.
2. **How far the final ASR is from where the run was.** Per run: the final ASR (the whole test
   half), the mean live ASR over the last 10 epochs, the highest after epoch 30, and the epochs
   after 30 with a live ASR above 10 %. A run whose ASR swings between 3 and 90 % until its last
   epochs ends on a draw.

    python -m benchmarks.diag_asr_volatility     # → benchmarks/results/asr_volatility.md
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from benchmarks.common import RESULTS, eps_of
from medic_viz.experiments import read_runs
from medic_viz.experiments.summary import epochs_above, late_asr_mean, peak_late_asr

OUT = RESULTS / "asr_volatility.md"
#: After this epoch the cosine schedule's step is below a fifth of its start: "late".
LATE = 30
#: Live ASR above this counts as the backdoor being there (issue 27's target).
THRESHOLD = 0.10
#: The options of MEDIC's default besides ε (and seeds, device, progress, evaluation).
DEFAULT_OPTIONS = {"layers": "auto", "share": 0.01, "lam": 3.0}
_IGNORED = {"seed", "student_seed", "device", "progress", "eval_every", "eps"}


def is_default_run(row: dict) -> bool:
    """A MEDIC row at the library's defaults up to ε, on random clean images, not an ablation."""
    options = row.get("method_options") or {}
    return (row.get("method") == "medic" and row.get("ablation", "none") == "none"
            and row.get("clean_from") in (None, "images")
            and {k: v for k, v in options.items() if k not in _IGNORED} == DEFAULT_OPTIONS)


def committed_rows(root: Path = RESULTS) -> list[dict]:
    """Every grid's rows, each with ``grid`` (its folder's name) added."""
    rows = []
    for path in sorted(root.glob("*/runs.jsonl")):
        rows += [{**r, "grid": path.parent.name} for r in read_runs(path)]
    return rows


def repeats(rows: list[dict]) -> list[list[dict]]:
    """Groups of rows with one cell id from different grids, whose final ASR or accuracy differ."""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_id[row["cell_id"]].append(row)
    return [group for group in by_id.values()
            if len({r["grid"] for r in group}) > 1 and len({(r["asr"], r["clean_acc"]) for r in group}) > 1]


def run_line(row: dict) -> dict:
    """The numbers of one run: final, last-10 mean and late peak of the ASR (%), late epochs above 10 %."""
    curve = row.get("curve")
    late_mean, peak = late_asr_mean(curve), peak_late_asr(curve, LATE)
    late_epochs = sum(1 for c in curve or () if c.get("asr") is not None and c["epoch"] > LATE)
    return {"final": 100 * row["asr"], "late_epochs": late_epochs, "late_mean": None if late_mean is None else 100 * late_mean,
            "peak": None if peak is None else 100 * peak, "above": epochs_above(curve, THRESHOLD, LATE),
            "acc": 100 * row["clean_acc"]}


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _who(row: dict) -> str:
    init = (row.get("method_options") or {}).get("student_seed", row["seed"])
    seed = f"seed {row['seed']}" + (f" (student init {init})" if init != row["seed"] else "")
    return f"{row['attack']}, {row['fraction'] * 100:g} %, {seed}, ε = {eps_of(row):g}"


def summary(rows: list[dict]) -> list[tuple[str, str, float, int, int, int, int]]:
    """Per (model, attack, ε) at 5 % clean data, distinct cells only: (model, attack, ε, cells, final
    ASR > 10 %, last-10 mean > 10 %, runs with live ASR > 10 % on any epoch after 30)."""
    seen, groups = set(), defaultdict(list)
    for row in rows:
        if row["fraction"] == 0.05 and row["cell_id"] not in seen:
            seen.add(row["cell_id"])
            groups[(row["model"], row["attack"].split("_", 1)[0], eps_of(row))].append(run_line(row))
    out = []
    for (model, attack, eps), lines in sorted(groups.items()):
        out.append((model, attack, eps, len(lines), sum(x["final"] > 100 * THRESHOLD for x in lines),
                    sum(x["late_mean"] is not None and x["late_mean"] > 100 * THRESHOLD for x in lines),
                    sum(x["above"] > 0 for x in lines)))
    return out


def report(rows: list[dict]) -> str:
    """The Markdown of ``asr_volatility.md`` from committed rows (all of them; the default's are picked here)."""
    default = [r for r in rows if is_default_run(r)]
    lines = ["# How much one run's final ASR says", "",
             "`python -m benchmarks.diag_asr_volatility` (reads every committed `runs.jsonl`; trains nothing). "
             "MEDIC's default (library layers, 1 % share, λ = 3) at any ε, random clean images. A teacher "
             "named `…_s0` is a development teacher, `…_s1` an evaluation one.", "",
             "## The same cell, run twice", "",
             "One cell id (same teacher, data, seeds and options) in two grids, with different results. "
             "CPU runs depend on the thread count, which the id leaves out.", "",
             "| cell | grid | finished | torch threads | clean acc (%) | final ASR (%) | last-10 mean | peak after 30 |",
             "|---|---|---|---|---|---|---|---|"]
    for group in repeats(rows):
        for row in group:
            x = run_line(row)
            lines.append(f"| {row['cell_id']} ({_who(row)}) | {row['grid']} | {row.get('finished_at', '–')} | "
                         f"{row.get('torch_threads') or 'not recorded'} | {x['acc']:.2f} | {x['final']:.2f} | "
                         f"{_num(x['late_mean'])} | {_num(x['peak'], 0)} |")
    lines += ["", f"## Per (model, attack, ε) at 5 % clean data: how many runs end above, sit above, or pass "
              f"{100 * THRESHOLD:g} % ASR late", "",
              f"Distinct cells. Final: the whole test half after the run; last-10 mean: the live ASR (1,000 test "
              f"images) averaged over the last 10 epochs; late: any epoch after {LATE}.", "",
              "| model | attack | ε | cells | final > 10 % | last-10 mean > 10 % | live > 10 % after epoch 30 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {a} | {e:g} | {n} | {f} | {lm} | {late} |" for m, a, e, n, f, lm, late in summary(default)]
    lines += ["", "## Runs that passed 10 % live ASR after epoch 30", "",
              "| run | grid | clean acc (%) | final ASR (%) | last-10 mean | peak after 30 | epochs > 10 % after 30 |",
              "|---|---|---|---|---|---|---|"]
    seen = set()
    for row in sorted(default, key=lambda r: (r["model"], r["attack"], eps_of(r), r["fraction"], r["seed"])):
        x = run_line(row)
        if x["above"] and (row["cell_id"], row["asr"]) not in seen:
            seen.add((row["cell_id"], row["asr"]))
            lines.append(f"| {row['model']} {_who(row)} | {row['grid']} | {x['acc']:.2f} | {x['final']:.2f} | "
                         f"{_num(x['late_mean'])} | {_num(x['peak'], 0)} | {x['above']} of {x['late_epochs']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    text = report(committed_rows())
    OUT.write_text(text)
    print(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
