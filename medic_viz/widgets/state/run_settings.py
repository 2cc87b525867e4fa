"""The run settings the widget states share: one :class:`~medic_viz.run_settings.RunSettings`
held by a :class:`SharedSettings` that the launcher, the workbench, the explorer and the picker
read instead of each keeping a copy (τ is theirs at once), and the run labels made from it.

The choices an app offers (methods, devices, how MEDIC's τ is set, layer presets), the checks of
the settings and what a method uses are the core's (:mod:`medic_viz.run_settings`); they are
re-exported here for the views.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from medic_viz.defenses.medic import DEFAULT_LAYERS
from medic_viz.defenses.registry import MAIN_METHOD
from medic_viz.run_settings import (
    DEVICE_CHOICES,
    LAYER_CHOICES,
    TAU_MODES,
    RunSettings,
    layers_text,
    method_choices,
    method_key,
    settings_label,
)
from medic_viz.widgets.state.observable import Listener, Observable, StateChange, _same

__all__ = [
    "SharedSettings",
    "SettingAttribute",
    "DEVICE_CHOICES",
    "TAU_MODES",
    "LAYER_CHOICES",
    "method_choices",
    "method_key",
    "run_label",
    "layers_text",
]


def run_label(tau: Any, lam: Any, method: str = MAIN_METHOD, *, share: Any = None, layers: Any = DEFAULT_LAYERS) -> str:
    """The label of a run: for MEDIC ``"MEDIC τ=5 λ=10"`` (one global τ) or, given ``share``,
    ``"MEDIC share=1% λ=10"`` (τ calibrated per layer; ``tau`` is then not shown), with
    ``" layers=conv+bn"`` appended when ``layers`` is not the default; the method's display name
    for a baseline (``"NAD"``, ``"Fine-tuning"``: these settings do not apply); an unknown
    method as given (:func:`medic_viz.run_settings.settings_label`)."""
    values = {"tau_mode": "global" if share is None else "share", "tau": tau, "share": share, "lam": lam,
              "layers": layers}
    return settings_label(method, values)


class SharedSettings(Observable):
    """The settings of the runs of one session, shared by the states that show them.

    :attr:`settings` is the :class:`~medic_viz.run_settings.RunSettings` of the valid values.
    A state that keeps invalid values (the launcher: a view never loses what was typed) sets
    them with their problem: :meth:`value` ``(typed=True)`` gives them back, :attr:`problems`
    says what is wrong, and :attr:`settings` keeps the last valid value. ``model``: the teacher,
    against which layer names are checked.

    Each value is checked once, by its field's check (:meth:`check`), by whichever state it is set
    on; :meth:`commit` then tells each listener once per field: a listener added with
    ``typed=True`` of every change of the value as typed, the others of every change of the
    valid value — so a τ moved in the explorer reaches the launcher, the picker and the
    workbench once each, and none of them sets it back.
    """

    def __init__(self, settings: RunSettings | None = None, *, model: Any = None) -> None:
        super().__init__()
        if settings is not None and not isinstance(settings, RunSettings):
            raise TypeError(f"settings must be medic_viz.run_settings.RunSettings, got {type(settings).__name__}")
        self.model = model
        self._valid = RunSettings() if settings is None else settings
        self._typed: dict[str, Any] = {}
        self._problems: dict[str, str] = {}
        self._typed_listeners: list[Listener] = []
        self._lock = threading.RLock()

    def add_listener(self, listener: Listener, *, typed: bool = False) -> Listener:
        """Call ``listener(change)`` when a field changes: its value as typed (``typed=True``,
        invalid values included) or its valid value; returns it."""
        super().add_listener(listener)
        if typed:
            with self._listener_lock:
                self._typed_listeners.append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        super().remove_listener(listener)
        with self._listener_lock:
            if listener in self._typed_listeners:
                self._typed_listeners.remove(listener)

    @property
    def settings(self) -> RunSettings:
        """The valid settings (an immutable :class:`~medic_viz.run_settings.RunSettings`)."""
        return self._valid

    @property
    def problems(self) -> dict[str, str]:
        """``{field: one-line message}`` for each field whose value as typed is invalid."""
        with self._lock:
            return dict(self._problems)

    def value(self, name: str, *, typed: bool = False) -> Any:
        """Field ``name``: as typed (``typed=True``; an invalid value included), else its valid value."""
        with self._lock:
            if typed and name in self._typed:
                return self._typed[name]
            return getattr(self._valid, name)

    def typed(self) -> dict[str, Any]:
        """Every field as typed."""
        with self._lock:
            return {name: self.value(name, typed=True) for name in RunSettings.names()}

    def check(self, name: str, value: Any) -> Any:
        """``value`` checked as field ``name`` (layer names against :attr:`model`): the value to keep,
        or a one-line ``ValueError``."""
        return RunSettings.check_field(name, value, self.model)

    def set(self, *, keep_invalid: bool = False, **values: Any) -> None:
        """Set fields, each checked once; an invalid value raises ``ValueError`` and nothing
        changes (``keep_invalid``: it is kept as typed and its message is in :attr:`problems`)."""
        staged: dict[str, tuple[Any, str | None]] = {}
        for name, value in values.items():
            try:
                staged[name] = (self.check(name, value), None)
            except ValueError as exc:
                if not keep_invalid:
                    raise
                staged[name] = (value, str(exc))
        self.commit(staged)

    def commit(self, staged: Mapping[str, tuple[Any, str | None]]) -> None:
        """Apply ``{field: (value, problem)}`` whose values were checked already (:meth:`check`;
        ``problem`` None: valid, else the value is kept as typed with that message), then tell the
        listeners (once per field and listener, see the class doc)."""
        with self._lock:
            before = {n: (self.value(n, typed=True), getattr(self._valid, n)) for n in staged}
            valid = {n: v for n, (v, problem) in staged.items() if problem is None}
            if valid:
                self._valid = self._valid.with_checked(**valid)
            for name, (value, problem) in staged.items():
                if problem is None:
                    self._typed.pop(name, None)
                    self._problems.pop(name, None)
                else:
                    self._typed[name], self._problems[name] = value, problem
            after = {n: (self.value(n, typed=True), getattr(self._valid, n)) for n in staged}
        with self._listener_lock:
            listeners = list(self._listeners)
            typed = list(self._typed_listeners)
        for name in staged:
            (typed_before, valid_before), (typed_now, valid_now) = before[name], after[name]
            if not _same(typed_before, typed_now):
                self._call([fn for fn in listeners if fn in typed],
                           StateChange("param", name=name, value=typed_now))
            if not _same(valid_before, valid_now):
                self._call([fn for fn in listeners if fn not in typed],
                           StateChange("param", name=name, value=valid_now))

    def __repr__(self) -> str:
        problems = f", problems in {sorted(self._problems)}" if self._problems else ""
        return f"SharedSettings({self._valid!r}{problems})"


class SettingAttribute:
    """A run setting a state takes in its constructor and code may change, without a control:
    read from and set in the state's shared settings (``state.settings``; an invalid value
    raises ``ValueError``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = RunSettings.doc(name)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.settings.value(self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.settings.set(**{self.name: value})
