"""What one cell of a grid computes, as pure functions of its spec (they run in this process,
in worker processes or as Ray tasks): :func:`train_teacher` trains the trojaned model a cell
starts from, :func:`run_cell` removes its backdoor through :func:`medic_viz.pipeline.remove_backdoor`
and returns the result row.

Both take and return plain, picklable values (``CellSpec.to_dict()``, state dicts, dicts).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Mapping, cast

import torch
import torch.nn as nn

from medic_viz.attacks.registry import attack_evaluator, trigger_from_config
from medic_viz.attacks.train import ATTACK_TRAIN_DEFAULTS, train_attack
from medic_viz.cards import ModelCard
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits
from medic_viz.defenses.base import ConfiguredDefense
from medic_viz.defenses.registry import defense_class, make_defense
from medic_viz.device import resolve_device
from medic_viz.experiments.folders import card_digest, file_sha256
from medic_viz.experiments.grid import CellSpec
from medic_viz.experiments.protocol import splits_part
from medic_viz.importer import arch_builder, load_model_folder
from medic_viz.io import CARD_FILENAME, MODEL_FILENAME, model_from_state_dict
from medic_viz.metrics import BackdoorMetrics
from medic_viz.outdir import pause_for_tests
from medic_viz.pipeline import remove_backdoor, trigger_of
from medic_viz.train_checkpoint import TrainCheckpoint
from medic_viz.training import TrainConfig

__all__ = ["cell_splits", "teacher_model", "train_teacher", "folder_teacher", "defense_for_cell", "run_cell"]

#: Seed of the fixed random train/test subsets of ``max_train``/``max_test`` (independent of
#: the cells' seeds, so every cell of a grid sees the same subsets).
SUBSET_SEED = 12345


@functools.lru_cache(maxsize=2)
def cell_splits(dataset: str, max_train: int | None, max_test: int | None, data_root: str | None = None,
                test_part: str | None = None) -> DatasetSplits:
    """The dataset of a cell (a torchvision one read from ``data_root``): its test set cut to
    the protocol's ``test_part`` when given
    (:func:`~medic_viz.experiments.protocol.part_of_test_set`), then subsampled to fixed
    random subsets (seed :data:`SUBSET_SEED`) when ``max_train``/``max_test`` are set. Treat
    the result as read-only.

    Memoised per process, at most two datasets (a grid uses one; two let a session alternate
    between two grids without reloading). Why a process-level cache and not an object owned
    by the runner: cells run in worker processes and Ray tasks, where no runner object lives
    and handing one the dataset would pickle it for every task; the value is a deterministic
    function of its key, so the cache changes nothing but speed. ``cell_splits.cache_clear()``
    empties it.
    """
    splits = splits_part(load_dataset(dataset, root=data_root), test_part)
    train_set, test_set = splits.train, splits.test
    g = torch.Generator().manual_seed(SUBSET_SEED)
    if max_train is not None and max_train < len(train_set):
        train_set = train_set.subset(torch.randperm(len(train_set), generator=g)[: int(max_train)].sort().values)
    if max_test is not None and max_test < len(test_set):
        test_set = test_set.subset(torch.randperm(len(test_set), generator=g)[: int(max_test)].sort().values)
    return DatasetSplits(train_set, test_set)


def train_teacher(spec: Mapping[str, Any]) -> dict:
    """Train the trojaned model of a cell (``CellSpec.to_dict()``); returns a picklable payload
    ``{"state_dict", "card", "metrics", "attack_config", "target", "rate", "seconds", "torch"}``
    (metrics: clean accuracy and ASR on the cell's test set). A cell whose teacher is a model
    folder gets the folder's model instead, measured the same way
    (:func:`folder_teacher`)."""
    cell = CellSpec.from_dict(spec)
    pause_for_tests("teacher")  # a test hook: lets a test signal the grid while a worker is busy
    if cell.teacher_dir is not None:
        return folder_teacher(cell)
    start = time.perf_counter()
    splits = cell_splits(cell.dataset, cell.max_train, cell.max_test, cell.data_root, cell.test_part)
    cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": int(cell.attack_epochs), "seed": cell.attack_seed,
                         "device": cell.device, "progress": False, "eval_every": 0})
    target = cast(int, cell.target)  # a class of the data: validate_cells checks a grid-trained teacher's target
    trojan = train_attack(cell.attack, splits, target=target, rate=cell.rate, options=cell.attack_options,
                          architecture=cell.model, config=cfg, seed=cell.attack_seed, eval_max_images=None)
    card = trojan.card(splits, dataset=cell.dataset, notes=f"teacher of the {cell.attack} cells, seed {cell.attack_seed}")
    return {
        "state_dict": {k: v.detach().cpu() for k, v in trojan.model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": trojan.metrics.as_dict(),
        "attack_config": trojan.trigger.to_config() if trojan.trigger is not None else None,
        "target": cell.target,
        "rate": trojan.rate,
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }


def folder_teacher(cell: Any) -> dict:
    """The teacher payload of a folder cell (as :func:`train_teacher` returns it): the folder's
    weights and card, and its clean accuracy and ASR (None without a trigger in the card)
    measured on the cell's test set. Refuses a folder whose weights changed since the grid was
    built."""
    start = time.perf_counter()
    folder = Path(cell.teacher_dir)
    if cell.teacher_sha256 is not None and file_sha256(folder / MODEL_FILENAME) != cell.teacher_sha256:
        raise ValueError(f"--teacher {folder}: its weights changed after the grid was built; run compare again")
    if cell.teacher_card_sha256 is not None and card_digest(folder / CARD_FILENAME) != cell.teacher_card_sha256:
        raise ValueError(f"--teacher {folder}: its card.json changed after the grid was built; run compare again")
    model, card = load_model_folder(folder, trust_arch_code=cell.trust_arch_code)
    splits = cell_splits(cell.dataset, cell.max_train, cell.max_test, cell.data_root, cell.test_part)
    trigger, target = trigger_of(card)
    device = resolve_device(cell.device)
    metrics = attack_evaluator(trigger, splits.test, target, device=device)(model.to(device))
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": metrics.as_dict(),
        "attack_config": card.attack or None,
        "target": target,
        "rate": None,
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "trust_arch_code": cell.trust_arch_code,
    }


def teacher_model(payload: Mapping[str, Any]) -> nn.Module:
    """The trojaned model of a teacher payload (from :func:`train_teacher`), on the CPU, in eval
    mode (an architecture of your own only when the payload's ``trust_arch_code`` names it)."""
    card = ModelCard.from_dict(payload["card"])
    builder = arch_builder(card.architecture, payload.get("trust_arch_code"))
    return model_from_state_dict(card, payload["state_dict"], builder=builder)


#: Test images (a fixed subset chosen by the cell's seed) behind the per-epoch curve of a
#: MEDIC cell, the ``curve`` of its row. Other methods record no curve (it would cost them
#: 10–25 % more time; their final numbers are on the whole test set like MEDIC's).
CURVE_IMAGES = 1000
CURVE_METHODS = ("medic",)

#: Fields of a defence's result config copied into a row's ``extra`` (what a method decided).
_EXTRA_KEYS = ("t", "n_pruned", "n_channels", "pruned_layer", "attention_layers", "mask_epochs", "n_neurons", "holdout",
               "holdout_note", "fit_note")


def defense_for_cell(method: str, options: Mapping[str, Any]) -> ConfiguredDefense:
    """The defence a grid cell with these recorded ``options`` runs: a value its options leave out
    because it was pinned so (MEDIC's ε = 1e-5) is that value, not the config's current default."""
    return make_defense(method, **defense_class(method).cell_run_options(options))


def run_cell(spec: Mapping[str, Any], teacher: Mapping[str, Any], checkpoint: str | None = None) -> dict:
    """Run one cell: clean subset (``fraction``, class-balanced, chosen by the seed), the
    defence (no test data during training), then clean accuracy and ASR of the repaired model
    on the whole (or ``max_test``) test set. Returns the result row (JSON-serialisable).

    A MEDIC cell's row also has ``curve``: after each epoch (and at epoch 0), clean accuracy
    and ASR on :data:`CURVE_IMAGES` test images, for reporting only (nothing is chosen by it), and
    with MEDIC's ``holdout_fraction`` its clean hold-out accuracy (``holdout_acc``, ``n_holdout``).

    ``checkpoint``: a ``.pt`` path where a :attr:`~medic_viz.defenses.base.Defense.resumable`
    method saves itself every epoch and goes on from (the runner removes it once the row is
    stored; ignored for the other methods); a row that went on from one says ``"resumed": true``."""
    cell = CellSpec.from_dict(spec)
    start = time.perf_counter()
    torch.manual_seed(cell.seed)
    splits = cell_splits(cell.dataset, cell.max_train, cell.max_test, cell.data_root, cell.test_part)
    attack = trigger_from_config(teacher["attack_config"]) if teacher.get("attack_config") else None
    target = teacher.get("target")
    # measured on the same test set when the teacher was trained
    before = BackdoorMetrics(**teacher["metrics"])
    curve_images = CURVE_IMAGES if cell.method in CURVE_METHODS else 0
    # the grid's options say eval_every 0 (no live evaluation); a curve needs one per epoch
    options = {**cell.method_options, "eval_every": 1} if curve_images else dict(cell.method_options)
    defense = defense_for_cell(cell.method, options)
    saved = TrainCheckpoint(checkpoint) if checkpoint is not None and defense.resumable else None
    resumed = saved is not None and saved.exists()
    outcome = remove_backdoor(teacher_model(teacher), splits, defense,
                              trigger=attack, target=target, fraction=cell.fraction, seed=cell.seed,
                              device=cell.device, live_eval_images=curve_images, before=before,
                              clean_from=cell.clean_from or "images", checkpoint=saved)
    result, after = outcome.result, outcome.after
    curve = None
    if curve_images:
        curve = [{"epoch": e.epoch, "clean_acc": e.clean_acc, "asr": e.asr, "n_clean": e.n_clean, "n_asr": e.n_asr,
                  "seconds": round(e.seconds, 1),
                  **({} if e.holdout_acc is None else {"holdout_acc": e.holdout_acc, "n_holdout": e.n_holdout})}
                 for e in result.history if e.kind in ("start", "epoch")]
    return {
        "cell_id": cell.cell_id,
        "teacher_id": cell.teacher_id,
        "dataset": cell.dataset,
        "model": cell.model,
        "attack": cell.attack,
        "method": cell.method,
        "variant": cell.variant,
        "series": cell.series,
        "x": cell.x,
        "seed": cell.seed,
        "ablation": cell.ablation,
        "ablation_value": cell.ablation_value,
        "fraction": cell.fraction,
        "n_clean_subset": outcome.n_clean_subset,
        "epochs": cell.epochs,
        "attack_epochs": None if cell.teacher_dir is not None else cell.attack_epochs,
        "teacher_folder": cell.teacher_dir,
        "teacher_role": (teacher.get("card") or {}).get("role"),
        "test_part": cell.test_part,
        "clean_from": cell.clean_from or "images",
        "target": target,
        "before_clean_acc": before.clean_acc,
        "before_asr": before.asr,
        "clean_acc": after.clean_acc,
        "asr": after.asr,
        "n_clean": after.n_clean,
        "n_asr": after.n_asr,
        "train_seconds": round(result.seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mb": outcome.memory.get("peak_rss_mb"),
        "cuda_peak_mb": outcome.memory.get("cuda_peak_mb"),
        "device": str(resolve_device(cell.device)),
        "torch_threads": torch.get_num_threads(),  # CPU sums differ by thread count: say which ran
        "method_options": cell.method_options,
        "extra": {k: v for k, v in result.config.items() if k in _EXTRA_KEYS},
        **({} if curve is None else {"curve": curve}),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"resumed": True} if resumed else {}),
    }
