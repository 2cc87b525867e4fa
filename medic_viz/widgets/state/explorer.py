"""The importance explorer's state: τ, layer, criterion and channel reduction over one cached
:class:`medic_viz.analysis.InputAnalysis`. Maps are recomputed from the cache, never by running
the model again."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from medic_viz.analysis import analyze_input, reduce_channels
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.registry import image_trigger
from medic_viz.data.arrays import ImageArrays
from medic_viz.importance import CRITERIA, effective_neurons
from medic_viz.importer import open_model_folder
from medic_viz.stats import LayerStats
from medic_viz.widgets.state.observable import Param, Parameterized, Shared, StateChange, one_of
from medic_viz.widgets.state.run_settings import SharedSettings

__all__ = ["ExplorerState"]

#: Channel reductions the explorer offers (those of :meth:`InputAnalysis.maps`, less "none").
_REDUCTIONS: tuple[str, ...] = ("mean_abs", "max_abs", "mean", "max")
#: Old spelling of the eq.(4) criterion, still accepted.
_CRITERIA_ALIASES = {"combined": "both"}


def _layer_check(state: "ExplorerState", value: Any) -> str:
    if value not in state.analysis.layers:
        raise ValueError(f"layer {value!r} was not analysed; choose one of {list(state.analysis.layers)[:12]}")
    return value


class ExplorerState(Parameterized):
    """τ / layer / criterion / reduction over one :class:`medic_viz.analysis.InputAnalysis`.

    Nothing here runs the model: :meth:`maps` and :meth:`importance_map` read the analysis'
    cache. Parameters: ``tau`` (≥ 0), ``layer`` (one of ``layers``), ``criteria``
    (:data:`medic_viz.importance.CRITERIA`: ``"both"`` eq.4, ``"activation"`` eq.2,
    ``"impact"`` eq.3; ``"combined"`` is accepted for ``"both"``), ``reduction`` over channels
    (``"mean_abs"``, ``"max_abs"``, ``"mean"``, ``"max"``). Setting one validates it (an
    invalid value raises ``ValueError`` and changes nothing) and notifies listeners.

    ``tau`` is a run setting: held by ``settings`` (a
    :class:`~medic_viz.widgets.state.run_settings.SharedSettings`, e.g. a workbench's, whose τ
    the launcher's runs use; default: the explorer's own), and ``tau=None`` keeps its value
    (5 in new settings).
    """

    KIND = "explorer"
    CRITERIA: tuple[str, ...] = CRITERIA
    REDUCTIONS: tuple[str, ...] = _REDUCTIONS

    tau = Shared("temperature τ >= 0")
    layer = Param(_layer_check, "an analysed layer")
    criteria = Param(one_of(CRITERIA, _CRITERIA_ALIASES), "the importance criterion")
    reduction = Param(one_of(_REDUCTIONS), "how a layer's channels are reduced to one map")

    def __init__(
        self,
        analysis: Any,
        *,
        tau: float | None = None,
        layer: str | None = None,
        criteria: str = "both",
        reduction: str = "mean_abs",
        settings: SharedSettings | None = None,
    ) -> None:
        super().__init__()
        self.analysis = self._checked(analysis)
        self._share(SharedSettings() if settings is None else settings)
        default_layer = self._default_layer(analysis) if layer is None else layer
        given = {} if tau is None else {"tau": tau}
        self._init_params(**given, layer=default_layer, criteria=criteria, reduction=reduction)

    @staticmethod
    def _checked(analysis: Any) -> Any:
        for attr in ("importance", "maps", "layers"):
            if not hasattr(analysis, attr):
                raise TypeError(
                    "analysis must be a medic_viz.analysis.InputAnalysis (from analyze_input(...)), "
                    f"got {type(analysis).__name__}"
                )
        return analysis

    @staticmethod
    def _default_layer(analysis: Any) -> str:
        return (getattr(analysis, "map_layers", None) or analysis.layers)[-1]

    def set_analysis(self, analysis: Any) -> None:
        """Explore another input's analysis (e.g. the one a picker just chose), keeping τ,
        criterion and reduction, and the layer if the new analysis has it. Listeners get one
        ``"analysis"`` change."""
        self._checked(analysis)
        if analysis is self.analysis:
            return
        self.analysis = analysis
        if self.layer not in analysis.layers:
            self._assign({"layer": self._default_layer(analysis)}, notify=False)
        self._notify(StateChange("analysis", value=analysis))

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        image: torch.Tensor,
        trigger: Trigger,
        label: int,
        *,
        stats: Mapping[str, LayerStats] | ImageArrays,
        layers: Iterable[str] | None = None,
        class_names: Sequence[str] | None = None,
        **params: Any,
    ) -> "ExplorerState":
        """Analyse one input (:func:`medic_viz.analysis.analyze_input`) and explore it."""
        analysis = analyze_input(model, image, trigger, label, stats=stats, layers=layers, class_names=class_names)
        return cls(analysis, **params)

    @classmethod
    def from_folder(cls, folder: str | Path, index: int = 0, *, dataset: str | Path | None = None,
                    data_root: str | Path | None = None, trust_arch_code: str | None = None, stats_images: int = 500,
                    layers: Iterable[str] | None = None, **params: Any) -> "ExplorerState":
        """Explore test image ``index`` of a model folder's dataset (``dataset``, else the card's)
        with the trigger its card records; layer statistics from ``stats_images`` training images.
        See :func:`medic_viz.importer.open_model_folder`."""
        opened = open_model_folder(folder, dataset=dataset, data_root=data_root, trust_arch_code=trust_arch_code)
        if opened.trigger is None:
            raise ValueError(f"{folder}: the model card records no trigger, and the explorer compares a clean input "
                             "with a triggered one; import the model with --trigger SPEC (and --target)")
        test = opened.splits.test
        if not 0 <= int(index) < len(test):
            raise ValueError(f"index must be in 0..{len(test) - 1}, got {index}")
        trigger = image_trigger(opened.trigger, test, opened.target)
        stats_data = opened.splits.train.subset(torch.arange(min(int(stats_images), len(opened.splits.train))))
        return cls.from_model(opened.model, test.floats(torch.tensor([int(index)]))[0], trigger,
                              int(test.labels[int(index)]), stats=stats_data, layers=layers,
                              class_names=list(test.classes), **params)

    @property
    def layers(self) -> list[str]:
        return list(self.analysis.layers)

    def maps(self, which: str = "clean") -> dict[str, np.ndarray]:
        """Figure-2 maps of the current layer at the current τ and reduction (from the cache):
        ``clean``, ``triggered``, ``difference``, ``activation``, ``impact``, ``combined``."""
        return self.analysis.maps(self.layer, self.tau, self.reduction, which=which)

    def importance_map(self, which: str = "clean") -> np.ndarray:
        """The selected criterion's importance map of the current layer for the ``which`` input
        (its importance reduced over channels, as in :meth:`maps`)."""
        return reduce_channels(self.importance(which), self.reduction)

    def importance(self, which: str = "clean") -> torch.Tensor:
        """The selected criterion's importance of every neuron of the current layer (sums to 1)."""
        return self.analysis.importance(self.tau, self.criteria, which=which, layers=[self.layer])[self.layer]

    def effective_fraction(self, which: str = "clean") -> float:
        """How spread the importance is: :func:`~medic_viz.importance.effective_neurons` of the
        current layer's ``m`` weights, divided by ``m``.

        1 = uniform (τ = 0, plain cloning); small = a few neurons take all the weight.
        """
        w = self.importance(which)
        return float(effective_neurons(w.unsqueeze(0))[0]) / w.numel()

    def __repr__(self) -> str:
        return f"ExplorerState({self.params})"
