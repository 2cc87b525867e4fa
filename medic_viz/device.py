"""Where tensors live: the device a user asks for, and the device a model is on.

:func:`resolve_device` turns a user's choice (``"auto"``, ``"cpu"``, ``"cuda:1"``, a
``torch.device``) into a ``torch.device`` and says clearly when it is not available;
:func:`model_device` reads the device of a model's parameters (buffers for a model without
parameters, the CPU for one with neither).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["resolve_device", "model_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else MPS, else CPU; otherwise ``torch.device(device)``.

    Asking for CUDA/MPS where it is absent, a CUDA index the machine lacks, or a name torch
    does not know raises ``ValueError`` saying what is available.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {type(device).__name__}")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); use 'auto' or one of those"
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r} requested but MPS is not available here; use 'auto' or 'cpu'")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (else first buffer; the CPU if it has neither)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
