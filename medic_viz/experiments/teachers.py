"""A cache of trained models that experiments share: trojaned teachers, clean models and the
adversarially trained surrogates of the Clean-Label attack, each trained once and found again
by everything that changes it.

A :class:`TeacherRecipe` says what a model is: the dataset (its file's SHA-256 when it is a
file), the attack and its settings (options, poison rate, target; the surrogate its poisons
come from), the architecture, the epochs, the seed, and the training settings
(``ATTACK_TRAIN_DEFAULTS``). :meth:`TeacherRecipe.key` is all of that as JSON.

:class:`TeacherCache` keeps one model folder per recipe under its root
(``model.safetensors`` + ``card.json`` + ``teacher_key.json``, the key), named after the recipe
(``<attack>_<arch>_e<epochs>_s<seed>``, ``clean_…``, ``robust<ε·255>_…``; the name of a
different recipe's folder already there gets ``-<digest>`` appended). A folder is written into
a temporary folder and renamed into place (:class:`medic_viz.outdir.OutputFolder`): present
means whole; it is then recorded in the root's ``manifest.json`` (weights' SHA-256, clean
accuracy, ASR: :mod:`medic_viz.experiments.teacher_manifest`). A model in training saves its
state after every epoch under ``<root>/.training/<name>-<digest>.pt``
(:class:`medic_viz.train_checkpoint.TrainCheckpoint`): training it again after an interruption
goes on from its last whole epoch; the file is removed once the folder is stored. Folders made
before the key file existed (no ``teacher_key.json``) are found by
their name when their card agrees with the recipe: architecture, dataset file name, number of
epochs, attack name, every given trigger option, target and poison rate.

The grid runner keeps its own teachers under ``DIR/teachers/`` (keyed by
:meth:`~medic_viz.experiments.grid.CellSpec.teacher_key`, for resuming a grid); this cache is
for models an experiment trains outside a grid, or hands to one as ``--teacher`` folders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from medic_viz.attacks.clean_label import AdversarialObjective
from medic_viz.attacks.train import ATTACK_TRAIN_DEFAULTS, train_attack
from medic_viz.cards import TEACHER_ROLES, ModelCard
from medic_viz.data import load_dataset
from medic_viz.data_identity import file_sha256
from medic_viz.experiments.teacher_manifest import KEY_FILE, record_model
from medic_viz.io import load_model, save_model
from medic_viz.metrics import Evaluator
from medic_viz.models.zoo import build_model
from medic_viz.outdir import OutputFolder, OutputFolderError
from medic_viz.train_checkpoint import TRAINING_DIR, TrainCheckpoint
from medic_viz.training import TrainConfig, train

__all__ = ["TeacherRecipe", "TeacherCache", "KEY_FILE", "train_recipe", "dataset_identity"]

_KEY_FORMAT = 1


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def dataset_identity(dataset: str | Path) -> dict:
    """``{"name", "sha256"}`` of a dataset: a file's name and digest (the same data under
    another path is the same dataset; edited data is not), or a named dataset's name."""
    path = Path(dataset).expanduser()
    if path.is_file():
        st = path.stat()
        return {"name": path.name, "sha256": _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)}
    return {"name": str(dataset), "sha256": None}


@dataclass(frozen=True)
class TeacherRecipe:
    """What a cached model is. ``attack`` None: a clean model, or with ``adversarial``
    (``{"eps", "steps", "step_size"}``) one trained by PGD adversarial training. ``surrogate``:
    the recipe of the model the attack's poisons are computed against (Clean-Label).
    ``notes`` and ``role`` (``"development"`` / ``"evaluation"``, see
    :mod:`medic_viz.experiments.protocol`) go into the card only (not into the key), and
    ``recorded_rate`` is only for finding a folder that predates the key file."""

    dataset: str
    architecture: str
    epochs: int
    seed: int
    attack: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    rate: float | None = None
    target: int | None = None
    surrogate: "TeacherRecipe | None" = None
    adversarial: Mapping[str, float] | None = None
    notes: str = ""
    role: str | None = None
    #: Another rate a card written before the key file may record for this poisoning (see
    #: :attr:`medic_viz.experiments.presets.AttackPreset.recorded_rate`); not in the key.
    recorded_rate: float | None = None

    def __post_init__(self) -> None:
        if self.attack is not None and self.adversarial is not None:
            raise ValueError("a recipe is either an attack or adversarial training, not both")
        if self.role is not None and self.role not in TEACHER_ROLES:
            raise ValueError(f"role must be one of {', '.join(TEACHER_ROLES)} or None, got {self.role!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a whole number >= 1, got {self.epochs!r}")

    @property
    def name(self) -> str:
        """The folder name: ``<attack>_<arch>_e<epochs>_s<seed>`` (``clean`` without an attack,
        ``robust`` / ``robust<ε·255>`` for adversarial training; ``robust`` alone is ε 8/255)."""
        if self.attack is not None:
            kind = self.attack
        elif self.adversarial is not None:
            eps = float(self.adversarial["eps"])
            kind = "robust" if math.isclose(eps, 8 / 255) else f"robust{round(255 * eps)}"
        else:
            kind = "clean"
        return f"{kind}_{self.architecture}_e{self.epochs}_s{self.seed}"

    def key(self) -> dict:
        """Everything that changes the trained model, as JSON-ready data."""
        return {
            "format": _KEY_FORMAT,
            "dataset": dataset_identity(self.dataset),
            "architecture": self.architecture,
            "epochs": self.epochs,
            "seed": self.seed,
            "attack": self.attack,
            "options": json.loads(json.dumps(dict(self.options), sort_keys=True, default=str)),
            "rate": self.rate,
            "target": self.target,
            "surrogate": None if self.surrogate is None else self.surrogate.key(),
            "adversarial": None if self.adversarial is None else dict(sorted(self.adversarial.items())),
            "train": {k: v for k, v in sorted(ATTACK_TRAIN_DEFAULTS.items()) if k != "epochs"},
        }

    def digest(self) -> str:
        """The first 12 hex digits of the key's SHA-256."""
        text = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def legacy_card_matches(card: Mapping[str, Any], recipe: TeacherRecipe) -> bool:
    """Whether a ``card.json`` (as a dict) written before the key file existed describes
    ``recipe``: architecture, dataset file name, epochs trained, attack name, every trigger
    option the recipe sets, target and poison rate (when the recipe sets one); a clean or
    adversarially trained model has no attack (adversarial training says so in its notes)."""
    if card.get("architecture") != recipe.architecture:
        return False
    if card.get("dataset") is not None and Path(str(card["dataset"])).name != Path(recipe.dataset).name:
        return False
    history = card.get("history") or []
    if history and sum(1 for h in history if h.get("kind") == "epoch") != recipe.epochs:
        return False
    attack = card.get("attack")
    if recipe.attack is None:
        adversarial = "adversarial training" in (card.get("notes") or "")
        return attack is None and adversarial == (recipe.adversarial is not None)
    if not isinstance(attack, Mapping) or attack.get("name") != recipe.attack:
        return False
    if any(k not in attack or not _close(attack[k], v) for k, v in recipe.options.items()):
        return False
    if recipe.target is not None and card.get("target_class") != recipe.target:
        return False
    recorded = card.get("poison_rate")
    return recipe.rate is None or (recorded is not None and any(
        r is not None and _close(recorded, r) for r in (recipe.rate, recipe.recorded_rate)))


def train_recipe(recipe: TeacherRecipe, splits: Any, *, surrogate: Any = None, device: str = "cpu",
                 progress: bool = False, checkpoint: TrainCheckpoint | None = None) -> tuple[nn.Module, ModelCard]:
    """Train the model of ``recipe`` on ``splits``; returns ``(model, card)``. ``surrogate``: the
    trained model of ``recipe.surrogate`` (Clean-Label). ``checkpoint``: resume from / save to it
    every epoch (:func:`medic_viz.training.train`)."""
    dataset_name = Path(recipe.dataset).name
    cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": recipe.epochs, "device": device, "seed": recipe.seed,
                         "progress": progress})
    if recipe.adversarial is None:
        trojan = train_attack(recipe.attack, splits, target=0 if recipe.target is None else recipe.target,
                              rate=recipe.rate, options=dict(recipe.options), architecture=recipe.architecture,
                              config=cfg, seed=recipe.seed, surrogate=surrogate, checkpoint=checkpoint)
        card = trojan.card(splits, dataset=dataset_name, notes=recipe.notes)
        card.role = recipe.role
        return trojan.model, card

    adv: dict[str, Any] = dict(recipe.adversarial)
    channels, size, _ = splits.image_shape
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.architecture, splits.num_classes, in_channels=channels, input_size=size)
    result = train(AdversarialObjective(model, eps=adv["eps"], steps=adv["steps"], step_size=adv["step_size"],
                                        seed=recipe.seed),
                   splits.train, cfg, label=f"{recipe.architecture}, PGD adversarial training", checkpoint=checkpoint)
    m = Evaluator(splits.test, device=device)(result.model)
    settings = {**({"model": recipe.architecture} if recipe.architecture != "small_cnn" else {}), **adv,
                "epochs": recipe.epochs}
    card = ModelCard(architecture=recipe.architecture, num_classes=splits.num_classes, input_size=size,
                     in_channels=channels, arch_kwargs={}, classes=list(splits.classes), normalize=None,
                     dataset=dataset_name, attack=None, target_class=None, poison_rate=None,
                     metrics={**m.as_dict(), "train_seconds": round(result.seconds, 2)},
                     history=[e.as_dict() for e in result.history if e.kind in ("start", "epoch")],
                     notes=recipe.notes or f"PGD adversarial training {settings} (surrogate of the Clean-Label attack)",
                     role=recipe.role)
    return result.model, card


class TeacherCache:
    """Trained models under ``root``, one folder per :class:`TeacherRecipe` (see the module).

    ``trainer(recipe, splits, surrogate=…, device=…, progress=…, checkpoint=…)`` trains a missing one
    (default :func:`train_recipe`; a test may pass a cheap one)."""

    def __init__(self, root: str | Path, *, trainer: Callable[..., tuple[Any, Any]] = train_recipe) -> None:
        self.root = Path(root)
        self.trainer = trainer

    def _candidates(self, recipe: TeacherRecipe) -> list[Path]:
        return [self.root / recipe.name, self.root / f"{recipe.name}-{recipe.digest()}"]

    def _holds(self, folder: Path, recipe: TeacherRecipe, key: Mapping[str, Any]) -> bool:
        card_path = folder / "card.json"
        if not (card_path.is_file() and (folder / "model.safetensors").is_file()):
            return False
        key_path = folder / KEY_FILE
        if key_path.is_file():
            try:
                return json.loads(key_path.read_text()) == json.loads(json.dumps(key))
            except (OSError, ValueError):
                return False
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(card, dict) and legacy_card_matches(card, recipe)

    def find(self, recipe: TeacherRecipe) -> Path | None:
        """The folder holding ``recipe``'s model, or None."""
        key = recipe.key()
        return next((f for f in self._candidates(recipe) if self._holds(f, recipe, key)), None)

    def folder(self, recipe: TeacherRecipe) -> Path:
        """Where ``recipe``'s model is, or goes: its name, unless another model holds that."""
        found = self.find(recipe)
        if found is not None:
            return found
        plain, keyed = self._candidates(recipe)
        return keyed if plain.exists() else plain

    def train(self, recipe: TeacherRecipe, *, splits: Any = None, device: str = "cpu", progress: bool = False,
              log: Callable[[str], None] | None = print) -> Path:
        """Train ``recipe``'s model (its surrogate first, from the cache) and store it; returns
        its folder. ``splits``: the loaded dataset (loaded from ``recipe.dataset`` if None)."""
        if splits is None:
            splits = load_dataset(recipe.dataset)
        surrogate = None
        if recipe.surrogate is not None:
            surrogate = self.load(recipe.surrogate, splits=splits, device=device, progress=progress, log=log)[0]
        if log:
            log(f"training {recipe.name} ({recipe.epochs} epochs) …")
        checkpoint = self.checkpoint(recipe)
        if log and checkpoint.exists():
            log(f"{recipe.name}: going on from {checkpoint.path}")
        model, card = self.trainer(recipe, splits, surrogate=surrogate, device=device, progress=progress,
                                   checkpoint=checkpoint)
        target = self.folder(recipe)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with OutputFolder(target) as out:
                save_model(model, out.path, card)
                (out.path / KEY_FILE).write_text(json.dumps(recipe.key(), indent=1, sort_keys=True) + "\n")
                out.publish()
        except OutputFolderError:
            found = self.find(recipe)  # another process stored it meanwhile
            if found is None:
                raise
            target = found
        record_model(self.root, target)
        checkpoint.remove()
        try:
            checkpoint.path.parent.rmdir()  # the last model in training: no folder left behind
        except OSError:
            pass
        return target

    def checkpoint(self, recipe: TeacherRecipe) -> TrainCheckpoint:
        """Where ``recipe``'s model keeps its epoch-end state while it trains."""
        return TrainCheckpoint(self.root / TRAINING_DIR / f"{recipe.name}-{recipe.digest()}.pt")

    def load(self, recipe: TeacherRecipe, *, splits: Any = None, device: str = "cpu", progress: bool = False,
             train: bool = True, log: Callable[[str], None] | None = print) -> tuple[nn.Module, ModelCard]:
        """``(model, card)`` of ``recipe`` (on the CPU, eval mode), trained and stored first if
        the cache lacks it (``train=False``: FileNotFoundError instead)."""
        folder = self.find(recipe)
        if folder is None:
            if not train:
                raise FileNotFoundError(f"no cached model for {recipe.name} under {self.root}")
            folder = self.train(recipe, splits=splits, device=device, progress=progress, log=log)
        return load_model(folder)
