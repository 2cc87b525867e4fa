"""One run's settings: the one object ``medic-viz defend``/``demo``, the widget launcher and
workbench, and the experiment grid make a defence's options from.

:class:`RunSettings` is an immutable dataclass of validated fields: the method, how MEDIC's τ is
set (``tau_mode``: calibrated per layer to a ``share`` of its neurons, or one global ``tau``), λ,
the cloned layers, epochs, the clean-data fraction, the device, live evaluation, seed, batch size
and learning rate. Each field is declared once, with its check (the library's own:
:mod:`medic_viz.checks`, :func:`~medic_viz.importance.validate_tau`,
:func:`~medic_viz.calibration.validate_share`, :func:`~medic_viz.defenses.medic.validate_lambda`,
:func:`~medic_viz.device.resolve_device`), and everything else is read from those declarations:

- which fields a method uses beyond the common ones (epochs, fraction, device, seed …) is its
  class's :attr:`~medic_viz.defenses.base.ConfiguredDefense.run_settings`, reached through the
  registry (:func:`method_settings`, :func:`used_settings`); no method is named here;
- :meth:`RunSettings.to_defense_options` turns the settings into a method's options (the grid's
  :func:`~medic_viz.experiments.method_options`, the launcher's runs, ``defend``);
- the widget launcher's parameters are the fields marked ``control``, each validated by the
  field's check; ``defend`` refuses a flag of a field the chosen method does not use; run
  labels and the notes on ignored settings are made from the fields' ``label`` and ``short``.

Adding a setting is one field here (and, for an app to offer it, one widget).
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Mapping

import torch

from medic_viz.calibration import validate_share
from medic_viz.capture import LAYER_PRESETS, resolve_layers
from medic_viz.checks import MAX_SEED, check_number, check_whole
from medic_viz.defenses.medic import (
    DEFAULT_EPS_MEDIC,
    DEFAULT_LAM,
    DEFAULT_LAYERS,
    DEFAULT_SHARE,
    DEFAULT_TAU,
    validate_eps,
    validate_lambda,
)
from medic_viz.defenses.registry import DEFENSES, MAIN_METHOD, available_defenses, defense_class
from medic_viz.device import resolve_device
from medic_viz.importance import validate_tau

__all__ = [
    "RunSettings",
    "DEVICE_CHOICES",
    "TAU_MODES",
    "LAYER_CHOICES",
    "method_choices",
    "method_key",
    "method_settings",
    "used_settings",
    "unused_settings",
    "ignored_settings",
    "settings_label",
    "layers_text",
]

#: Device choices an app offers ("auto" = CUDA, else MPS, else CPU); any torch device string is accepted.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: How a MEDIC run's τ is set: ``"share"`` — calibrated per layer so that each layer's weights
#: match ``share`` of its neurons (the library's default,
#: :data:`~medic_viz.defenses.medic.DEFAULT_SHARE`); ``"global"`` — one ``tau`` for every layer
#: (the paper's way).
TAU_MODES: tuple[str, ...] = ("share", "global")
#: The layer presets (:data:`medic_viz.capture.LAYER_PRESETS`), ``"auto"`` (MEDIC's default) first.
LAYER_CHOICES: tuple[str, ...] = (DEFAULT_LAYERS,) + tuple(p for p in LAYER_PRESETS if p != DEFAULT_LAYERS)


def method_choices() -> list[str]:
    """Method names, the main method (MEDIC) first, then the baselines (``"finetune"``, ``"nad"`` …)."""
    names = available_defenses()
    return [MAIN_METHOD] + [n for n in names if n != MAIN_METHOD]


def method_key(method: Any) -> str | None:
    """The canonical method name (aliases such as ``"Fine-tuning"`` accepted), None if unknown."""
    try:
        return defense_class(method).name
    except (TypeError, ValueError):
        return None


def layers_text(layers: Any) -> str:
    """A layer selection in a few characters: the preset's name, or up to three module names
    (``"conv2,bn2,conv3,… (6)"``)."""
    if isinstance(layers, str):
        return layers
    try:
        names = [str(n) for n in layers]
    except TypeError:
        return repr(layers)
    shown = ",".join(names[:3])
    return shown if len(names) <= 3 else f"{shown},… ({len(names)})"


def _fmt(value: Any, scale: float = 1.0, unit: str = "") -> str:
    """A number in a label (``5``, ``1%``); anything else as its repr (a label shows what was typed)."""
    if isinstance(value, (str, bytes, bool)):
        return repr(value)
    try:
        return f"{scale * float(value):g}{unit}"
    except (TypeError, ValueError):
        return repr(value)


# -- the checks, one per field: check(value, model) -> the value to keep, or a one-line ValueError ----


def _check_method(value: Any, _model: Any = None) -> str:
    key = method_key(value)
    if key is None:
        raise ValueError(f"unknown method {value!r}; choose one of {method_choices()}")
    return key


def _check_tau_mode(value: Any, _model: Any = None) -> str:
    if not isinstance(value, str) or value not in TAU_MODES:
        raise ValueError(f"tau_mode must be one of {list(TAU_MODES)}, got {value!r}")
    return value


def _check_tau(value: Any, _model: Any = None) -> float:
    return validate_tau(value)


def _check_share(value: Any, _model: Any = None) -> float | None:
    return None if value is None else validate_share(value)


def _check_lam(value: Any, _model: Any = None) -> float:
    return validate_lambda(value)


def _check_eps(value: Any, _model: Any = None) -> float:
    return validate_eps(value)


def _check_layers(value: Any, model: Any = None) -> str | tuple[str, ...]:
    """A preset of :data:`LAYER_CHOICES`, or module names (kept as a tuple; checked against
    ``model`` when one is known, with one line naming the valid layers if one is not)."""
    if isinstance(value, str) and value in LAYER_PRESETS:
        return value
    refused = ValueError(f"layers must be a preset {list(LAYER_CHOICES)} or a list of the teacher's module names, "
                         f"got {value!r}")
    if isinstance(value, (str, bytes)) or callable(value) or value is None:
        raise refused
    try:
        names = tuple(value)
    except TypeError:
        raise refused from None
    if model is not None:
        return tuple(resolve_layers(model, names))
    if not names or not all(isinstance(n, str) for n in names):
        raise refused
    return names


def _whole_valued(value: Any) -> Any:
    """``3.0`` as ``3`` (a widget or JSON may give a whole number as a float); anything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_holdout_fraction(value: Any, _model: Any = None) -> float:
    return check_number("holdout_fraction", value, 0.0, 0.5,
                        meaning="the share of the clean data kept out of training to measure the clone (0 = off)")


def _check_epochs(value: Any, _model: Any = None) -> int | None:
    return None if value is None else check_whole("epochs", _whole_valued(value), 1)  # None: the method's own


def _check_fraction(value: Any, _model: Any = None) -> float:
    return check_number("fraction", value, 0.0, 1.0, low_open=True,
                        meaning="the share of the training set used as clean data")


def _check_device(value: Any, _model: Any = None) -> str:
    wrong = f"device must be one of {list(DEVICE_CHOICES)} or a torch device string, got {value!r}"
    if not isinstance(value, (str, torch.device)):
        raise ValueError(wrong)
    try:
        resolve_device(value)  # raises ValueError naming what is available
    except RuntimeError as exc:  # torch's own parse error, e.g. "gpu"
        raise ValueError(f"{wrong} ({str(exc).splitlines()[0]})") from None
    return str(value)


def _check_eval_every_steps(value: Any, _model: Any = None) -> int | None:
    return check_whole("eval_every_steps", _whole_valued(value), 0, optional=True, meaning="None or 0 = once per epoch")


def _check_seed(value: Any, _model: Any = None) -> int:
    return check_whole("seed", _whole_valued(value), 0, MAX_SEED)


def _check_batch_size(value: Any, _model: Any = None) -> int | None:
    return check_whole("batch_size", _whole_valued(value), 1, optional=True, meaning="None = the method's own")


def _check_lr(value: Any, _model: Any = None) -> float | None:
    return check_number("lr", value, 0.0, low_open=True, optional=True, meaning="None = the method's own")


def _global(values: Mapping[str, Any]) -> bool:
    return values.get("tau_mode", "share") != "share"


def _per_layer(values: Mapping[str, Any]) -> bool:
    return values.get("tau_mode", "share") != "global"


def _setting(default: Any, check: Callable[[Any, Any], Any], doc: str, *, control: bool = True,
             option: str | None = "name", unset: tuple = (None,), used_when: Callable[[Mapping], bool] | None = None,
             short: str = "", label: Callable[[Any], str] | None = None, label_at_default: bool = True,
             methods_default: bool = True) -> Any:
    """A :class:`RunSettings` field and everything the consumers read about it.

    ``check(value, model)``: the value to keep, or a one-line ``ValueError`` (``model``: the
    teacher, when known, for checks that need it); ``control``: an app offers it (the launcher's
    parameters); ``option``: how it reaches a method — ``"name"`` (the config option of that
    name), ``"budget"`` (epochs, over the method's phases), ``"seed"`` (also the method's
    ``seed_options``) or None (not an option of the method); ``unset``: values that leave the
    method's own default; ``used_when(values)``: whether a run with ``values`` uses it (default:
    always); ``short``: its name in a note; ``label(value)``: its text in a run's label, left out at
    its default unless ``label_at_default``; ``methods_default``: the default is the method's own
    (a method given no value uses it too)."""
    return field(default=default, metadata={
        "check": check, "doc": doc, "control": control, "option": option, "unset": unset, "used_when": used_when,
        "short": short, "label": label, "label_at_default": label_at_default, "methods_default": methods_default})


@dataclass(frozen=True)
class RunSettings:
    """The settings of one defence run, each validated by its field's check on construction
    (and :meth:`replace` checks only what it changes). See the module doc; field docs:
    :meth:`doc`. Method-specific fields (``tau_mode``, ``tau``, ``share``, ``layers``, ``lam``,
    ``eps``, ``holdout_fraction``: MEDIC's) are ignored by a method that does not use them."""

    method: str = _setting(MAIN_METHOD, _check_method, "the defence: 'medic' or a baseline name", option=None)
    tau_mode: str = _setting("share", _check_tau_mode, "how MEDIC's τ is set: 'share' (calibrated per layer) or "
                             "'global'", option=None)
    tau: float = _setting(DEFAULT_TAU, _check_tau, "MEDIC's temperature τ >= 0, for every layer (tau_mode='global')",
                          used_when=_global, short="τ", label=lambda v: f"τ={_fmt(v)}", methods_default=False)
    share: float | None = _setting(None, _check_share, "share of each layer's neurons τ is calibrated to match "
                                   "(tau_mode='share'; None = MEDIC's default, 1 %)", used_when=_per_layer,
                                   short="share",
                                   label=lambda v: f"share={_fmt(DEFAULT_SHARE if v is None else v, 100.0, '%')}")
    layers: Any = _setting(DEFAULT_LAYERS, _check_layers, "MEDIC's hooked layers: a preset or the teacher's module "
                           "names", short="layers", label=lambda v: f"layers={layers_text(v)}", label_at_default=False)
    lam: float = _setting(DEFAULT_LAM, _check_lam, "MEDIC's cloning weight λ >= 0", short="λ",
                          label=lambda v: f"λ={_fmt(v)}")
    eps: float = _setting(DEFAULT_EPS_MEDIC, _check_eps, "ε added to the teacher's variances in MEDIC's loss and "
                          "importance (σ = sqrt(var + ε); the paper's is 1e-5)", control=False,
                          label=lambda v: f"ε={_fmt(v)}", label_at_default=False)
    holdout_fraction: float = _setting(0.0, _check_holdout_fraction, "MEDIC's clean hold-out: the share of the clean "
                                       "data kept out of training to measure the clone's accuracy against the "
                                       "teacher's during the run (0 = off)", unset=(None, 0, 0.0), short="hold-out",
                                       label=lambda v: f"hold-out={_fmt(v, 100.0, '%')}", label_at_default=False)
    epochs: int | None = _setting(None, _check_epochs, "training epochs, one budget over the method's phases "
                                  "(None = the method's own)", option="budget")
    fraction: float = _setting(0.05, _check_fraction, "share of the training set used as clean data", option=None)
    device: str = _setting("auto", _check_device, "'auto', 'cpu', 'cuda' or a torch device string")
    eval_every_steps: int | None = _setting(None, _check_eval_every_steps, "also evaluate every k steps "
                                            "(None or 0 = once per epoch)", unset=(None, 0))
    seed: int = _setting(0, _check_seed, "seed of the clean subset, the training and every seeded part of the "
                         "method (a fresh student's init …)", control=False, option="seed")
    batch_size: int | None = _setting(None, _check_batch_size, "batch size (None = the method's own)", control=False)
    lr: float | None = _setting(None, _check_lr, "learning rate (None = the method's own)", control=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](getattr(self, f.name), None))

    # -- fields ------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every field, in order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def controls(cls) -> tuple[str, ...]:
        """The fields an app offers as controls (the widget launcher's parameters), in order."""
        return tuple(f.name for f in fields(cls) if f.metadata["control"])

    @classmethod
    def default(cls, name: str) -> Any:
        """Field ``name``'s default."""
        f = _field(name)
        return f.default if f.default is not MISSING else None

    @classmethod
    def doc(cls, name: str) -> str:
        return _field(name).metadata["doc"]

    @classmethod
    def check_field(cls, name: str, value: Any, model: Any = None) -> Any:
        """``value`` checked as field ``name`` (``model``: the teacher, when layer names should be
        checked against it): the value to keep, or a one-line ``ValueError``."""
        return _field(name).metadata["check"](value, model)

    def replace(self, **changes: Any) -> "RunSettings":
        """A copy with ``changes``, each checked by its field's check (the other fields are not
        checked again)."""
        return self.with_checked(**{name: self.check_field(name, value) for name, value in changes.items()})

    def with_checked(self, **checked: Any) -> "RunSettings":
        """A copy with values that :meth:`check_field` returned already (not checked again: one
        check per change, wherever it was made)."""
        unknown = sorted(set(checked) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown run setting(s) {unknown}; settings are {list(self.names())}")
        out = copy.copy(self)
        for name, value in checked.items():
            object.__setattr__(out, name, value)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    # -- building ----------------------------------------------------------------------------
    @staticmethod
    def tau_mode_for(tau: Any, share: Any, tau_mode: Any = None) -> Any:
        """``tau_mode`` as given, else ``"global"`` when ``tau`` is given (a caller who names a τ
        means it) and ``"share"`` otherwise; ``ValueError`` when both are given without it."""
        if tau_mode is not None:
            return tau_mode
        if tau is not None and share is not None:
            raise ValueError(f"tau={tau!r} and share={share!r} both set how sharp MEDIC's weights are; "
                             "give tau_mode='global' (one τ) or tau_mode='share' (τ calibrated per layer)")
        return "global" if tau is not None else "share"

    @classmethod
    def create(cls, *, tau: Any = None, share: Any = None, tau_mode: Any = None, **values: Any) -> "RunSettings":
        """Settings where ``tau``/``share`` say how τ is set (:meth:`tau_mode_for`); ``tau=None``
        keeps :data:`~medic_viz.defenses.medic.DEFAULT_TAU` for the global mode."""
        mode = cls.tau_mode_for(tau, share, tau_mode)
        return cls(tau_mode=mode, tau=DEFAULT_TAU if tau is None else tau, share=share, **values)

    @classmethod
    def from_cli_args(cls, args: Any) -> "RunSettings":
        """The settings ``medic-viz defend`` was given: ``--method``, ``--tau`` (a number: one
        global τ; without it τ is calibrated per layer, to ``--share`` if given; ``auto`` is the
        command's to choose, the settings then keep the per-layer τ until it does), ``--share``,
        ``--layers`` (a preset or comma-separated module names, checked against the model when
        it runs), ``--lam``, ``--eps``, ``--epochs``, ``--fraction``, ``--device``, ``--seed``,
        ``--batch-size``, ``--lr``. A flag not given keeps the method's default."""
        given = {name: getattr(args, name, None) for name in cls.names()}
        values = {k: v for k, v in given.items() if v is not None and k not in ("tau", "share", "layers")}
        text, share = given["tau"], given["share"]
        if text is not None and share is not None:
            raise ValueError(f"--tau {text} and --share {share:g} both set how sharp MEDIC's weights are; give one "
                             "(--share calibrates τ per layer, --tau is one global τ)")
        if text is not None and str(text).strip().lower() != "auto":
            try:
                tau = float(text)
            except (TypeError, ValueError):
                raise ValueError(f"--tau must be a number >= 0 or 'auto', got {text!r}") from None
            values.update(tau_mode="global", tau=tau)
        elif share is not None:
            values["share"] = share
        if given["layers"] is not None:
            values["layers"] = _parse_layers(str(given["layers"]))
        return cls(**values)

    # -- a method's options ------------------------------------------------------------------
    def to_defense_options(self, method: str | None = None, *, budget: bool = True,
                           defaults: bool = True) -> dict[str, Any]:
        """The options of ``method`` (default: :attr:`method`) these settings give, for
        :func:`~medic_viz.defenses.registry.make_defense`: the fields the method uses that are
        its options and are set (a method's own default otherwise). ``epochs`` is one budget over
        the method's phases (its ``epoch_options``; ``budget=False``: the main phase's epochs,
        the method's own for the others); ``seed`` also seeds the method's ``seed_options``.
        ``defaults=False``: a setting still at its default here is left out too, so that the
        method's own default applies (a grid cell writes those out itself, ``pinned_options``).
        How a run reports (``progress``, ``eval_every``) is the caller's."""
        cls = defense_class(self.method if method is None else method)
        used = used_settings(cls.name, self.as_dict())
        opts: dict[str, Any] = {}
        for f in fields(self):
            kind, value = f.metadata["option"], getattr(self, f.name)
            if kind is None or f.name not in used or any(_same(value, u) for u in f.metadata["unset"]):
                continue
            if not defaults and kind == "name" and f.metadata["methods_default"] and _same(value, f.default):
                continue
            if kind == "budget":
                opts.update(cls.epoch_options(value) if budget else {f.name: value})
            elif kind == "seed":
                opts[f.name] = value
                opts.update({name: value for name in cls.seed_options})
            else:
                opts[f.name] = value
        return opts

    @classmethod
    def option_names(cls, method: str) -> frozenset[str]:
        """The options of ``method`` that settings set (whatever their values; not the seed
        options nor the phases' epochs): what further options given beside them must not repeat."""
        used = used_settings(method)
        return frozenset(f.name for f in fields(cls) if f.metadata["option"] is not None and f.name in used)


def _field(name: str) -> Any:
    for f in fields(RunSettings):
        if f.name == name:
            return f
    raise ValueError(f"unknown run setting {name!r}; settings are {list(RunSettings.names())}")


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values count as different
        return False


def _parse_layers(text: str) -> str | tuple[str, ...]:
    """``--layers``: a preset name or comma-separated module names."""
    text = text.strip()
    if text in LAYER_PRESETS:
        return text
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError(f"--layers {text!r}: give a preset ({', '.join(LAYER_PRESETS)}) or comma-separated module names")
    return names


# -- which method uses what (read from the classes, through the registry) --------------------------


def method_settings(method: Any) -> tuple[str, ...]:
    """The settings only ``method`` uses (its class's ``run_settings``), in field order; () for an
    unknown method."""
    key = method_key(method)
    own = () if key is None else DEFENSES[key].run_settings
    return tuple(n for n in RunSettings.names() if n in own)


def _method_specific() -> tuple[str, ...]:
    """Every setting some method has to itself (the union of the classes' ``run_settings``)."""
    owned = {n for cls in DEFENSES.values() for n in cls.run_settings}
    return tuple(n for n in RunSettings.names() if n in owned)


def used_settings(method: Any, values: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The settings a run of ``method`` uses: the common ones and the method's own — of those,
    with ``values`` (the settings as set, valid or not), only the ones those values use (τ in the
    global mode, the share in the per-layer mode)."""
    own, specific = set(method_settings(method)), set(_method_specific())
    out = []
    for f in fields(RunSettings):
        when = f.metadata["used_when"]
        if f.name in specific and f.name not in own:
            continue
        if values is not None and when is not None and not when(values):
            continue
        out.append(f.name)
    return tuple(out)


def unused_settings(method: Any, values: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The settings a run of ``method`` (with ``values``) does not use, in field order."""
    used = set(used_settings(method, values))
    return tuple(n for n in RunSettings.names() if n not in used)


def ignored_settings(method: Any) -> tuple[str, str] | None:
    """What a note on ``method`` says it ignores: the settings other methods have to themselves
    (``"τ, share, layers and λ"`` for a baseline) and those methods (``"MEDIC"``); None when it
    ignores none."""
    own = set(method_settings(method))
    names = [n for n in _method_specific() if n not in own and _field(n).metadata["short"]]
    if not names:
        return None
    owners = [cls.display_name for cls in DEFENSES.values() if set(cls.run_settings) & set(names)]
    return _and([_field(n).metadata["short"] for n in names]), _and(owners)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def settings_label(method: Any, values: Mapping[str, Any]) -> str:
    """A run's label: the method's display name and its own settings that the run uses
    (``"MEDIC τ=5 λ=10"``, ``"MEDIC share=1% λ=3 layers=conv+bn"``: a setting shown only when it
    is not at its default comes last); an unknown method as given. ``values`` may hold invalid
    values (a label shows what was typed)."""
    key = method_key(method)
    if key is None:
        return str(method)
    always, changed = [], []
    for name in used_settings(key, values):
        meta = _field(name).metadata
        if name not in method_settings(key) or meta["label"] is None:
            continue
        value = values.get(name, RunSettings.default(name))
        if meta["label_at_default"]:
            always.append(meta["label"](value))
        elif not _same(value, RunSettings.default(name)):
            changed.append(meta["label"](value))
    return " ".join([DEFENSES[key].display_name, *always, *changed])
