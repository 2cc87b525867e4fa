"""MEDIC: clone a trojaned model into a fresh one of the same structure, matching internal
activations weighted by importance (paper Section 3, Algorithm 1).

Per batch ``(x, y)`` of the clean subset:

1. teacher forward (eval mode, frozen), recording every hooked layer's output ``f*``;
2. if the impact criterion is on, one backward pass of the teacher's loss to those activations
   only (no weight gradients): ``∂ℓ/∂f*``;
3. weights ``w`` per layer from eqs.(2)–(4) (:mod:`medic_viz.importance`), detached;
4. student forward, recording ``f^c``;
5. ``L = CE(f^c(x), y) + λ · Σ_layers mean_batch Σ_neurons w · ((f* − f^c)/σ)²``.

The statistics ``μ, σ`` are estimated once from the teacher over the clean subset and frozen.
"""

from __future__ import annotations

import math
import numbers
import sys
import threading
import types
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import medic_viz.stats as layer_statistics  # looked up at call time: what a test or benchmark puts there runs
from medic_viz.calibration import calibrate_taus, validate_share
from medic_viz.capture import LAYER_PRESETS, LayerRecorder, LayerSpec, check_same_structure, resolve_layers
from medic_viz.checks import MAX_SEED, check_number, check_whole
from medic_viz.coverage import coverage_record
from medic_viz.data.arrays import ImageArrays, iterate_batches, split_holdout
from medic_viz.defenses.base import ConfiguredDefense, DefenseResult, fresh_copy, frozen_copy
from medic_viz.defenses.student import check_student_fits, check_student_is_not_teacher
from medic_viz.defenses.tunable import Tunable, TuningSpace
from medic_viz.deprecation import moved_names
from medic_viz.device import resolve_device
from medic_viz.fused import FusedCloneLoss, validate_fused_mode
from medic_viz.holdout import HOLDOUT_GAP_POINTS, holdout_record
from medic_viz.importance import ImportanceOptions, layer_importance
from medic_viz.label_fit import label_fit_record
from medic_viz.metrics import Evaluator
from medic_viz.stats import DEFAULT_EPS_MEDIC, PAPER_EPS, LayerStats, floor_std, validate_eps
from medic_viz.train_checkpoint import TrainCheckpoint
from medic_viz.training import BatchLoss, Callback, TrainConfig, TrainResult, resolve_channels_last, train

__all__ = [
    "MedicConfig",
    "MedicObjective",
    "Medic",
    "medic",
    "validate_lambda",
    "validate_eps",
    "MAX_LAMBDA",
    "DEFAULT_LAYERS",
    "DEFAULT_SHARE",
    "DEFAULT_TAU",
    "DEFAULT_LAM",
    "PAPER_LAM",
    "DEFAULT_EPS_MEDIC",
    "PAPER_EPS",
    "preview_layer_taus",
    "holdout_record",
    "HOLDOUT_GAP_POINTS",
]

#: MEDIC's default hooked layers: conv and norm outputs from the second convolution up to, not
#: including, the model's last stage (WRN's ``block3``, a ResNet's ``layer4``) or, in a plain
#: stack, the last convolution (:data:`medic_viz.capture.LAYER_PRESETS`). Measured on GTSRB
#: (BENCHMARKS.md §3a–3b): cloning the logits (the paper's text, ``"all"``) keeps the backdoor
#: (BadNet 99.8 % ASR after 60 epochs); cloning the last block's features, which the classifier
#: reads, brings it back (``small_cnn`` SIG 28.5 % with conv4, 1.1 % without; WRN-16-1 SIG
#: 89.3 % with part of block3, 9.9 % without it), and so does cloning the first convolution's
#: pixel filters (Blend 16.2 % with them, 0.8 % without).
#: ``"auto"`` is ``"conv+bn-inner"`` on any model with at least three convolutions (every zoo
#: model); on smaller ones the first preset of :data:`medic_viz.capture.AUTO_ORDER` that selects
#: a layer. ``result.config["layers"]`` records the modules used.
DEFAULT_LAYERS = "auto"

#: The paper's global temperature, used with ``tau=`` when no share is wanted (and by ``tau=None,
#: share=None`` before the per-layer calibration became the default).
DEFAULT_TAU = 5.0

#: The default sharpness: τ is calibrated per layer on the clean data so that each layer's
#: weights effectively match 1 % of its neurons (one global τ = 5 matches 4 % of one layer and
#: 19 % of another, and left SIG at 34 % ASR where the calibrated τ left 1.1 %; BENCHMARKS.md §3a).
DEFAULT_SHARE = 0.01


#: The default weight λ of the cloning term. The paper's is 10 (:data:`PAPER_LAM`); with the default
#: layers and per-layer τ, λ = 3 left every ``small_cnn`` and demo row within the target where λ = 10 left
#: Polygon at 20.7 % (GTSRB ``small_cnn``) and 11.0 % (demo) ASR on one seed, at the same
#: accuracy (BENCHMARKS.md §3b): a weaker pull towards the teacher, still far from training from
#: scratch (λ = 0), which costs 6–7 points.
DEFAULT_LAM = 3.0

#: The paper's λ (its text and the authors' command).
PAPER_LAM = 10.0

#: Largest λ accepted: beyond it the cloning term swamps the label loss by float32's margin.
MAX_LAMBDA = 1e6


def validate_lambda(lam: float) -> float:
    """λ must be a number (not a string or bool) in [0, :data:`MAX_LAMBDA`] (0 = no cloning,
    i.e. training from scratch). Returns it as float; raises ValueError otherwise."""
    if isinstance(lam, (str, bytes, bool)) or not isinstance(lam, numbers.Real):
        raise ValueError(f"lam (λ) must be a number >= 0, got {lam!r} ({type(lam).__name__})")
    v = float(lam)
    if not (v >= 0.0) or not math.isfinite(v):
        raise ValueError(f"lam (λ) must be finite and >= 0 (the paper uses 10), got {lam!r}")
    if v > MAX_LAMBDA:
        raise ValueError(f"lam (λ) must be at most {MAX_LAMBDA:g} (the paper uses 10), got {lam!r}")
    return v


@dataclass
class MedicConfig(TrainConfig):
    """MEDIC settings. Training defaults come from :class:`TrainConfig` (the paper's).

    How sharp the importance weights are — give at most one of:

    - ``share`` (default :data:`DEFAULT_SHARE` = 1 % when neither is given): τ is calibrated per
      layer on the clean data so that each layer's weights effectively match this share of its
      neurons (:mod:`medic_viz.calibration`; teacher and clean data only, ≈ 1 % of a run's cost);
      the τ per layer is in the result's config (``layer_taus``).
    - ``tau``: one global softmax temperature τ ≥ 0 for every layer, as in the paper
      (larger = sharper; 0 = plain cloning; the paper's value is :data:`DEFAULT_TAU` = 5).

    ``lam``: weight λ ≥ 0 of the cloning loss (default :data:`DEFAULT_LAM` = 3; the paper's is 10).
    ``criteria``, ``zscore``, ``impact``, ``loss_reduction``: see :class:`medic_viz.importance.ImportanceOptions`.
    ``layers``: hooked layers — a preset of :data:`medic_viz.capture.LAYER_PRESETS` (default
    :data:`DEFAULT_LAYERS` = ``"auto"``, i.e. ``"conv+bn-inner"``: conv/norm outputs from the
    second convolution to before the last stage or convolution (see :data:`DEFAULT_LAYERS`);
    ``"conv+bn-last"``: from the first;
    ``"conv+bn"`` = the authors' command, no dense layers; ``"conv+bn+linear"``/``"all"`` = the
    paper's text, logits included), None (every conv/norm/linear output), module names, or a
    predicate ``(name, module) -> bool``. The paper's setting is ``tau=5, lam=10, layers="all"``.
    ``student_seed``: initialisation seed of the fresh student.
    ``fused``: how the per-layer loss is computed — ``"auto"`` (compiled kernels when a compiler
    is present and the run is long enough to repay compiling, else eager), ``"compile"``,
    ``"eager"`` or ``"reference"`` (the unfused definition,
    :func:`medic_viz.importance.layer_clone_loss`: slowest, for checks and benchmarks); same
    numbers every way, to float rounding (:mod:`medic_viz.fused`).
    ``calibration_images``: clean images used to calibrate τ per layer.
    ``eps``: added to the teacher's variances (σ = sqrt(var + eps)); default
    :data:`DEFAULT_EPS_MEDIC` = 0.1, the paper's "small epsilon" is :data:`PAPER_EPS` = 1e-5.
    ``sigma_floor`` ρ (default 0:
    off) and ``sigma_floor_scope``: σ_c raised to at least ρ times its layer's RMS σ (``"layer"``)
    or the median of those (``"model"``), :func:`medic_viz.stats.floor_std` — a channel constant
    on the clean data is then weighed at most 1/ρ² times a typical one, not 1/eps.
    ``kd_weight`` (default 0: off) and ``kd_temperature`` T: add ``kd_weight · T² · KL(teacher ‖
    clone)`` on the logits softened by T (Hinton's distillation, the KD baseline's term) — a
    teacher signal for the layers the cloning loss leaves to the labels (``label_only_share``).
    ``holdout_fraction``: share of the clean set (class-stratified, drawn with ``seed``; whole
    groups of near copies where the clean set has ``groups``, e.g. GTSRB's tracks) kept out
    of training to measure, with clean data alone, what cloning costs: the clone's accuracy on
    it at every evaluation (``TrainEvent.holdout_acc``, the live view's dotted curve) against
    the teacher's, in the result's ``holdout`` record and, more than
    :data:`HOLDOUT_GAP_POINTS` below the teacher, its ``holdout_note``. 0 (the default): every
    clean image trains, nothing is measured. When the teacher trained on those images (a grid's
    teachers did, a third party's usually did not) its hold-out accuracy is its training
    accuracy and the gap reads larger than on new data.
    """

    tau: float | None = None
    share: float | None = None
    lam: float = DEFAULT_LAM
    criteria: str = "both"
    zscore: str = "abs"
    impact: str = "signed"
    loss_reduction: str = "sum"
    layers: LayerSpec = DEFAULT_LAYERS
    student_seed: int = 0
    stats_batch_size: int = 256
    calibration_images: int = 256
    eps: float = DEFAULT_EPS_MEDIC
    sigma_floor: float = 0.0
    sigma_floor_scope: str = "layer"
    fused: str = "auto"
    holdout_fraction: float = 0.0
    kd_weight: float = 0.0
    kd_temperature: float = 2.0

    def validate(self) -> None:
        """Check every field; τ (with the importance options) and λ are checked here and
        nowhere else on MEDIC's way from the config to the first batch."""
        super().validate()
        if self.tau is not None and self.share is not None:
            raise ValueError(
                f"give either tau (one global temperature, the paper's) or share (τ calibrated per layer), "
                f"not both; got tau={self.tau!r}, share={self.share!r}"
            )
        if self.share is not None:
            validate_share(self.share)
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        if isinstance(self.layers, str) and "+" in self.layers and self.layers not in LAYER_PRESETS:
            raise ValueError(f"unknown layer preset {self.layers!r}; presets are {', '.join(map(repr, LAYER_PRESETS))}, "
                             "or give module names")
        check_whole("calibration_images", self.calibration_images, 1)
        check_whole("stats_batch_size", self.stats_batch_size, 1)
        check_whole("student_seed", self.student_seed, 0, MAX_SEED)
        validate_eps(self.eps)
        floor_std({}, self.sigma_floor, self.sigma_floor_scope)  # checks the floor and its scope
        self._importance_options()  # checks τ and the option names
        validate_lambda(self.lam)
        validate_fused_mode(self.fused)
        check_number("kd_weight", self.kd_weight, 0.0, advice="0 turns the logit distillation off")
        check_number("kd_temperature", self.kd_temperature, 0.0, low_open=True, advice="the KD baseline's is 2")
        check_number("holdout_fraction", self.holdout_fraction, 0.0, 0.5,
                      advice="the share of the clean set kept out of training to measure the clone "
                             "(0 = off; 0.1 keeps one image in ten)")

    @property
    def calibrated(self) -> bool:
        """Whether τ is calibrated per layer (``share``, the default) rather than one global τ."""
        return self.tau is None

    @property
    def effective_share(self) -> float | None:
        """The share τ is calibrated to (None with a global τ)."""
        if self.tau is not None:
            return None
        return DEFAULT_SHARE if self.share is None else float(self.share)

    @property
    def effective_tau(self) -> float | None:
        """The global τ (None when τ is calibrated per layer)."""
        return None if self.tau is None else float(self.tau)

    def describe(self) -> str:
        """``"τ=5 λ=10"`` or ``"share=1% λ=3"``: how the run's temperature was set (and
        ``" KD=1 T=2"`` with the logit distillation on, ``" cutout=0.5"`` with Cutout)."""
        share = self.effective_share  # None exactly when τ is global (not calibrated)
        sharp = f"share={100 * share:g}%" if share is not None else f"τ={self.effective_tau:g}"
        kd = f" KD={float(self.kd_weight):g} T={float(self.kd_temperature):g}" if self.kd_weight else ""
        cut = f" cutout={float(self.erase):g}" if self.erase else ""
        return f"{sharp} λ={float(self.lam):g}{kd}{cut}"

    def _importance_key(self) -> tuple:
        return (self.tau, self.criteria, self.zscore, self.impact, self.loss_reduction)

    def _importance_options(self) -> ImportanceOptions:
        tau = self.tau
        if tau is None:
            tau = DEFAULT_TAU  # the default, or a placeholder the per-layer τ values replace (share=)
        elif isinstance(tau, numbers.Real) and not isinstance(tau, bool):
            tau = float(tau)  # anything else is left for ImportanceOptions to refuse, with its message
        opts = ImportanceOptions(
            tau=tau,
            criteria=self.criteria,  # type: ignore[arg-type]
            zscore=self.zscore,  # type: ignore[arg-type]
            impact=self.impact,  # type: ignore[arg-type]
            loss_reduction=self.loss_reduction,  # type: ignore[arg-type]
        )
        self._checked = (self._importance_key(), opts)
        return opts

    @property
    def importance(self) -> ImportanceOptions:
        """The importance options as :meth:`validate` built and checked them (built, and so
        checked, again only if one of their fields changed since)."""
        checked = getattr(self, "_checked", None)
        if checked is not None and checked[0] == self._importance_key():
            return checked[1]
        return self._importance_options()

    def train_config(self) -> TrainConfig:
        base = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**base)


class MedicObjective:
    """The MEDIC loss for one batch; ``model`` is the student being trained.

    ``fused``, ``work``: how the per-layer terms are computed (:class:`medic_viz.fused.FusedCloneLoss`;
    ``"reference"``: by their definition, :func:`medic_viz.importance.layer_clone_loss`;
    ``work`` = neurons the run will touch, for ``fused="auto"``).

    ``options`` and ``lam`` are used as given: :class:`MedicConfig` checks them (once) on the
    way through :class:`Medic`; a caller building the objective directly passes λ ≥ 0 (see
    :func:`validate_lambda`)."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        stats: dict[str, LayerStats],
        options: ImportanceOptions,
        lam: float,
        layer_taus: dict[str, float] | None = None,
        *,
        fused: str = "auto",
        work: float | None = None,
        kd_weight: float = 0.0,
        kd_temperature: float = 2.0,
    ) -> None:
        self.teacher = teacher
        self.kd_weight, self.kd_temperature = float(kd_weight), float(kd_temperature)
        self.model = student
        self.stats = stats
        self.layers = list(stats)
        self.options = options
        self.lam = float(lam)  # checked once, by MedicConfig.validate (or by the caller)
        self.clone_loss = FusedCloneLoss(stats, options, fused, work=work)
        self.set_layer_taus(layer_taus)

    def checkpoint_state(self) -> dict:
        """Nothing changes in the objective while it trains (τ is set before): resumable."""
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        """Nothing to restore."""

    def set_layer_taus(self, layer_taus: dict[str, float] | None) -> None:
        """Use τ per layer (``{layer: τ}``, e.g. from :func:`medic_viz.calibration.calibrate_taus`);
        layers not named keep ``options.tau``. None: one τ for every layer."""
        taus = dict(layer_taus or {})
        unknown = sorted(set(taus) - set(self.layers))
        if unknown:
            raise ValueError(f"τ given for layers {unknown} that are not hooked ({self.layers})")
        self.layer_options = {n: (replace(self.options, tau=float(taus[n])) if n in taus else self.options) for n in self.layers}
        self.needs_gradients = any(o.needs_gradients for o in self.layer_options.values())
        self.clone_loss.set_layer_taus(taus)

    def teacher_activations(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """The teacher's activations and, where importance needs them, the gradients of its
        loss with respect to them, per hooked layer (both detached)."""
        acts, grads, _logits = self._teacher_forward(x, y)
        return acts, grads

    def _teacher_forward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], torch.Tensor]:
        """:meth:`teacher_activations` and the teacher's logits (detached)."""
        opts = self.options
        self.teacher.eval()
        need_grad = self.needs_gradients
        with LayerRecorder(self.teacher, self.layers, make_leaf=need_grad) as rec:
            if need_grad:
                with torch.enable_grad():
                    logits = self.teacher(x)
                    loss = F.cross_entropy(logits.float(), y, reduction=opts.loss_reduction)
                    acts = rec.tensors()
                    found = torch.autograd.grad(loss, acts, allow_unused=True)
                grads: list[torch.Tensor | None] = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, found)]
            else:
                with torch.no_grad():
                    logits = self.teacher(x)
                acts = rec.tensors()
                grads = [None] * len(acts)
        return [a.detach() for a in acts], grads, logits.detach()

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def teacher_pass(
        self, x: torch.Tensor, y: torch.Tensor, *, divide_by_variance: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher activations (detached) and MEDIC weights per layer, in ``self.layers`` order
        (``divide_by_variance``: weights divided by σ², as the loss uses them)."""
        acts, grads = self.teacher_activations(x, y)
        weights = [
            layer_importance(a, g, self.stats[n], self.layer_options[n], divide_by_variance=divide_by_variance)
            for n, a, g in zip(self.layers, acts, grads)
        ]
        return acts, weights

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchLoss:
        t_acts, t_grads, t_logits = self._teacher_forward(x, y)
        with LayerRecorder(self.model, self.layers) as rec:
            logits = self.model(x)
            s_acts = rec.tensors()
        ce = F.cross_entropy(logits.float(), y)
        per_layer: dict[str, torch.Tensor] = {}
        clone = torch.zeros((), device=x.device)
        for n, ta, g, sa in zip(self.layers, t_acts, t_grads, s_acts):
            term = self.clone_loss.term(n, sa, ta, g)  # = importance.layer_clone_loss(sa, ta, g, …) for this layer
            per_layer[n] = term
            clone = clone + term
        total = ce + self.lam * clone
        parts = {"total": total, "ce": ce, "clone": clone}
        if self.kd_weight > 0:
            T = self.kd_temperature
            kd = F.kl_div(F.log_softmax(logits.float() / T, dim=1), F.softmax(t_logits.float() / T, dim=1),
                          reduction="batchmean") * (T * T)
            total = total + self.kd_weight * kd
            parts.update(total=total, kd=kd)
        return total, parts, per_layer


class Medic(ConfiguredDefense):
    """MEDIC backdoor removal (importance-driven cloning) with :class:`MedicConfig`."""

    name = "medic"
    display_name = "MEDIC"
    config_class = MedicConfig
    seed_options = ("student_seed",)
    unpinned_values = {"eps": PAPER_EPS}  # pinned_options leaves ε out at 1e-5: such a cell runs at 1e-5
    #: How τ is set (global, or per layer to a share), τ, the share, the layers, λ, ε, the clean hold-out.
    run_settings = ("tau_mode", "tau", "share", "layers", "lam", "eps", "holdout_fraction")
    resumable = True
    #: the share τ is calibrated to, 5 % … 0.5 %: a smaller share is a sharper τ, the stronger
    tuning = TuningSpace((Tunable.over("share", (0.05, 0.02, DEFAULT_SHARE, 0.005)),))
    config: MedicConfig

    @classmethod
    def pinned_options(cls, options: Mapping[str, object]) -> dict[str, object]:
        """``options`` with the engine's current defaults written out — λ, the layer set,
        without ``tau`` the share τ is calibrated to, and ε unless it is :data:`PAPER_EPS` (the
        value of every run recorded before ε's default changed, which keep their ids so)."""
        opts = {k: v for k, v in options.items() if not (k in ("tau", "share") and v is None)}
        opts.setdefault("lam", float(MedicConfig.lam))
        opts.setdefault("layers", DEFAULT_LAYERS)
        if "tau" not in opts:
            opts.setdefault("share", DEFAULT_SHARE)
        eps = opts.pop("eps", MedicConfig.eps)
        if eps != PAPER_EPS:  # every cell recorded before ε was pinned ran with the paper's: they keep their ids
            opts["eps"] = float(eps)  # type: ignore[arg-type]
        return opts

    def default_label(self) -> str:
        return f"MEDIC {self.config.describe()}"

    def run(
        self,
        teacher: nn.Module,
        clean: ImageArrays,
        *,
        evaluator: Evaluator | None = None,
        callbacks: Sequence[Callback] = (),
        stop_event: threading.Event | None = None,
        student: nn.Module | None = None,
        label: str = "",
        checkpoint: TrainCheckpoint | None = None,
    ) -> DefenseResult:
        """Clone ``teacher`` (unchanged) into ``student`` — by default a fresh copy of its
        structure (``config.student_seed``) — using the clean set ``clean``. A given ``student``
        must hold the teacher's parameters and buffers (names, shapes, dtypes): checked first.
        ``checkpoint``: the cloning saves itself there every epoch and goes on from it (the
        statistics and τ are measured again, the same from the same data and seed)."""
        return self._checked_run(
            teacher, clean, evaluator=evaluator, callbacks=callbacks, stop_event=stop_event, label=label, student=student,
            checkpoint=checkpoint,
        )

    def _run(self, teacher: nn.Module, clean: ImageArrays, device: torch.device, evaluator: Evaluator | None,
             callbacks: Sequence[Callback], stop_event: threading.Event | None, label: str,
             student: nn.Module | None = None, checkpoint: TrainCheckpoint | None = None
             ) -> tuple[nn.Module, dict, TrainResult]:
        cfg = self.config
        if student is not None:
            check_student_fits(teacher, student)  # before anything runs: every weight and buffer, by name
        clean, held_out = (split_holdout(clean, cfg.holdout_fraction, cfg.seed) if cfg.holdout_fraction > 0
                           else (clean, None))
        layers = resolve_layers(teacher, cfg.layers, input_shape=getattr(clean, "image_shape", None))
        if student is None:
            student = fresh_copy(teacher, seed=cfg.student_seed)
        else:
            check_same_structure(teacher, student, layers)
            check_student_is_not_teacher(teacher, student)
        reference = frozen_copy(teacher, device)
        if resolve_channels_last(cfg.channels_last, reference, device):  # as train() runs the student
            reference.to(memory_format=torch.channels_last)
        stats = layer_statistics.compute_layer_stats(reference, clean, layers, batch_size=cfg.stats_batch_size, device=device,
                                                     eps=cfg.eps, floor=cfg.sigma_floor, floor_scope=cfg.sigma_floor_scope)
        steps = math.ceil(len(clean) / cfg.batch_size) * cfg.epochs
        per_image = sum(st.mean.numel() * st.count / max(len(clean), 1) for st in stats.values())
        objective = MedicObjective(reference, student.to(device), stats, cfg.importance, cfg.lam,
                                   fused=cfg.fused, work=steps * cfg.batch_size * per_image,
                                   kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
        extra: dict = {"layers": list(layers), **coverage_record(teacher, layers, clean.image_shape, len(clean))}
        if not cfg.calibrated:
            extra["tau"] = cfg.effective_tau
        share = cfg.effective_share
        if share is not None:  # calibrated: τ per layer
            layer_taus = calibrate_layer_taus(objective, clean, share, images=cfg.calibration_images,
                                              batch_size=cfg.batch_size, seed=cfg.seed, augment=cfg.augment)
            objective.set_layer_taus(layer_taus)
            extra.update(layer_taus=layer_taus, share=share)
        monitor = None if held_out is None else Evaluator(held_out, batch_size=cfg.stats_batch_size, device=device)
        teacher_holdout = None if monitor is None else monitor(reference).clean_acc
        result = train(objective, clean, cfg.train_config(), evaluator=evaluator, callbacks=callbacks, stop_event=stop_event,
                       label=label, holdout=monitor, checkpoint=checkpoint)
        extra.update(label_fit_record((e.losses.get("ce") for e in result.history if e.kind == "epoch"), clean.labels))
        if monitor is not None and teacher_holdout is not None:
            extra.update(holdout_record(teacher_holdout, monitor(result.model).clean_acc, len(monitor.y), len(clean),
                                        whole_groups=clean.groups is not None))
        return result.model, extra, result


def calibrate_layer_taus(
    objective: MedicObjective,
    clean: ImageArrays,
    share: float,
    *,
    images: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    augment: bool = True,
) -> dict[str, float]:
    """τ per hooked layer such that the teacher's MEDIC weights match ``share`` of the layer's
    neurons, on up to ``images`` clean images (seeded, augmented as training augments them,
    in batches of the training batch size so that a mean-reduced impact gradient has the
    training scale). Teacher and clean data only."""
    device = next(objective.teacher.parameters()).device
    generator = torch.Generator().manual_seed(int(seed) + 104729)
    acts: list[list[torch.Tensor]] = [[] for _ in objective.layers]
    grads: list[list[torch.Tensor]] = [[] for _ in objective.layers]
    seen = 0
    for x, y in iterate_batches(clean, batch_size, shuffle=True, generator=generator, device=device, augment=augment):
        a, g = objective.teacher_activations(x, y)
        for i in range(len(objective.layers)):
            acts[i].append(a[i].float())
            gradient = g[i]
            if gradient is not None:
                grads[i].append(gradient.float())
        seen += len(x)
        if seen >= images:
            break
    cat_acts = [torch.cat(a) for a in acts]
    cat_grads = [torch.cat(g) if g else None for g in grads]
    return calibrate_taus(cat_acts, cat_grads, objective.stats, objective.options, share)


def preview_layer_taus(
    teacher: nn.Module,
    clean: ImageArrays,
    config: MedicConfig | None = None,
    *,
    layers: LayerSpec = None,
    share: float | None = None,
) -> dict[str, float]:
    """The τ per layer that a MEDIC run with ``config`` (default :class:`MedicConfig`) on
    ``clean`` calibrates, without training: the same statistics, seeded and augmented batches
    and share as :meth:`Medic.run` (so its ``result.config["layer_taus"]`` holds the same values,
    to the calibration's tolerance). ``layers``: the layers to calibrate (default: the config's
    hooked layers; any hookable layer works, since a layer's τ depends on that layer alone);
    ``share``: the share to match (default: the config's, which must then not set a global τ).
    Teacher and clean data only; the cost of two passes of the teacher over
    ``config.calibration_images`` (and the statistics' over ``clean``), not of a run."""
    cfg = MedicConfig() if config is None else config
    if not isinstance(cfg, MedicConfig):
        raise TypeError(f"config must be a MedicConfig, got {type(cfg).__name__}")
    cfg.validate()
    if share is None:
        share = cfg.effective_share
        if share is None:
            raise ValueError(f"this config sets one global τ ({cfg.tau:g}); give share= to preview a calibration")
    share = validate_share(share)
    if len(clean) == 0:
        raise ValueError("the clean set is empty; the defender needs some clean training images")
    device = resolve_device(cfg.device)
    names = resolve_layers(teacher, cfg.layers if layers is None else layers,
                           input_shape=getattr(clean, "image_shape", None))
    reference = frozen_copy(teacher, device)
    if resolve_channels_last(cfg.channels_last, reference, device):  # as Medic.run runs it
        reference.to(memory_format=torch.channels_last)
    stats = layer_statistics.compute_layer_stats(reference, clean, names, batch_size=cfg.stats_batch_size, device=device,
                                                 eps=cfg.eps, floor=cfg.sigma_floor, floor_scope=cfg.sigma_floor_scope)
    objective = MedicObjective(reference, reference, stats, cfg.importance, cfg.lam, fused="eager")
    return calibrate_layer_taus(objective, clean, share, images=cfg.calibration_images, batch_size=cfg.batch_size,
                                seed=cfg.seed, augment=cfg.augment)


def medic(
    teacher: nn.Module,
    clean: ImageArrays,
    *,
    evaluator: Evaluator | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    **options: Any,
) -> DefenseResult:
    """Run MEDIC with keyword options of :class:`MedicConfig` (e.g. ``tau=5, lam=10, epochs=60``)."""
    return Medic(**options).run(teacher, clean, evaluator=evaluator, callbacks=callbacks, stop_event=stop_event)


class _EngineModule(types.ModuleType):
    """This module's type: ``medic_viz.defenses.medic`` is the module (the package used to bind
    the name to the function :func:`medic`, so the module was reachable only via importlib).
    Calling the module still runs :func:`medic`, with a DeprecationWarning."""

    def __call__(self, *args: object, **kwargs: object) -> DefenseResult:
        warnings.warn("calling the module medic_viz.defenses.medic is deprecated; call medic_viz.medic "
                      "(the function medic_viz.defenses.medic.medic)", DeprecationWarning, stacklevel=2)
        return medic(*args, **kwargs)  # type: ignore[arg-type]


__getattr__ = moved_names(__name__)
sys.modules[__name__].__class__ = _EngineModule
