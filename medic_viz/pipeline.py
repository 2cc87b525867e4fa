"""End-to-end jobs shared by the CLI, the notebooks and the benchmarks: measure a trojaned
model, run a defence through the one training loop, measure again, save everything."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from medic_viz.attacks.registry import Attack, attack_evaluator, trigger_from_config
from medic_viz.capture import eval_mode
from medic_viz.cards import ModelCard
from medic_viz.data.arrays import DatasetSplits, clean_subset
from medic_viz.data.tracks import CLEAN_FROM, frame_tracks
from medic_viz.defenses.base import Defense, DefenseResult
from medic_viz.deprecation import moved_names
from medic_viz.device import resolve_device
from medic_viz.finite import check_finite_model
from medic_viz.io import save_model
from medic_viz.metrics import BackdoorMetrics
from medic_viz.outdir import pause_for_tests
from medic_viz.resources import PeakMemory
from medic_viz.train_checkpoint import TrainCheckpoint
from medic_viz.training import Callback

__all__ = ["RemovalOutcome", "remove_backdoor", "save_outcome", "trigger_of", "check_image_size"]


@dataclass
class RemovalOutcome:
    """Before/after metrics of one defence run, with its result and settings."""

    method: str
    before: BackdoorMetrics
    after: BackdoorMetrics
    result: DefenseResult
    fraction: float
    n_clean_subset: int
    seconds: float
    config: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        return {
            "method": self.method,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "history": self.result.history_dicts(),
            "config": {**self.config, "fraction": self.fraction, "n_clean_subset": self.n_clean_subset},
            "stopped": self.result.stopped,
            "seconds": round(self.seconds, 3),
            "train_seconds": round(self.result.seconds, 3),
            "peak_memory": dict(self.memory),
        }


def trigger_of(card: ModelCard) -> tuple[Attack | None, int | None]:
    """The attack (trigger, or composite attack) and target recorded in a model card
    (None, None if the card has none)."""
    if not card.attack:
        return None, None
    return trigger_from_config(card.attack), card.target_class


def check_image_size(expected: tuple[int, int], splits: DatasetSplits, what: str = "the model") -> None:
    """Raise ValueError unless the images of ``splits`` are ``expected = (channels, size)``.

    The zoo's models run on any size >= 32 (global pooling), so a model would otherwise be
    trained or measured on images of another size than it was made for, without a word."""
    channels, size = expected
    c, h, w = splits.image_shape
    if (c, h, w) != (channels, size, size):
        raise ValueError(
            f"{what} takes {channels}-channel {size}x{size} images but {splits.train.name} has {c}-channel "
            f"{h}x{w} images; use the data the model was made for (CLI: --image-size {size} resizes a named "
            "dataset to the model's size)"
        )


def remove_backdoor(
    teacher: nn.Module,
    splits: DatasetSplits,
    defense: Defense,
    *,
    trigger: Attack | None = None,
    target: int | None = None,
    fraction: float = 0.05,
    seed: int = 0,
    device: str = "auto",
    live_eval_images: int | None = 1000,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    before: BackdoorMetrics | None = None,
    clean_from: str = "images",
    checkpoint: TrainCheckpoint | None = None,
) -> RemovalOutcome:
    """Measure ``teacher``, run ``defense`` on a class-balanced ``fraction`` of the training
    set (chosen by ``seed``), and measure the repaired model on the whole test set.
    ``clean_from="tracks"``: that fraction from as few of the training set's 30-frame tracks as
    it takes (GTSRB's layout: :func:`~medic_viz.data.tracks.frame_tracks`) — fewer distinct images.

    Live curves use at most ``live_eval_images`` test images (None = all, 0 = no live
    evaluation); before/after numbers always use the whole test set. ``before``: the
    teacher's metrics on this test set when already measured (skips measuring it again).
    Refused with ValueError before anything runs: an empty test set, a teacher with NaN/inf
    weights, a zoo teacher (one with ``zoo_config``) on images of another size or channel count.
    A repaired model with NaN/inf weights or outputs raises
    :class:`~medic_viz.finite.NonFiniteModelError`: it is never returned as a result.
    The outcome records the wall time and the peak memory (:class:`~medic_viz.resources.PeakMemory`).
    ``checkpoint``: the defence saves itself there every epoch and goes on from it (a
    :attr:`~medic_viz.defenses.base.Defense.resumable` one; ValueError otherwise).
    """
    start = time.perf_counter()
    if clean_from not in CLEAN_FROM:
        raise ValueError(f"clean_from must be one of {', '.join(CLEAN_FROM)}, got {clean_from!r}")
    dev = resolve_device(device)
    if len(splits.test) == 0:
        raise ValueError(f"{splits.test.name}: the test set is empty, so the defence could not be measured; "
                         "use data with test images")
    check_finite_model(teacher, "the teacher", "Its file is broken or it diverged in training; use another copy")
    zoo = getattr(teacher, "zoo_config", None)
    if isinstance(zoo, dict) and isinstance(zoo.get("input_size"), int) and isinstance(zoo.get("in_channels"), int):
        check_image_size((zoo["in_channels"], zoo["input_size"]), splits, "the teacher")
    with PeakMemory(dev) as memory:
        if splits.num_classes != _num_outputs(teacher, splits, dev):
            raise ValueError(
                f"the model outputs {_num_outputs(teacher, splits, dev)} classes but the dataset has "
                f"{splits.num_classes}; use the dataset the model was trained on"
            )

        tracks = frame_tracks(splits.train.labels) if clean_from == "tracks" else None
        clean = clean_subset(splits.train, fraction, seed, tracks=tracks)
        full = attack_evaluator(trigger, splits.test, target, device=dev)
        if before is None:
            before = full(teacher.to(dev))
        live = None
        if live_eval_images is None or live_eval_images > 0:
            live = attack_evaluator(trigger, splits.test, target, max_images=live_eval_images, seed=seed, device=dev)
        resume = {} if checkpoint is None else {"checkpoint": checkpoint}
        if checkpoint is not None and not defense.resumable:
            raise ValueError(f"{defense.display_name or defense.name} cannot go on from a checkpoint; "
                             "run it without checkpoint=")
        result = defense.run(teacher, clean, evaluator=live, callbacks=callbacks, stop_event=stop_event,
                             **resume)  # only a resumable defence takes it
        check_finite_model(result.model, f"the model repaired by {defense.name}",
                           "The defence diverged: try a lower learning rate (--lr), or a smaller τ or λ")
        after = full(result.model.to(dev))
    return RemovalOutcome(
        method=defense.name,
        before=before,
        after=after,
        result=result,
        fraction=fraction,
        n_clean_subset=len(clean),
        seconds=time.perf_counter() - start,
        config=dict(result.config),
        memory=memory.as_dict(),
    )


def _num_outputs(model: nn.Module, splits: DatasetSplits, device: str | torch.device) -> int:
    x = splits.test.floats(torch.arange(min(2, len(splits.test))), device)
    model.to(device)
    try:
        with eval_mode(model), torch.no_grad():
            return int(model(x).shape[1])
    except RuntimeError as exc:
        raise ValueError(
            f"the model cannot run on this dataset's images {tuple(x.shape[1:])}: {exc}. Check that the "
            "dataset's channels and size match the model's card"
        ) from exc


def save_outcome(
    outcome: RemovalOutcome,
    out_dir: str | Path,
    *,
    teacher_card: ModelCard | None = None,
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write ``result.json`` and, given the teacher's card, the repaired model (``model/``)
    with a card saying how it was repaired. Returns ``{"result": ..., "model": ...}``.

    The HTML report (curves) is a view: :func:`medic_viz.viz.report.write_outputs` writes it
    with these files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = outcome.to_json_dict()
    if extra:
        payload.update(extra)
    paths = {"result": out / "result.json", "model": out / "model"}
    paths["result"].write_text(json.dumps(payload, indent=2, default=str))

    pause_for_tests("write")  # a test hook: lets a test signal the process in the middle of writing
    if teacher_card is not None:
        card = ModelCard.from_dict(
            {
                **teacher_card.to_dict(),
                "metrics": {**outcome.after.as_dict()},
                "history": [],
                "notes": f"repaired by {outcome.method} from a model trojaned with "
                f"{(teacher_card.attack or {}).get('name', 'an unknown attack')}",
            }
        )
        save_model(outcome.result.model, paths["model"], card)
    return paths


#: Old names (:mod:`medic_viz.deprecation`): ``format_table`` is :func:`medic_viz.metrics.format_before_after`;
#: ``write_outputs`` (result.json + report.html + model/) is the view
#: :func:`medic_viz.viz.report.write_outputs`, loaded only when the old name is looked up.
__getattr__ = moved_names(__name__)
