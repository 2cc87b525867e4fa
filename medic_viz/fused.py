"""MEDIC's per-layer cloning term, fused: importance (eqs. 2–4), the 1/σ² factor and the weighted
squared error computed together, reading each activation as few times as possible.

For one hooked layer with teacher activations ``t``, the teacher's gradient ``g = ∂ℓ/∂t``, the
student's activations ``s`` (all ``(B, C, ...)``) and per-channel statistics ``μ, σ``, the term is

    L = (1/B) Σ_b Σ_i w_bi · (t_bi − s_bi)² / σ_i²,     w = sqrt(A · G)   (eq. 4)

with ``A = softmax_i(τ·|t − μ|/σ)`` (eq. 2) and ``G = softmax_i(τ·σ·g)`` (eq. 3), softmaxes per
sample over all neurons of the layer. Its definition is
:func:`medic_viz.importance.layer_clone_loss` (``fused="reference"`` runs it); the two faster forms
here compute the same value and student gradient ``∂L/∂s = −2/B · w·(t − s)/σ²`` to float rounding
— tests/test_fused.py holds them equal to the definition for every importance option (criteria,
signed/absolute z-score and impact, sum/mean reduction, τ = 0, τ per layer and from a share
calibration, channels-last, bf16 autocast). A change of the formula in
:mod:`medic_viz.importance` must be made in :func:`_eager_forward` and
:func:`_compiled_forward_source` too; that test fails until it is.

Why fused: on a CPU a MEDIC step's overhead over a plain step is the teacher's pass plus this
elementwise work over every hooked activation, and the latter is dominated by the ``exp`` per
neuron and the passes over memory. Two implementations, the same numbers:

- ``"compile"``: the term written once on ``(B, N)`` rows (each sample's neurons, per-channel
  factors repeated along the row) without normalising the weights neuron by neuron: with
  ``a = τ|z| − max a`` and ``q = τσg − max q`` per sample, ``ha = exp(a/2)``, ``hq = exp(q/2)``,
  eq.(4) is ``w = ha·hq / sqrt(Σha² · Σhq²)`` — two ``exp`` per neuron, no ``sqrt`` per neuron,
  and the per-sample normaliser multiplies the per-sample sum of ``ha·hq·(t−s)²/σ²``. Compiled
  with ``torch.compile`` (Inductor: one C++ loop nest per sample on CPU, Triton on CUDA), each
  sample's rows are read twice (the maxima, then everything else) while they sit in cache. The
  batch dimension is dynamic (the last, smaller batch of an epoch does not recompile); graphs
  are kept per layer size and options in the process and on disk by Inductor.
- ``"eager"``: plain PyTorch ops on the same rows (``torch.softmax`` kernels, in-place
  products), no compiler.

and ``"reference"``: the definition itself (:func:`medic_viz.importance.layer_clone_loss`,
unfused, several more passes over memory), for checks and benchmarks.

``"auto"`` compiles when a compiler for the device is present and the run is long enough for
compilation (tens of seconds in a fresh process, a few with Inductor's on-disk cache warm) to
pay off (:data:`AUTO_COMPILE_MIN_WORK`), else eager; any failure while compiling falls back to
eager with a warning. The environment variable ``MEDIC_VIZ_FUSED``
(``auto``/``compile``/``eager``/``reference``) overrides ``"auto"`` for a whole process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import types
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, cast, overload

import torch

from medic_viz import importance
from medic_viz.importance import ImportanceOptions
from medic_viz.stats import LayerStats

__all__ = [
    "FUSED_MODES",
    "FusedMode",
    "LayerConstants",
    "FusedCloneLoss",
    "fused_layer_loss",
    "compile_available",
    "resolve_fused_mode",
    "AUTO_COMPILE_MIN_WORK",
]

FusedMode = Literal["auto", "compile", "eager", "reference"]
#: ``"reference"`` is the unfused definition (:func:`medic_viz.importance.layer_clone_loss`).
FUSED_MODES: tuple[str, ...] = ("auto", "compile", "eager", "reference")

#: ``"auto"`` compiles only when a run touches at least this many neurons in all (steps × batch ×
#: hooked neurons per image), per device type. CPU: the compiled kernels save ≈ 3 ns per neuron
#: over the eager ones on one core, and compiling costs ≈ 30 s in a fresh process with an empty
#: Inductor cache, ≈ 7 s with a warm one (BENCHMARKS.md §4) — break-even near 1e10 when cold; a
#: 60-epoch WRN-16-1 run on 2,500 images touches 4e10, the 60-epoch demo 2.5e9. CUDA: eager
#: kernels are memory-bound and cheap there, so compiling pays off only for far longer runs.
AUTO_COMPILE_MIN_WORK: dict[str, float] = {"cpu": 1e10, "cuda": 1e12}


def validate_fused_mode(mode: str) -> str:
    """``mode`` must be one of :data:`FUSED_MODES`."""
    if mode not in FUSED_MODES:
        raise ValueError(f"fused must be 'auto', 'compile', 'eager' or 'reference', got {mode!r}")
    return mode


def compile_available(device: torch.device | str) -> bool:
    """Whether ``torch.compile`` can build kernels for ``device`` here: a C++ compiler on the PATH
    for CPU, Triton for CUDA (other devices: no). Does not compile anything."""
    dev = torch.device(device)
    if not hasattr(torch, "compile") or sys.platform == "win32":
        return False
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return False
    except Exception:  # noqa: BLE001 - any import problem means: no compiler
        return False
    if dev.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        return any(n and shutil.which(n) for n in names)
    if dev.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


def resolve_fused_mode(mode: str, device: torch.device | str, work: float | None = None) -> str:
    """The implementation ``mode`` stands for: ``"compile"``, ``"eager"`` or ``"reference"``.

    ``"auto"`` (or the ``MEDIC_VIZ_FUSED`` environment variable, when set) becomes
    ``"compile"`` when :func:`compile_available` and ``work`` — neurons touched over the whole
    run — is unknown or at least :data:`AUTO_COMPILE_MIN_WORK` for the device; else ``"eager"``.
    ``"compile"`` is kept even without a compiler (the first call then falls back, with a warning).
    """
    validate_fused_mode(mode)
    if mode == "auto":
        env = os.environ.get("MEDIC_VIZ_FUSED", "").strip().lower()
        if env:
            if env not in FUSED_MODES:
                raise ValueError(f"MEDIC_VIZ_FUSED must be 'auto', 'compile', 'eager' or 'reference', got {env!r}")
            mode = env
    if mode != "auto":
        return mode
    if not compile_available(device):
        return "eager"
    if work is not None and work < AUTO_COMPILE_MIN_WORK.get(torch.device(device).type, float("inf")):
        return "eager"
    return "compile"


@dataclass(frozen=True)
class LayerConstants:
    """Per-channel factors of one layer, shaped ``(1, C, 1, …)`` to broadcast against
    ``(B, C, …)``: ``k = τ/σ``, ``neg_kmu = −τμ/σ`` (so ``τ·z = t·k + neg_kmu``), ``kg = τσ`` and
    ``inv_var = 1/σ²``; ``tau`` as given."""

    k: torch.Tensor
    neg_kmu: torch.Tensor
    kg: torch.Tensor
    inv_var: torch.Tensor
    tau: float
    _rows: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_stats(cls, stats: LayerStats, tau: float, ndim: int, device: torch.device | str) -> "LayerConstants":
        if ndim < 2:
            raise ValueError(f"activations must be (B, C, ...), got {ndim} dimension(s)")
        shape = (1, -1) + (1,) * (ndim - 2)
        mean = stats.mean.to(device=device, dtype=torch.float32).reshape(shape)
        std = stats.std.to(device=device, dtype=torch.float32).reshape(shape)
        k = tau / std
        return cls(k=k, neg_kmu=-mean * k, kg=tau * std, inv_var=1.0 / (std * std), tau=float(tau), _rows={})

    def rows(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(k, neg_kmu, kg, inv_var)`` repeated over positions as ``(1, N)`` rows in the memory
        order of activations like ``like`` (cached per shape and layout)."""
        key = (tuple(like.shape[1:]), _channels_last(like))
        rows = self._rows.get(key)
        if rows is None:
            one = like[:1]
            rows = tuple(_as_rows(v.expand(one.shape).contiguous(memory_format=_format(one)), one)
                         for v in (self.k, self.neg_kmu, self.kg, self.inv_var))
            self._rows[key] = rows
        return rows


# --------------------------------------------------------------------------------------------
# The two implementations of the forward. Each returns (term, we, c):
#   term = (1/B) Σ_b c_b Σ_i e_bi·inv_var_i·d_bi²   (a 0-dim float32 tensor),
#   we   = e·inv_var·d  (float32, the shape of t),  c: (B,) per-sample normaliser or None,
# with d = t − s, so that ∂term/∂s = −2/B · c_b · we.
# --------------------------------------------------------------------------------------------


def _eager_forward(
    t: torch.Tensor, g: torch.Tensor | None, s: torch.Tensor, kc: LayerConstants, criteria: str, zabs: bool, iabs: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Plain PyTorch ops on ``(B, N)`` rows; ``g`` is overwritten."""
    b = t.shape[0]
    k, neg_kmu, kg, inv_var = kc.rows(t)
    tr = _as_rows(t, t)
    d = tr - _as_rows(s, t)
    if kc.tau == 0:
        we = d.mul(inv_var).div_(tr.shape[1])
        return torch.dot(we.reshape(-1), d.reshape(-1)) / b, _from_rows(we, t), None
    w = None
    if criteria in ("both", "activation"):
        z = torch.addcmul(neg_kmu, tr, k)
        if zabs:
            z.abs_()
        w = torch.softmax(z, dim=1)  # one kernel per row: max, exp-sum, scale
        del z
    if criteria in ("both", "impact"):
        q = _as_rows(cast(torch.Tensor, g), t).mul_(kg)  # g is given when the criteria need it
        if iabs:
            q.abs_()
        gw = torch.softmax(q, dim=1)
        del q
        w = gw if w is None else w.mul_(gw).sqrt_()
    we = cast(torch.Tensor, w).mul_(inv_var).mul_(d)  # criteria names at least one of the two
    return torch.dot(we.reshape(-1), d.reshape(-1)) / b, _from_rows(we, t), None


def _compiled_forward_source(
    t: torch.Tensor, g: torch.Tensor | None, s: torch.Tensor, k: torch.Tensor, neg_kmu: torch.Tensor, kg: torch.Tensor,
    inv_var: torch.Tensor, criteria: str, zabs: bool, iabs: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``torch.compile`` turns into one loop nest per sample. ``t, g, s``: ``(B, N)`` rows
    (one per sample, all of the layer's neurons); ``k, neg_kmu, kg, inv_var``: ``(1, N)`` rows
    (the per-channel factors repeated over positions, so that every operand is a plain vector
    load). For eq.(4), ``sqrt(A·G)`` is ``ha·hq / sqrt(Σha² · Σhq²)`` with ``ha = exp((a − max a)/2)``,
    ``hq = exp((q − max q)/2)``: two ``exp`` per neuron, and the normalisers multiply per-sample
    sums instead of every neuron."""
    b = t.shape[0]
    if criteria == "impact":
        e = None
    else:
        a = t * k + neg_kmu
        if zabs:
            a = a.abs()
        a = a - a.amax(1, keepdim=True)
    if criteria != "activation":
        q = g * kg  # type: ignore[operator]  # g is given when the criteria need it
        if iabs:
            q = q.abs()
        q = q - q.amax(1, keepdim=True)
    if criteria == "both":
        ha = torch.exp(a * 0.5)
        hq = torch.exp(q * 0.5)
        e = ha * hq
        c = 1.0 / torch.sqrt((ha * ha).sum(1) * (hq * hq).sum(1))
    else:
        e = torch.exp(a if criteria == "activation" else q)
        c = 1.0 / e.sum(1)
    d = t - s
    we = e * inv_var * d
    return ((we * d).sum(1) * c).sum() / b, we, c


_COMPILED: dict[tuple, Callable] = {}


def _compiled_kernel(key: tuple) -> Callable:
    """One compiled function per (options, device type, neurons per sample). Each gets its own
    copy of the code object, so Dynamo's per-code recompile limit is never reached however many
    layer shapes a process sees (one graph per key, plus one if a batch of 1 comes)."""
    fn = _COMPILED.get(key)
    if fn is None:
        src = _compiled_forward_source
        clone = types.FunctionType(src.__code__.replace(), src.__globals__, src.__name__, src.__defaults__, src.__closure__)
        fn = torch.compile(clone, dynamic=False, fullgraph=True)
        _COMPILED[key] = fn
    return fn


class _FusedTerm(torch.autograd.Function):
    """Autograd wrapper: forward by either implementation, backward ``−2/B · c · we``."""

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, impl: Callable, *args: Any) -> torch.Tensor:
        term, we, c = impl(student.detach(), *args)
        if c is None:
            ctx.save_for_backward(we)
        else:
            ctx.save_for_backward(we, c)
        ctx.dtype, ctx.n_args = student.dtype, len(args)
        return term

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        we, *c = ctx.saved_tensors
        b = we.shape[0]
        scale = grad_out.float() * (-2.0 / b)
        if c:
            scale = c[0].reshape((b,) + (1,) * (we.ndim - 1)) * scale
        return (torch.mul(we, scale).to(ctx.dtype), None) + (None,) * ctx.n_args


class FusedCloneLoss:
    """The fused per-layer cloning term for one teacher's statistics and importance options.

    ``term(name, student, teacher, grad)`` returns ``mean_b Σ_neurons w·((t − s)/σ)²`` for layer
    ``name``, differentiable in ``student`` only — the value and gradient of the definition,
    :func:`medic_viz.importance.layer_clone_loss` with this layer's options (τ per layer
    included), to float rounding.

    ``mode``: ``"auto"``, ``"compile"``, ``"eager"`` or ``"reference"`` (see the module doc);
    ``work``: neurons the run will touch, for ``"auto"``. ``grad`` may be overwritten (pass a
    tensor you no longer need, as the gradients of the teacher's pass are).
    """

    def __init__(self, stats: dict[str, LayerStats], options: ImportanceOptions, mode: str = "auto", *,
                 work: float | None = None) -> None:
        validate_fused_mode(mode)
        self.stats = stats
        self.options = options
        self.requested = mode
        self.work = work
        self.mode: str | None = None  # resolved on the first call (needs the device)
        self.fallback_reason: str | None = None
        self._consts: dict[tuple, LayerConstants] = {}
        self._layer_opts: dict[str, ImportanceOptions] = {}
        self.taus: dict[str, float] = {}

    def set_layer_taus(self, taus: dict[str, float] | None) -> None:
        """τ per layer (layers not named use ``options.tau``); τ is folded into the per-layer
        constants, so no kernel is recompiled."""
        self.taus = {n: float(t) for n, t in (taus or {}).items()}
        self._consts.clear()
        self._layer_opts.clear()

    def _constants(self, name: str, ndim: int, device: torch.device) -> LayerConstants:
        key = (name, ndim, device)
        kc = self._consts.get(key)
        if kc is None:
            kc = LayerConstants.from_stats(self.stats[name], self.taus.get(name, self.options.tau), ndim, device)
            self._consts[key] = kc
        return kc

    def layer_options(self, name: str) -> ImportanceOptions:
        """The importance options of layer ``name``: ``options`` with the layer's τ, if one is set."""
        opts = self._layer_opts.get(name)
        if opts is None:
            tau = self.taus.get(name)
            opts = self._layer_opts[name] = self.options if tau is None else replace(self.options, tau=tau)
        return opts

    def resolve(self, device: torch.device | str) -> str:
        """Fix and return the implementation used from now on (``"compile"``, ``"eager"`` or
        ``"reference"``)."""
        if self.mode is None:
            self.mode = resolve_fused_mode(self.requested, device, self.work)
        return self.mode

    def term(self, name: str, student: torch.Tensor, teacher: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"layer {name!r}: student shape {tuple(student.shape)} differs from the teacher's "
                             f"{tuple(teacher.shape)}")
        opts = self.layer_options(name)
        if opts.needs_gradients and grad is None:
            raise ValueError(f"criteria={opts.criteria!r} with tau={opts.tau:g} needs the teacher's gradient for layer {name!r}")
        dev = teacher.device
        mode = self.resolve(dev)
        if mode == "reference":
            with torch.autocast(device_type=dev.type, enabled=False):  # always float32, as the fused forms
                g = grad if opts.needs_gradients else None
                return importance.layer_clone_loss(student, teacher, g, self.stats[name], opts)
        kc = self._constants(name, teacher.ndim, dev)
        with torch.autocast(device_type=dev.type, enabled=False):  # always float32
            t = teacher.detach().float()
            g = None if grad is None or not opts.needs_gradients else grad.detach().float()
            if g is not None and opts.impact == "scaled":  # the kernels multiply g by kg = τσ: divide by spread(σg) first
                g = g * (kc.tau / importance.scaled_impact_divisor(g * kc.kg))
            zabs, iabs = opts.zscore == "abs", opts.impact == "abs"
            if mode == "compile" and kc.tau > 0:
                try:
                    return self._compiled_term(student, t, g, kc, opts.criteria, zabs, iabs)
                except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so once
                    self.mode = "eager"
                    self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    warnings.warn(
                        f"medic_viz: torch.compile of the fused MEDIC loss failed ({self.fallback_reason}); "
                        "using the eager implementation (same numbers, slower). Set fused='eager' to skip compiling.",
                        RuntimeWarning,
                        stacklevel=2,
                    )

            def impl(s: torch.Tensor, t: torch.Tensor, g: torch.Tensor | None, kc: LayerConstants, crit: str, za: bool,
                     ia: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
                return _eager_forward(t, g, s.float(), kc, crit, za, ia)

            return _FusedTerm.apply(student, impl, t, g, kc, opts.criteria, zabs, iabs)

    def _compiled_term(self, student: torch.Tensor, t: torch.Tensor, g: torch.Tensor | None, kc: LayerConstants,
                       criteria: str, zabs: bool, iabs: bool) -> torch.Tensor:
        import torch._dynamo as dynamo

        rows = kc.rows(t)
        fn = _compiled_kernel((criteria, zabs, iabs, t.device.type, rows[0].shape[1]))

        def impl(s: torch.Tensor, t: torch.Tensor, g: torch.Tensor | None, kc: LayerConstants, crit: str, za: bool,
                 ia: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            flat = [_as_rows(v, t) for v in (t, g, s.float())]
            if t.shape[0] > 1:  # the batch size may change (last batch) without recompiling
                for v in flat:
                    if v is not None:
                        dynamo.maybe_mark_dynamic(v, 0)
            term, we, c = fn(*flat, *rows, crit, za, ia)
            return term, _from_rows(we, t), c

        return _FusedTerm.apply(student, impl, t, g, kc, criteria, zabs, iabs)


def _channels_last(t: torch.Tensor) -> bool:
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if _channels_last(t) else torch.contiguous_format


@overload
def _as_rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor: ...
@overload
def _as_rows(v: None, like: torch.Tensor) -> None: ...
def _as_rows(v: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``(B, N)`` view of ``v`` in ``like``'s memory order (channels-last kept as such)."""
    if v is None:
        return None
    if _channels_last(like):
        return v.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(v.shape[0], -1)
    return v.contiguous().reshape(v.shape[0], -1)


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_as_rows`: a ``like``-shaped view of ``rows``."""
    if _channels_last(like):
        b, c, h, w = like.shape
        return rows.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return rows.reshape(like.shape)


def fused_layer_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    grad: torch.Tensor | None,
    stats: LayerStats,
    options: ImportanceOptions,
    *,
    mode: str = "eager",
) -> torch.Tensor:
    """One layer's cloning term ``mean_b Σ w·((t − s)/σ)²`` in one call (differentiable in
    ``student``; ``grad`` — the teacher's ∂ℓ/∂t — is not modified). For many calls use
    :class:`FusedCloneLoss`, which caches the per-layer constants and the compiled kernels;
    ``mode="reference"`` is :func:`medic_viz.importance.layer_clone_loss`."""
    loss = FusedCloneLoss({"layer": stats}, options, mode)
    return loss.term("layer", student, teacher, None if grad is None else grad.clone())
