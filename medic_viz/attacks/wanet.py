"""WaNet (Nguyen & Tran 2021): a fixed smooth warp of the image, and its noise-mode poisoning; dirty-label."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from medic_viz import limits
from medic_viz.attacks.base import Trigger, _check_unit_interval
from medic_viz.attacks.poison import PoisonedData, poison_dataset
from medic_viz.data.arrays import ImageArrays

__all__ = ["WaNetTrigger", "WaNetPoisonedData", "poison_wanet"]


class WaNetTrigger(Trigger):
    """Warping trigger (WaNet): ``x' = grid_sample(x, identity + s · U(noise)/H)`` (clipped to
    the image), bilinear, ``align_corners=True``.

    The flow: a ``k`` x ``k`` x 2 field of uniform noise in [−1, 1] drawn from ``seed``,
    divided by its mean absolute value, upsampled bicubically to H x W; ``s`` scales it
    (the paper's k = 4, s = 0.5 on 32x32 images); ``grid_rescale`` multiplies the grid (1 in
    the paper). ``cross_ratio``: noise mode — while poisoning, ``cross_ratio`` times as many
    images as are poisoned get an extra random warp and keep their label (the paper uses 2;
    0 turns it off). Channel 0 of the flow moves along the width (x), channel 1 along the
    height (y).
    """

    name: ClassVar[str] = "wanet"

    def __init__(self, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, seed: int = 0,
                 cross_ratio: float = 2.0) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"k (control-grid size) must be an integer >= 2, got {k!r}")
        self.k = int(limits.check_trigger_size(int(k), "k (control-grid size)"))
        self.s = float(s)
        if not (self.s >= 0 and math.isfinite(self.s)):
            raise ValueError(f"s (warping strength) must be >= 0, got {s!r}")
        self.grid_rescale = float(grid_rescale)
        if not (self.grid_rescale > 0 and math.isfinite(self.grid_rescale)):
            raise ValueError(f"grid_rescale must be > 0, got {grid_rescale!r}")
        self.seed = int(seed)
        self.cross_ratio = float(cross_ratio)
        if not (self.cross_ratio >= 0 and math.isfinite(self.cross_ratio)):
            raise ValueError(f"cross_ratio must be >= 0 (0 = no noise mode), got {cross_ratio!r}")

    def control_noise(self) -> torch.Tensor:
        """The ``(1, 2, k, k)`` control field, normalised to mean absolute value 1 (float64)."""
        g = torch.Generator().manual_seed(self.seed)
        ins = torch.rand((1, 2, self.k, self.k), generator=g, dtype=torch.float64) * 2 - 1
        return ins / ins.abs().mean()

    def flow(self, height: int, width: int) -> torch.Tensor:
        """The upsampled noise field ``(H, W, 2)`` (before scaling by ``s / H``), float64."""
        up = F.interpolate(self.control_noise(), size=(height, width), mode="bicubic", align_corners=True)
        return up[0].permute(1, 2, 0).contiguous()

    @staticmethod
    def identity_grid(height: int, width: int) -> torch.Tensor:
        """``(H, W, 2)`` sampling grid that reproduces the image: (x, y) in [−1, 1]."""
        ys = torch.linspace(-1, 1, height, dtype=torch.float64)
        xs = torch.linspace(-1, 1, width, dtype=torch.float64)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy], dim=-1)

    def warp_grid(self, height: int, width: int) -> torch.Tensor:
        """The trigger's sampling grid ``(H, W, 2)`` in [−1, 1] (x, y), float64."""
        grid = (self.identity_grid(height, width) + self.s * self.flow(height, width) / height) * self.grid_rescale
        return grid.clamp(-1, 1)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._cached("grid", x, lambda c, h, w: self.warp_grid(h, w))
        return F.grid_sample(x, grid.unsqueeze(0).expand(len(x), -1, -1, -1), mode="bilinear",
                             padding_mode="zeros", align_corners=True)

    def apply_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-mode images: the trigger's warp plus a random per-image warp of up to one pixel
        (``(rand·2 − 1)/H``); these keep their true labels while poisoning."""
        batch = x.unsqueeze(0) if x.ndim == 3 else x
        b, _, h, w = batch.shape
        grid = self.warp_grid(h, w).to(batch.device, batch.dtype)
        extra = (torch.rand((b, h, w, 2), generator=generator) * 2 - 1).to(batch.device, batch.dtype) / h
        grid2 = (grid.unsqueeze(0) + extra).clamp(-1, 1)
        out = F.grid_sample(batch, grid2, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0, 1)
        return out.squeeze(0) if x.ndim == 3 else out

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width)

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """The warp applied to a checkerboard of 4-pixel squares (``background`` ± 0.35), so the
        bending of the lines shows (a flat image would not change)."""
        background = _check_unit_interval(background, "background", allow_zero=True)
        yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        board = (((yy // 4) + (xx // 4)) % 2).float()
        lo, hi = max(0.0, background - 0.35), min(1.0, background + 0.35)
        image = (lo + (hi - lo) * board).expand(int(channels), -1, -1).clone()
        return self.apply(image)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "s": self.s, "grid_rescale": self.grid_rescale,
                "seed": self.seed, "cross_ratio": self.cross_ratio}


@dataclass
class WaNetPoisonedData(PoisonedData):
    """WaNet poisoning: also the indices of the noise-mode images (true labels kept)."""

    noise_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def poison_wanet(data: ImageArrays, trigger: WaNetTrigger, target: int, rate: float = 0.1, *, seed: int = 0) -> WaNetPoisonedData:
    """WaNet poisoning: ``rate`` · N non-target images get the warp and the target label, and
    (noise mode) ``cross_ratio`` times as many other images get the warp plus a random one and
    keep their label. Returns a new dataset; ``data`` is unchanged."""
    base = poison_dataset(data, trigger, target, rate, seed=seed)
    noise_idx = torch.empty(0, dtype=torch.long)
    images = base.data.images
    if trigger.cross_ratio > 0:
        g = torch.Generator().manual_seed(int(seed) + 1)
        taken = torch.zeros(len(data), dtype=torch.bool)
        taken[base.poisoned_indices] = True
        pool = torch.nonzero(~taken).flatten()
        n = min(len(pool), int(round(trigger.cross_ratio * base.n_poisoned)))
        noise_idx = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
        if n:
            images = images.clone()
            warped = trigger.apply_noise(data.floats(noise_idx), generator=g)
            images[noise_idx] = (warped * 255).round().to(torch.uint8)
    out = replace(base.data, images=images)
    return WaNetPoisonedData(out, base.poisoned_indices, base.target, trigger, noise_idx)
