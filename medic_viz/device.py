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

    Asking for CUDA/MPS where it is absent raises ``ValueError`` saying what is available.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
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
