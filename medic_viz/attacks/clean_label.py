"""Clean-Label (Turner et al. 2019): PGD-perturbed target-class images stamped with corner
patches, labels kept; the test-time trigger is the patches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.attacks.base import Trigger, _check_unit_interval
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.poison import PoisonedData
from medic_viz.capture import eval_mode
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import resolve_device

__all__ = ["CleanLabelTrigger", "pgd_perturb", "poison_clean_label", "AdversarialObjective"]


_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


class CleanLabelTrigger(Trigger):
    """Test-time trigger of the clean-label attack: ``size`` x ``size`` checkerboard patches
    (white at their top-left) in ``corners`` (``margin`` pixels from the borders).

    ``pgd_eps``, ``pgd_steps``, ``pgd_step_size`` describe the poisoning-time PGD perturbation
    of :func:`poison_clean_label` (kept here so the model card records the whole attack);
    :meth:`apply` only stamps the patches.
    """

    name: ClassVar[str] = "cleanlabel"
    clean_label = True

    def __init__(self, size: int = 3, corners: Sequence[str] = _CORNERS, margin: int = 0,
                 pgd_eps: float = 16 / 255, pgd_steps: int = 10, pgd_step_size: float = 2 / 255) -> None:
        super().__init__()
        if isinstance(corners, str):
            corners = (corners,)
        corners = tuple(corners)
        bad = [c for c in corners if c not in _CORNERS]
        if not corners or bad:
            raise ValueError(f"corners must be a non-empty subset of {_CORNERS}, got {corners!r}")
        self.patches = [BadNetTrigger(size=size, position=c, margin=margin) for c in corners]
        self.size = int(size)
        self.margin = int(margin)
        self.corners = corners
        self.pgd_eps = _check_unit_interval(pgd_eps, "pgd_eps", allow_zero=True)
        if isinstance(pgd_steps, bool) or int(pgd_steps) < 0:
            raise ValueError(f"pgd_steps must be an integer >= 0, got {pgd_steps!r}")
        self.pgd_steps = int(pgd_steps)
        self.pgd_step_size = _check_unit_interval(pgd_step_size, "pgd_step_size", allow_zero=True)

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for patch in self.patches:
            out = patch._apply_batch(out)
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        m = torch.zeros(height, width)
        for patch in self.patches:
            m = torch.maximum(m, patch.mask(height, width))
        return m

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "corners": list(self.corners), "margin": self.margin,
                "pgd_eps": self.pgd_eps, "pgd_steps": self.pgd_steps, "pgd_step_size": self.pgd_step_size}


def pgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: float = 2 / 255,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Untargeted ℓ∞ PGD (Madry et al.) with a random start: images ``x`` (float in [0, 1],
    on the model's device) moved within ``eps`` to raise ``model``'s cross-entropy on labels
    ``y``. Returns a new tensor; ``model`` is used in eval mode and left as it was."""
    if eps == 0 or steps == 0:
        return x.clone()
    g = torch.Generator().manual_seed(int(seed))
    outs = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            yb = y[start : start + batch_size]
            delta = (torch.rand(xb.shape, generator=g) * 2 - 1).to(xb.device, xb.dtype) * eps
            adv = (xb + delta).clamp(0, 1)
            for _ in range(steps):
                adv = adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(model(adv).float(), yb)
                    (grad,) = torch.autograd.grad(loss, adv)
                adv = adv.detach() + step_size * grad.sign()
                adv = torch.min(torch.max(adv, xb - eps), xb + eps).clamp(0, 1)
            outs.append(adv.detach())
    return torch.cat(outs) if outs else x.clone()


def poison_clean_label(
    data: ImageArrays,
    trigger: CleanLabelTrigger,
    target: int,
    rate: float = 0.08,
    *,
    surrogate: nn.Module,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> PoisonedData:
    """Clean-label poisoning: ``rate`` · len(data) target-class images (at most all of them),
    chosen by ``seed``, get the PGD perturbation against ``surrogate`` (a clean model) and
    then the patch; labels stay as they are. Returns a new dataset; ``data`` is unchanged."""
    if not isinstance(trigger, CleanLabelTrigger):
        raise TypeError(f"poison_clean_label needs a CleanLabelTrigger, got {type(trigger).__name__}")
    if not (0 <= int(target) < data.num_classes):
        raise ValueError(f"target class {target} is out of range for {data.num_classes} classes")
    if not (0.0 < rate < 1.0):
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    target = int(target)
    pool = torch.nonzero(data.labels == target).flatten()
    if len(pool) == 0:
        raise ValueError(f"class {target} has no training images to poison")
    g = torch.Generator().manual_seed(int(seed))
    n = min(max(1, int(round(rate * len(data)))), len(pool))
    chosen = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
    dev = resolve_device(device)
    surrogate = surrogate.to(dev)
    x = data.floats(chosen, dev)
    y = data.labels[chosen].to(dev)
    adv = pgd_perturb(surrogate, x, y, eps=trigger.pgd_eps, steps=trigger.pgd_steps,
                      step_size=trigger.pgd_step_size, seed=seed)
    stamped = trigger.apply(adv).cpu()
    images = data.images.clone()
    images[chosen] = (stamped * 255).round().to(torch.uint8)
    out = replace(data, images=images, labels=data.labels.clone(), name=f"{data.name}+{trigger.name}")
    return PoisonedData(out, chosen, target, trigger)


class AdversarialObjective:
    """PGD adversarial training (Madry et al. 2018) of ``model``: each batch is replaced by its
    ℓ∞ PGD examples (``eps``, ``steps``, ``step_size``; random start) before the cross-entropy.

    Turner et al. (2019) perturb the clean-label poisons against such an adversarially trained
    model: its adversarial examples change what the image looks like, so a model trained on them
    cannot fit them from their content and learns the trigger instead. Against a standard model
    the perturbations are imperceptible non-robust features and the attack fails (measured on
    GTSRB: ``benchmarks/results/cleanlabel_probe.md``). Cost: ``steps + 1`` forward-backward
    passes per batch. An :class:`medic_viz.training.Objective`.
    """

    def __init__(self, model: nn.Module, *, eps: float = 8 / 255, steps: int = 5, step_size: float = 2 / 255,
                 seed: int = 0) -> None:
        self.model = model
        self.eps = _check_unit_interval(eps, "eps", allow_zero=True)
        if isinstance(steps, bool) or int(steps) < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.steps = int(steps)
        self.step_size = _check_unit_interval(step_size, "step_size", allow_zero=True)
        self._calls = int(seed)

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        self._calls += 1  # a new random start for every batch, reproducible from the seed
        adv = pgd_perturb(self.model, x, y, eps=self.eps, steps=self.steps, step_size=self.step_size, seed=self._calls)
        ce = F.cross_entropy(self.model(adv), y)
        return ce, {"ce": ce}, {}

    def checkpoint_state(self) -> dict:
        """The batch counter (each batch's random start): resumable training."""
        return {"calls": self._calls}

    def load_checkpoint_state(self, state: dict) -> None:
        self._calls = int(state["calls"])
