"""Listeners and validated parameters: the base of every widget state.

A state tells *listeners* what changed (the pattern of mpl-interactions' controller): a view
registers ``state.add_listener(fn)`` and redraws when ``fn(change)`` is called with a
:class:`StateChange`.

Parameters are declared once, as :class:`Param` class attributes. Reading ``state.tau`` gives the
value; writing ``state.tau = 3`` is ``state.set(tau=3)``: every value is validated *on set* by its
parameter's check, which either returns the value to keep (normalised: ``0`` → ``0.0``, ``"NAD"``
→ ``"nad"``) or raises ``ValueError`` with one line naming the parameter and what it accepts.
That check is the only one: a state that acts on its parameters later (the launcher's Launch)
reads the outcome of it instead of checking again.

A :class:`Shared` parameter is a field of the run settings the state shares with others
(``state.settings``, a :class:`~medic_viz.widgets.state.run_settings.SharedSettings`): τ is the
launcher's, the workbench's, the explorer's and the picker's at once, held there once and checked
there once by the field's check (:class:`medic_viz.run_settings.RunSettings`); each state is told
of a change once, by the settings, and tells its own listeners.

What happens to an invalid value depends on the state (:attr:`Parameterized.DEFER_ERRORS`):

- refused (default; explorer, picker): ``set`` raises and nothing changes (all or none);
- kept and reported (launcher): the value is stored, its message is put in
  :attr:`Parameterized.problems`, and the action that would use it (a launch) ends in an error
  run showing that message. A setting typed in a view is never lost, and a baseline, which
  ignores τ, can run while τ holds a value MEDIC would refuse. Of a shared parameter, such a
  state reads the value as typed; the others read the last valid one.
"""

from __future__ import annotations

import math
import threading
import traceback
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from medic_viz.checks import interval_text
from medic_viz.importance import validate_tau
from medic_viz.run_settings import RunSettings
from medic_viz.training import TrainEvent

if TYPE_CHECKING:  # pragma: no cover
    from medic_viz.widgets.state.runs import RunRecord

__all__ = [
    "StateChange",
    "Listener",
    "Observable",
    "Param",
    "Shared",
    "Reject",
    "Parameterized",
    "number",
    "one_of",
    "tau_check",
]


# ------------------------------------------------------------------------------------------
# listeners
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChange:
    """What changed in a state object.

    ``kind``: ``"param"`` (``name`` set to ``value``), ``"launch"`` (a run was added),
    ``"event"`` (``event`` appended to ``run``), ``"status"`` (``run`` ended: done, stopped or
    error), ``"clear"`` (finished runs removed), ``"analysis"`` (a new input was analysed),
    ``"queue"`` (``run`` moved to position ``value`` in a shared run queue; 0 = it starts).
    """

    kind: str
    name: str | None = None
    value: Any = None
    run: "RunRecord | None" = None
    event: TrainEvent | None = None


Listener = Callable[[StateChange], None]


class Observable:
    """Listener registry. A listener that raises does not break the state (or a training run):
    the error is kept in ``listener_errors`` (text with traceback) and a warning is issued."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._listener_lock = threading.Lock()
        self.listener_errors: list[str] = []

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener(change)`` on every change; returns it (usable as a decorator)."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {type(listener).__name__}")
        with self._listener_lock:
            self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        with self._listener_lock:
            if listener not in self._listeners:
                raise ValueError("this listener is not registered")
            self._listeners.remove(listener)

    def _notify(self, change: StateChange) -> None:
        with self._listener_lock:
            listeners = list(self._listeners)
        self._call(listeners, change)

    def _call(self, listeners: Iterable[Listener], change: StateChange) -> None:
        for fn in listeners:
            try:
                fn(change)
            except Exception as exc:  # noqa: BLE001 - a broken view must not kill the run; keep the error visible
                self.listener_errors.append(f"{getattr(fn, '__qualname__', fn)!s}: {traceback.format_exc()}")
                warnings.warn(f"listener {getattr(fn, '__qualname__', fn)!s} raised {type(exc).__name__}: {exc}",
                              RuntimeWarning, stacklevel=2)


# ------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------


class Reject(Exception):
    """Raised by a check to refuse a value; ``allowed`` says what the parameter accepts.

    :meth:`Param.validate` turns it into ``ValueError("<name> must be <allowed>, got <value>")``.
    """

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


Check = Callable[[Any, Any], Any]
"""``check(state, value)``: the value to keep, or raise :class:`Reject` / a one-line ``ValueError``."""


class Param:
    """A state parameter (a descriptor): reading gives the current value, writing calls
    ``state.set(name=value)``. ``check(state, value)`` validates and normalises a value."""

    def __init__(self, check: Check, doc: str = "") -> None:
        self.check = check
        self.name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._params[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.set(**{self.name: value})

    def validate(self, state: Any, value: Any) -> Any:
        """The value to keep, or ``ValueError`` with one line naming the parameter and what it accepts."""
        try:
            return self.check(state, value)
        except Reject as r:
            raise ValueError(f"{self.name} must be {r.allowed}, got {value!r}") from None

    def __repr__(self) -> str:
        return f"Param({self.name!r})"


class Shared(Param):
    """A parameter that is the run-settings field of its name, held by the settings the state
    shares (``state.settings``): ``check`` is that field's check (through the settings, which
    know the teacher for layer names), and reading gives the value as typed in a state that
    keeps invalid values (:attr:`Parameterized.DEFER_ERRORS`), else the last valid one."""

    def __init__(self, doc: str = "") -> None:
        super().__init__(self._check_field, doc)

    def _check_field(self, state: Any, value: Any) -> Any:
        return state.settings.check(self.name, value)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.settings.value(self.name, typed=obj.DEFER_ERRORS)

    def __repr__(self) -> str:
        return f"Shared({self.name!r})"


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values count as different
        return False


class Parameterized(Observable):
    """An observable state whose parameters are the :class:`Param` attributes of its class.

    ``PARAMS``: their names in declaration order (filled in for each subclass). ``SHARED``:
    run-settings fields the class takes as :class:`Shared` parameters without declaring each
    (they follow the declared ones). ``KIND``: the state's name in messages (``"unknown explorer
    parameter …"``). ``DEFER_ERRORS``: keep an invalid value and report it in :attr:`problems`
    instead of raising (see the module doc). A state with shared parameters calls
    :meth:`_share` with the settings before giving its parameters their first values.
    """

    PARAMS: tuple[str, ...] = ()
    SHARED: tuple[str, ...] = ()
    KIND: str = "state"
    DEFER_ERRORS: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("SHARED", ()):
            if not isinstance(cls.__dict__.get(name), Param):
                param = Shared(RunSettings.doc(name))
                param.__set_name__(cls, name)
                setattr(cls, name, param)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Param) and key not in names:
                    names.append(key)
        cls.PARAMS = tuple(names)

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[str, Any] = {}
        self._problems: dict[str, str] = {}

    if TYPE_CHECKING:  # pragma: no cover - for the type checker only
        # The SHARED parameters are made for each subclass when it is defined (one per run-settings
        # control, :meth:`__init_subclass__`), so the type checker cannot see them: a name it does
        # not know on a state is Any to it. Nothing is defined at run time (an unknown name stays an
        # AttributeError).
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def _param(self, name: str) -> Param:
        return getattr(type(self), name)

    def _shared(self, name: str) -> bool:
        return isinstance(self._param(name), Shared)

    def _share(self, settings: Any) -> None:
        """Hold the shared parameters in ``settings`` (a
        :class:`~medic_viz.widgets.state.run_settings.SharedSettings`) and tell this state's
        listeners of their changes, whoever made them: the value as typed in a state with
        ``DEFER_ERRORS``, else each new valid value."""
        self.settings = settings
        settings.add_listener(self._on_settings, typed=self.DEFER_ERRORS)

    def _on_settings(self, change: StateChange) -> None:
        if change.kind == "param" and change.name in self.PARAMS and self._shared(change.name):
            self._notify(StateChange("param", name=change.name, value=change.value))

    def _assign(self, values: Mapping[str, Any], notify: bool) -> None:
        unknown = set(values) - set(self.PARAMS)
        if unknown:
            raise ValueError(f"unknown {self.KIND} parameter(s) {sorted(unknown)}; parameters are {list(self.PARAMS)}")
        checked: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, value in values.items():
            try:
                checked[name] = self._param(name).validate(self, value)
            except ValueError as exc:
                if not self.DEFER_ERRORS:
                    raise
                checked[name], problems[name] = value, str(exc)
        shared = {k: (v, problems.get(k)) for k, v in checked.items() if self._shared(k)}
        own = {k: v for k, v in checked.items() if k not in shared}
        changed = [k for k, v in own.items() if k not in self._params or not _same(self._params[k], v)]
        self._params.update(own)
        for name in own:
            if name in problems:
                self._problems[name] = problems[name]
            else:
                self._problems.pop(name, None)
        if shared:  # checked above, not again; the settings tell every state that shares them (this one too)
            self.settings.commit(shared)
        if notify:
            for name in changed:
                self._notify(StateChange("param", name=name, value=own[name]))

    def _init_params(self, **values: Any) -> None:
        """Give every parameter its first value (validated as on set; listeners are not told). A
        shared parameter not given keeps the settings' value."""
        missing = [n for n in self.PARAMS if n not in values and not self._shared(n)]
        if missing:  # pragma: no cover - a programming error in a state class
            raise TypeError(f"{type(self).__name__} needs a first value for {missing}")
        self._assign(values, notify=False)

    def set(self, **params: Any) -> None:
        """Set parameters: each is validated first (all or none), then listeners are told once
        per parameter whose value changed."""
        self._assign(params, notify=True)

    @property
    def params(self) -> dict[str, Any]:
        """The current parameters as a dict."""
        return {name: getattr(self, name) for name in self.PARAMS}

    @property
    def problems(self) -> dict[str, str]:
        """``{parameter: one-line message}`` for each parameter holding an invalid value (only a
        state with ``DEFER_ERRORS`` keeps such values), in parameter order."""
        shared = self.settings.problems if self.DEFER_ERRORS and getattr(self, "settings", None) is not None else {}
        out = {}
        for name in self.PARAMS:
            message = shared.get(name) if self._shared(name) else self._problems.get(name)
            if message is not None:
                out[name] = message
        return out

    def check_params(self, names: Iterable[str] | None = None) -> None:
        """Raise ``ValueError`` with the message of the first of ``names`` (default: all)
        holding an invalid value; nothing if all are valid."""
        problems = self.problems
        for name in self.PARAMS if names is None else names:
            if name in problems:
                raise ValueError(problems[name])


# ------------------------------------------------------------------------------------------
# common checks
# ------------------------------------------------------------------------------------------


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: bool = False,
    whole: bool = False,
    none: bool = False,
    meaning: str = "",
) -> Check:
    """A check for a finite number (``whole``: an integer, kept as ``int``) in
    ``[minimum, maximum]`` (``above``: ``minimum`` excluded); ``none``: None is accepted too.
    ``meaning`` is appended to the message in parentheses."""
    kind = "a whole number" if whole else "a finite number"
    allowed = " ".join(p for p in (kind, interval_text(minimum, maximum, above)) if p)
    if none:
        allowed = f"None or {allowed}"
    if meaning:
        allowed = f"{allowed} ({meaning})"

    def check(_state: Any, value: Any) -> Any:
        if value is None and none:
            return None
        if isinstance(value, (bool, str, bytes)):
            raise Reject(allowed)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise Reject(allowed) from None
        if not math.isfinite(v) or (whole and not v.is_integer()):
            raise Reject(allowed)
        if minimum is not None and (v <= minimum if above else v < minimum):
            raise Reject(allowed)
        if maximum is not None and v > maximum:
            raise Reject(allowed)
        return int(v) if whole else v

    return check


def one_of(choices: Sequence[Any] | Callable[[Any], Sequence[Any]], aliases: Mapping[Any, Any] | None = None) -> Check:
    """A check for one of ``choices`` (a sequence, or ``choices(state)`` for choices that change);
    ``aliases`` maps other accepted spellings to a choice."""
    aliases = dict(aliases or {})

    def check(state: Any, value: Any) -> Any:
        options = list(choices(state) if callable(choices) else choices)
        try:
            key = aliases.get(value, value)
            ok = key in options
        except TypeError:  # unhashable
            ok = False
        if not ok:
            extra = "".join(f", or {a!r} (= {c!r})" for a, c in aliases.items())
            shown = options if len(options) <= 12 else options[:12] + ["…"]
            raise Reject(f"one of {shown}{extra}")
        return key

    return check


def tau_check(_state: Any, value: Any) -> float:
    """τ, as :func:`medic_viz.importance.validate_tau` checks it everywhere (finite, >= 0)."""
    return validate_tau(value)
