"""Follow one input through a run: a model's prediction on one clean image and on its triggered copy.

:func:`predict_input` is the prediction of a model on one image (class, probability, all
probabilities). An :class:`InputProbe` holds one clean image, its true class and a trigger;
calling it on a model gives a :class:`ProbeReading` (both predictions from one forward pass of
the two images). The widgets' launcher calls a probe on the student at every evaluation of a
run, so that the user sees *their* input heal as the backdoor is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.analysis import Prediction
from medic_viz.attacks.base import Trigger
from medic_viz.capture import eval_mode
from medic_viz.device import model_device

__all__ = ["predict_input", "InputProbe", "ProbeReading"]


def _one_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a float torch.Tensor (C, H, W) in [0, 1], got {type(image).__name__}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or not image.is_floating_point():
        raise ValueError(f"image must be one float image (C, H, W) in [0, 1], got shape {tuple(image.shape)} "
                         f"dtype {image.dtype}; use ImageArrays.floats([i])[0] for a dataset image")
    return image.detach()


def _predictions(model: nn.Module, batch: torch.Tensor) -> list[Prediction]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad(), eval_mode(model):
        logits = model(batch.to(model_device(model), torch.float32))
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    return [Prediction(int(p.argmax()), float(p.max()), p) for p in probs]


def predict_input(model: nn.Module, image: torch.Tensor) -> Prediction:
    """What ``model`` says about one float image ``(C, H, W)`` in [0, 1] (a ``(1, C, H, W)``
    batch is accepted): the most probable class, its softmax probability and all ``K``
    probabilities. Runs on the model's device in eval mode (its mode is restored), no gradients."""
    return _predictions(model, _one_image(image).unsqueeze(0))[0]


@dataclass(frozen=True)
class ProbeReading:
    """A model's predictions on the probed clean input and on its triggered copy."""

    clean: Prediction
    triggered: Prediction

    def prediction(self, which: str) -> Prediction:
        """``which``: ``"clean"`` or ``"triggered"``."""
        if which not in ("clean", "triggered"):
            raise ValueError(f"which must be 'clean' or 'triggered', got {which!r}")
        return self.clean if which == "clean" else self.triggered

    def probability(self, which: str, label: int) -> float:
        """The probability the model gives class ``label`` on the ``which`` input."""
        probs = self.prediction(which).probabilities
        if not 0 <= int(label) < len(probs):
            raise ValueError(f"label must be a class id in 0..{len(probs) - 1}, got {label!r}")
        return float(probs[int(label)])


class InputProbe:
    """One clean image, its true class and a trigger: ``probe(model)`` is the model's
    :class:`ProbeReading` on the image and its triggered copy (computed once here, clamped to
    [0, 1] as :class:`medic_viz.metrics.Evaluator` measures ASR).

    ``image``: float ``(C, H, W)`` in [0, 1]; ``label``: its true class; ``class_names``: to
    name classes in :meth:`describe`; ``name``: where the image comes from (shown by views).
    """

    def __init__(
        self,
        image: torch.Tensor,
        label: int,
        trigger: Trigger,
        *,
        class_names: Sequence[str] | None = None,
        name: str = "",
    ) -> None:
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a medic_viz Trigger, got {type(trigger).__name__}")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or int(label) < 0:
            raise ValueError(f"label must be a class id >= 0, got {label!r}")
        self.image = _one_image(image).to("cpu", torch.float32)
        self.triggered_image = trigger.apply(self.image.unsqueeze(0)).clamp(0, 1)[0]
        self.label = int(label)
        self.trigger = trigger
        self.class_names = None if class_names is None else tuple(class_names)
        self.name = str(name)
        self._batch = torch.stack([self.image, self.triggered_image])

    def __call__(self, model: nn.Module) -> ProbeReading:
        clean, triggered = _predictions(model, self._batch)
        return ProbeReading(clean, triggered)

    def class_name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    def describe(self, reading: ProbeReading) -> str:
        """One line: ``"clean → 'yield' (97%), triggered → 'stop' (99%)"``."""
        c, t = reading.clean, reading.triggered
        return (f"clean → {self.class_name(c.label)!r} ({c.probability:.0%}), "
                f"triggered → {self.class_name(t.label)!r} ({t.probability:.0%})")

    def __repr__(self) -> str:
        return (f"InputProbe({self.name or 'image'}, true class {self.class_name(self.label)!r}, "
                f"trigger {self.trigger.name})")
