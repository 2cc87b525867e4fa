"""Import a trojaned model made elsewhere: a checkpoint file → a medic_viz model (and card).

:func:`import_model` reads a third-party checkpoint safely (:func:`medic_viz.io.load_state_dict_file`:
safetensors, or ``torch.load(weights_only=True)``; a bare state dict, ``{"state_dict": …}``
with extra entries, ``{"model": …}``, ``module.``-prefixed keys), loads it strictly into a
zoo architecture or into one built by your own code (:func:`code_builder`, which *imports
that code*), and returns the model with a :class:`~medic_viz.io.ModelCard`. In-model
normalisation (:func:`parse_normalize`) adds ``normalize.mean``/``normalize.std`` buffers that
third-party checkpoints do not have; they are filled from the card.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from medic_viz.io import CheckpointMismatchError, ModelCard, load_state_dict_file, model_from_state_dict

__all__ = ["NORMALIZE_PRESETS", "parse_normalize", "is_code_architecture", "code_builder", "NormalizedModel",
           "import_model", "arch_builder", "check_model_folder", "load_model_folder", "ModelFolder",
           "open_model_folder"]

#: Named normalisations for ``--normalize`` (mean, std per channel, for inputs in [0, 1]).
NORMALIZE_PRESETS: dict[str, tuple[list[float], list[float]]] = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "mnist": ([0.1307], [0.3081]),
    "half": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}

_CODE_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def parse_normalize(text: str | None, in_channels: int = 3) -> dict | None:
    """``--normalize`` text → ``{"mean": [...], "std": [...]}`` or None.

    Accepted: ``none``; a preset (``cifar10``, ``imagenet``, ``mnist``, ``half``); ``MEAN,STD``
    (one value each, used for every channel); ``M1,M2,M3,S1,S2,S3`` (one mean then one std
    per channel); or ``M1,M2,M3/S1,S2,S3``.
    """
    if text is None or str(text).strip().lower() in ("", "none", "no"):
        return None
    key = str(text).strip().lower()
    if key in NORMALIZE_PRESETS:
        mean, std = NORMALIZE_PRESETS[key]
        if len(mean) != in_channels:
            mean, std = [sum(mean) / len(mean)] * in_channels, [sum(std) / len(std)] * in_channels
        return {"mean": list(mean), "std": list(std)}
    try:
        if "/" in key:
            left, _, right = key.partition("/")
            mean = [float(v) for v in left.split(",")]
            std = [float(v) for v in right.split(",")]
        else:
            values = [float(v) for v in key.split(",")]
            if len(values) % 2:
                raise ValueError
            mean, std = values[: len(values) // 2], values[len(values) // 2:]
    except ValueError:
        raise ValueError(f"--normalize must be none, a preset ({', '.join(NORMALIZE_PRESETS)}), MEAN,STD, or one "
                         f"mean and one std per channel (0.49,0.48,0.45,0.25,0.24,0.26); got {text!r}") from None
    if len(mean) == 1 and len(std) == 1:
        mean, std = mean * in_channels, std * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"--normalize needs 1 or {in_channels} means and as many stds for {in_channels}-channel "
                         f"images, got {len(mean)} and {len(std)}")
    if any(not math.isfinite(v) for v in mean + std) or any(s <= 0 for s in std):
        raise ValueError(f"--normalize: means must be finite and stds positive, got mean {mean}, std {std}")
    return {"mean": mean, "std": std}


def is_code_architecture(architecture: str) -> bool:
    """Whether ``architecture`` names code of your own (``package.module:callable``), not a zoo model."""
    return isinstance(architecture, str) and ":" in architecture


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: in-model normalisation in front of an architecture of your own.

    The state dict holds ``normalize.mean``/``normalize.std`` and the network's entries under ``net.``.
    """

    def __init__(self, normalize: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def code_builder(spec: str) -> Callable[..., nn.Module]:
    """A builder (as :func:`medic_viz.io.load_model` takes) for ``package.module:callable``.

    **This imports and runs your code** (the module, then ``callable(num_classes=…)``, with
    ``in_channels``/``input_size`` too when it accepts them). The current directory is put on
    ``sys.path`` so a module next to you is found. Use it only with code you trust.
    """
    if not isinstance(spec, str) or not _CODE_SPEC.match(spec.strip()):
        raise ValueError(f"--arch {spec!r}: expected a zoo model name or package.module:callable "
                         "(e.g. mynets.wrn:build), a function or class that returns the nn.Module")
    module_name, _, attr = spec.strip().partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--arch {spec}: could not import module {module_name!r} ({exc}); run from the folder "
                         "that holds it or put it on PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--arch {spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--arch {spec}: {attr!r} is not callable; point at a function or class that builds the model")
    fn = obj

    def build(architecture: str, num_classes: int, *, in_channels: int = 3, input_size: int = 32,
              normalize: tuple | None = None, **kwargs: Any) -> nn.Module:
        try:
            accepted = set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            accepted = set()
        call = {"num_classes": num_classes, **kwargs}
        for name, value in (("in_channels", in_channels), ("input_size", input_size)):
            if name in accepted:
                call[name] = value
        net = fn(**call)
        if not isinstance(net, nn.Module):
            raise TypeError(f"--arch {spec}: returned a {type(net).__name__}, not a torch.nn.Module")
        if normalize is None:
            return net
        from medic_viz.models.zoo import Normalize

        return NormalizedModel(Normalize(*normalize), net)

    return build


def _with_normalize(state_dict: Mapping[str, torch.Tensor], card: ModelCard, wrapped: bool) -> dict[str, torch.Tensor]:
    """The checkpoint's entries plus the normalisation buffers the card asks for (under ``net.``
    for a :class:`NormalizedModel`)."""
    out = dict(state_dict)
    if card.normalize is None:
        return out
    if wrapped and not any(k.startswith("net.") for k in out):
        out = {f"net.{k}": v for k, v in out.items()}
    for key in ("mean", "std"):
        out.setdefault(f"normalize.{key}", torch.tensor(card.normalize[key], dtype=torch.float32).view(1, -1, 1, 1))
    return out


def import_model(
    checkpoint: str | Path,
    architecture: str,
    num_classes: int,
    *,
    input_size: int = 32,
    in_channels: int = 3,
    normalize: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    **card_fields: Any,
) -> tuple[nn.Module, ModelCard]:
    """Load a third-party ``checkpoint`` into ``architecture``; returns ``(model in eval mode, card)``.

    ``architecture``: a zoo name, or ``package.module:callable`` (your own code, imported by
    :func:`code_builder`). ``normalize``: ``{"mean", "std"}`` the model applies to its [0, 1]
    inputs (None: the checkpoint was trained on raw [0, 1] images). ``card_fields``: more
    :class:`ModelCard` fields (dataset, classes, attack, target_class, notes, extra …).
    Raises :class:`~medic_viz.io.CheckpointMismatchError` listing missing, unexpected and
    mis-shaped keys, :class:`~medic_viz.io.UnsafeCheckpointError` for pickled objects.
    """
    card = ModelCard(architecture=architecture, num_classes=num_classes, input_size=input_size,
                     in_channels=in_channels, normalize=dict(normalize) if normalize else None, **card_fields)
    if not is_code_architecture(architecture):
        from medic_viz.models.zoo import available_models

        if architecture.strip().lower() not in available_models():
            raise ValueError(f"--arch {architecture!r}: not a zoo model ({', '.join(available_models())}); for an "
                             "architecture of your own give package.module:callable")
    state_dict = load_state_dict_file(checkpoint)  # before any user code is imported
    builder = code_builder(architecture) if is_code_architecture(architecture) else None
    state_dict = _with_normalize(state_dict, card, wrapped=builder is not None)
    try:
        model = model_from_state_dict(card, state_dict, device=device, builder=builder)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(str(exc).replace("the given state_dict", str(checkpoint), 1)) from None
    return model, card


def arch_builder(architecture: str, trust_arch_code: bool = False) -> Callable[..., nn.Module] | None:
    """The builder that rebuilds ``architecture`` (as :func:`medic_viz.io.load_model` takes it):
    None for a zoo model, and for code of your own unless ``trust_arch_code`` (then
    :func:`~medic_viz.io.load_model` refuses it, naming ``--trust-arch-code``); else
    :func:`code_builder`, which imports and runs that code."""
    return code_builder(architecture) if trust_arch_code and is_code_architecture(architecture) else None


def check_model_folder(folder: str | Path | None) -> Path:
    """``folder`` as a path if it is a model folder (``card.json`` and ``model.safetensors`` in
    it, as ``medic-viz import`` and ``attack`` write them); else ValueError, one line saying
    what is missing. Reads nothing."""
    from medic_viz.io import CARD_FILENAME, MODEL_FILENAME

    text = "" if folder is None else str(folder).strip()
    if not text:
        raise ValueError("give the path of a model folder (written by `medic-viz import` or `attack`)")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError(f"{text}: not a folder; give a model folder written by `medic-viz import` or `attack` "
                         f"({MODEL_FILENAME} + {CARD_FILENAME})")
    for name in (CARD_FILENAME, MODEL_FILENAME):
        if not (path / name).is_file():
            raise ValueError(f"{text}: no {name} in it; a model folder written by `medic-viz import` or `attack` "
                             f"holds {MODEL_FILENAME} and {CARD_FILENAME}")
    return path


def load_model_folder(folder: str | Path, *, trust_arch_code: bool = False,
                      device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """:func:`medic_viz.io.load_model` on a model folder (or its ``card.json``), rebuilding an
    architecture of your own (``package.module:callable``) only with ``trust_arch_code=True``."""
    from medic_viz.io import CARD_FILENAME, _read_card, load_model

    folder = Path(folder)
    builder = None
    if trust_arch_code:
        card_path = folder / CARD_FILENAME if folder.is_dir() else folder
        if card_path.is_file():
            builder = arch_builder(_read_card(card_path).architecture, True)  # bounded read
    return load_model(folder, device=device, builder=builder)


@dataclass
class ModelFolder:
    """A model folder opened with its data: ``model`` (eval mode), ``card``, ``splits`` (the
    card's dataset unless another was given), ``trigger``/``target`` (None when the card
    records no attack: ASR cannot be measured)."""

    model: nn.Module
    card: ModelCard
    splits: Any
    trigger: Any
    target: int | None


def open_model_folder(
    folder: str | Path,
    *,
    dataset: str | Path | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    trust_arch_code: bool = False,
    device: str | torch.device = "cpu",
) -> ModelFolder:
    """Open a model folder (from ``medic-viz attack``/``import`` or :func:`~medic_viz.io.save_model`)
    with its dataset (``dataset``, else the card's, else the embedded signs) at the card's
    input size, and the trigger and target its card records.

    An architecture of your own (``package.module:callable``) is rebuilt only with
    ``trust_arch_code=True`` (that imports and runs the code)."""
    from medic_viz.data import load_dataset
    from medic_viz.pipeline import trigger_of

    folder = Path(folder)
    model, card = load_model_folder(folder, trust_arch_code=trust_arch_code, device=device)
    name = dataset if dataset is not None else (card.dataset or "signs")
    splits = load_dataset(name, root=data_root, download=download, size=card.input_size, seed=0)
    if splits.num_classes != card.num_classes or splits.image_shape[0] != card.in_channels:
        raise ValueError(f"{folder}: the model has {card.num_classes} classes and {card.in_channels}-channel inputs, "
                         f"{splits.train.name} has {splits.num_classes} classes and {splits.image_shape[0]} channels; "
                         "open it with the dataset it was trained on")
    trigger, target = trigger_of(card)
    return ModelFolder(model, card, splits, trigger, target)
