"""The model card: what a saved model is and how to rebuild it (``card.json``, beside the weights
in a model folder, :mod:`medic_viz.io`).

:class:`ModelCard` checks every field when it is made, whether in Python or read from a file:
types, ``num_classes`` and ``input_size`` against :mod:`medic_viz.limits`, normalisation one
value per channel, an attack given with its target class. :meth:`ModelCard.from_json` bounds
the text (:data:`~medic_viz.limits.MAX_CARD_BYTES`) and its nesting
(:data:`~medic_viz.limits.MAX_JSON_DEPTH`) before building anything.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import torch

from medic_viz import limits

__all__ = ["ModelCard", "TEACHER_ROLES"]

#: A model's part in an experiment's protocol (:attr:`ModelCard.role`): settings are chosen on
#: ``development`` models, results are reported on ``evaluation`` models.
TEACHER_ROLES = ("development", "evaluation")

# Arguments that build_model receives from the card's own fields.
_RESERVED_ARCH_KWARGS = frozenset({"name", "num_classes", "in_channels", "input_size", "normalize"})


def _package_version() -> str:
    """The installed medic_viz version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        return importlib.metadata.version("medic-viz")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return "unknown"


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
    ``role`` is the model's part in an experiment's protocol: ``"development"`` (settings
    may be chosen on it) or ``"evaluation"`` (results are reported on it; nothing is chosen on
    it), or None (not part of one); see :mod:`medic_viz.experiments.protocol`.
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
    role: str | None = None
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
        if self.role is not None and self.role not in TEACHER_ROLES:
            raise ValueError(f"model card: role must be one of {', '.join(TEACHER_ROLES)} or absent, "
                             f"got {limits.quoted(self.role)}")
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
