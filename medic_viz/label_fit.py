"""Did the clone learn the clean labels at all? A check on the run's own training loss.

A clone whose training cross-entropy ends where a constant guess's would (the entropy of the
clean labels' class frequencies) has learnt nothing from the labels — e.g. a labels-only head
whose ReLUs died under a strong cloning term (plain cloning on VGG-11-BN: BENCHMARKS.md §6). Its
accuracy and ASR then describe a constant classifier, not a repaired model. Clean data only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["LABEL_FIT_RATIO", "label_entropy", "label_fit_record"]

#: A final training cross-entropy at or above this fraction of the labels' entropy gets a note.
LABEL_FIT_RATIO = 0.9


def label_entropy(labels: torch.Tensor) -> float:
    """Entropy (nats) of the class frequencies of ``labels`` (1-D integer tensor): the
    cross-entropy of the best constant guess. 0 for one class or none."""
    if labels.numel() == 0:
        return 0.0
    p = torch.bincount(labels.long().flatten()).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def label_fit_record(epoch_ce: Iterable[float | None], labels: torch.Tensor) -> dict:
    """``{"fit_note": one line}`` when the last epoch's mean training cross-entropy (``epoch_ce``,
    nats, one per finished epoch) is at least :data:`LABEL_FIT_RATIO` of :func:`label_entropy`;
    ``{}`` otherwise, or when no epoch finished."""
    values = [float(v) for v in epoch_ce if v is not None and math.isfinite(float(v))]  # None: an epoch without CE
    prior = label_entropy(labels)
    if not values or prior <= 0 or values[-1] < LABEL_FIT_RATIO * prior:
        return {}
    return {"fit_note": (f"the clone did not learn the clean labels: its training cross-entropy ends at {values[-1]:.2f} "
                         f"nats, a constant guess's is {prior:.2f}; its accuracy and ASR are a constant classifier's — "
                         "try more epochs, a smaller lam or a smaller learning rate")}
