"""A model whose weights or outputs are NaN or infinite is an error, never a result.

``argmax`` of a NaN row is class 0, so a model that outputs NaN for every input would
otherwise "score" an attack success rate of 0 % (or 100 % when the target is class 0). The
training loop, the evaluator and the model loader call these checks; anything they find
raises :class:`NonFiniteModelError` naming what is broken and what to try.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

__all__ = ["NonFiniteModelError", "nonfinite_entries", "check_finite_model", "check_finite_outputs"]


class NonFiniteModelError(ValueError, FloatingPointError):
    """A model's weights, buffers or outputs hold NaN or ±inf.

    A ValueError (bad input: a broken checkpoint) and a FloatingPointError (a diverged run)."""


def nonfinite_entries(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors in ``(name, tensor)`` pairs that hold NaN or inf."""
    bad = []
    for name, t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type != "meta":
            if not bool(torch.isfinite(t).all()):
                bad.append(name)
    return bad


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_finite_model(model: nn.Module, what: str = "the model", advice: str = "") -> nn.Module:
    """Raise :class:`NonFiniteModelError` if any parameter or buffer of ``model`` is NaN/inf.

    ``what`` names the model in the message (e.g. "the repaired model"); ``advice`` is appended.
    Returns ``model`` unchanged."""
    bad = nonfinite_entries(model.state_dict(keep_vars=True).items())
    if bad:
        raise NonFiniteModelError(
            f"{what} has NaN or infinite weights ({_listed(bad)}); it is broken, not a result"
            + (f". {advice}" if advice else "")
        )
    return model


def check_finite_outputs(logits: torch.Tensor, what: str = "the model") -> torch.Tensor:
    """Raise :class:`NonFiniteModelError` if ``logits`` hold NaN/inf; returns them otherwise."""
    if not bool(torch.isfinite(logits).all()):
        share = float((~torch.isfinite(logits)).any(dim=-1).float().mean()) if logits.ndim > 1 else 1.0
        raise NonFiniteModelError(
            f"{what} outputs NaN or infinite scores for {100 * share:.0f}% of the images, so its accuracy "
            "and attack success rate mean nothing; it diverged in training (try a lower learning rate, "
            "or a smaller τ or λ) or its weights are broken"
        )
    return logits
