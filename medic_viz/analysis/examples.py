"""Choosing an input to look at: a test image the model gets right and the trigger flips.

Figure 2 is most telling on an image whose clean copy the model classifies correctly and whose
triggered copy it sends to the attack's target: :func:`find_flipping_image` finds the first one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from medic_viz.analysis._common import _check_trigger
from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import model_device

__all__ = ["find_flipping_image"]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@torch.no_grad()
def find_flipping_image(
    model: nn.Module,
    data: ImageArrays,
    trigger: Trigger,
    target: int,
    *,
    max_candidates: int = 256,
    strict: bool = True,
    batch_size: int = 256,
) -> int:
    """Index into ``data`` of the first image whose true class is not ``target``, that ``model``
    classifies correctly, and whose triggered copy it classifies as ``target``.

    Only the first ``max_candidates`` non-target images are tried (in dataset order; the model
    runs in eval mode on its own device, its mode restored afterwards). When none of them flips:
    ``strict=True`` raises ``ValueError``; ``strict=False`` falls back to the first correctly
    classified candidate (what a model without a backdoor gives, e.g. a control), then to the
    first candidate.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, ImageArrays):
        raise TypeError(f"data must be ImageArrays (e.g. splits.test), got {type(data).__name__}")
    _check_trigger(trigger)
    target = _check_int(target, "target", 0)
    max_candidates = _check_int(max_candidates, "max_candidates", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    idx = (data.labels != target).nonzero()[:, 0][:max_candidates]
    if len(idx) == 0:
        raise ValueError(f"every image of data has the target class {target}; pass data with other classes too")
    device = model_device(model)
    clean_ok, flipped = [], []
    with eval_mode(model):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            x = data.floats(chunk, device)
            clean_ok.append((model(x).argmax(1) == data.labels[chunk].to(device)).cpu())
            flipped.append((model(trigger.apply(x)).argmax(1) == target).cpu())
    ok, flip = torch.cat(clean_ok), torch.cat(flipped)
    choices = (ok & flip,) if strict else (ok & flip, ok)
    for want in choices:
        hits = want.nonzero()[:, 0]
        if len(hits):
            return int(idx[hits[0]])
    if strict:
        raise ValueError(
            f"none of the first {len(idx)} non-target images is classified correctly and flipped to class {target} "
            "by the trigger; check the trigger and target, raise max_candidates, or pass strict=False"
        )
    return int(idx[0])
