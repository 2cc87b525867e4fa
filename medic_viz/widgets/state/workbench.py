"""The workbench's state: pick an input, look inside it at τ, repair the model with that τ and λ,
and follow the input through the run.

:class:`WorkbenchState` composes the three app states and keeps them in step:

- :attr:`~WorkbenchState.picker` (:class:`PickerState` over the test split): the input, its
  trigger and layer;
- :attr:`~WorkbenchState.explorer` (:class:`ExplorerState`): the picked input's analysis, given
  to it again whenever the input changes;
- :attr:`~WorkbenchState.launcher` (:class:`LauncherState`): the runs, each following the input
  picked when it was launched (:attr:`RunRecord.readings`).

One τ and one λ: the workbench's ``tau`` and ``lam`` are the picker's, the explorer's and the
launcher's — one value in the run settings they share (:attr:`WorkbenchState.settings`, the
launcher's :class:`~medic_viz.widgets.state.run_settings.SharedSettings`), set from any of them,
checked once and announced once to each. The τ a user explores draws the maps; a run
uses it on every layer when the launcher's ``tau_mode`` is ``"global"`` — by default
(``"share"``) a run calibrates τ per layer so that each layer's weights match ``share`` of its
neurons, and :meth:`WorkbenchState.calibrated_tau` says which τ that is on the picked layer.
The layer is shared by the picker and the explorer. When a run ends normally (and on request,
:meth:`WorkbenchState.compare`, e.g. for a stopped run) the picked input is analysed under the
repaired model, so that its Figure-2 columns can sit next to the trojaned model's
(:meth:`WorkbenchState.comparison`).

:meth:`WorkbenchState.open_folder` opens another model folder (from ``medic-viz import`` or
``attack``) with the same settings: a new workbench, which the view then shows.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, cast

import torch
import torch.nn as nn

from medic_viz.analysis import analyze_input
from medic_viz.attacks.base import Trigger
from medic_viz.capture import resolve_layers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits
from medic_viz.defenses.medic import DEFAULT_LAM, DEFAULT_LAYERS
from medic_viz.device import model_device
from medic_viz.importer import check_model_folder, open_model_folder
from medic_viz.metrics import predict
from medic_viz.pipeline import trigger_of
from medic_viz.pretrained import load_demo_model
from medic_viz.probe import InputProbe, ProbeReading
from medic_viz.run_settings import RunSettings
from medic_viz.stats import LayerStats
from medic_viz.widgets.state.explorer import ExplorerState
from medic_viz.widgets.state.launcher import LauncherState
from medic_viz.widgets.state.observable import Parameterized, Shared, StateChange
from medic_viz.widgets.state.picker import PickerState, figure2_panels
from medic_viz.widgets.state.runs import RunRecord

__all__ = ["WorkbenchState"]

#: Constructor arguments of :class:`LauncherState` the workbench sets itself.
_OWN = frozenset({"probe", "trigger", "target", "tau", "lam", "seed"})
#: Repaired analyses kept (one per run and input).
_CACHE_SIZE = 16


class WorkbenchState(Parameterized):
    """Picker, explorer and launcher of one trojaned ``model`` on ``splits``, sharing τ and λ.

    ``card``: the model's :class:`~medic_viz.cards.ModelCard`; its attack gives ``trigger`` and
    ``target`` when they are not passed (they are used to measure ASR and offered first in the
    picker). ``choice``: the gallery image shown first (default: the first one the model gets
    right and the trigger flips to ``target``, if any). ``triggers``, ``stats``,
    ``stats_images``, ``layers``, ``layer``, ``gallery_per_class``, ``gallery_size``: as in
    :class:`PickerState` (``layers``: the layers *looked at*); ``tau_mode``, ``share`` and
    ``run_layers`` (the layers a MEDIC run clones) are the launcher's ``tau_mode``, ``share`` and
    ``layers`` — ``tau_mode`` defaults to ``"share"`` (τ calibrated per layer, the library's
    default) whether or not ``tau`` is given, since ``tau`` is also the τ the maps are drawn at;
    ``launcher_settings`` (``method``, ``epochs``, ``fraction``, ``device``,
    ``eval_every_steps``, ``batch_size``, ``options`` …) go to :class:`LauncherState` unchanged.

    Parameters: ``tau`` (≥ 0) and ``lam`` (≥ 0), validated on set (an invalid value raises
    ``ValueError`` and changes nothing); they are fields of :attr:`settings`, the run settings
    the launcher, the picker and the explorer read too. ``tau_mode``, ``share`` and
    ``run_layers`` are read and set here as attributes too; they are the launcher's parameters
    (an invalid value is kept there and reported at launch). The launcher trains a copy of
    ``model``, so that looking inside the model never races with a run reading it.

    Listeners are told ``"param"`` (``tau``, ``lam``) and ``"compare"`` (``run``: the run whose
    repaired model :meth:`comparison` now shows). The sub-states tell their own listeners
    about everything else (the views listen to them).

    ``folder``: the model folder the workbench was opened on (:meth:`from_folder`), else None.
    """

    KIND = "workbench"

    tau = Shared("MEDIC's temperature τ >= 0, explored and used by runs")
    lam = Shared("MEDIC's cloning weight λ >= 0")

    def __init__(
        self,
        model: nn.Module,
        splits: DatasetSplits,
        *,
        card: Any = None,
        trigger: Trigger | None = None,
        target: int | None = None,
        triggers: Mapping[str, Trigger] | None = None,
        stats: Mapping[str, LayerStats] | None = None,
        stats_images: int = 500,
        layers: Iterable[str] | None = None,
        layer: str | None = None,
        gallery_per_class: int = 1,
        gallery_size: int = 12,
        choice: int | None = None,
        tau: float = 5.0,
        lam: float = DEFAULT_LAM,
        seed: int = 0,
        tau_mode: str = "share",
        share: float | None = None,
        run_layers: Any = DEFAULT_LAYERS,
        **launcher_settings: Any,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(splits, DatasetSplits):
            raise TypeError(
                f"splits must be DatasetSplits (e.g. medic_viz.load_dataset('signs')), got {type(splits).__name__}"
            )
        clash = sorted(_OWN & set(launcher_settings))
        if clash:
            raise ValueError(f"the workbench sets {clash} itself; pass trigger=, target=, tau=, lam=, seed= "
                             "to WorkbenchState (the probe is the picked input)")
        # The workbench's own parameters refuse an invalid value (the launcher would keep it).
        tau, lam = RunSettings.check_field("tau", tau), RunSettings.check_field("lam", lam)
        if trigger is None and target is None and card is not None and getattr(card, "attack", None):
            attack, target = trigger_of(card)
            trigger = cast(Trigger | None, attack)  # a composite attack goes on to the launcher, which refuses it
        self.card = card
        self.splits = splits
        self.folder: Path | None = None
        #: What :meth:`open_folder` keeps: the settings that are not the model's.
        self._carried = dict(stats_images=stats_images, gallery_per_class=gallery_per_class,
                             gallery_size=gallery_size, seed=seed, **launcher_settings)
        self.launcher = LauncherState(copy.deepcopy(model), splits, trigger=trigger, target=target,
                                      tau_mode=tau_mode, tau=tau, share=share, layers=run_layers, lam=lam,
                                      seed=seed, **launcher_settings)
        #: The run settings the launcher, the picker, the explorer and the workbench share (τ, λ …).
        self._share(self.launcher.settings)
        self._init_params()
        self.picker = PickerState(model, splits.test, trigger=trigger, target=target, triggers=triggers, stats=stats,
                                  stats_images=stats_images, layers=layers, layer=layer, settings=self.settings,
                                  gallery_per_class=gallery_per_class, gallery_size=gallery_size, seed=seed)
        start = self._flipping_choice(trigger, target) if choice is None else choice
        self.picker.set(choice=start)
        self.explorer = ExplorerState(self.picker.analysis, layer=self.picker.layer, settings=self.settings)
        #: Analyse the picked input under a run's model as soon as the run ends normally.
        self.auto_compare = True
        #: The run whose repaired model :meth:`comparison` shows (None until one ended or was asked for).
        self.compared: RunRecord | None = None
        #: Why the last automatic comparison failed (None if it did not).
        self.compare_error: str | None = None
        #: The trojaned model's reading of the picked input (what a run starts to heal).
        self.before: ProbeReading | None = None
        self._compare_lock = threading.RLock()
        self._run_stats: dict[RunRecord, dict[str, LayerStats]] = {}
        self._repaired: dict[tuple, Any] = {}
        self._input_changed()
        self.picker.add_listener(self._on_picker)
        self.explorer.add_listener(self._on_explorer)
        self.launcher.add_listener(self._on_launcher)

    @classmethod
    def from_demo(cls, name: str = "badnet", **settings: Any) -> "WorkbenchState":
        """The workbench on a shipped demo model (:func:`medic_viz.pretrained.load_demo_model`),
        its card and dataset; ``settings`` as in the constructor."""
        model, card = load_demo_model(name)
        splits = load_dataset(card.dataset or "signs", size=card.input_size)
        return cls(model, splits, card=card, **settings)

    @classmethod
    def from_folder(cls, folder: Any, *, dataset: Any = None, data_root: Any = None, trust_arch_code: str | None = None,
                    **settings: Any) -> "WorkbenchState":
        """The workbench on a model folder (from ``medic-viz import`` or ``attack``), its card and
        dataset (``dataset``, else the card's); without a trigger in the card the picker offers
        the toolkit's triggers and the runs show clean accuracy only. See
        :func:`medic_viz.importer.open_model_folder`."""
        opened = open_model_folder(folder, dataset=dataset, data_root=data_root, trust_arch_code=trust_arch_code)
        state = cls(opened.model, opened.splits, card=opened.card, **settings)
        state.folder = Path(folder)
        return state

    def open_folder(self, folder: Any, *, dataset: Any = None, data_root: Any = None,
                    trust_arch_code: str | None = None) -> "WorkbenchState":
        """A new workbench on the model folder ``folder`` (:meth:`from_folder`) with this one's τ,
        λ, seed, gallery and launcher settings; this one is left as it is (its runs included).
        Raises ``ValueError`` with one line — before anything is loaded — while a run is running,
        for an empty path, or for a path that is not a model folder
        (:func:`medic_viz.importer.check_model_folder`); and as :meth:`from_folder` does for a
        folder that does not open (weights that do not fit, a dataset with other classes …)."""
        if self.launcher.running:
            raise ValueError("a run is running: stop it (or wait for it) before opening another model")
        path = check_model_folder(folder)
        return type(self).from_folder(path, dataset=dataset, data_root=data_root, trust_arch_code=trust_arch_code,
                                      tau=self.tau, lam=self.lam, tau_mode=self.tau_mode, share=self.share,
                                      run_layers=self.run_layers, **self._carried)

    # -- the picked input -------------------------------------------------------------------
    def _flipping_choice(self, trigger: Trigger | None, target: int | None) -> int:
        """The first gallery image the model classifies right and the trigger flips to ``target``;
        else the first one not of class ``target``; else 0."""
        p = self.picker
        if trigger is None or target is None:
            return 0
        idx = torch.tensor(p.gallery)
        x = p.data.floats(idx)
        labels = p.data.labels[idx]
        device = model_device(p.model)
        clean = predict(p.model, x, device=device)
        flipped = predict(p.model, trigger.apply(x).clamp(0, 1), device=device)
        others = [i for i in range(len(idx)) if int(labels[i]) != target]
        for i in others:
            if int(clean[i]) == int(labels[i]) and int(flipped[i]) == target:
                return i
        return others[0] if others else 0

    @property
    def probe(self) -> InputProbe:
        """The picked input (with the picker's trigger) as the launcher's next run will follow it."""
        return self._probe

    def _input_changed(self) -> None:
        p = self.picker
        analysis = p.analysis
        self._probe = InputProbe(p.image, p.label, p.trigger, class_names=p.data.classes, name=p.source)
        self.before = self._probe(p.model)
        self.launcher.probe = self._probe
        self.explorer.set_analysis(analysis)

    def choose(self, position: int) -> None:
        """Pick gallery image ``position`` (the same as clicking it)."""
        self.picker.choose(position)

    def load_image(self, source: Any, label: int | None = None) -> None:
        """Pick an image of one's own (see :meth:`PickerState.load_image`)."""
        self.picker.load_image(source, label)

    # -- one layer (τ and λ are the shared settings') ------------------------------------------
    def _on_picker(self, change: StateChange) -> None:
        if change.kind != "param":
            return
        if change.name == "layer" and self.explorer.layer != change.value:
            self.explorer.layer = change.value
        elif change.name in ("choice", "trigger_name", "model"):
            self._input_changed()

    def _on_explorer(self, change: StateChange) -> None:
        if change.kind == "param" and change.name == "layer" and self.picker.layer != change.value:
            self.picker.layer = change.value

    def _on_launcher(self, change: StateChange) -> None:
        if change.kind == "clear":
            self._forget_cleared()
        elif change.kind == "status" and change.value == "done" and self.auto_compare:
            # In the training thread, before wait() returns: the comparison is ready when the run is.
            try:
                self.compare(change.run)
                self.compare_error = None
            except Exception as exc:  # noqa: BLE001 - shown by the view, never raised into the run
                self.compare_error = f"{type(exc).__name__}: {exc}"

    # -- how runs set τ, and which layers they clone (the launcher's) ---------------------------
    @property
    def tau_mode(self) -> str:
        """How a MEDIC run sets τ: ``"share"`` (calibrated per layer, the default) or ``"global"``
        (:attr:`tau` on every layer); the launcher's parameter."""
        return self.launcher.tau_mode

    @tau_mode.setter
    def tau_mode(self, value: str) -> None:
        self.launcher.tau_mode = value

    @property
    def share(self) -> float:
        """The share of each layer's neurons τ is calibrated to match (``tau_mode="share"``)."""
        return self.launcher.share

    @share.setter
    def share(self, value: float) -> None:
        self.launcher.share = value

    @property
    def run_layers(self) -> Any:
        """The layers a MEDIC run clones: a preset or module names (the launcher's ``layers``)."""
        return self.launcher.layers

    @run_layers.setter
    def run_layers(self, value: Any) -> None:
        self.launcher.layers = value

    def run_layer_names(self) -> list[str]:
        """The module names :attr:`run_layers` selects on the model (``ValueError`` if invalid)."""
        self.launcher.check_params(["layers"])
        return resolve_layers(self.launcher.teacher, self.run_layers, input_shape=self.launcher.splits.train.image_shape)

    def calibrated_tau(self, layer: str | None = None) -> float:
        """The τ a run in ``"share"`` mode calibrates on ``layer`` (default: the picked layer) at
        the current share, fraction and seed — what the per-layer default uses there
        (:meth:`LauncherState.calibrated_taus`, computed once for all the picker's layers and
        cached). ``ValueError`` if a setting it needs is invalid."""
        layer = self.picker.layer if layer is None else layer
        if layer not in self.picker.layers:
            raise ValueError(f"layer {layer!r} is not one the picker analyses; choose one of {self.picker.layers[:12]}")
        return self.launcher.calibrated_taus(layers=self.picker.layers)[layer]

    # -- runs ---------------------------------------------------------------------------------
    @property
    def runs(self) -> list[RunRecord]:
        return self.launcher.runs

    def launch(self) -> RunRecord:
        """Start a run with the current settings, following the picked input (see :meth:`LauncherState.launch`)."""
        return self.launcher.launch()

    def stop(self) -> RunRecord | None:
        return self.launcher.stop()

    def wait(self, timeout: float | None = None) -> RunRecord | None:
        return self.launcher.wait(timeout)

    def clear(self) -> None:
        """Forget finished runs (and the comparison with one of them)."""
        self.launcher.clear()

    def _forget_cleared(self) -> None:
        kept = set(self.launcher.runs)
        with self._compare_lock:
            self._run_stats = {r: s for r, s in self._run_stats.items() if r in kept}
            self._repaired = {k: a for k, a in self._repaired.items() if k[0] in kept}
        if self.compared is not None and self.compared not in kept:
            self.compared = None
            self._notify(StateChange("compare", run=None))

    # -- the repaired model on the picked input -------------------------------------------------
    def _model_run(self, run: RunRecord | None) -> RunRecord:
        if run is None:
            done = [r for r in self.launcher.runs if r.model is not None]
            if not done:
                raise ValueError("no run has a repaired model yet: launch one (a stopped run keeps its model)")
            return done[-1]
        if not isinstance(run, RunRecord):
            raise TypeError(f"run must be a RunRecord of this workbench (state.runs[i]), got {type(run).__name__}")
        if run.running:
            raise ValueError(f"run {run.label} is still running; stop it (or wait for it) first")
        if run.model is None:
            raise ValueError(f"run {run.label} has no model ({run.status}{': ' + run.error if run.error else ''})")
        return run

    def repaired_analysis(self, run: RunRecord | None = None) -> Any:
        """The :class:`~medic_viz.analysis.InputAnalysis` of the picked input under ``run``'s
        model (default: the latest run that has one), with that model's own layer statistics
        (estimated once per run on the picker's images). Cached per run and input."""
        run = self._model_run(run)
        p = self.picker
        with self._compare_lock:
            stats = self._run_stats.get(run)
            if stats is None:
                stats = self._run_stats[run] = p.estimate_stats(run.model)
            key = (run, p.input_key)
            if key not in self._repaired:
                if len(self._repaired) >= _CACHE_SIZE:
                    self._repaired.pop(next(iter(self._repaired)))
                model = cast(nn.Module, run.model)  # _model_run: a run with a model
                self._repaired[key] = analyze_input(model, p.image, p.trigger, p.label, stats=stats,
                                                    class_names=p.data.classes)
            return self._repaired[key]

    def compare(self, run: RunRecord | None = None) -> RunRecord:
        """Show ``run``'s repaired model (default: the latest run with one, e.g. a stopped run)
        next to the trojaned model in :meth:`comparison`; returns the run. Raises ``ValueError``
        if it is still running or has no model."""
        run = self._model_run(run)
        self.repaired_analysis(run)
        self.compared = run
        self._notify(StateChange("compare", run=run))
        return run

    def comparison(self, reduction: str = "mean_abs") -> dict[str, Any]:
        """Figure-2 columns of the picked input at the current layer and τ
        (:func:`~medic_viz.widgets.state.picker.figure2_panels`): ``{"trojaned": panels,
        "repaired": panels or None, "run": the compared run or None}``."""
        p = self.picker
        classes = p.data.classes
        out: dict[str, Any] = {"trojaned": figure2_panels(p.analysis, p.layer, self.tau, reduction, classes),
                               "repaired": None, "run": self.compared}
        if self.compared is not None:
            out["repaired"] = figure2_panels(self.repaired_analysis(self.compared), p.layer, self.tau, reduction,
                                             classes)
        return out

    def __repr__(self) -> str:
        p = self.picker
        return (f"WorkbenchState(τ={self.tau:g}, λ={self.lam:g}, input {p.source} "
                f"({p.class_name(p.label)!r}), {len(self.launcher.runs)} run(s))")
