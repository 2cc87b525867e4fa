"""The zoo's extra architecture options and their types, checked before a model is built (a model
card's ``arch_kwargs`` are read from a file: a wrong type is one line naming the field)."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

__all__ = ["check_options"]


def check_options(key: str, options: Mapping[str, Any]) -> None:
    """Refuse a zoo option of the wrong type (from a model card's ``arch_kwargs``, say) with one
    line naming it, before anything is built: ``widths`` (small_cnn), ``drop_rate`` (wrn16_1)."""
    where = f"model {key!r}: option"
    if "widths" in options:
        widths = options["widths"]
        if (isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != 4
                or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in widths)):
            raise TypeError(f"{where} widths (a card's arch_kwargs) must be a list of 4 whole numbers >= 1, "
                            f"e.g. [16, 32, 64, 64]; got {widths!r}")
    if "drop_rate" in options:
        rate = options["drop_rate"]
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:  # type: ignore[operator]
            raise TypeError(f"{where} drop_rate (a card's arch_kwargs) must be a number in [0, 1), got {rate!r}")
