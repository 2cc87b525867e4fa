"""MEDIC's clean hold-out: what cloning costs, measured with clean data alone (issue 27 item 3).

With ``holdout_fraction`` (:class:`medic_viz.defenses.medic.MedicConfig`) a share of the clean data
is kept out of training; the clone's accuracy on it is measured at every evaluation
(``TrainEvent.holdout_acc``) and, at the end, set against the teacher's: :func:`holdout_record`
is what the result keeps. The hold-out sees accuracy only, never the backdoor.
"""

from __future__ import annotations

__all__ = ["HOLDOUT_GAP_POINTS", "holdout_record"]

#: A clone more than this many points below the teacher on the held-out clean images gets a
#: ``holdout_note`` (``holdout_fraction``): the accuracy budget of the library's tuning rule
#: (:data:`medic_viz.experiments.selection.BUDGET_POINTS`) and of issue 27's 5 % target.
HOLDOUT_GAP_POINTS = 3.0


def holdout_record(teacher_acc: float, clone_acc: float, n_holdout: int, n_fit: int, whole_groups: bool = False) -> dict:
    """``{"holdout": {...}}`` and, when the clone is more than :data:`HOLDOUT_GAP_POINTS` below
    the teacher on the held-out clean images, ``{"holdout_note": one line}``. Accuracies are
    fractions; ``gap_points`` = 100 · (teacher − clone); ``whole_groups``: the hold-out is whole
    groups of near copies (tracks), none of them in training."""
    gap = 100.0 * (teacher_acc - clone_acc)
    record: dict = {"holdout": {"images": int(n_holdout), "trained_on": int(n_fit), "teacher_acc": float(teacher_acc),
                                "clone_acc": float(clone_acc), "gap_points": round(gap, 2),
                                "whole_groups": bool(whole_groups)}}
    if gap > HOLDOUT_GAP_POINTS:
        record["holdout_note"] = (f"on {n_holdout:,} held-out clean images the clone reaches {100 * clone_acc:.1f} % "
                                  f"against the teacher's {100 * teacher_acc:.1f} % ({gap:.1f} points below): more "
                                  "clean data, more epochs or layers='conv+bn' (fewer layers learnt from labels "
                                  "alone) may close it")
    return record
