"""Resumable training (medic_viz.train_checkpoint): a run cut short and resumed ends with the
same model, history and step count as a run never interrupted; a checkpoint of another run, a
damaged or oversized file and a pickle that would run code are refused in one line."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from medic_viz.attacks.clean_label import AdversarialObjective
from medic_viz.attacks.train import train_attack
from medic_viz.cards import ModelCard
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.defenses.registry import make_defense
from medic_viz.experiments.teachers import TeacherCache, TeacherRecipe
from medic_viz.models.zoo import build_model
from medic_viz.train_checkpoint import TRAINING_DIR, CheckpointMismatchError, TrainCheckpoint
from medic_viz.training import SupervisedObjective, TrainConfig, train


def _arrays(n: int, seed: int, classes: int = 3, name: str = "tiny", size: int = 16) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    return ImageArrays(x, torch.arange(n) % classes, classes=tuple(f"c{i}" for i in range(classes)), name=name)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


CFG: dict[str, Any] = dict(epochs=3, batch_size=8, lr=0.01, augment=True, eval_every=0, device="cpu", progress=False, seed=5)


class _StopAfter:
    """A callback that sets ``event`` at the end of epoch ``epoch`` (the run stops in the next)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.event = epoch, threading.Event()

    def __call__(self, ev) -> None:
        if ev.kind == "epoch" and ev.epoch == self.epoch:
            self.event.set()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_cut_after_an_epoch_and_resumed_ends_as_the_uninterrupted_one(tmp_path: Path) -> None:
    data, cfg = _arrays(40, 0), TrainConfig(**CFG)
    whole = train(SupervisedObjective(_model()), data, cfg)
    ck = TrainCheckpoint(tmp_path / "run.pt")
    stop = _StopAfter(2)
    cut = train(SupervisedObjective(_model()), data, cfg, callbacks=[stop], stop_event=stop.event, checkpoint=ck)
    assert cut.stopped and ck.exists() and not _same_weights(cut.model, whole.model)
    seen: list[int] = []
    resumed = train(SupervisedObjective(_model()), data, cfg, checkpoint=ck,
                    callbacks=[lambda ev: seen.append(ev.epoch) if ev.kind == "epoch" else None])
    assert not resumed.stopped and seen == [3], "only the missing epoch runs"
    assert _same_weights(resumed.model, whole.model)
    assert resumed.steps == whole.steps == 3 * 5
    assert [(e.kind, e.epoch, e.losses) for e in resumed.history] == [(e.kind, e.epoch, e.losses) for e in whole.history]
    assert resumed.seconds >= resumed.history[-2].seconds > 0
    again = train(SupervisedObjective(_model()), data, cfg, checkpoint=ck)  # every epoch saved: nothing to run
    assert _same_weights(again.model, whole.model) and again.steps == whole.steps


def test_the_objective_state_is_restored_too(tmp_path: Path) -> None:
    data = _arrays(24, 1)
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    def objective():
        return AdversarialObjective(_model(), eps=4 / 255, steps=1, step_size=4 / 255, seed=3)
    whole = train(objective(), data, cfg)
    ck, stop = TrainCheckpoint(tmp_path / "adv.pt"), _StopAfter(1)
    train(objective(), data, cfg, callbacks=[stop], stop_event=stop.event, checkpoint=ck)
    resumed_objective = objective()
    resumed = train(resumed_objective, data, cfg, checkpoint=ck)
    assert resumed_objective._calls == 3 + 2 * 3, "the batch counter went on from the checkpoint"
    assert _same_weights(resumed.model, whole.model)


def test_train_attack_passes_the_checkpoint_to_the_model_it_trains(tmp_path: Path) -> None:
    splits = DatasetSplits(_arrays(48, 2, size=32), _arrays(18, 3, size=32))
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    options: dict[str, Any] = dict(target=1, rate=0.2, options={"size": 3}, architecture="small_cnn", config=cfg, seed=0)
    whole = train_attack("badnet", splits, **options)
    ck, stop = TrainCheckpoint(tmp_path / "t.pt"), _StopAfter(1)
    train_attack("badnet", splits, **options, callbacks=[stop], stop_event=stop.event, checkpoint=ck)
    resumed = train_attack("badnet", splits, **options, checkpoint=ck)
    assert _same_weights(resumed.model, whole.model) and resumed.metrics == whole.metrics


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    data, ck = _arrays(16, 0), TrainCheckpoint(tmp_path / "run.pt")
    train(SupervisedObjective(_model()), data, TrainConfig(**{**CFG, "epochs": 1}), checkpoint=ck)
    for cfg, d in ((TrainConfig(**{**CFG, "epochs": 1, "lr": 0.02}), data),
                   (TrainConfig(**{**CFG, "epochs": 1}), _arrays(17, 0)),
                   (TrainConfig(**{**CFG, "epochs": 2}), data)):
        with pytest.raises(CheckpointMismatchError, match="another run.*delete it"):
            train(SupervisedObjective(_model()), d, cfg, checkpoint=ck)
    # the device and the progress bar are not part of the run
    train(SupervisedObjective(_model()), data, TrainConfig(**{**CFG, "epochs": 1, "device": "auto"}), checkpoint=ck)


def test_data_of_the_same_name_and_size_but_other_content_is_another_run(tmp_path: Path) -> None:
    data, ck, cfg = _arrays(16, 0), TrainCheckpoint(tmp_path / "run.pt"), TrainConfig(**{**CFG, "epochs": 1})
    train(SupervisedObjective(_model()), data, cfg, checkpoint=ck)
    relabelled = ImageArrays(data.images, (data.labels + 1) % 3, classes=data.classes, name=data.name)
    poisoned = ImageArrays(data.images.clone(), data.labels, classes=data.classes, name=data.name)
    poisoned.images[0, :, :3, :3] = 255  # one stamped image: what another poisoning rate or target changes
    for other in (relabelled, poisoned, _arrays(16, 1)):
        assert other.name == data.name and len(other) == len(data) and other.digest() != data.digest()
        with pytest.raises(CheckpointMismatchError, match="another run"):
            train(SupervisedObjective(_model()), other, cfg, checkpoint=ck)
    same = ImageArrays(data.images.clone(), data.labels.clone(), classes=data.classes, name=data.name)
    assert same.digest() == data.digest()
    train(SupervisedObjective(_model()), same, cfg, checkpoint=ck)  # a copy of the same content resumes


def _medic_run(tmp_path: Path, stop_after: int | None = None, **options: Any):
    torch.manual_seed(0)
    teacher = build_model("small_cnn", 3, in_channels=3, input_size=32)
    medic = make_defense("medic", epochs=2, batch_size=8, eval_every=0, device="cpu", progress=False, **options)
    stop = _StopAfter(stop_after) if stop_after else None
    return medic.run(teacher, _arrays(24, 4, size=32), checkpoint=TrainCheckpoint(tmp_path / "medic.pt"),
                     callbacks=[stop] if stop else [], stop_event=stop.event if stop else None)


def test_a_medic_checkpoint_is_tied_to_every_medic_setting_not_only_the_training_ones(tmp_path: Path) -> None:
    cut = _medic_run(tmp_path, stop_after=1)
    assert cut.stopped and (tmp_path / "medic.pt").exists()
    for other in ({"eps": 1e-5}, {"layers": "conv+bn"}, {"lam": 1.0}, {"share": 0.05}, {"sigma_floor": 0.1}):
        with pytest.raises(CheckpointMismatchError, match="another run"):
            _medic_run(tmp_path, **other)
    resumed = _medic_run(tmp_path, fused="eager")  # how the loss is computed is not part of the run
    assert not resumed.stopped and [e.epoch for e in resumed.history if e.kind == "epoch"] == [1, 2]


def test_a_callable_setting_is_named_the_same_in_every_process(tmp_path: Path) -> None:
    def only_convolutions(name: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d)

    ck = TrainCheckpoint(tmp_path / "c.pt").for_run({"layers": only_convolutions})
    ck.save({"epoch": 1}, {"settings": 1})
    text = torch.load(ck.path, weights_only=True)["fingerprint"]
    assert "0x" not in text and f"{__name__}.{only_convolutions.__qualname__}" in text
    assert ck.load({"settings": 1}, parameter_bytes=1000) == {"epoch": 1}
    with pytest.raises(CheckpointMismatchError):
        TrainCheckpoint(ck.path).for_run({"layers": "auto"}).load({"settings": 1}, parameter_bytes=1000)


def test_an_objective_with_state_of_its_own_is_not_checkpointed(tmp_path: Path) -> None:
    class Stateful:
        def __init__(self) -> None:
            self.model = _model()

        def parameters(self):
            return list(self.model.parameters())

        def loss(self, x, y):
            ce = nn.functional.cross_entropy(self.model(x), y)
            return ce, {"ce": ce}, {}

    with pytest.raises(ValueError, match="Stateful cannot be resumed"):
        train(Stateful(), _arrays(8, 0), TrainConfig(**{**CFG, "epochs": 1}), checkpoint=TrainCheckpoint(tmp_path / "s.pt"))
    assert not (tmp_path / "s.pt").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (str(Path(os.environ["CHECKPOINT_PROBE"])),))


def test_damaged_oversized_and_code_running_files_are_refused_without_running_anything(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    data, cfg = _arrays(8, 0), TrainConfig(**{**CFG, "epochs": 1})
    ck = TrainCheckpoint(tmp_path / "bad.pt")
    ck.path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable training checkpoint.*delete it"):
        train(SupervisedObjective(_model()), data, cfg, checkpoint=ck)
    probe = tmp_path / "ran"
    monkeypatch.setenv("CHECKPOINT_PROBE", str(probe))
    with open(ck.path, "wb") as f:
        pickle.dump({"version": 1, "state": _RunsCode()}, f, protocol=2)
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        train(SupervisedObjective(_model()), data, cfg, checkpoint=ck)
    assert not probe.exists(), "loading a checkpoint never runs code"
    with open(ck.path, "wb") as f:
        f.write(b"\0" * (8 * 1000 + 64 * 2**20 + 1))
    with pytest.raises(ValueError, match="more than a checkpoint of this model can hold"):
        ck.load({}, parameter_bytes=1000)
    with pytest.raises(ValueError, match=r"\.pt file"):
        TrainCheckpoint(tmp_path / "x.json")


def test_the_teacher_cache_trains_through_its_checkpoint_and_removes_it(tmp_path: Path) -> None:
    data_file = tmp_path / "d.npz"
    data_file.write_bytes(b"v1")
    recipe = TeacherRecipe(dataset=str(data_file), architecture="small_cnn", epochs=2, seed=0, attack="badnet",
                           options={"size": 3}, rate=0.1, target=1)
    seen: list[TrainCheckpoint] = []

    def trainer(recipe, splits, *, surrogate=None, device="cpu", progress=False, checkpoint=None):
        seen.append(checkpoint)
        assert checkpoint is not None
        checkpoint.save({"epoch": 1}, {"run": 1})  # what train() leaves after an epoch
        card = ModelCard(architecture="small_cnn", num_classes=3, input_size=32, in_channels=3, arch_kwargs={},
                         classes=["a", "b", "c"], normalize=None, dataset="d.npz", attack={"name": "badnet", "size": 3},
                         target_class=1, poison_rate=0.1, metrics={}, history=[], notes="")
        return build_model("small_cnn", 3, in_channels=3, input_size=32), card

    cache = TeacherCache(tmp_path / "teachers", trainer=trainer)
    cache.train(recipe, splits=object(), log=None)
    assert seen[0].path.parent == tmp_path / "teachers" / TRAINING_DIR and seen[0].path.name.startswith(recipe.name)
    assert not seen[0].path.exists() and not (tmp_path / "teachers" / TRAINING_DIR).exists()


def test_a_method_that_cannot_resume_refuses_a_checkpoint_in_one_line(tmp_path: Path) -> None:
    teacher, clean = _model(), _arrays(8, 0)
    assert make_defense("medic").resumable and not make_defense("finetune").resumable
    with pytest.raises(ValueError, match=r"^Fine-tuning cannot go on from a checkpoint; run it without checkpoint=$"):
        make_defense("finetune", epochs=1).run(teacher, clean, checkpoint=TrainCheckpoint(tmp_path / "f.pt"))
    assert not (tmp_path / "f.pt").exists()
