"""Safe saving and loading of models, with a JSON model card beside the weights.

A saved model is a directory with two files:

- ``model.safetensors``: the ``state_dict`` (parameters *and* buffers such as BatchNorm
  running statistics) as contiguous CPU tensors. safetensors holds raw tensors only, so
  loading it can never run code.
- ``card.json``: a :class:`ModelCard` saying how to rebuild the architecture from the model
  zoo (name, number of classes, input size, in-model normalisation, extra builder arguments)
  and what is known about the model (dataset, attack, target class, metrics, history).

Third-party checkpoints (``.pt``/``.pth``/``.bin``/``.ckpt``) are read with
``torch.load(..., weights_only=True)`` only. medic_viz never calls ``pickle.load`` and never
``torch.load(weights_only=False)``: a file that holds Python objects (which can execute code
while being unpickled) or a whole pickled ``nn.Module`` is refused with
:class:`UnsafeCheckpointError`, whose message says how to convert the file in an environment
you trust. Weights that do not fit the architecture raise :class:`CheckpointMismatchError`
naming the missing, unexpected and mis-shaped keys, and the target model is left untouched.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from medic_viz import checkpoints, limits
from medic_viz.finite import NonFiniteModelError, nonfinite_entries

__all__ = [
    "ModelCard",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "MODEL_FILENAME",
    "CARD_FILENAME",
    "save_model",
    "load_model",
    "load_state_dict_file",
    "load_weights_into",
    "import_checkpoint",
    "model_from_state_dict",
]

MODEL_FILENAME = "model.safetensors"
CARD_FILENAME = "card.json"

# Keys under which training scripts commonly nest the state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# Prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Arguments that build_model receives from the card's own fields.
_RESERVED_ARCH_KWARGS = frozenset({"name", "num_classes", "in_channels", "input_size", "normalize"})
_MAX_LISTED_KEYS = 10


class UnsafeCheckpointError(ValueError):
    """A checkpoint would need arbitrary Python objects unpickled (code execution) to load."""


class CheckpointMismatchError(ValueError):
    """A state_dict's keys or tensor shapes do not fit the model it is loaded into."""


def _package_version() -> str:
    """The installed medic_viz version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("medic-viz")
    except (ImportError, PackageNotFoundError):
        return "unknown"


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"model card: {name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"model card: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_optional_str(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"model card: {name} must be a string or None, got {type(value).__name__}")
    return value


def _jsonable(value: Any, where: str) -> Any:
    """Convert ``value`` to plain JSON types (numpy/torch scalars → numbers, tuples → lists)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy 0-d array
        return _jsonable(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"model card: {where} has a non-string key {key!r}; JSON keys must be strings")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(
        f"model card: {where} holds a {type(value).__name__}, which JSON cannot store; "
        "use numbers, strings, lists and dicts"
    )


@dataclass
class ModelCard:
    """What a saved model is and how to rebuild it.

    ``architecture``/``num_classes``/``in_channels``/``input_size``/``normalize``/``arch_kwargs``
    are passed to ``medic_viz.models.zoo.build_model``; the rest is documentation that tools
    display (dataset, attack config, target class, poison rate, metrics, history, notes).
    ``dataset`` is a named dataset (``signs``, ``cifar10`` …) or an ``.npz`` file's resolved path,
    with the file's ``dataset_sha256``; ``attack`` and ``target_class`` are given together or not at all.
    ``normalize`` is ``{"mean": [...], "std": [...]}`` (one value per input channel) when the
    model normalises its ``[0, 1]`` inputs itself. Keys this version does not know, read from a
    newer card, are kept in ``extra`` and written back by :meth:`to_dict`.
    """

    architecture: str
    num_classes: int
    input_size: int = 32
    in_channels: int = 3
    arch_kwargs: dict = field(default_factory=dict)
    classes: list[str] | None = None
    normalize: dict | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None
    attack: dict | None = None
    target_class: int | None = None
    poison_rate: float | None = None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    notes: str = ""
    medic_viz_version: str = field(default_factory=_package_version)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ValueError(f"model card: architecture must be a non-empty model name, got {self.architecture!r}")
        self.num_classes = _check_int(self.num_classes, "num_classes", 1)
        limits.check_classes(self.num_classes, "model card: num_classes")
        self.input_size = _check_int(self.input_size, "input_size", 1)
        limits.check_image_side(self.input_size, "model card: input_size")
        self.in_channels = _check_int(self.in_channels, "in_channels", 1)
        if self.in_channels not in (1, 3):
            raise ValueError(
                f"model card: in_channels must be 1 (grey) or 3 (RGB), as medic_viz's images are; got {self.in_channels}"
            )

        if not isinstance(self.arch_kwargs, Mapping):
            raise ValueError(f"model card: arch_kwargs must be a dict, got {type(self.arch_kwargs).__name__}")
        self.arch_kwargs = dict(self.arch_kwargs)
        clash = sorted(_RESERVED_ARCH_KWARGS & set(self.arch_kwargs))
        if clash:
            raise ValueError(
                f"model card: arch_kwargs must not contain {clash}; set those through the card's own fields"
            )

        if self.classes is not None:
            if isinstance(self.classes, str) or not isinstance(self.classes, Sequence):
                raise ValueError("model card: classes must be a list of class names or None")
            self.classes = [str(c) for c in self.classes]
            if len(self.classes) != self.num_classes:
                raise ValueError(
                    f"model card: {len(self.classes)} class names given for num_classes={self.num_classes}"
                )

        self.normalize = self._checked_normalize(self.normalize)
        self.dataset = _check_optional_str(self.dataset, "dataset")
        self.dataset_sha256 = _check_optional_str(self.dataset_sha256, "dataset_sha256")
        if self.dataset_sha256 is not None and (len(self.dataset_sha256) != 64 or self.dataset_sha256.strip(
                "0123456789abcdef")):
            raise ValueError(f"model card: dataset_sha256 must be 64 hex digits (a SHA-256), got {self.dataset_sha256!r}")
        if self.attack is not None and not isinstance(self.attack, Mapping):
            raise ValueError(f"model card: attack must be a dict (Trigger.to_config()) or None, got {type(self.attack).__name__}")
        if self.attack is not None:
            self.attack = dict(self.attack)
        if bool(self.attack) != (self.target_class is not None):
            given, missing = ("an attack", "target_class") if self.attack else ("a target_class", "attack")
            raise ValueError(f"card.json: gives {given} but no {missing}; give both trigger and target (or neither)")
        if self.target_class is not None:
            self.target_class = _check_int(self.target_class, "target_class", 0)
            if self.target_class >= self.num_classes:
                raise ValueError(
                    f"model card: target_class={self.target_class} is not a class of a {self.num_classes}-class model"
                )
        if self.poison_rate is not None:
            if isinstance(self.poison_rate, bool) or not isinstance(self.poison_rate, numbers.Real):
                raise ValueError(f"model card: poison_rate must be a number in [0, 1], got {self.poison_rate!r}")
            self.poison_rate = float(self.poison_rate)
            if not 0.0 <= self.poison_rate <= 1.0:
                raise ValueError(f"model card: poison_rate must be in [0, 1], got {self.poison_rate}")
        if not isinstance(self.metrics, Mapping):
            raise ValueError(f"model card: metrics must be a dict, got {type(self.metrics).__name__}")
        self.metrics = dict(self.metrics)
        if isinstance(self.history, (str, Mapping)) or not isinstance(self.history, Sequence) or not all(
            isinstance(h, Mapping) for h in self.history
        ):
            raise ValueError("model card: history must be a list of dicts (one per epoch or event)")
        self.history = [dict(h) for h in self.history]
        if not isinstance(self.notes, str):
            raise ValueError(f"model card: notes must be a string, got {type(self.notes).__name__}")
        if not isinstance(self.medic_viz_version, str):
            raise ValueError("model card: medic_viz_version must be a string")
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"model card: extra must be a dict, got {type(self.extra).__name__}")
        self.extra = dict(self.extra)
        clash = sorted(set(self.extra) & self._field_names())
        if clash:
            raise ValueError(f"model card: extra must not repeat the card's own fields {clash}")

    def _checked_normalize(self, normalize: Any) -> dict | None:
        if normalize is None:
            return None
        if isinstance(normalize, Mapping):
            unknown = set(normalize) - {"mean", "std"}
            if unknown or not {"mean", "std"} <= set(normalize):
                raise ValueError(
                    f"model card: normalize must be {{'mean': [...], 'std': [...]}}, got keys {sorted(normalize)}"
                )
            mean, std = normalize["mean"], normalize["std"]
        elif isinstance(normalize, Sequence) and not isinstance(normalize, str) and len(normalize) == 2:
            mean, std = normalize
        else:
            raise ValueError("model card: normalize must be {'mean': [...], 'std': [...]} or a (mean, std) pair")
        try:
            mean_list = [float(v) for v in mean]
            std_list = [float(v) for v in std]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model card: normalize mean/std must be lists of numbers ({exc})") from exc
        for name, values in (("mean", mean_list), ("std", std_list)):
            if len(values) != self.in_channels:
                raise ValueError(
                    f"model card: normalize {name} has {len(values)} values for in_channels={self.in_channels}"
                )
        if any(not math.isfinite(s) or s <= 0 for s in std_list):
            raise ValueError(f"model card: normalize std must be positive, got {std_list}")
        return {"mean": mean_list, "std": std_list}

    @classmethod
    def _field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"extra"}

    @property
    def normalize_pair(self) -> tuple[list[float], list[float]] | None:
        """``normalize`` as the ``(mean, std)`` pair that ``build_model`` takes, or None."""
        if self.normalize is None:
            return None
        return list(self.normalize["mean"]), list(self.normalize["std"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: the card's fields, then any ``extra`` keys at top level."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = _jsonable(getattr(self, f.name), f.name)
        out.update(_jsonable(self.extra, "extra"))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        """Build a card from a dict; unknown keys (from newer versions) go to ``extra``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"model card must be a JSON object (dict), got {type(data).__name__}")
        missing = [k for k in ("architecture", "num_classes") if k not in data]
        if missing:
            raise ValueError(f"model card is missing required field(s) {missing}")
        known = cls._field_names()
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_json(self) -> str:
        """The card as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        """Parse :meth:`to_json` output (raises ValueError on malformed JSON)."""
        if len(text) > limits.MAX_CARD_BYTES:
            raise ValueError(f"model card is {len(text):,} characters, more than a card may be ({limits.MAX_CARD_BYTES:,})")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model card is not valid JSON: {exc}") from exc
        except RecursionError:
            raise ValueError(f"model card nests lists/objects deeper than {limits.MAX_JSON_DEPTH} levels") from None
        if _json_depth(data) > limits.MAX_JSON_DEPTH:
            raise ValueError(f"model card nests lists/objects deeper than {limits.MAX_JSON_DEPTH} levels")
        return cls.from_dict(data)


def _json_depth(value: Any) -> int:
    """Nesting depth of lists/dicts in parsed JSON (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > limits.MAX_JSON_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# --------------------------------------------------------------------------------------------
# Reading checkpoint files
# --------------------------------------------------------------------------------------------

_STRING_OPS = frozenset(
    {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)

# Protocol-2 pickles name Python 3 modules by their Python 2 names.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _scan_pickle(data: bytes, globals_found: list[str], strings: set[str], max_pickles: int = 8) -> None:
    """Statically list the globals a pickle stream imports, WITHOUT executing anything.

    Uses :func:`pickletools.genops`, which only decodes opcodes. Follows consecutive pickles
    (torch's legacy format stores several) and stops silently at anything undecodable.
    """
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            return
        memo: dict[int, Any] = {}
        stack: list[Any] = []  # only strings matter; everything else is None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in _STRING_OPS:
                    value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                    stack.append(value)
                    if isinstance(value, str) and len(value) < 200:
                        strings.add(value)
                elif name in ("GLOBAL", "INST"):
                    module, _, qualname = str(arg).partition(" ")
                    globals_found.append(f"{_PY2_MODULES.get(module, module)}.{qualname}")
                    stack.append(None)
                elif name == "STACK_GLOBAL":
                    module, qualname = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                    module = _PY2_MODULES.get(module, module) if isinstance(module, str) else "?"
                    globals_found.append(f"{module}.{qualname if isinstance(qualname, str) else '?'}")
                    stack.append(None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1] if stack else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = stack[-1] if stack else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo.get(int(arg)))
                elif name in ("PROTO", "FRAME", "MARK", "STOP"):
                    pass
                else:
                    stack.append(None)
                del stack[:-4]
        except Exception:  # noqa: BLE001 - best effort diagnostics only
            return


def _pickle_contents(path: Path) -> tuple[list[str], set[str]]:
    """Globals and short strings referenced by the pickle(s) in a torch checkpoint or raw pickle."""
    globals_found: list[str] = []
    strings: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".pkl") and info.file_size < 256 * 2**20:
                        _scan_pickle(archive.read(info), globals_found, strings, max_pickles=1)
        else:
            with open(path, "rb") as fh:
                _scan_pickle(fh.read(64 * 2**20), globals_found, strings)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        pass
    return globals_found, strings


def _is_plain_tensor_global(name: str) -> bool:
    """Globals that a checkpoint of plain tensors legitimately references."""
    if name == "collections.OrderedDict":
        return True
    if name.startswith(("torch.nn.", "torch.optim.")):
        return False
    return name.startswith("torch.")


_RESAVE_HINT = (
    "If you trust the file, re-save its weights in a trusted environment: load it there "
    "(torch.load(path, weights_only=False) only on a file you trust), then "
    "`torch.save(model.state_dict(), 'weights.pt')`, or convert to safetensors with "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`."
)


def _torch_reason(exc: BaseException) -> str:
    """The specific reason in torch's weights_only error (skipping its generic preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else type(exc).__name__)
    return lines[0] if lines else type(exc).__name__


def _unsafe_error(path: Path, cause: BaseException) -> UnsafeCheckpointError:
    """Explain why the restricted loader refused ``path``, using a static scan of its pickles."""
    globals_found, strings = _pickle_contents(path)
    module_classes = [g for g in globals_found if g.startswith("torch.nn.modules.")]
    looks_like_module = bool(module_classes) or {"_modules", "_parameters"} <= strings
    foreign = sorted({g for g in globals_found if not _is_plain_tensor_global(g)})
    if looks_like_module:
        classes = [g for g in foreign if not g.startswith("builtins.")]
        shown = ", ".join(classes[:5]) or "nn.Module classes"
        return UnsafeCheckpointError(
            f"{path}: the file is a whole pickled nn.Module ({shown}), not a state_dict. Loading it "
            "would unpickle arbitrary Python classes, which can execute code, so medic_viz refuses it; "
            "medic_viz only loads plain tensors. Save `model.state_dict()` instead of the model: "
            "`torch.save(model.state_dict(), path)` (or safetensors.torch.save_file(model.state_dict(), "
            "'model.safetensors')), in an environment where you trust the file. To convert this file, on a "
            "machine where you trust it (and have the code that defines its classes): "
            f"`model = torch.load({str(path)!r}, weights_only=False)`, then "
            "`torch.save(model.state_dict(), 'weights.pt')`, and import weights.pt."
        )
    if foreign and all(g.startswith(("numpy.", "_codecs.")) for g in foreign):
        kinds = ", ".join([limits.quoted(g) for g in foreign if g.startswith("numpy.")][:_MAX_LISTED_KEYS])
        return UnsafeCheckpointError(
            f"{path}: the file holds numpy objects ({kinds}) that torch's safe loader "
            "(torch.load(weights_only=True)) does not accept, beside or instead of the weights; medic_viz reads "
            "plain tensors (and numpy scalars) only: re-save the state dict alone with "
            "`torch.save(model.state_dict(), path)`, or convert numpy arrays to tensors first"
        )
    if foreign:
        listed = ", ".join(limits.quoted(g) for g in foreign[:_MAX_LISTED_KEYS]) + (" …" if len(foreign) > _MAX_LISTED_KEYS else "")
        return UnsafeCheckpointError(
            f"{path}: the file contains Python objects that would execute code when loaded "
            f"(it references {listed}). medic_viz only loads plain tensors and refuses it. "
            + _RESAVE_HINT
        )
    return UnsafeCheckpointError(
        f"{path}: the restricted loader (torch.load with weights_only=True) could not read this file "
        f"({_torch_reason(cause)}). It is "
        "probably a raw pickle or holds objects other than tensors; medic_viz only loads plain tensors "
        "and never unpickles arbitrary objects. " + _RESAVE_HINT
    )


def _torch_load_restricted(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors turned into medic_viz errors."""
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its restricted loader may not read; the
            # failure, if any, is reported below with a clearer message.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*(TorchScript|sparse tensor invariants)")
            # an open file, not the path: torch would pick its loader from a .safetensors name
            with torch.serialization.safe_globals(checkpoints.numpy_scalar_globals()), open(path, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe_error(path, exc) from exc
    except RuntimeError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise _unsafe_error(path, exc) from exc
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({limits.shortened(str(exc), 300)})") from exc
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: could not read the checkpoint ({type(exc).__name__}: {exc}); it is "
                         "truncated or damaged: download or save it again") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError/ValueError/... on junk files
        globals_found, _ = _pickle_contents(path)
        if any(not _is_plain_tensor_global(g) for g in globals_found):
            raise _unsafe_error(path, exc) from exc
        raise ValueError(
            f"{path}: not a PyTorch checkpoint or safetensors file "
            f"({type(exc).__name__}: {limits.shortened(str(exc), 300)}); expected a state_dict saved with torch.save or safetensors"
        ) from exc


def _strip_prefixes(state_dict: dict[str, Any], model_keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Remove ``module.``/``_orig_mod.`` when every key carries it (and the model's keys do not)."""
    model_keys = list(model_keys) if model_keys is not None else None
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                if model_keys and all(k.startswith(prefix) for k in model_keys):
                    continue
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _unwrap_state_dict(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """Find the state_dict in what torch.load returned (plain, or nested under a common key)."""
    for _depth in range(3):
        if isinstance(obj, nn.Module):
            raise UnsafeCheckpointError(
                f"{path}: the file is a whole pickled nn.Module ({type(obj).__name__}), not a state_dict; "
                "save `model.state_dict()` instead: `torch.save(model.state_dict(), path)`."
            )
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"{path}: expected a state_dict (a dict of tensors), found a {type(obj).__name__}"
            )
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if not all(isinstance(k, str) for k in obj):
                raise ValueError(f"{path}: state_dict keys must be strings")
            return dict(obj)
        wrappers = [k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], (Mapping, nn.Module))]
        # {"state_dict": {}, "net": weights}: take the first entry that holds something
        wrapper = next((k for k in wrappers if isinstance(obj[k], nn.Module) or obj[k]), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    described = ", ".join(f"{limits.quoted(k)}: {type(v).__name__}" for k, v in list(obj.items())[:_MAX_LISTED_KEYS])
    raise ValueError(
        f"{path}: could not find a state_dict (a dict of tensors) in the checkpoint: no tensors found among its "
        f"entries {{{described}}}, bare or under one of {list(_WRAPPER_KEYS)}; extract the model weights and "
        "save them with `torch.save(model.state_dict(), path)`."
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch checkpoint, safely, onto the CPU.

    The format is told from the content, not the name (:mod:`medic_viz.checkpoints`): safetensors
    is read with ``safetensors.torch.load_file``, anything else with ``torch.load(...,
    map_location="cpu", weights_only=True)`` only (numpy scalars in its metadata become plain
    numbers). Declared sizes are checked against :data:`~medic_viz.limits.MAX_TENSOR_BYTES` and
    :data:`~medic_viz.limits.MAX_CHECKPOINT_BYTES` before tensors are read; sparse tensors,
    stride-0/overlapping views and TorchScript archives are refused. Common
    wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``) are unwrapped and a
    ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key is removed.

    Raises FileNotFoundError for a missing file, :class:`UnsafeCheckpointError` for files that
    would need arbitrary objects unpickled (including a whole pickled ``nn.Module``), and
    ValueError for files that are neither format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; pass a weights file, or use load_model() for a medic_viz model directory"
        )
    kind = checkpoints.sniff_format(path)  # from the content: a .pth.tar may well be safetensors
    if kind == "empty":
        raise ValueError(f"{path} is empty (0 bytes); download or save the checkpoint again")
    if kind == "safetensors" or (kind == "unknown" and path.suffix.lower() == ".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if kind == "safetensors":
            checkpoints.check_safetensors_header(path)
        try:
            state_dict = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise ValueError(f"{path}: not a valid safetensors file ({limits.shortened(str(exc), 300)})") from exc
        state_dict = dict(state_dict)
    else:
        if kind == "zip":
            checkpoints.check_torch_zip(path)
        elif kind == "pickle":
            checkpoints.check_legacy_torch(path)
        state_dict = _unwrap_state_dict(_torch_load_restricted(path), path)
    checkpoints.check_loaded_tensors(state_dict, path)
    return _strip_prefixes(state_dict)


# --------------------------------------------------------------------------------------------
# Loading weights into a model
# --------------------------------------------------------------------------------------------


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(limits.shortened(k) for k in keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f", … and {more} more" if more > 0 else "")


def _mismatch_report(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    strict: bool,
) -> str | None:
    """Describe how ``state_dict`` fails to fit ``model`` (None when it fits)."""
    expected = model.state_dict()
    # torch fills a missing BatchNorm ``num_batches_tracked`` itself; do not report it.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    shape_errors: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    dtype_errors: list[str] = []
    not_tensors: list[str] = []
    for key, value in state_dict.items():
        target = expected.get(key)
        if not isinstance(value, torch.Tensor):
            not_tensors.append(f"{key} ({type(value).__name__})")
        elif isinstance(target, torch.Tensor):
            if value.shape != target.shape:
                shape_errors.append((key, tuple(value.shape), tuple(target.shape)))
            elif target.is_floating_point() and not value.is_floating_point():
                # load_state_dict would cast 0/1 ints or bools into float weights without a word
                dtype_errors.append(f"{key}: checkpoint {str(value.dtype).removeprefix('torch.')} vs model "
                                    f"{str(target.dtype).removeprefix('torch.')}")
    if not shape_errors and not dtype_errors and not not_tensors and (not strict or (not missing and not unexpected)):
        return None

    lines = [f"checkpoint does not fit the model ({type(model).__name__}):"]
    if strict and missing:
        lines.append(f"  {len(missing)} missing key(s) (in the model, not in the checkpoint): {_listed(missing)}")
    if strict and unexpected:
        lines.append(
            f"  {len(unexpected)} unexpected key(s) (in the checkpoint, not in the model): {_listed(unexpected)}"
        )
    if shape_errors:
        described = [f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in shape_errors]
        lines.append(f"  {len(shape_errors)} shape mismatch(es): " + "; ".join(described[:_MAX_LISTED_KEYS]))
        if len(described) > _MAX_LISTED_KEYS:
            lines[-1] += f"; … and {len(described) - _MAX_LISTED_KEYS} more"
    if dtype_errors:
        lines.append(
            f"  {len(dtype_errors)} weight(s) stored as integers or booleans where the model has floating-point "
            f"weights: {_listed(dtype_errors)}. Real trained weights are floats; the file is corrupted or was "
            "converted wrongly (it would load as a model that scores at chance)"
        )
    if not_tensors:
        lines.append(f"  {len(not_tensors)} entr(y/ies) that are not tensors: {_listed(not_tensors)}")

    hint = (
        "Likely fix: the weights come from a different architecture or number of classes; check "
        "`architecture` and `num_classes` in the model card (or the arguments of import_checkpoint / build_model)."
    )
    param_keys = [k for k, _ in model.named_parameters()]
    final_layer = param_keys[-1].rpartition(".")[0] if param_keys else None
    for key, ckpt_shape, model_shape in shape_errors:
        if key.rpartition(".")[0] == final_layer and ckpt_shape and model_shape and ckpt_shape[:1] != model_shape[:1]:
            hint += f" The checkpoint's final layer has {ckpt_shape[0]} outputs; the model has {model_shape[0]}."
            break
    if strict and any(k.startswith("normalize.") for k in missing + unexpected):
        hint += (
            " The `normalize.*` buffers differ: the model card's `normalize` (in-model normalisation) "
            "must match how the checkpoint was trained."
        )
    if strict and missing and unexpected and not (set(expected) & set(state_dict)):
        hint += " No key is shared at all: this checkpoint belongs to a different architecture."
    lines.append(hint)
    return "\n".join(lines)


def load_weights_into(
    model: nn.Module,
    state_dict_or_path: Mapping[str, torch.Tensor] | str | Path,
    *,
    strict: bool = True,
) -> nn.Module:
    """Copy weights (a state_dict, or a file read by :func:`load_state_dict_file`) into ``model``.

    Keys and shapes are checked *before* anything is copied, so on
    :class:`CheckpointMismatchError` the model is unchanged. With ``strict=False`` missing and
    unexpected keys are allowed, shape mismatches are not. Returns ``model`` (same object).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(state_dict_or_path, (str, Path)):
        state_dict: dict[str, Any] = load_state_dict_file(state_dict_or_path)
    elif isinstance(state_dict_or_path, Mapping):
        state_dict = _strip_prefixes(dict(state_dict_or_path), model.state_dict().keys())
    else:
        raise TypeError(
            f"state_dict_or_path must be a state_dict (dict of tensors) or a file path, "
            f"got {type(state_dict_or_path).__name__}"
        )
    report = _mismatch_report(model, state_dict, strict=strict)
    if report is not None:
        raise CheckpointMismatchError(report)
    model.load_state_dict(state_dict, strict=strict)
    return model


# --------------------------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------------------------


def _atomic_write_bytes(target: Path, write: Callable[[Path], None]) -> None:
    """Write via a fresh temporary file in the same directory, then rename over ``target``
    (:func:`medic_viz.outdir.replace_file`: no link is written through)."""
    from medic_viz.outdir import replace_file

    replace_file(target, write)


def save_model(model: nn.Module, directory: str | Path, card: ModelCard) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` plus ``directory/card.json``.

    The state_dict (parameters and buffers, e.g. BatchNorm running statistics) is stored as
    contiguous CPU tensors. The directory is created if needed; only those two files are
    (over)written — other files in the directory are never deleted. Returns the directory.
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(card, ModelCard):
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


def _read_card(card_path: Path) -> ModelCard:
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
        return ModelCard.from_json(text)
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


def _build(card: ModelCard, builder: Callable[..., nn.Module] | None) -> nn.Module:
    """Build the untrained architecture a card describes (zoo by default)."""
    if builder is None:
        try:
            from medic_viz.models.zoo import available_models, build_model
        except ImportError as exc:
            raise ImportError(
                "medic_viz.models.zoo could not be imported; pass builder=... to build the architecture"
            ) from exc
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


def _fit_error(card: ModelCard, source: Path | str, report: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"{source}: weights do not fit architecture={card.architecture!r}, "
        f"num_classes={card.num_classes}, in_channels={card.in_channels}, "
        f"arch_kwargs={card.arch_kwargs}\n{report}"
    )


def _check_fits_before_building(card: ModelCard, state_dict: Mapping[str, Any], source: Path | str) -> None:
    """Build the zoo architecture on PyTorch's ``meta`` device (shapes only, no memory) and
    check the weights fit it, so that a card asking for absurd widths or classes is refused
    before anything the size of the *card's* numbers is allocated: a model that fits is no
    larger than the weights file."""
    from medic_viz.models.zoo import available_models, build_model

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
    weights = {k: v for k, v in state_dict.items() if not k.startswith("normalize.")}  # tiny; skeleton has none
    report = _mismatch_report(skeleton, weights, strict=True)
    if report is not None:
        raise _fit_error(card, source, report)


def _check_finite_weights(state_dict: Mapping[str, Any], source: Path | str) -> None:
    bad = nonfinite_entries(state_dict.items())
    if bad:
        raise NonFiniteModelError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or infinite values ({_listed(bad)}); the model is "
            "broken (a diverged training run or a corrupted file) and cannot be used; use another copy"
        )


def _load_into_built(model: nn.Module, state_dict: Mapping[str, torch.Tensor], card: ModelCard, source: Path | str) -> None:
    try:
        load_weights_into(model, state_dict, strict=True)
    except CheckpointMismatchError as exc:
        raise _fit_error(card, source, str(exc)) from exc


def load_model(
    directory_or_card: str | Path,
    *,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Load a model saved by :func:`save_model`; returns ``(model in eval mode on device, card)``.

    ``directory_or_card`` is the model directory or its ``card.json``. The architecture is
    built with ``builder(architecture, num_classes, in_channels=..., input_size=...,
    normalize=(mean, std) | None, **arch_kwargs)`` — by default the model zoo's
    ``build_model`` — and the weights are loaded strictly.
    """
    card_path, weights_path = _resolve_model_paths(directory_or_card)
    card = _read_card(card_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"model weights not found: {weights_path} (card: {card_path})")
    state_dict = load_state_dict_file(weights_path)
    _check_finite_weights(state_dict, weights_path)
    if builder is None:
        _check_fits_before_building(card, state_dict, weights_path)
    model = _build(card, builder)
    _load_into_built(model, state_dict, card, weights_path)
    return model.to(device).eval(), card


def model_from_state_dict(
    card: ModelCard,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """Build the architecture ``card`` describes and load ``state_dict`` into it strictly
    (in memory, e.g. weights sent to a worker process); returns the model in eval mode on
    ``device``. Same building and checks as :func:`load_model`."""
    source = "the given state_dict"
    _check_finite_weights(state_dict, source)
    if builder is None:
        _check_fits_before_building(card, state_dict, source)
    model = _build(card, builder)
    _load_into_built(model, state_dict, card, source)
    return model.to(device).eval()


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
    ``dataset``, ``target_class`` …). The file is read with :func:`load_state_dict_file`
    (safe loaders only) and loaded strictly; save the result with :func:`save_model`.
    """
    known = ModelCard._field_names() - {"architecture", "num_classes", "medic_viz_version"}
    unknown = sorted(set(card_fields) - known)
    if unknown:
        raise TypeError(f"import_checkpoint got unknown card field(s) {unknown}; known fields: {sorted(known)}")
    card = ModelCard(architecture=architecture, num_classes=num_classes, **card_fields)
    path = Path(path)
    state_dict = load_state_dict_file(path)
    _check_finite_weights(state_dict, path)
    if builder is None:
        _check_fits_before_building(card, state_dict, path)
    model = _build(card, builder)
    _load_into_built(model, state_dict, card, path)
    return model.to(device).eval(), card
