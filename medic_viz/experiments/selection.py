"""The one tuning rule: every method's free settings chosen from clean data only, on development
teachers, with one accuracy budget.

**Rule.** Each method declares its candidate settings, weakest first
(:attr:`ConfiguredDefense.tuning <medic_viz.defenses.base.ConfiguredDefense.tuning>`, read
through :func:`medic_viz.defenses.registry.tuning_space`). Each candidate runs on every
development teacher with that teacher's clean subset (``clean_subset(train, fraction, seed)``)
and is scored by its accuracy on a clean hold-out the method never trains on
(:func:`medic_viz.data.arrays.holdout_subset`: training images outside the clean subset). The
chosen candidate is the **strongest whose mean hold-out accuracy drop against the teachers'
is at most** :data:`BUDGET_POINTS` (B = 3 points); if none is, the most accurate one
(:func:`medic_viz.defenses.tunable.strongest_within_budget`). No trigger, no test image.

**B = 3 points.** The paper's Table 1 accuracy drops (CIFAR-10, average over attacks) are
2.1–4.4 points: 2.1–2.3 for Fine-tuning, Fine-pruning, NAD, MCR and MEDIC, 4.4 for ANP. B sits
inside that range, so every method may spend about what the paper's methods spent, and it is
far above the hold-out's own noise (standard error ≈ 0.4 points on 1,960 images at 97 %).

**What the hold-out is not.** A grid's teachers trained on the whole training set, hold-out
included: a teacher's hold-out accuracy is its training accuracy, and fine-tuned copies keep
some of that memory while fresh students (MEDIC, KD, scratch) do not. Pass ``holdout=`` (for
example the development part of the test set, :mod:`medic_viz.experiments.protocol`) to score
on images no teacher saw.

:func:`choose_setting` is pure (hand-checkable); :func:`tune` runs the candidates and returns a
:class:`Selection`, the choice with its whole record (each candidate's hold-out accuracy on
each teacher), JSON-ready for a grid row (:meth:`Selection.as_dict`); :func:`tuned_cells` puts
chosen settings into grid cells.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from medic_viz.checks import check_number
from medic_viz.data.arrays import clean_subset, holdout_subset
from medic_viz.defenses.base import clean_set_accuracy, frozen_copy
from medic_viz.defenses.registry import canonical_name, defense_class, make_defense
from medic_viz.defenses.tunable import candidate_label, strongest_within_budget
from medic_viz.device import resolve_device

__all__ = ["BUDGET_POINTS", "CandidateRecord", "Selection", "candidate_groups", "choose_setting", "holdout_accuracies", "tune",
           "tuned_cells", "tuning_record", "write_selections", "read_selections"]

#: The accuracy budget B of the tuning rule, in points (percentage points of clean accuracy).
BUDGET_POINTS = 3.0


@dataclass
class CandidateRecord:
    """One candidate of a tuning: its ``options``, how they read (``label``), its hold-out
    accuracy per teacher (fractions), the mean drop against the teachers' in points, and
    whether that drop is within the budget."""

    options: dict
    label: str
    holdout_acc: dict[str, float]
    drop_points: float
    within_budget: bool


@dataclass
class Selection:
    """The tuning rule's choice for ``method``: ``options`` (the chosen candidate's, to merge
    into the method's options), its ``index`` among ``candidates`` (weakest first), the
    ``budget_points`` B, ``within_budget`` (False: no candidate was, the most accurate was
    taken), the teachers' own hold-out accuracies and every candidate's record."""

    method: str
    options: dict
    index: int
    budget_points: float
    within_budget: bool
    teacher_acc: dict[str, float]
    candidates: list[CandidateRecord] = field(default_factory=list)
    n_holdout: int = 0

    @property
    def label(self) -> str:
        return self.candidates[self.index].label

    def as_dict(self) -> dict:
        """The whole record, JSON-ready (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Selection":
        d = dict(data)
        d["candidates"] = [CandidateRecord(**c) for c in d.get("candidates", [])]
        sel = cls(**d)
        sel.options = {k: tuple(v) if isinstance(v, list) else v for k, v in sel.options.items()}
        return sel

    def __str__(self) -> str:
        rule = (f"strongest with a hold-out accuracy drop ≤ {self.budget_points:g} points" if self.within_budget else
                f"none within {self.budget_points:g} points: the most accurate")
        teachers = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.teacher_acc.items())
        lines = [f"{self.method}: {self.label} ({rule}; teachers' hold-out accuracy: {teachers}; "
                 f"{self.n_holdout} hold-out images)"]
        for i, c in enumerate(self.candidates):
            accs = " ".join(f"{100 * a:.1f}" for a in c.holdout_acc.values())
            lines.append(f"  {c.label:<40} acc {accs}  drop {c.drop_points:+.2f}"
                         f"{'' if c.within_budget else '  (over budget)'}{'  <- chosen' if i == self.index else ''}")
        return "\n".join(lines)


def choose_setting(
    candidates: Sequence[Mapping[str, Any]],
    holdout_acc: Sequence[Mapping[str, float]],
    teacher_acc: Mapping[str, float],
    budget_points: float = BUDGET_POINTS,
    *,
    method: str = "",
    n_holdout: int = 0,
) -> Selection:
    """Apply the tuning rule to measured accuracies (pure; fractions in, points for the budget).

    ``candidates``: options dicts, weakest first; ``holdout_acc[i]``: candidate ``i``'s hold-out
    accuracy per teacher name; ``teacher_acc``: each teacher's own. A candidate's drop is the
    mean over teachers of ``teacher − candidate``, in points; the choice is the strongest whose
    drop is at most ``budget_points``, else the smallest drop (the strongest on a tie)."""
    budget_points = check_number("budget_points", budget_points, 0.0, 100.0)
    if not candidates:
        raise ValueError("no candidates to choose from: a method's tuning space gives at least its defaults")
    if len(holdout_acc) != len(candidates):
        raise ValueError(f"one hold-out accuracy record per candidate: {len(candidates)} candidates, "
                         f"{len(holdout_acc)} records")
    if not teacher_acc:
        raise ValueError("give the teachers' own hold-out accuracies (at least one development teacher)")
    names = list(teacher_acc)
    records = []
    for options, accs in zip(candidates, holdout_acc):
        if sorted(accs) != sorted(names):
            raise ValueError(f"candidate {candidate_label(options)!r} was measured on teachers {sorted(accs)}, "
                             f"not {sorted(names)}: measure every candidate on every teacher")
        drop = 100.0 * sum(teacher_acc[k] - accs[k] for k in names) / len(names)
        records.append(CandidateRecord(dict(options), candidate_label(options), {k: float(accs[k]) for k in names},
                                       drop, drop <= budget_points + 1e-9))
    index = strongest_within_budget([r.drop_points for r in records], budget_points + 1e-9)
    return Selection(method, dict(candidates[index]), index, float(budget_points), records[index].within_budget,
                     {k: float(v) for k, v in teacher_acc.items()}, records, int(n_holdout))


def candidate_groups(method: str, candidates: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The candidates (indices, in order) that one run of ``method`` serves: those that differ
    only in options a finished run is read out at (MCR's ``t``, ANP's ``threshold``:
    :attr:`~medic_viz.defenses.base.ConfiguredDefense.readout_options`); one run per group."""
    readout = set(defense_class(canonical_name(method)).readout_options)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        key = json.dumps({k: v for k, v in c.items() if k not in readout}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def holdout_accuracies(
    method: str,
    teachers: Mapping[str, Any],
    train: Any,
    *,
    fraction: float = 0.05,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    holdout: Any = None,
    device: str = "auto",
    stop_event: threading.Event | None = None,
) -> tuple[list[dict], list[dict[str, float]], dict[str, float], int]:
    """Run every candidate of ``method`` on every teacher and measure it on the clean hold-out.

    ``teachers``: name → trojaned model (the development teachers); ``train``: the training
    :class:`~medic_viz.data.arrays.ImageArrays` the defence's clean subset comes from
    (``fraction``, ``seed``); ``options``: the method's other options (a grid cell's:
    :func:`~medic_viz.experiments.grid.method_options`, epochs, seed, device …);
    ``candidates``: default the method's tuning space; ``holdout``: default
    :func:`~medic_viz.data.arrays.holdout_subset` of ``train``. Candidates that differ only in
    options a finished run can be read out at (MCR's ``t``, ANP's ``threshold``) share one run.
    Returns ``(candidates, accuracies per candidate per teacher, teachers' accuracies, hold-out size)``."""
    method = canonical_name(method)
    cls = defense_class(method)
    cands = [dict(c) for c in (cls.tuning.candidates() if candidates is None else candidates)]
    if not cands:
        raise ValueError("give at least one candidate")
    if not teachers:
        raise ValueError("give at least one development teacher")
    base = dict(options or {})
    clean = clean_subset(train, fraction, seed)
    hold = holdout_subset(train, fraction, seed) if holdout is None else holdout
    dev = resolve_device(base.get("device", device))
    base.setdefault("device", str(dev))
    base.setdefault("progress", False)
    readout = set(cls.readout_options)
    groups = candidate_groups(method, cands)
    accs: list[dict[str, float]] = [{} for _ in cands]
    teacher_acc: dict[str, float] = {}
    for name, teacher in teachers.items():
        teacher_acc[name] = clean_set_accuracy(frozen_copy(teacher, dev), hold, dev)
        for members in groups:
            if stop_event is not None and stop_event.is_set():
                raise RuntimeError("tuning stopped before every candidate ran")
            first = cands[members[0]]
            defense = make_defense(method, **{**base, **first})
            result = defense.run(teacher, clean, stop_event=stop_event)
            for i in members:
                extra = {k: v for k, v in cands[i].items() if k in readout and v != first.get(k)}
                model = defense.readout(teacher, clean, **extra) if extra else result.model
                accs[i][name] = clean_set_accuracy(model, hold, dev)
    return cands, accs, teacher_acc, len(hold)


def tune(
    method: str,
    teachers: Mapping[str, Any],
    train: Any,
    *,
    budget_points: float = BUDGET_POINTS,
    fraction: float = 0.05,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    holdout: Any = None,
    device: str = "auto",
    stop_event: threading.Event | None = None,
) -> Selection:
    """Choose ``method``'s settings by the tuning rule on the development ``teachers``
    (:func:`holdout_accuracies`, then :func:`choose_setting`). The arguments are
    :func:`holdout_accuracies`'; ``budget_points``: B."""
    cands, accs, teacher_acc, n = holdout_accuracies(
        method, teachers, train, fraction=fraction, seed=seed, options=options, candidates=candidates,
        holdout=holdout, device=device, stop_event=stop_event)
    return choose_setting(cands, accs, teacher_acc, budget_points, method=canonical_name(method), n_holdout=n)


def tuned_cells(cells: Sequence[Any], selections: Mapping[str, Selection], *, suffix: str = ", tuned") -> list[Any]:
    """The grid cells whose method has a selection, with its chosen options merged into their
    options (pinned again: :meth:`~medic_viz.defenses.base.ConfiguredDefense.pinned_options`) and
    ``suffix`` on their variant — new cells with their own ids, to run beside the untuned ones
    (e.g. "ANP" with its fixed settings and "ANP, tuned"). Other cells are left out."""
    out = []
    for cell in cells:
        sel = selections.get(cell.method)
        if sel is None:
            continue
        cls = defense_class(cell.method)  # a pinned cell's options are read as they run, then pinned again:
        opts = cls.pinned_options({**cls.cell_run_options(cell.method_options), **sel.options})  # MEDIC's ε = 1e-5 stays
        out.append(replace(cell, method_options=opts, variant=f"{cell.variant}{suffix}"))
    return out


def tuning_record(row: Mapping[str, Any], selections: Mapping[str, Selection], *,
                  suffix: str = ", tuned") -> dict | None:
    """The tuning record behind one finished grid row: ``None`` for an untuned row (its variant
    lacks ``suffix``), else the rule's choice for its method — chosen label, its index among the
    candidates, their number, its hold-out drop (points), the budget B, whether it was within B,
    the development teachers and the hold-out size. Raises ``ValueError`` when the row is tuned
    but ``selections`` has no record for its method, or the row ran other options than the chosen
    ones (the record would not be this row's)."""
    if not str(row.get("variant", "")).endswith(suffix):
        return None
    method = row.get("method")
    sel = selections.get(str(method))
    if sel is None:
        raise ValueError(f"row {row.get('cell_id')} is tuned but no selection is recorded for {method}: "
                         "run python -m benchmarks.tune_methods --report")
    ran = row.get("method_options") or {}
    differs = {k: (v, ran.get(k)) for k, v in sel.options.items()
               if json.dumps(ran.get(k)) != json.dumps(list(v) if isinstance(v, tuple) else v)}
    if differs:
        raise ValueError(f"row {row.get('cell_id')} ran {method} with other options than the recorded choice "
                         f"(option: (chosen, ran) = {differs}); re-run the cell or the tuning report")
    chosen = sel.candidates[sel.index] if sel.candidates else None
    return {"chosen": sel.label if chosen else json.dumps(sel.options, sort_keys=True), "index": sel.index,
            "n_candidates": len(sel.candidates), "drop_points": chosen.drop_points if chosen else None,
            "budget_points": sel.budget_points, "within_budget": sel.within_budget,
            "teachers": sorted(sel.teacher_acc), "n_holdout": sel.n_holdout}


def write_selections(path: str | Path, selections: Mapping[str, Selection]) -> Path:
    """Save ``selections`` (method → :class:`Selection`) as one JSON file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({m: s.as_dict() for m, s in selections.items()}, indent=1, sort_keys=True) + "\n")
    return path


def read_selections(path: str | Path) -> dict[str, Selection]:
    """The selections :func:`write_selections` saved."""
    return {m: Selection.from_dict(d) for m, d in json.loads(Path(path).read_text()).items()}
