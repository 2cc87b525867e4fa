"""The one place public settings are checked: whole numbers and real numbers, by type (not a
string, not a bool), finiteness and range. Every config dataclass (:class:`~medic_viz.training.TrainConfig`
and each defence's) and the public functions that take counts, seeds or fractions use these, so a
bad value is refused with one line naming the setting — ``ValueError`` — instead of failing deep
inside (or being silently accepted, as ``int("2")`` or ``float(True)`` would be).
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Literal, overload

from medic_viz.limits import quoted

__all__ = ["check_whole", "check_number", "check_numbers", "interval_text", "MAX_SEED"]

#: Seeds go to torch.manual_seed and numpy; both take at most 64 bits.
MAX_SEED = 2**63 - 1


def _a(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _meaning(meaning: str) -> str:
    return f" ({meaning})" if meaning else ""


@overload
def check_whole(name: str, value: object, minimum: int = ..., maximum: int | None = ..., *,
                optional: Literal[False] = ..., meaning: str = ...) -> int: ...
@overload
def check_whole(name: str, value: object, minimum: int = ..., maximum: int | None = ..., *,
                optional: bool, meaning: str = ...) -> int | None: ...
def check_whole(name: str, value: object, minimum: int = 0, maximum: int | None = None, *,
                optional: bool = False, meaning: str = "") -> int | None:
    """``value`` as an int; ``ValueError`` unless it is an integer (not a bool, not 1.5, not
    ``"2"``) in ``[minimum, maximum]``. ``optional``: None is accepted too (and returned);
    ``meaning`` is said in parentheses before the value given."""
    if optional and value is None:
        return None
    kind = f"{'None or ' if optional else ''}a whole number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {kind} >= {minimum}{_meaning(meaning)}, got {quoted(value)} "
                         f"({type(value).__name__})")
    number = int(value)  # exact for an Integral
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {kind} {bound}{_meaning(meaning)}, got {value}")
    return number


def interval_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """How an allowed range reads in a message: ``"in (0, 1]"``, ``">= 1"``, ``"<= 5"``, or ``""``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    text = interval_text(low, high, low_open, high_open)
    return f" {text}" if text else ""


@overload
def check_number(name: str, value: object, low: float | None = ..., high: float | None = ..., *,
                 low_open: bool = ..., high_open: bool = ..., advice: str = ..., optional: Literal[False] = ...,
                 meaning: str = ...) -> float: ...
@overload
def check_number(name: str, value: object, low: float | None = ..., high: float | None = ..., *,
                 low_open: bool = ..., high_open: bool = ..., advice: str = ..., optional: bool,
                 meaning: str = ...) -> float | None: ...
def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    advice: str = "",
    optional: bool = False,
    meaning: str = "",
) -> float | None:
    """``value`` as a float; ``ValueError`` unless it is a real number (not a string, not a
    bool), finite, and within ``[low, high]`` (``low_open``/``high_open``: that end excluded).
    ``advice`` (e.g. ``"MEDIC's default is 0.05"``) ends the message, after a semicolon.
    ``optional``: None is accepted too (and returned); ``meaning`` is said in parentheses before
    the value given."""
    if optional and value is None:
        return None
    span = _range(low, high, low_open, high_open) + _meaning(meaning)
    tail = f"; {advice}" if advice else ""
    none = "None or " if optional else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {none}a number{span}, got {quoted(value)} ({_a(value)}){tail}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{name} must be {none}a finite number{span}, got {quoted(value)}{tail}")
    return v


def check_numbers(name: str, values: object, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False, nonempty: bool = True) -> tuple[float, ...]:
    """Every item of the sequence ``values`` checked by :func:`check_number`; ``ValueError`` if
    ``values`` is not a list or tuple (a string is not a sequence of numbers here) or, with
    ``nonempty``, is empty. Returns the items as a tuple of floats."""
    span = _range(low, high, low_open, high_open)
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a sequence of numbers{span}, got {quoted(values)} ({_a(values)})")
    if nonempty and not values:
        raise ValueError(f"{name} must hold at least one number{span}")
    items: Iterable[object] = values
    return tuple(check_number(f"{name} (every value)", v, low, high, low_open=low_open, high_open=high_open)
                 for v in items)
