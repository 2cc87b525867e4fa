"""The tuning pass of issue 28: each method's free settings chosen by the one rule
(:mod:`medic_viz.experiments.selection`, B = 3 points) on *development* teachers (the seed-0
GTSRB WRN-16-1 presets), scored on the *development* half of the test set — images no teacher
trained on and no report uses — with no trigger.

    python -m benchmarks.tune_methods --methods finetune medic --threads 1   # a part (resumable)
    python -m benchmarks.tune_methods --report                               # selections + table
    python -m benchmarks.tune_methods --methods medic --eps 0.1 --threads 1  # MEDIC at its default ε
    python -m benchmarks.tune_methods --eps 0.1 --report                     # its choice (rule 9)

One unit of work is one defence run: a method, the candidates that one run serves (MCR's t
and ANP's threshold are read out of one run: :func:`~medic_viz.experiments.selection.candidate_groups`)
and one teacher. Each finished unit is a file under ``benchmarks/results/tuning/units/``, so
a part may stop anywhere and the next continues. The report chooses for every method whose
units are all done (``selections.json``, read by a Table-1 grid through
:func:`~medic_viz.experiments.selection.tuned_cells`) and writes ``table.md``. Budget: each
method's paper epochs, 5 % clean data (seed 0's subset), as in Table 1.

MEDIC's committed units ran at the paper's ε = 1e-5, its default until 2026-12-05; ``--eps 0.1``
runs its units at the library's default ε (files named ``-eps0_1``; the other methods have no ε)
and its report writes ``selections_eps0_1.json`` and ``table_eps0_1.md`` (BENCHMARKS.md §6, rule 9).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import GTSRB, TUNING_ATTACKS, TUNING_OUT, eps_suffix, medic_at, teachers_of_role
from medic_viz.data import load_dataset
from medic_viz.defenses.medic import DEFAULT_EPS_MEDIC, PAPER_EPS
from medic_viz.defenses.registry import canonical_name, tuning_space
from medic_viz.experiments.grid import method_options
from medic_viz.experiments.protocol import DEVELOPMENT, part_of_test_set
from medic_viz.experiments.resume import RowFolder, run_resumable
from medic_viz.experiments.selection import (
    BUDGET_POINTS,
    Selection,
    candidate_groups,
    choose_setting,
    holdout_accuracies,
    write_selections,
)
from medic_viz.importer import load_model_folder

OUT = TUNING_OUT
ATTACKS = TUNING_ATTACKS
#: The methods with free settings (KD and Scratch have none).
METHODS = ("finetune", "fineprune", "nad", "mcr", "anp", "medic")
FRACTION, SEED = 0.05, 0


def units(methods, teachers: list[str], eps: float = PAPER_EPS) -> list[dict]:
    """Every (method, candidate group, teacher folder) to run, methods in the order given; MEDIC's
    at ``eps`` (default: the paper's, which its committed units ran with)."""
    out = []
    for method in methods:
        cands = tuning_space(method).candidates()
        for members in candidate_groups(method, cands):
            for folder in teachers:
                out.append({"method": canonical_name(method), "members": members,
                            "options": [cands[i] for i in members], "teacher": Path(folder).name,
                            "folder": str(folder), **({"eps": float(eps)} if method == "medic" else {})})
    return out


def unit_name(unit: dict) -> str:
    """A unit's file name: method, teacher, MEDIC's ε unless the paper's (the committed units' names
    do not name it) and a digest of its candidates' options."""
    digest = hashlib.sha256(json.dumps(unit["options"], sort_keys=True, default=str).encode()).hexdigest()[:10]
    tag = eps_suffix(unit.get("eps", PAPER_EPS)).lstrip("_")
    return f"{unit['method']}-{unit['teacher']}-{tag + '-' if tag else ''}{digest}"


def run_unit(unit: dict, splits: Any, holdout: Any, device: str) -> dict:
    """One defence run and the hold-out accuracy of each candidate it serves (fractions)."""
    start = time.perf_counter()
    teacher, _card = load_model_folder(unit["folder"])
    options = method_options(unit["method"], epochs=None, seed=SEED, device=device)
    if canonical_name(unit["method"]) == "medic":
        options.update(medic_at(unit.get("eps", PAPER_EPS)))
    _cands, accs, teacher_acc, n = holdout_accuracies(
        unit["method"], {unit["teacher"]: teacher}, splits.train, fraction=FRACTION, seed=SEED, options=options,
        candidates=unit["options"], holdout=holdout, device=device)
    return {**{k: unit[k] for k in ("method", "members", "options", "teacher", "eps") if k in unit},
            "holdout_acc": [a[unit["teacher"]] for a in accs], "teacher_acc": teacher_acc[unit["teacher"]],
            "n_holdout": n, "seconds": round(time.perf_counter() - start, 1)}


def selections(rows: list[dict], budget: float = BUDGET_POINTS) -> tuple[dict[str, Selection], dict[str, str]]:
    """The rule's choice for every method whose every candidate ran on every teacher that any
    of its units names; ``(selections, method → what is missing)``."""
    chosen: dict[str, Selection] = {}
    missing: dict[str, str] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cands = tuning_space(method).candidates()
        teachers = sorted({r["teacher"] for r in mine})
        accs: list[dict[str, float]] = [{} for _ in cands]
        teacher_acc: dict[str, float] = {}
        for r in mine:
            teacher_acc[r["teacher"]] = r["teacher_acc"]
            for i, acc in zip(r["members"], r["holdout_acc"]):
                accs[i][r["teacher"]] = acc
        lacking = sum(len(teachers) - len(a) for a in accs)
        if lacking:
            missing[method] = f"{lacking} of {len(cands) * len(teachers)} candidate × teacher results"
            continue
        chosen[method] = choose_setting(cands, accs, teacher_acc, budget, method=method,
                                        n_holdout=max(r["n_holdout"] for r in mine))
    return chosen, missing


def rows_at(rows: list[dict], eps: float = PAPER_EPS) -> list[dict]:
    """The units' rows of the pass at MEDIC's ``eps``: at the paper's, every method's (MEDIC's at
    1e-5: a row that names no ε ran before ε was recorded); at another, MEDIC's at that ε only."""
    if eps == PAPER_EPS:
        return [r for r in rows if float(r.get("eps", PAPER_EPS)) == PAPER_EPS]
    return [r for r in rows if r["method"] == "medic" and float(r.get("eps", PAPER_EPS)) == eps]


def report(out: Path = OUT, eps: float = PAPER_EPS) -> str:
    """``selections.json`` and ``table.md`` from the finished units (at another ε than the
    paper's: MEDIC's only, ``selections_eps0_1.json`` and ``table_eps0_1.md``); returns the table."""
    rows = rows_at(RowFolder(out / "units").rows(), eps)
    chosen, missing = selections(rows)
    lines = [f"Tuning rule: the strongest candidate whose mean clean hold-out accuracy drop against the development "
             f"teachers' is at most B = {BUDGET_POINTS:g} points (hold-out: the development half of GTSRB's test set).", ""]
    if eps != PAPER_EPS:
        lines += [f"MEDIC at ε = {eps:g} (BENCHMARKS.md §6, rule 9; its units at the paper's ε = 1e-5: `table.md`).", ""]
    for sel in chosen.values():
        lines += ["```", str(sel), "```", ""]
    for method, what in missing.items():
        lines.append(f"- {method}: not chosen yet, missing {what}")
    text = "\n".join(lines) + "\n"
    suffix = eps_suffix(eps)
    if chosen:
        write_selections(out / f"selections{suffix}.json", chosen)
    (out / f"table{suffix}.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eps", type=float, default=PAPER_EPS, choices=(PAPER_EPS, DEFAULT_EPS_MEDIC),
                        help="MEDIC's ε (default: the paper's, which the committed units ran with)")
    parser.add_argument("--report", action="store_true", help="only choose from the finished units")
    args = parser.parse_args(argv)
    if args.eps != PAPER_EPS and not args.report and args.methods != ["medic"]:
        parser.error("--eps names MEDIC's ε: add --methods medic (the other methods have no ε)")
    if args.report:
        print(report(eps=args.eps))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers, lacking = teachers_of_role(args.attacks, DEVELOPMENT)
    for attack in lacking:
        print(f"note: no development teacher for {attack}; skipped", file=sys.stderr)
    if not teachers:
        return
    splits = load_dataset(GTSRB)
    holdout = part_of_test_set(splits.test, DEVELOPMENT)
    todo = units(args.methods, teachers, args.eps)
    store = RowFolder(OUT / "units")
    print(f"{len(todo)} units ({sum(store.done(unit_name(u)) for u in todo)} done before); hold-out: "
          f"{len(holdout):,} development test images")
    run_resumable(todo, store, unit_name, lambda u: _logged(u, splits, holdout, args.device), log=None)
    print(report(eps=args.eps))


def _logged(unit: dict, splits: Any, holdout: Any, device: str) -> dict:
    row = run_unit(unit, splits, holdout, device)
    accs = ", ".join(f"{100 * a:.2f}" for a in row["holdout_acc"])
    print(f"{unit['method']} on {unit['teacher']} {unit['options']}: hold-out acc {accs} "
          f"(teacher {100 * row['teacher_acc']:.2f}) in {row['seconds'] / 60:.1f} min", flush=True)
    return row


if __name__ == "__main__":
    main()
