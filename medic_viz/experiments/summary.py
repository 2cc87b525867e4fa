"""The numbers of a grid's report: per attack and method mean ± std over seeds, the
average drops of the paper's Table 1, the Markdown table and the per-run CSV.

Standard deviation: the **sample** standard deviation (ddof=1) over seeds, from
:func:`medic_viz.metrics.mean_std` — the same definition as the figures' error bars
(:func:`medic_viz.viz.aggregate_rows`). The table's header says so.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medic_viz.intervals import average_interval
from medic_viz.metrics import MeanStd, mean_std

__all__ = ["STD_DEFINITION", "CSV_COLUMNS", "LATE_EPOCH", "LATE_WINDOW", "aggregate", "column_labels", "epochs_above",
           "format_table", "late_asr_mean", "peak_late_asr", "write_csv"]

#: Epochs after which a run's live ASR counts as "late": a backdoor that comes back after
#: this, while the final number is low, is what :func:`peak_late_asr` reports.
LATE_EPOCH = 20

#: Epochs at the end of a run whose live ASR :func:`late_asr_mean` averages: where a run's ASR
#: swings from epoch to epoch, the final number is one draw and this is the level it swings about.
LATE_WINDOW = 10

#: How the ± of every table is computed, as printed in the table's header.
STD_DEFINITION = "sample standard deviation, ddof=1"

#: Columns of ``results.csv``, one row per finished run.
CSV_COLUMNS = ["cell_id", "teacher_id", "dataset", "model", "attack", "method", "variant", "seed", "ablation",
               "ablation_value", "series", "x", "fraction", "n_clean_subset", "clean_from", "epochs", "attack_epochs",
               "teacher_folder",
               "target", "before_clean_acc", "before_asr", "clean_acc", "asr", "n_clean", "n_asr", "train_seconds",
               "seconds", "peak_rss_mb", "cuda_peak_mb", "device", "torch_threads", "method_options", "extra", "finished_at"]


def _ordered(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


#: Run options that are not a setting of the method: where and how a run reports.
_NOT_SETTINGS = ("device", "progress", "eval_every")


def _setting(row: Mapping[str, Any]) -> dict:
    """What a row ran with besides its seed: clean-data fraction, epochs, test part, and the
    method's options without the per-seed seeds (``seed``, ``*_seed``) and reporting options."""
    opts = {k: v for k, v in (row.get("method_options") or {}).items()
            if k not in _NOT_SETTINGS and k != "seed" and not k.endswith("_seed")}
    return {"fraction": row.get("fraction"), "epochs": row.get("epochs"), "test_part": row.get("test_part"),
            "clean_from": row.get("clean_from") or "images", **opts}


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def column_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each row's column: its ``variant``, and where rows of one variant ran with different
    settings on the same attack (two ``compare`` runs into one folder, e.g. ``--layers auto``
    and ``conv+bn``), the settings that tell them apart — ``"MEDIC (layers=conv+bn)"`` — so that
    no cell averages different settings as if they were seeds. A variant with one setting per
    attack (Table 1's "MEDIC, τ aligned": a τ chosen per attack) keeps its label."""
    settings = [_setting(r) for r in rows]
    differing: dict[str, list[str]] = {}
    for v in _ordered(r["variant"] for r in rows):
        keys: list[str] = []
        for a in _ordered(r["attack"] for r in rows if r["variant"] == v):
            mine = [s for s, r in zip(settings, rows) if r["variant"] == v and r["attack"] == a]
            keys += [k for k in _ordered(k for s in mine for k in s) if k not in keys
                     and len({json.dumps(s.get(k), sort_keys=True, default=str) for s in mine}) > 1]
        differing[v] = keys
    return [r["variant"] if not differing[r["variant"]] else
            f"{r['variant']} ({', '.join(f'{k}={_shown(s.get(k))}' for k in differing[r['variant']])})"
            for r, s in zip(rows, settings)]


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict:
    """Summary statistics (in %) of finished cells.

    Returns ``{"attacks", "variants", "original": {attack: {...}}, "cells": {(attack,
    variant): {...}}, "drops": {variant: {...}}}``. ``original`` is the trojaned models (one
    per seed), ``cells`` :class:`~medic_viz.metrics.MeanStd` (mean, sample std with ddof=1,
    n) of clean accuracy and ASR, ``drops`` the average over attacks of the per-seed drops
    (before − after) of ASR and accuracy, as Table 1's last rows, with their seed-only 95 %
    intervals (``asr_ci``, ``acc_ci``: :class:`~medic_viz.intervals.AverageInterval`). A
    variant run with several settings is one column per setting (:func:`column_labels`).
    """
    rows = [{**r, "variant": label} for r, label in zip(rows, column_labels(rows))]
    attacks = _ordered(r["attack"] for r in rows)
    variants = _ordered(r["variant"] for r in rows)
    original: dict[str, dict] = {}
    for a in attacks:
        per_teacher = {}
        for r in rows:
            if r["attack"] == a:
                # one teacher folder measured the same way is one teacher, even if two grids named the
                # dataset by different paths (which gives different teacher ids)
                key = ((r["teacher_folder"], r["before_clean_acc"], r.get("before_asr")) if r.get("teacher_folder")
                       else r["teacher_id"])
                per_teacher[key] = r
        acc = mean_std([100 * r["before_clean_acc"] for r in per_teacher.values()])
        asr = mean_std([100 * r["before_asr"] for r in per_teacher.values() if r.get("before_asr") is not None])
        original[a] = {"acc": acc, "asr": asr}
    cells: dict[tuple[str, str], dict] = {}
    for a in attacks:
        for v in variants:
            sel = [r for r in rows if r["attack"] == a and r["variant"] == v]
            if not sel:
                continue
            cells[(a, v)] = {
                "acc": mean_std([100 * r["clean_acc"] for r in sel]),
                "asr": mean_std([100 * r["asr"] for r in sel if r.get("asr") is not None]),
                "acc_drop": mean_std([100 * (r["before_clean_acc"] - r["clean_acc"]) for r in sel]),
                "asr_drop": mean_std([100 * (r["before_asr"] - r["asr"]) for r in sel
                                       if r.get("asr") is not None and r.get("before_asr") is not None]),
            }
    drops: dict[str, dict] = {}
    for v in variants:
        asr_d = [cells[(a, v)]["asr_drop"][0] for a in attacks if (a, v) in cells and cells[(a, v)]["asr_drop"][2]]
        acc_d = [cells[(a, v)]["acc_drop"][0] for a in attacks if (a, v) in cells]
        per_seed = {a: [r for r in rows if r["attack"] == a and r["variant"] == v] for a in attacks}
        drops[v] = {"asr": mean_std(asr_d)[0], "acc": mean_std(acc_d)[0], "n_attacks": len(acc_d),
                    "asr_ci": average_interval([[100 * (r["before_asr"] - r["asr"]) for r in sel
                                                 if r.get("asr") is not None and r.get("before_asr") is not None]
                                                for sel in per_seed.values()]),
                    "acc_ci": average_interval([[100 * (r["before_clean_acc"] - r["clean_acc"]) for r in sel]
                                                for sel in per_seed.values()])}
    return {"attacks": attacks, "variants": variants, "original": original, "cells": cells, "drops": drops}


def peak_late_asr(curve: Sequence[Mapping[str, Any]] | None, after_epoch: int = LATE_EPOCH) -> float | None:
    """The highest live ASR (fraction) of a per-epoch ``curve`` (a grid row's ``curve``:
    ``{"epoch", "asr", …}`` per epoch) after epoch ``after_epoch``; None without such a point.
    A final ASR says where a run ended; this says whether the backdoor came back on the way."""
    late = [float(c["asr"]) for c in curve or () if c.get("asr") is not None and c["epoch"] > after_epoch]
    return max(late, default=None)


def _late_points(curve: Sequence[Mapping[str, Any]] | None) -> list[tuple[int, float]]:
    return [(int(c["epoch"]), float(c["asr"])) for c in curve or () if c.get("asr") is not None]


def late_asr_mean(curve: Sequence[Mapping[str, Any]] | None, last: int = LATE_WINDOW) -> float | None:
    """The mean live ASR (fraction) over the last ``last`` epochs of ``curve`` that have one;
    None when fewer than ``last`` have one."""
    points = _late_points(curve)[-last:] if last > 0 else []
    return sum(a for _, a in points) / last if points and len(points) == last else None


def epochs_above(curve: Sequence[Mapping[str, Any]] | None, threshold: float, after_epoch: int = LATE_EPOCH) -> int:
    """How many epochs after ``after_epoch`` have a live ASR (fraction) above ``threshold``."""
    return sum(1 for epoch, asr in _late_points(curve) if epoch > after_epoch and asr > threshold)


def _fmt(stat: MeanStd) -> str:
    mean, std, n = stat
    if n == 0:
        return "–"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def format_table(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A Markdown table in the layout of the paper's Table 1 (values in %, mean ± sample std
    over seeds; the last two rows are the average drops of ASR and clean accuracy)."""
    agg = aggregate(rows)
    variants = agg["variants"]
    seeds = sorted({r["seed"] for r in rows})
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    first = rows[0] if rows else {}
    budget = "paper defaults per method" if first.get("epochs") is None else f"{first.get('epochs')} epochs"
    teachers = ("model folders" if first.get("teacher_folder") else f"{first.get('attack_epochs', '?')} epochs")
    fractions = ", ".join(f"{100 * f:g}%" for f in sorted({float(r.get("fraction", 0)) for r in rows} or {0.0}))
    lines.append(
        f"Dataset `{first.get('dataset', '?')}`, model `{first.get('model', '?')}`, {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}), clean data {fractions} of the training set, "
        f"defence budget: {budget}, teachers: {teachers}. Values in %, "
        f"mean ± std over seeds ({STD_DEFINITION})."
    )
    lines.append("")
    header = ["Attack", "Metric", "Original"] + list(variants)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for a in agg["attacks"]:
        for metric, label in (("asr", "ASR"), ("acc", "Accuracy")):
            vals = [_fmt(agg["cells"][(a, v)][metric]) if (a, v) in agg["cells"] else "–" for v in variants]
            lines.append("| " + " | ".join([a if metric == "asr" else "", label, _fmt(agg["original"][a][metric])] + vals) + " |")
    n_attacks = len(agg["attacks"])

    def drop(v: str, metric: str) -> str:
        d = agg["drops"][v]
        if math.isnan(d[metric]):
            return "–"
        partial = f" ({d['n_attacks']} of {n_attacks} attacks)" if d["n_attacks"] < n_attacks else ""
        interval = d[metric + "_ci"]
        return (interval.text() if interval.defined else f"{d[metric]:.1f}") + partial

    drop_asr = [drop(v, "asr") for v in variants]
    drop_acc = [drop(v, "acc") for v in variants]
    lines.append("| " + " | ".join(["Avg. drop", "ASR", "-"] + drop_asr) + " |")
    lines.append("| " + " | ".join(["", "Accuracy", "-"] + drop_acc) + " |")
    lines.append("")
    lines.append("Avg. drop: mean over attacks of (original − after), in percentage points; a method that did not "
                 "run on every attack says over how many it is averaged. [low, high]: its seed-only 95 % interval "
                 "(teachers and test images fixed; Student t, Welch df; `medic_viz.intervals`), where every attack "
                 "has two seeds or more.")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] = tuple(CSV_COLUMNS)) -> Path:
    """Write ``rows`` to ``path`` as CSV with ``columns`` (default :data:`CSV_COLUMNS`; dict and
    list values as JSON)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(r.get(k), sort_keys=True) if isinstance(r.get(k), (dict, list)) else r.get(k))
                             for k in columns})
    return path
