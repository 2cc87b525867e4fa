"""Choosing τ: sweeps, and a choice from clean data alone.

τ is data-dependent (DESIGN §2, paper Figure 4): a larger τ removes more of a backdoor and
costs more clean accuracy. Defenders usually do not know the trigger, so :func:`select_tau`
uses only the clean subset: it holds part of it out, runs MEDIC on the rest for each candidate
τ, and returns the largest τ whose hold-out accuracy stays within ``budget`` of the trojaned
model's hold-out accuracy. No trigger, no test data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch.nn as nn

from medic_viz.data.arrays import ImageArrays, split_holdout
from medic_viz.defenses.medic import Medic
from medic_viz.defenses.tunable import strongest_within_budget
from medic_viz.importance import validate_tau
from medic_viz.metrics import Evaluator
from medic_viz.training import Callback

__all__ = ["TauSelection", "split_holdout", "sweep_tau", "choose_tau", "within_budget", "holdout_stderr", "select_tau",
           "DEFAULT_TAU_CANDIDATES"]

DEFAULT_TAU_CANDIDATES: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


def sweep_tau(
    teacher: nn.Module,
    clean: ImageArrays,
    taus: Sequence[float],
    *,
    evaluator: Evaluator | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    **medic_options: Any,
) -> list[dict]:
    """Run MEDIC once per τ on ``clean``; returns one row per τ with the final metrics that
    ``evaluator`` reports (``clean_acc``, ``asr``, counts) and the trained model under "model"."""
    rows = []
    for tau in taus:
        validate_tau(tau)
        if stop_event is not None and stop_event.is_set():
            break
        result = Medic(tau=float(tau), **medic_options).run(teacher, clean, evaluator=evaluator, callbacks=callbacks,
                                                            stop_event=stop_event)
        row: dict = {"tau": float(tau), "seconds": result.seconds, "stopped": result.stopped, "model": result.model}
        if evaluator is not None:
            m = evaluator(result.model)
            row.update(m.as_dict())
        rows.append(row)
    return rows


@dataclass
class TauSelection:
    """The chosen τ and the per-τ hold-out accuracies behind the choice."""

    tau: float
    budget: float
    reference_acc: float
    rows: list[dict] = field(default_factory=list)

    def __str__(self) -> str:
        chosen = [r for r in self.rows if r["tau"] == self.tau]
        within = not chosen or within_budget(chosen[0]["clean_acc"], self.reference_acc, self.budget)
        rule = (f"largest τ with hold-out accuracy drop ≤ {100 * self.budget:.1f} points" if within else
                f"no τ within the {100 * self.budget:.1f}-point budget: the most accurate")
        lines = [f"τ chosen from clean data: {self.tau:g} ({rule}; trojaned model's hold-out accuracy "
                 f"{100 * self.reference_acc:.1f}%)"]
        for r in self.rows:
            lines.append(f"  τ={r['tau']:<5g} hold-out acc {100 * r['clean_acc']:.1f}% (n={r['n_clean']})"
                         f"{'  <- chosen' if r['tau'] == self.tau else ''}")
        return "\n".join(lines)


def holdout_stderr(accuracy: float, n: int) -> float:
    """Standard error (a fraction) of an accuracy measured on ``n`` hold-out images, by the
    Agresti–Coull "plus four" rule: with ``p = (accuracy * n + 2) / (n + 4)``, ``sqrt(p * (1 - p) / (n + 4))``.

    Unlike the plain binomial ``sqrt(a * (1 - a) / n)`` it is not zero at 100 % (or 0 %): a model
    that got all 390 hold-out images right is not known to be exactly right, and a zero margin
    would reject any clone that misses one image. Elsewhere it is a little wider than the plain
    rule (90 of 100: 3.13 against 3.00 points; 388 of 390: 0.51 against 0.36)."""
    if n < 1:
        raise ValueError(f"n must be a positive image count, got {n}")
    if not (0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    adjusted = (accuracy * n + 2.0) / (n + 4.0)
    return (adjusted * (1.0 - adjusted) / (n + 4.0)) ** 0.5


def within_budget(clean_acc: float, reference_acc: float, budget: float) -> bool:
    """Whether ``clean_acc`` is at most ``budget`` below ``reference_acc`` (fractions; equality counts)."""
    return reference_acc - clean_acc <= budget + 1e-12


def choose_tau(rows: Sequence[dict], reference_acc: float, budget: float) -> float:
    """The largest ``rows[i]["tau"]`` whose ``clean_acc`` is at most ``budget`` below
    ``reference_acc`` (fractions). If none is, the τ whose ``clean_acc`` is highest (the nearest
    to the budget; the largest such τ on a tie) — not simply the smallest τ, whose clone is not
    always the most accurate. ``rows`` as :func:`sweep_tau` returns. The rule is the library's
    one (:func:`~medic_viz.defenses.tunable.strongest_within_budget`), a larger τ the stronger."""
    if not rows:
        raise ValueError("no sweep rows to choose τ from")
    ordered = sorted(rows, key=lambda r: float(r["tau"]))
    return float(ordered[strongest_within_budget([reference_acc - r["clean_acc"] for r in ordered], budget)]["tau"])


def select_tau(
    teacher: nn.Module,
    clean: ImageArrays,
    *,
    candidates: Sequence[float] = DEFAULT_TAU_CANDIDATES,
    budget: float = 0.03,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    **medic_options: Any,
) -> TauSelection:
    """Choose τ from clean data alone: the largest candidate whose hold-out clean accuracy is
    within ``budget`` (a fraction, 0.03 = 3 points) of the trojaned model's; if none is, the most
    accurate candidate (:func:`choose_tau`). ``medic_options`` go to :class:`Medic` (e.g. epochs).

    A tight budget pushes τ down, and the hold-out cannot see the backdoor: on GTSRB WRN-16-1
    Reflection a budget of 0.36 points picked a global τ = 3, whose clones kept 33–45 % ASR where
    τ-by-share (the default) kept 1–5 % (RESULTS.md, "MEDIC, τ aligned"). Keep the budget generous."""
    if not candidates:
        raise ValueError("give at least one candidate τ")
    if not (0.0 <= budget < 1.0):
        raise ValueError(f"budget must be a fraction in [0, 1), e.g. 0.03 for 3 points; got {budget}")
    fit, hold = split_holdout(clean, holdout_fraction, seed)
    evaluator = Evaluator(hold, device=device)
    reference = evaluator(teacher.to(evaluator.device)).clean_acc
    rows = sweep_tau(teacher, fit, sorted(float(t) for t in candidates), evaluator=evaluator, callbacks=callbacks,
                     stop_event=stop_event, device=device, seed=seed, **medic_options)
    for r in rows:
        r.pop("model", None)
    return TauSelection(choose_tau(rows, reference, budget), budget, reference, rows)
