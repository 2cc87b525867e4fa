"""SIG (Barni et al. 2019): a horizontal sinusoid added to the image; clean-label by default."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from medic_viz.attacks.base import Trigger, _check_unit_interval

__all__ = ["SIGTrigger"]


class SIGTrigger(Trigger):
    """Sinusoidal-signal trigger (Barni et al. 2019), a clean-label attack by default.

    The signal varies along the width only: ``s(j) = sin(2 pi j frequency / W)`` for column
    ``j = 0 .. W-1`` (``frequency`` cycles over the image width), the same for every row and
    channel.

    * ``mode="additive"`` (default, Barni et al.): ``x' = clip(x + delta * s(j))``.
    * ``mode="blend"`` (the MEDIC reference code): ``x' = (1 - alpha) x + alpha (0.5 + 0.5 s(j))``,
      i.e. ``0.8 x + 0.2 stripes`` for the default ``alpha = 0.2``; ``delta`` is unused.
    """

    name: ClassVar[str] = "sig"

    def __init__(self, delta: float = 0.2, frequency: float = 6, clean_label: bool = True,
                 mode: str = "additive", alpha: float = 0.2) -> None:
        super().__init__()
        self.delta = _check_unit_interval(delta, "delta")
        frequency = float(frequency)
        if not (frequency > 0 and math.isfinite(frequency)):
            raise ValueError(f"frequency (cycles over the image width) must be positive, got {frequency}")
        self.frequency = frequency
        if mode not in ("additive", "blend"):
            raise ValueError(f"mode must be 'additive' or 'blend', got {mode!r}")
        self.mode = mode
        self.alpha = _check_unit_interval(alpha, "alpha")
        self.clean_label = bool(clean_label)

    def signal(self, width: int) -> torch.Tensor:
        """``sin(2 pi j frequency / W)`` for ``j = 0 .. W-1``: ``(W,)`` float64."""
        j = torch.arange(width, dtype=torch.float64)
        return torch.sin(2.0 * math.pi * j * self.frequency / width)

    def _build_offset(self, channels: int, height: int, width: int) -> torch.Tensor:
        s = self.signal(width)
        row = self.delta * s if self.mode == "additive" else self.alpha * (0.5 + 0.5 * s)
        return row.expand(channels, height, width).clone()

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        offset = self._cached("offset", x, self._build_offset)
        if self.mode == "additive":
            return x + offset
        return x * (1.0 - self.alpha) + offset

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "delta": self.delta, "frequency": self.frequency,
                "clean_label": self.clean_label, "mode": self.mode, "alpha": self.alpha}
