"""A model folder: saving and loading a model with its card.

A saved model is a directory with two files:

- ``model.safetensors``: the ``state_dict`` (parameters *and* buffers such as BatchNorm
  running statistics) as contiguous CPU tensors. safetensors holds raw tensors only, so
  loading it can never run code.
- ``card.json``: a :class:`~medic_viz.cards.ModelCard` saying how to rebuild the architecture
  from the model zoo (name, number of classes, input size, in-model normalisation, extra builder
  arguments) and what is known about the model (dataset, attack, target class, metrics, history).

:func:`save_model` writes one, :func:`load_model` reads one (:func:`read_card`: the card, read
bounded), :func:`model_from_state_dict` rebuilds a model from a card and weights in memory. The
architecture is built on PyTorch's ``meta`` device and checked against the weights first, so a
card's numbers never size an allocation; weights with NaN or inf are refused.

The rest of safe model I/O lives in one module per concept: the card (:mod:`medic_viz.cards`),
reading a weights file without executing anything (:mod:`medic_viz.checkpoints`), fitting
weights into a model (:mod:`medic_viz.weights`), importing a third-party checkpoint
(:mod:`medic_viz.importer`). Their public names are still answered here, with a
``DeprecationWarning`` naming the new home (:mod:`medic_viz.deprecation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from medic_viz import cards, checkpoints, limits, weights
from medic_viz.deprecation import moved_names
from medic_viz.finite import NonFiniteModelError, nonfinite_entries
from medic_viz.models.zoo import available_models, build_model
from medic_viz.outdir import replace_file

__all__ = [
    "MODEL_FILENAME",
    "CARD_FILENAME",
    "read_card",
    "save_model",
    "load_model",
    "model_from_state_dict",
]

MODEL_FILENAME = "model.safetensors"
CARD_FILENAME = "card.json"


def _atomic_write_bytes(target: Path, write: Callable[[Path], object]) -> None:
    """Write via a fresh temporary file in the same directory, then rename over ``target``
    (:func:`medic_viz.outdir.replace_file`: no link is written through)."""
    replace_file(target, write)


def save_model(model: nn.Module, directory: str | Path, card: cards.ModelCard) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` plus ``directory/card.json``.

    The state_dict (parameters and buffers, e.g. BatchNorm running statistics) is stored as
    contiguous CPU tensors. The directory is created if needed; only those two files are
    (over)written — other files in the directory are never deleted. Returns the directory.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(card, cards.ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory; choose a directory path for the model")

    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                "safetensors stores tensors only"
            )
        # clone() gives every entry its own storage (safetensors refuses shared/tied storage).
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    card_text = card.to_json()  # serialise first: a bad card must not leave half a model behind

    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(
        directory / MODEL_FILENAME,
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": card.architecture}),
    )
    _atomic_write_bytes(directory / CARD_FILENAME, lambda tmp: tmp.write_text(card_text, encoding="utf-8"))
    return directory


def read_card(card_path: Path) -> cards.ModelCard:
    """The card of a model folder (``card_path``: its ``card.json``), read bounded
    (:data:`~medic_viz.limits.MAX_CARD_BYTES`) and checked; ValueError (one line) when it is
    missing, unreadable or malformed."""
    if not card_path.is_file():
        raise ValueError(
            f"model card not found: {card_path}; a medic_viz model directory holds {CARD_FILENAME} and "
            f"{MODEL_FILENAME} (written by save_model). For a bare weights file use import_checkpoint()."
        )
    try:
        with open(card_path, "rb") as fh:
            raw = fh.read(limits.MAX_CARD_BYTES + 1)
        if len(raw) > limits.MAX_CARD_BYTES:
            raise ValueError(f"larger than a card may be ({limits.MAX_CARD_BYTES:,} bytes)")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"could not read model card {card_path}: {exc}") from exc
    try:
        return cards.ModelCard.from_json(text)
    except ValueError as exc:
        raise ValueError(f"malformed model card {card_path}: {exc}") from exc


def _resolve_model_paths(directory_or_card: str | Path) -> tuple[Path, Path]:
    path = Path(directory_or_card)
    if not path.exists():
        raise FileNotFoundError(f"model directory not found: {path}")
    if path.is_dir():
        return path / CARD_FILENAME, path / MODEL_FILENAME
    if path.suffix.lower() == ".json":
        return path, path.parent / MODEL_FILENAME
    if path.suffix.lower() == ".safetensors":
        return path.parent / CARD_FILENAME, path
    raise ValueError(
        f"{path}: expected a model directory (with {CARD_FILENAME} and {MODEL_FILENAME}) or its "
        f"{CARD_FILENAME}; for a bare checkpoint file use import_checkpoint()"
    )


def _build(card: cards.ModelCard, builder: Callable[..., nn.Module] | None) -> nn.Module:
    """Build the untrained architecture a card describes (zoo by default)."""
    if builder is None:
        names = list(available_models())
        if ":" in card.architecture:
            raise ValueError(
                f"the model's architecture {card.architecture!r} is code of your own (package.module:callable); "
                "medic_viz never imports code named in a model card by itself: pass "
                f"builder=medic_viz.importer.code_builder({card.architecture!r}) in Python, or --trust-arch-code "
                f"{card.architecture} on the command line (it names the code you trust), if you trust that code"
            )
        if card.architecture.strip().lower() not in names:
            raise ValueError(
                f"unknown architecture {card.architecture!r} in the model card; available models: {', '.join(names)}"
            )
        builder = build_model
    model = builder(
        card.architecture,
        card.num_classes,
        in_channels=card.in_channels,
        input_size=card.input_size,
        normalize=card.normalize_pair,
        **card.arch_kwargs,
    )
    if not isinstance(model, nn.Module):
        raise TypeError(f"builder returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _fit_error(card: cards.ModelCard, source: Path | str, report: str) -> weights.CheckpointMismatchError:
    return weights.CheckpointMismatchError(
        f"{source}: weights do not fit architecture={card.architecture!r}, "
        f"num_classes={card.num_classes}, in_channels={card.in_channels}, "
        f"arch_kwargs={card.arch_kwargs}\n{report}"
    )


def _check_fits_before_building(card: cards.ModelCard, state_dict: Mapping[str, Any], source: Path | str) -> None:
    """Build the zoo architecture on PyTorch's ``meta`` device (shapes only, no memory) and
    check the weights fit it, so that a card asking for absurd widths or classes is refused
    before anything the size of the *card's* numbers is allocated: a model that fits is no
    larger than the weights file."""
    if card.architecture.strip().lower() not in available_models():
        return  # _build says which names exist
    try:
        with torch.device("meta"):
            skeleton = build_model(card.architecture, card.num_classes, in_channels=card.in_channels,
                                   input_size=card.input_size, normalize=None, **card.arch_kwargs)
    except (RuntimeError, OverflowError, MemoryError) as exc:
        raise ValueError(
            f"{source}: the model card's architecture settings (arch_kwargs={card.arch_kwargs}) cannot be "
            f"built ({exc}); the card is corrupted"
        ) from None
    tensors = {k: v for k, v in state_dict.items() if not k.startswith("normalize.")}  # tiny; skeleton has none
    report = weights.mismatch_report(skeleton, tensors, strict=True)
    if report is not None:
        raise _fit_error(card, source, report)


def _check_finite_weights(state_dict: Mapping[str, Any], source: Path | str) -> None:
    bad = nonfinite_entries(state_dict.items())
    if bad:
        raise NonFiniteModelError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or infinite values ({limits.listed(bad)}); the model is "
            "broken (a diverged training run or a corrupted file) and cannot be used; use another copy"
        )


def _load_into_built(model: nn.Module, state_dict: Mapping[str, torch.Tensor], card: cards.ModelCard,
                     source: Path | str) -> None:
    try:
        weights.load_weights_into(model, state_dict, strict=True)
    except weights.CheckpointMismatchError as exc:
        raise _fit_error(card, source, str(exc)) from exc


def load_model(
    directory_or_card: str | Path,
    *,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, cards.ModelCard]:
    """Load a model saved by :func:`save_model`; returns ``(model in eval mode on device, card)``.

    ``directory_or_card`` is the model directory or its ``card.json``. The architecture is
    built with ``builder(architecture, num_classes, in_channels=..., input_size=...,
    normalize=(mean, std) | None, **arch_kwargs)`` — by default the model zoo's
    ``build_model`` — and the weights are loaded strictly.
    """
    card_path, weights_path = _resolve_model_paths(directory_or_card)
    card = read_card(card_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"model weights not found: {weights_path} (card: {card_path})")
    state_dict = checkpoints.load_state_dict_file(weights_path)
    return model_from_state_dict(card, state_dict, device=device, builder=builder, source=weights_path), card


def model_from_state_dict(
    card: cards.ModelCard,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
    source: str | Path = "the given state_dict",
) -> nn.Module:
    """Build the architecture ``card`` describes and load ``state_dict`` into it strictly
    (in memory, e.g. weights sent to a worker process); returns the model in eval mode on
    ``device``. Same building and checks as :func:`load_model` (which calls it); ``source``:
    how error messages name the weights (the file they came from)."""
    _check_finite_weights(state_dict, source)
    if builder is None:
        _check_fits_before_building(card, state_dict, source)
    model = _build(card, builder)
    _load_into_built(model, state_dict, card, source)
    return model.to(device).eval()


#: Names that moved out of this module (:data:`medic_viz.deprecation.MOVED`).
__getattr__ = moved_names(__name__)
