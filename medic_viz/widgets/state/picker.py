"""The input picker's state: a gallery of clean test images (or one's own image or model), the
chosen trigger and layer, and the Figure-2 panels of the chosen input."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

import medic_viz.io as model_io
from medic_viz.analysis import analyze_input
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.composite import CompositeAttack
from medic_viz.attacks.registry import ATTACK_NAMES, image_trigger, trigger_from_config
from medic_viz.capture import eval_mode
from medic_viz.data.arrays import ImageArrays, clean_subset
from medic_viz.data.images import to_image_tensor
from medic_viz.device import model_device
from medic_viz.importer import open_model_folder
from medic_viz.stats import LayerStats, compute_layer_stats
from medic_viz.widgets.state.observable import Param, Parameterized, Shared, StateChange, one_of
from medic_viz.widgets.state.run_settings import SharedSettings

__all__ = ["PickerState", "default_triggers", "figure2_panels"]


def default_triggers(data: ImageArrays, target: int | None = None) -> dict[str, Trigger]:
    """The triggers the picker offers besides the model's own: ``{name: trigger}`` for every
    attack of the registry (:data:`~medic_viz.attacks.registry.ATTACK_NAMES`) with its
    default settings, as a one-image trigger for ``data`` (composite: bound to a class-B
    image, :func:`~medic_viz.attacks.registry.image_trigger`). Attacks that do not fit
    ``data`` (composite with fewer than three classes) are left out."""
    out: dict[str, Trigger] = {}
    for name in ATTACK_NAMES:
        try:
            out[name] = image_trigger(name, data, target)
        except ValueError:
            continue
    return out


def figure2_panels(analysis: Any, layer: str, tau: float, reduction: str = "mean_abs",
                   class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything Figure 2 shows for one :class:`~medic_viz.analysis.InputAnalysis` at ``layer``
    and ``tau`` (read from its cache): ``image`` and ``triggered`` float ``(H, W, C)`` arrays, the
    maps ``clean``, ``triggered_act``, ``difference``, ``activation``, ``impact``, ``combined``,
    ``label`` (the true class's name) and ``clean_pred`` / ``triggered_pred`` as
    ``(class name, probability)``."""

    def name(k: int) -> str:
        return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)

    maps = analysis.maps(layer, tau, reduction)
    pc, pt = analysis.predictions["clean"], analysis.predictions["triggered"]
    return {
        "image": analysis.image.permute(1, 2, 0).numpy(),
        "triggered": analysis.triggered_image.clamp(0, 1).permute(1, 2, 0).numpy(),
        "clean": maps["clean"],
        "triggered_act": maps["triggered"],
        "difference": maps["difference"],
        "activation": maps["activation"],
        "impact": maps["impact"],
        "combined": maps["combined"],
        "label": name(analysis.label),
        "clean_pred": (name(pc.label), pc.probability),
        "triggered_pred": (name(pt.label), pt.probability),
    }


def _choice_check(state: "PickerState", value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"choice must be a gallery position (int), got {value!r}")
    value = int(value)
    if value == state.CUSTOM:
        if state._custom is None:
            raise ValueError("choice -1 needs an image of your own, and none is loaded yet; call load_image(...) first")
        return value
    if not 0 <= value < len(state.gallery):
        raise ValueError(f"choice must be a gallery position in 0..{len(state.gallery) - 1} "
                         f"(or -1 for a loaded image), got {value}")
    return value


def _layer_check(state: "PickerState", value: Any) -> str:
    if value not in state.stats:
        raise ValueError(f"layer {value!r} has no statistics; choose one of {state.layers[:12]}")
    return value


class PickerState(Parameterized):
    """Choose an input (a gallery image of ``data`` or one's own) and a trigger and layer; get
    the Figure-2 analysis of it (:func:`medic_viz.analysis.analyze_input`).

    ``data``: clean images to pick from (usually the test split); ``trigger``/``target``: the
    model's attack if known (listed first as ``"model: <name>"``); ``triggers``: extra
    ``{name: Trigger}`` to try (default: :func:`default_triggers`, every registry attack with
    its default settings); ``stats``: layer statistics (default: estimated from
    ``stats_images`` images of ``data``); ``gallery_per_class`` images of each class, at most
    ``gallery_size`` in all.

    Parameters (setting one validates it, raising ``ValueError`` for an invalid value, and
    notifies): ``choice`` (gallery position, or ``-1`` for a loaded image), ``trigger_name``,
    ``layer``, ``tau``. :attr:`analysis` is recomputed only when the image, trigger or model
    changes (one forward/backward pass of two images), never for a layer or τ change. ``tau``
    is a run setting, held by ``settings`` (a
    :class:`~medic_viz.widgets.state.run_settings.SharedSettings`, e.g. a workbench's; default:
    the picker's own); ``tau=None`` keeps its value (5 in new settings).
    """

    KIND = "picker"
    CUSTOM = -1

    choice = Param(_choice_check, "gallery position, or -1 for a loaded image")
    trigger_name = Param(one_of(lambda state: list(state.triggers)), "the trigger shown")
    layer = Param(_layer_check, "a layer with statistics")
    tau = Shared("temperature τ >= 0")

    def __init__(
        self,
        model: nn.Module,
        data: ImageArrays,
        *,
        trigger: Trigger | CompositeAttack | None = None,
        target: int | None = None,
        triggers: Mapping[str, Trigger] | None = None,
        stats: Mapping[str, LayerStats] | None = None,
        stats_images: int = 500,
        layers: Iterable[str] | None = None,
        layer: str | None = None,
        tau: float | None = None,
        gallery_per_class: int = 1,
        gallery_size: int = 12,
        seed: int = 0,
        settings: SharedSettings | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(data, ImageArrays):
            raise TypeError(f"data must be ImageArrays (e.g. splits.test), got {type(data).__name__}")
        if int(gallery_per_class) < 1 or int(gallery_size) < 1:
            raise ValueError("gallery_per_class and gallery_size must be >= 1")
        self.data = data
        self.target = None if target is None else int(target)
        self.stats_images = int(stats_images)
        self.seed = int(seed)
        self._layers_wanted = None if layers is None else list(layers)
        self.triggers: dict[str, Trigger] = {}
        if trigger is not None:
            if not isinstance(trigger, (Trigger, CompositeAttack)):
                raise TypeError(f"trigger must be a medic_viz Trigger or CompositeAttack, got {type(trigger).__name__}")
            self.triggers[f"model: {trigger.name}"] = image_trigger(trigger, data, self.target)
        for name, trig in (default_triggers(data, self.target) if triggers is None else triggers).items():
            if not isinstance(trig, Trigger):
                raise TypeError(f"triggers[{name!r}] must be a medic_viz Trigger, got {type(trig).__name__}")
            self.triggers.setdefault(str(name), trig)
        if not self.triggers:
            raise ValueError("no trigger to show: pass trigger= or triggers=")
        self.gallery: list[int] = self._gallery(int(gallery_per_class), int(gallery_size))
        self.model = model.eval()
        self.stats: dict[str, LayerStats] = dict(stats) if stats is not None else self.estimate_stats()
        self._custom: tuple[torch.Tensor, int] | None = None
        self._analysis: Any = None
        self._analysis_key: tuple | None = None
        self._analysis_lock = threading.RLock()
        self._version = 0
        self._share(SharedSettings() if settings is None else settings)
        given = {} if tau is None else {"tau": tau}
        self._init_params(choice=0, trigger_name=next(iter(self.triggers)), **given,
                          layer=layer if layer is not None else self._default_layer(self.layers))

    # -- setup --------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, *, dataset: str | Path | None = None, data_root: str | Path | None = None,
                    trust_arch_code: str | None = None, **settings: Any) -> "PickerState":
        """A picker on a model folder (from ``medic-viz import`` or ``attack``) and the test split
        of its dataset (``dataset``, else the card's); the card's trigger, if any, is offered
        first. See :func:`medic_viz.importer.open_model_folder`."""
        opened = open_model_folder(folder, dataset=dataset, data_root=data_root, trust_arch_code=trust_arch_code)
        return cls(opened.model, opened.splits.test, trigger=opened.trigger, target=opened.target, **settings)

    def _gallery(self, per_class: int, size: int) -> list[int]:
        labels = self.data.labels
        picked: list[int] = []
        for k in range(per_class):
            for c in range(self.data.num_classes):
                idx = torch.nonzero(labels == c).flatten()
                if len(idx) > k:
                    picked.append(int(idx[k]))
        if not picked:
            raise ValueError("the data has no images to show")
        return picked[:size]

    def estimate_stats(self, model: nn.Module | None = None) -> dict[str, LayerStats]:
        """Layer statistics of ``model`` (default: the picker's) over the same ``stats_images``
        images of ``data`` and the same layers (those asked for, or every hookable one)."""
        model = self.model if model is None else model
        n = min(self.stats_images, len(self.data))
        sample = clean_subset(self.data, n / len(self.data), self.seed) if n < len(self.data) else self.data
        layers = self._layers_wanted if model is self.model else self.layers
        return compute_layer_stats(model, sample, layers, device=model_device(model))

    @staticmethod
    def _default_layer(names: Sequence[str]) -> str:
        return names[len(names) // 2]

    @property
    def layers(self) -> list[str]:
        """Analysed layers (those with statistics)."""
        return list(self.stats)

    def choose(self, position: int) -> None:
        """Show gallery image ``position``."""
        self.set(choice=position)

    # -- inputs -------------------------------------------------------------------------------
    @property
    def trigger(self) -> Trigger:
        return self.triggers[self.trigger_name]

    @property
    def image(self) -> torch.Tensor:
        """The chosen input, float ``(C, H, W)`` in [0, 1]."""
        if self.choice == self.CUSTOM and self._custom is not None:
            return self._custom[0]
        return self.data.floats(torch.tensor([self.gallery[self.choice]]))[0]

    @property
    def source(self) -> str:
        """Where the chosen input comes from: ``"gallery image 3"`` or ``"your image"``."""
        return "your image" if self.choice == self.CUSTOM else f"gallery image {self.choice}"

    @property
    def input_key(self) -> tuple:
        """Changes whenever the analysed input changes (image, trigger or model), not for a layer or τ."""
        return (self.choice, self.trigger_name, self._version)

    @property
    def label(self) -> int:
        """The true class of the chosen input (a loaded image: the label given, or the model's prediction)."""
        if self.choice == self.CUSTOM and self._custom is not None:
            return self._custom[1]
        return int(self.data.labels[self.gallery[self.choice]])

    def class_name(self, label: int) -> str:
        classes = self.data.classes
        return classes[label] if 0 <= label < len(classes) else str(label)

    def gallery_images(self) -> list[np.ndarray]:
        """Gallery thumbnails as uint8 ``(H, W, C)`` arrays, in gallery order."""
        imgs = self.data.images[torch.tensor(self.gallery)]
        return [im.permute(1, 2, 0).numpy() for im in imgs]

    def gallery_labels(self) -> list[str]:
        return [self.class_name(int(self.data.labels[i])) for i in self.gallery]

    def load_image(self, source: Any, label: int | None = None) -> None:
        """Use one's own image: a file path, PNG/JPEG bytes, a PIL image, a uint8 or float
        array ``(H, W, C)``/``(H, W)``, or a float tensor ``(C, H, W)`` in [0, 1]
        (:func:`medic_viz.data.images.to_image_tensor`). It is converted to the data's channels
        and size. ``label``: its true class (default: the model's prediction, since a user's
        image has none). Selects it (``choice = -1``)."""
        image = to_image_tensor(source, self.data.image_shape)
        if label is None:
            with torch.no_grad(), eval_mode(self.model):
                label = int(self.model(image.unsqueeze(0).to(model_device(self.model))).argmax(1))
        elif isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < self.data.num_classes:
            raise ValueError(f"label must be a class id in 0..{self.data.num_classes - 1}, got {label!r}")
        self._custom = (image, int(label))
        self._version += 1
        if self.choice == self.CUSTOM:
            self._notify(StateChange("param", name="choice", value=self.CUSTOM))
        else:
            self.set(choice=self.CUSTOM)

    def load_model(self, source: nn.Module | str | Path) -> None:
        """Use another model: an ``nn.Module``, or a folder / ``card.json`` saved by
        :func:`medic_viz.io.save_model`. Its card's trigger (if any) is added to the choices and
        selected; layer statistics are re-estimated on ``data``."""
        card = None
        if isinstance(source, (str, Path)):
            model, card = model_io.load_model(source)
        elif isinstance(source, nn.Module):
            model = source
        else:
            raise TypeError(f"load_model takes an nn.Module or a model folder path, got {type(source).__name__}")
        x = self.data.floats(torch.arange(1), model_device(model))
        try:
            with torch.no_grad(), eval_mode(model):
                out = model(x)
        except RuntimeError as exc:
            raise ValueError(f"this model cannot run on the picker's images {tuple(x.shape[1:])}: {exc}") from exc
        if out.shape[1] != self.data.num_classes:
            raise ValueError(f"the model outputs {out.shape[1]} classes but the data has {self.data.num_classes}")
        self.model = model.eval()
        self.stats = self.estimate_stats()
        self._version += 1
        kept: dict[str, Any] = {}
        if card is not None and card.attack:
            name = f"model: {card.attack.get('name', 'trigger')}"
            self.triggers[name] = image_trigger(trigger_from_config(card.attack), self.data, card.target_class)
            self.target = card.target_class
            kept["trigger_name"] = name
        if self.layer not in self.stats:
            kept["layer"] = self._default_layer(self.layers)
        self._assign(kept, notify=False)  # one "model" change below tells views to re-read everything
        self._notify(StateChange("param", name="model", value=model))

    # -- outputs ------------------------------------------------------------------------------
    @property
    def analysis(self) -> Any:
        """The :class:`InputAnalysis` of the chosen input and trigger (cached)."""
        with self._analysis_lock:  # one analysis at a time: it hooks the model (views may redraw from other threads)
            key = self.input_key
            if self._analysis is None or self._analysis_key != key:
                self._analysis = analyze_input(self.model, self.image, self.trigger, self.label, stats=self.stats,
                                               class_names=self.data.classes)
                self._analysis_key = key
                self._notify(StateChange("analysis", value=self._analysis))
            return self._analysis

    def panels(self, reduction: str = "mean_abs") -> dict[str, Any]:
        """Everything Figure 2 shows for the current choice: ``image`` and ``triggered`` float
        ``(H, W, C)`` arrays, the maps of :meth:`InputAnalysis.maps` for ``layer`` at ``tau``
        (``clean``, ``triggered_act``, ``difference``, ``activation``, ``impact``, ``combined``),
        and ``clean_pred`` / ``triggered_pred`` as ``(class name, probability)``."""
        return figure2_panels(self.analysis, self.layer, self.tau, reduction, self.data.classes)

    def __repr__(self) -> str:
        return f"PickerState({self.params}, {len(self.gallery)} gallery images)"
