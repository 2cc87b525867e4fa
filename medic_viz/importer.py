"""Import a trojaned model made elsewhere: a checkpoint file → a medic_viz model (and card).

:func:`import_model` reads a third-party checkpoint safely (:func:`medic_viz.checkpoints.load_state_dict_file`:
safetensors, or ``torch.load(weights_only=True)``; a bare state dict, ``{"state_dict": …}``
with extra entries, ``{"model": …}``, ``module.``-prefixed keys), loads it strictly into a
zoo architecture or into one built by your own code (:func:`code_builder`, which *imports
that code*), and returns the model with a :class:`~medic_viz.cards.ModelCard`. In-model
normalisation (:func:`parse_normalize`) adds ``normalize.mean``/``normalize.std`` buffers that
third-party checkpoints do not have; they are filled from the card. :func:`import_checkpoint`
is the lower-level form: a zoo architecture or a ``builder`` you pass, the checkpoint's keys taken
as they are.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, Callable, Mapping, cast

import torch
from torch import nn

from medic_viz.cards import ModelCard
from medic_viz.checkpoints import load_state_dict_file
from medic_viz.data import load_dataset
from medic_viz.data_identity import card_dataset
from medic_viz.io import CARD_FILENAME, MODEL_FILENAME, load_model, model_from_state_dict, read_card
from medic_viz.models.zoo import Normalize, available_models
from medic_viz.pipeline import trigger_of
from medic_viz.weights import CheckpointMismatchError

__all__ = ["NORMALIZE_PRESETS", "DENIED_MODULES", "parse_normalize", "is_code_architecture", "code_builder",
           "NormalizedModel", "import_model", "import_checkpoint", "check_trusted_code", "check_trusted_architecture",
           "arch_builder", "code_location", "check_model_folder", "load_model_folder", "ModelFolder",
           "open_model_folder"]

#: Named normalisations for ``--normalize`` (mean, std per channel, for inputs in [0, 1]).
NORMALIZE_PRESETS: dict[str, tuple[list[float], list[float]]] = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "mnist": ([0.1307], [0.3081]),
    "half": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}

_CODE_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

#: Modules (and their submodules) whose callables are never builders, even when the user names
#: them: loaders that run other code or read files, and the standard library's doors to the system.
DENIED_MODULES: frozenset[str] = frozenset({
    "torch", "torchvision.io", "torchvision.datasets", "numpy", "scipy.io", "pandas", "yaml", "safetensors",
    "h5py", "requests", "urllib", "http", "importlib", "pkgutil", "zipimport", "os", "posix", "nt", "posixpath",
    "ntpath", "subprocess", "builtins", "sys", "shutil", "runpy", "pickle", "_pickle", "copyreg", "shelve",
    "marshal", "dill", "cloudpickle", "joblib", "ctypes", "cffi", "code", "codeop", "pty", "socket", "ssl",
    "multiprocessing", "concurrent", "asyncio", "threading", "signal", "pathlib", "io", "_io", "tempfile", "glob",
    "fileinput", "zipfile", "tarfile", "gzip", "webbrowser", "inspect", "gc", "types", "functools", "operator",
    "medic_viz", "__main__",
})
#: Longest string a code architecture's card may pass to its builder (a name such as "wide").
MAX_ARCH_TEXT = 64
#: Longest list of numbers a code architecture's card may pass to its builder.
MAX_ARCH_LIST = 64


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


def _denied(module_name: str) -> str | None:
    """The entry of :data:`DENIED_MODULES` that ``module_name`` falls under, or None."""
    for name in DENIED_MODULES:
        if module_name == name or module_name.startswith(name + "."):
            return name
    return None


def _check_code_kwargs(spec: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse card arguments to a code builder that could reach the file system: only numbers,
    booleans, None, short names (no path separator, not an existing path) and lists of numbers."""
    seps = {s for s in ("/", "\\", os.sep, os.altsep) if s is not None}

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"model card of {spec}: arch_kwargs[{key!r}] {why}; a card may pass an architecture of your "
                          f"own only numbers, booleans, null, names of up to {MAX_ARCH_TEXT} characters and lists of "
                          "numbers: fix the card (set file paths in your builder)")

    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise bad(str(key), "is not a parameter name")
        if value is None or isinstance(value, (bool, int)):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise bad(key, f"is {value}, not a finite number")
        elif isinstance(value, str):
            if len(value) > MAX_ARCH_TEXT or not value.isprintable():
                raise bad(key, f"is text of {len(value)} characters (or not printable)")
            if any(sep in value for sep in seps) or value.startswith("~") or value in (".", "..") or os.path.lexists(value):
                raise bad(key, f"= {value!r} names a path")
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_ARCH_LIST or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise bad(key, f"is a list that is not up to {MAX_ARCH_LIST} finite numbers")
        else:
            raise bad(key, f"is a {type(value).__name__}")


def _resolve_builder(spec: str, module_name: str, attr: str) -> Callable[..., nn.Module]:
    """Import ``module_name`` and return ``attr`` if it may build a model: a Python function
    defined in that module, or a class deriving from ``torch.nn.Module``. Nothing is called."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--arch {spec}: could not import module {module_name!r} ({exc}); run from the folder "
                         "that holds it or put it on PYTHONPATH") from None
    except Exception as exc:  # the user's module failed while being imported (re-raised below)
        raise ValueError(f"--arch {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}; "
                         "fix your module") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--arch {spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise ValueError(f"--arch {spec}: {attr!r} is a class that does not derive from torch.nn.Module; "
                             "point at a function or an nn.Module class that builds the model")
    elif not inspect.isfunction(obj) or getattr(obj, "__module__", None) != module_name:
        where = getattr(obj, "__module__", None)
        raise ValueError(f"--arch {spec}: {attr!r} is not a Python function defined in {module_name} "
                         f"({type(obj).__name__}{f' from {where}' if where else ''}); medic-viz calls only a "
                         f"function written in {module_name} or an nn.Module class: point at your own builder")
    return obj


def code_builder(spec: str, *, option: str = "--arch") -> Callable[..., nn.Module]:
    """A builder (as :func:`medic_viz.io.load_model` takes) for ``package.module:callable``.

    **This imports and runs your code** (the module, then ``callable(num_classes=…)``, with
    ``in_channels``/``input_size`` too when it accepts them). The current directory is put on
    ``sys.path`` so a module next to you is found. Use it only with code you trust. Refused
    before anything is called: a module of :data:`DENIED_MODULES`, a callable that is not a
    Python function defined in that module nor an ``nn.Module`` class, card arguments
    (``arch_kwargs``) that could name files. An error raised by the callable is reported as a
    ValueError naming it (``option``: how the message names the spec)."""
    if not isinstance(spec, str) or not _CODE_SPEC.match(spec.strip()):
        raise ValueError(f"--arch {spec!r}: expected a zoo model name or package.module:callable "
                         "(e.g. mynets.wrn:build), a function or class that returns the nn.Module")
    spec = spec.strip()
    module_name, _, attr = spec.partition(":")
    denied = _denied(module_name)
    if denied:
        raise ValueError(f"{option} {spec}: medic-viz never runs code from {denied} (a loader or a door to the "
                         "system, not a model builder); refused: point at a builder in a module of your own")
    fn = _resolve_builder(spec, module_name, attr)

    def build(architecture: str, num_classes: int, *, in_channels: int = 3, input_size: int = 32,
              normalize: tuple | None = None, **kwargs: Any) -> nn.Module:
        _check_code_kwargs(spec, kwargs)
        try:
            accepted = set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            accepted = set()
        call = {"num_classes": num_classes, **kwargs}
        for name, value in (("in_channels", in_channels), ("input_size", input_size)):
            if name in accepted:
                call[name] = value
        try:
            net = fn(**call)
        except Exception as exc:  # the user's builder failed: their error, reported as theirs (re-raised)
            text = " ".join(str(exc).split())
            raise ValueError(f"{option} {spec} raised {type(exc).__name__}"
                             f"{': ' + text if text else ''}; fix your builder") from exc
        if not isinstance(net, nn.Module):
            raise TypeError(f"{option} {spec}: returned a {type(net).__name__}, not a torch.nn.Module")
        if normalize is None:
            return net

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
    Raises :class:`~medic_viz.weights.CheckpointMismatchError` listing missing, unexpected and
    mis-shaped keys, :class:`~medic_viz.checkpoints.UnsafeCheckpointError` for pickled objects.
    """
    card = ModelCard(architecture=architecture, num_classes=num_classes, input_size=input_size,
                     in_channels=in_channels, normalize=dict(normalize) if normalize else None, **card_fields)
    if not is_code_architecture(architecture):
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


def import_checkpoint(
    path: str | Path,
    architecture: str,
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
    **card_fields: Any,
) -> tuple[nn.Module, ModelCard]:
    """Load a third-party weights file into a zoo architecture; returns ``(model, card)``.

    ``card_fields`` are further :class:`ModelCard` fields (``input_size``, ``normalize``,
    ``dataset``, ``target_class`` …). The file is read with
    :func:`~medic_viz.checkpoints.load_state_dict_file` (safe loaders only) and loaded strictly
    (:func:`medic_viz.io.model_from_state_dict`); save the result with
    :func:`medic_viz.io.save_model`. Unlike :func:`import_model`, ``builder`` builds the
    architecture when given, and ``normalize.*`` buffers must be in the checkpoint.
    """
    known = {f.name for f in fields(ModelCard)} - {"extra", "architecture", "num_classes", "medic_viz_version"}
    unknown = sorted(set(card_fields) - known)
    if unknown:
        raise TypeError(f"import_checkpoint got unknown card field(s) {unknown}; known fields: {sorted(known)}")
    card = ModelCard(architecture=architecture, num_classes=num_classes, **card_fields)
    path = Path(path)
    state_dict = load_state_dict_file(path)
    return model_from_state_dict(card, state_dict, device=device, builder=builder, source=path), card


def check_trusted_code(trust: str | None) -> str | None:
    """The code a user trusts (``--trust-arch-code``): ``package.module:callable`` or
    ``package.module`` (any builder defined in that module), checked; None (or False): none.

    ``True`` is refused (TypeError): trust names what it trusts. A module of
    :data:`DENIED_MODULES` is refused even when named (ValueError)."""
    if trust is None or trust is False:  # type: ignore[comparison-overlap]  # False: older callers
        return None
    if not isinstance(trust, str):
        raise TypeError(f"trust_arch_code must name the code you trust, e.g. 'mynets.wrn:build' or 'mynets.wrn' "
                        f"(the module), not {trust!r}: name the module of the architecture in the model card")
    text = trust.strip()
    if not (_CODE_SPEC.match(text) or _MODULE_SPEC.match(text)):
        raise ValueError(f"--trust-arch-code {trust!r}: name the code you trust as package.module:callable or "
                         "package.module (e.g. mynets.wrn:build), the architecture in the model card")
    denied = _denied(text.partition(":")[0])
    if denied:
        raise ValueError(f"--trust-arch-code {text}: medic-viz never runs code from {denied} (a loader or a door to "
                         "the system, not a model builder); refused: name a module of your own")
    return text


def check_trusted_architecture(architecture: str, trust: str | None, *, where: str = "the model card") -> str | None:
    """Whether ``architecture`` may be rebuilt under ``trust`` (see :func:`check_trusted_code`),
    without importing anything: None for a zoo model, ``architecture`` for code the user named;
    ValueError (one line) for code of a denied module, code not named, or no trust given."""
    trust = check_trusted_code(trust)
    if not is_code_architecture(architecture):
        return None
    module_name = architecture.strip().partition(":")[0]
    denied = _denied(module_name)
    if denied:
        raise ValueError(f"{where} names the architecture {architecture}, code from {denied} that medic-viz never "
                         "runs; the card was not written by `medic-viz import`: do not use this model")
    if trust is None:
        raise ValueError(f"{where}: its architecture is code of your own ({architecture}); add --trust-arch-code "
                         f"{architecture} to import and run that code (only for code you trust)")
    if architecture.strip() != trust and (":" in trust or module_name != trust):
        raise ValueError(f"{where} names the architecture {architecture}, not the code you trusted "
                         f"(--trust-arch-code {trust}); medic-viz runs only code you name: check the folder, or "
                         f"pass --trust-arch-code {architecture} if you trust that code")
    return architecture.strip()


def arch_builder(architecture: str, trust_arch_code: str | None = None, *,
                 where: str = "the model card") -> Callable[..., nn.Module] | None:
    """The builder that rebuilds ``architecture`` (as :func:`medic_viz.io.load_model` takes it):
    None for a zoo model, and for code of your own when ``trust_arch_code`` is None (then
    :func:`~medic_viz.io.load_model` refuses it, naming ``--trust-arch-code``); else, when
    ``trust_arch_code`` names that code (:func:`check_trusted_architecture`),
    :func:`code_builder`, which imports and runs it."""
    trust = check_trusted_code(trust_arch_code)
    if not is_code_architecture(architecture):
        return None
    if trust is None:
        if _denied(architecture.strip().partition(":")[0]):
            check_trusted_architecture(architecture, trust, where=where)  # raises: code that never runs
        return None
    trusted = cast(str, check_trusted_architecture(architecture, trust, where=where))  # code: its name, or raises
    return code_builder(trusted, option="architecture")


def code_location(code: str) -> Path | None:
    """The file (a module) or folder (a package) holding the top-level package of ``code``
    (``package.module:callable`` or ``package.module``), found as ``import`` would find it from
    the current folder, WITHOUT importing or running anything; None when it is not found (or
    ``code`` is no such name)."""
    text = code.strip() if isinstance(code, str) else ""
    if not (_CODE_SPEC.match(text) or _MODULE_SPEC.match(text)):
        return None
    top = text.partition(":")[0].split(".")[0]
    if top in sys.builtin_module_names:
        return None
    try:
        spec = PathFinder.find_spec(top, [os.getcwd(), *sys.path])
    except (ImportError, ValueError, OSError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin) if spec.origin and spec.has_location else None


def check_model_folder(folder: str | Path | None) -> Path:
    """``folder`` as a path if it is a model folder (``card.json`` and ``model.safetensors`` in
    it, as ``medic-viz import`` and ``attack`` write them); else ValueError, one line saying
    what is missing. Reads nothing."""
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


def load_model_folder(folder: str | Path, *, trust_arch_code: str | None = None,
                      device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """:func:`medic_viz.io.load_model` on a model folder (or its ``card.json``), rebuilding an
    architecture of your own (``package.module:callable``) only when ``trust_arch_code`` names
    it (:func:`arch_builder`)."""
    folder = Path(folder)
    trust = check_trusted_code(trust_arch_code)
    builder = None
    card_path = folder / CARD_FILENAME if folder.is_dir() else folder
    if card_path.is_file():
        architecture = read_card(card_path).architecture  # bounded read
        module_name = architecture.strip().partition(":")[0] if is_code_architecture(architecture) else ""
        if trust is not None or (module_name and _denied(module_name)):  # a denied module: said so, trust or not
            builder = arch_builder(architecture, trust, where=f"{folder}: the card")
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
    trust_arch_code: str | None = None,
    device: str | torch.device = "cpu",
) -> ModelFolder:
    """Open a model folder (from ``medic-viz attack``/``import`` or :func:`~medic_viz.io.save_model`)
    with its dataset (``dataset``, else the card's, else the embedded signs) at the card's
    input size, and the trigger and target its card records.

    An architecture of your own (``package.module:callable``) is rebuilt only when
    ``trust_arch_code`` names it (that imports and runs the code)."""
    folder = Path(folder)
    model, card = load_model_folder(folder, trust_arch_code=trust_arch_code, device=device)
    if dataset is None:  # the card's, resolved against its folder and checked against its SHA-256

        dataset = card_dataset(card, folder if folder.is_dir() else folder.parent, f"{folder}: ")
    name = dataset or "signs"
    splits = load_dataset(name, root=data_root, download=download, size=card.input_size, seed=0)
    if splits.num_classes != card.num_classes or splits.image_shape[0] != card.in_channels:
        raise ValueError(f"{folder}: the model has {card.num_classes} classes and {card.in_channels}-channel inputs, "
                         f"{splits.train.name} has {splits.num_classes} classes and {splits.image_shape[0]} channels; "
                         "open it with the dataset it was trained on")
    trigger, target = trigger_of(card)
    return ModelFolder(model, card, splits, trigger, target)
