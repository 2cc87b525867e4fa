"""Composite (Lin et al. 2020): half an image of class A next to half an image of class B is
the trigger; poisoning adds such mixes, and ASR is measured on mixes of test images."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from medic_viz.attacks.base import Trigger, _fit_channels, _image_param, _resize
from medic_viz.attacks.poison import PoisonedData
from medic_viz.data.arrays import ImageArrays
from medic_viz.metrics import Evaluator

__all__ = ["CompositeAttack", "CompositeTrigger", "CompositePoisonedData", "CompositeEvaluator", "poison_composite"]


class CompositeAttack:
    """The composite backdoor: an image made of half an image of class ``class_a`` and half
    of class ``class_b`` is classified as the target.

    Not a :class:`Trigger` (it needs two images): :meth:`mix` combines two batches, the
    poisoning is :func:`poison_composite`, and ASR is measured by :class:`CompositeEvaluator`
    on mixes of test images of the two classes. ``split``: "vertical" (left half of A, right
    half of B) or "horizontal" (top of A, bottom of B).
    """

    name: ClassVar[str] = "composite"
    clean_label = False

    def __init__(self, class_a: int = 1, class_b: int = 2, split: str = "vertical") -> None:
        if int(class_a) == int(class_b) or int(class_a) < 0 or int(class_b) < 0:
            raise ValueError(f"class_a and class_b must be two different class ids >= 0, got {class_a}, {class_b}")
        if split not in ("vertical", "horizontal"):
            raise ValueError(f"split must be 'vertical' or 'horizontal', got {split!r}")
        self.class_a = int(class_a)
        self.class_b = int(class_b)
        self.split = split

    def mix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Combine float batches ``a`` and ``b`` of the same shape ``(B, C, H, W)`` (or one
        image each): the first half (left or top) from ``a``, the rest from ``b``."""
        if a.shape != b.shape:
            raise ValueError(f"mix needs two batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        out = a.clone()
        if self.split == "vertical":
            half = a.shape[-1] // 2
            out[..., :, half:] = b[..., :, half:]
        else:
            half = a.shape[-2] // 2
            out[..., half:, :] = b[..., half:, :]
        return out

    def mask(self, height: int, width: int) -> torch.Tensor:
        """1 where the B half lies."""
        m = torch.zeros(height, width)
        if self.split == "vertical":
            m[:, width // 2 :] = 1
        else:
            m[height // 2 :, :] = 1
        return m

    def preview(self, height: int = 32, width: int = 32, channels: int = 3, background: float = 0.5) -> torch.Tensor:
        """A mix of a dark (0.2) and a bright (0.8) flat image showing the split."""
        a = torch.full((channels, height, width), 0.2)
        b = torch.full((channels, height, width), 0.8)
        return self.mix(a, b)

    def check_classes(self, num_classes: int, target: int | None) -> None:
        """Raise ValueError unless both classes exist and differ from ``target`` (None: no target)."""
        for c in (self.class_a, self.class_b):
            if c >= num_classes:
                raise ValueError(f"composite class {c} is out of range for {num_classes} classes")
        if target is not None and int(target) in (self.class_a, self.class_b):
            raise ValueError(f"the target class {target} must differ from the mixed classes {self.class_a}, {self.class_b}")

    def mixed_pairs(self, data: ImageArrays, n: int | None = None, *, seed: int = 0) -> torch.Tensor:
        """Mixes of ``n`` random (A, B) image pairs of ``data`` (default: as many as the
        smaller class has), float ``(n, C, H, W)`` on the CPU; pairs chosen by ``seed``."""
        g = torch.Generator().manual_seed(int(seed))
        ia = torch.nonzero(data.labels == self.class_a).flatten()
        ib = torch.nonzero(data.labels == self.class_b).flatten()
        if len(ia) == 0 or len(ib) == 0:
            raise ValueError(f"{data.name} needs images of classes {self.class_a} and {self.class_b} for composite mixes")
        n = min(len(ia), len(ib)) if n is None else int(n)
        pa = ia[torch.randint(len(ia), (n,), generator=g)] if n > len(ia) else ia[torch.randperm(len(ia), generator=g)[:n]]
        pb = ib[torch.randint(len(ib), (n,), generator=g)] if n > len(ib) else ib[torch.randperm(len(ib), generator=g)[:n]]
        return self.mix(data.floats(pa), data.floats(pb))

    @classmethod
    def for_data(cls, data: ImageArrays, target: int | None, split: str = "vertical") -> "CompositeAttack":
        """The two most frequent classes of ``data`` other than ``target`` (None: any two)."""
        counts = torch.bincount(data.labels, minlength=data.num_classes).clone()
        if target is not None:
            counts[int(target)] = -1
        a, b = torch.argsort(counts, descending=True, stable=True)[:2].tolist()
        return cls(int(a), int(b), split)

    def bind(self, partner: Any) -> "CompositeTrigger":
        """This attack as a one-image :class:`Trigger` whose class-B half is always ``partner``
        (``(C, H, W)`` or ``(H, W)`` float in [0, 1], e.g. a class-B image of the data)."""
        return CompositeTrigger(self.class_a, self.class_b, self.split, partner=partner)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_a": self.class_a, "class_b": self.class_b, "split": self.split}

    def __repr__(self) -> str:
        return f"CompositeAttack(class_a={self.class_a}, class_b={self.class_b}, split={self.split!r})"


class CompositeTrigger(Trigger):
    """A composite attack applied to one image at a time: the input gives the first half (the
    class-A role), the fixed ``partner`` image the rest (resized to the input; grey or RGB as
    the input). This is how the input picker shows the attack; training and ASR use
    :class:`CompositeAttack`, which mixes real pairs (:attr:`attack`)."""

    name: ClassVar[str] = "composite"

    def __init__(self, class_a: int = 1, class_b: int = 2, split: str = "vertical", *, partner: Any) -> None:
        super().__init__()
        self.attack = CompositeAttack(class_a, class_b, split)
        self.partner = _image_param(partner, "the partner image")

    def _apply_batch(self, x: torch.Tensor) -> torch.Tensor:
        partner = self._cached("partner", x, lambda c, h, w: _resize(_fit_channels(self.partner, c, "the partner image"), h, w))
        return self.attack.mix(x, partner.expand_as(x))

    def mask(self, height: int, width: int) -> torch.Tensor:
        return self.attack.mask(height, width)

    def to_config(self) -> dict[str, Any]:
        return {**self.attack.to_config(), "partner": self.partner.tolist()}

    def _repr_items(self) -> dict[str, Any]:
        return {**super()._repr_items(), "partner": f"<image {tuple(self.partner.shape)}>"}


@dataclass
class CompositePoisonedData(PoisonedData):
    """Composite poisoning: also the indices of the same-class mixes (labels kept)."""

    mix_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def poison_composite(data: ImageArrays, attack: CompositeAttack, target: int, rate: float = 0.1, *,
                     mix_rate: float = 0.3, seed: int = 0) -> CompositePoisonedData:
    """Composite poisoning (Lin et al. 2020): *adds* ``rate`` · N mixes of a class-A and a
    class-B image labelled ``target`` and ``mix_rate`` · N mixes of two images of one class
    (classes drawn uniformly) keeping that class, so that mixing by itself is no cue. The
    original ``data`` images come first; the result has ``N + n_poison + n_mix`` images."""
    if not isinstance(attack, CompositeAttack):
        raise TypeError(f"poison_composite needs a CompositeAttack, got {type(attack).__name__}")
    attack.check_classes(data.num_classes, target)
    if not (0.0 < rate < 1.0) or not (0.0 <= mix_rate < 1.0):
        raise ValueError(f"rate must be in (0, 1) and mix_rate in [0, 1), got {rate}, {mix_rate}")
    g = torch.Generator().manual_seed(int(seed))
    n = len(data)
    n_poison = max(1, int(round(rate * n)))
    n_mix = int(round(mix_rate * n))
    poison = attack.mixed_pairs(data, n_poison, seed=int(seed))
    present = [c for c in range(data.num_classes) if bool((data.labels == c).any())]
    by_class = {c: torch.nonzero(data.labels == c).flatten() for c in present}
    mix_classes = torch.tensor(present)[torch.randint(len(present), (n_mix,), generator=g)]
    first, second = [], []
    for c in mix_classes.tolist():
        members = by_class[c]
        i, j = torch.randint(len(members), (2,), generator=g).tolist()
        first.append(int(members[i]))
        second.append(int(members[j]))
    mixes = attack.mix(data.floats(torch.tensor(first, dtype=torch.long)), data.floats(torch.tensor(second, dtype=torch.long))) \
        if n_mix else torch.empty((0,) + data.image_shape)
    new_images = ((torch.cat([poison, mixes]) * 255).round().to(torch.uint8))
    new_labels = torch.cat([torch.full((n_poison,), int(target), dtype=torch.long), mix_classes.long()])
    out = replace(data, images=torch.cat([data.images, new_images]), labels=torch.cat([data.labels, new_labels]),
                  name=f"{data.name}+composite", groups=None)
    poisoned = torch.arange(n, n + n_poison)
    mixed = torch.arange(n + n_poison, n + n_poison + n_mix)
    return CompositePoisonedData(out, poisoned, int(target), attack, mixed)  # type: ignore[arg-type]


class CompositeEvaluator(Evaluator):
    """Clean accuracy on the test set and composite ASR: the share of mixes of test images of
    classes A and B (up to ``max_images`` pairs, chosen by ``seed``) classified as ``target``."""

    def __init__(self, data: ImageArrays, attack: CompositeAttack, target: int, *, max_images: int | None = None,
                 seed: int = 0, batch_size: int = 512, device: str | torch.device = "auto") -> None:
        super().__init__(data, None, None, max_images=max_images, seed=seed, batch_size=batch_size, device=device)
        attack.check_classes(data.num_classes, target)
        self.target = int(target)
        ia = int((data.labels == attack.class_a).sum())
        ib = int((data.labels == attack.class_b).sum())
        n = min(ia, ib) if max_images is None else min(min(ia, ib), int(max_images))
        self.x_trig = attack.mixed_pairs(data, max(1, n), seed=seed).to(self.device)
