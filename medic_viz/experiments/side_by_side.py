"""Several defences on one trojaned model, side by side, in this process (notebook 04): the
same clean subset and the same epoch budget for each, live curves, before/after numbers.

For attacks × methods × seeds with mean ± std, resumable, use the grid runner instead
(:func:`medic_viz.experiments.run_grid`, ``medic-viz compare``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn as nn

from medic_viz.attacks.registry import Attack, attack_evaluator
from medic_viz.data.arrays import DatasetSplits
from medic_viz.defenses.registry import DISPLAY_NAMES, defense_class, make_defense
from medic_viz.device import resolve_device
from medic_viz.experiments.grid import method_options
from medic_viz.pipeline import RemovalOutcome, remove_backdoor
from medic_viz.training import Callback

__all__ = ["compare_defenses"]


def compare_defenses(
    teacher: nn.Module,
    splits: DatasetSplits,
    methods: Sequence[str],
    *,
    trigger: Attack | None,
    target: int | None,
    epochs: int | None = None,
    fraction: float = 0.05,
    seed: int = 0,
    device: str = "auto",
    live_eval_images: int | None = 1000,
    eval_every: int = 1,
    callbacks: Sequence[Callback] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, RemovalOutcome]:
    """Run each defence of ``methods`` on ``teacher`` through
    :func:`medic_viz.pipeline.remove_backdoor`, under equal conditions.

    Every method gets the same class-balanced ``fraction`` of ``splits.train`` (chosen by
    ``seed``) and the budget of :func:`method_options` (``epochs`` for the main phase, mapped
    onto the others; None = each method's own default). The trojaned model is measured once on
    the whole test set and shared as every outcome's ``before``; live curves use at most
    ``live_eval_images`` test images every ``eval_every`` epochs. ``log`` (e.g. ``print``)
    gets one line per finished method.

    Returns ``{display name: RemovalOutcome}`` in the order of ``methods``.
    """
    names = [defense_class(m).name for m in methods]  # unknown names fail before any training
    if not names:
        raise ValueError("give at least one method to compare")
    if len(set(names)) != len(names):
        raise ValueError(f"each method once, please: got {list(methods)}")
    dev = resolve_device(device)
    before = attack_evaluator(trigger, splits.test, target, device=dev)(teacher.to(dev))
    outcomes: dict[str, RemovalOutcome] = {}
    for name in names:
        options = {**method_options(name, epochs=epochs, seed=seed, device=device), "eval_every": int(eval_every)}
        outcome = remove_backdoor(teacher, splits, make_defense(name, **options), trigger=trigger, target=target,
                                  fraction=fraction, seed=seed, device=device, live_eval_images=live_eval_images,
                                  callbacks=callbacks, before=before)
        label = DISPLAY_NAMES[name]
        outcomes[label] = outcome
        if log is not None:
            asr = "n/a" if outcome.after.asr is None else f"{outcome.after.asr:6.1%}"
            log(f"{label:12s} clean acc {outcome.after.clean_acc:6.1%}   ASR {asr}   "
                f"({outcome.result.seconds:.0f} s of training)")
    return outcomes
