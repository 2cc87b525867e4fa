"""Activation capture: discover hookable layers and record what they return.

MEDIC's "neurons" are the outputs of every convolution, normalisation and fully-connected
module. :func:`hookable_layers` lists them by their qualified name in ``named_modules()``
(stable across two instances of the same architecture, which is how a teacher's layer is paired
with the student's). :func:`run_with_cache` runs a model once and returns an
:class:`ActivationCache` keyed by those names, optionally with the gradient of a loss with
respect to every captured activation.

Hooks are registered inside ``try`` and removed in ``finally``: no hook outlives a call, whether
it returns, gets a bad argument, or the model raises. Captured values are exactly what each
module returned, even when an in-place op (``nn.ReLU(inplace=True)``, ``out += shortcut``)
later overwrites that tensor: the hook keeps the module's output and hands the rest of the
network a copy.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence, Union, cast

import torch
import torch.nn as nn

from medic_viz.stages import forward_trace, last_stage_start

__all__ = [
    "HOOKABLE_TYPES",
    "hookable_layers",
    "resolve_layers",
    "LAYER_PRESETS",
    "AUTO_ORDER",
    "LayerSpec",
    "LayerRecorder",
    "ActivationCache",
    "run_with_cache",
    "check_same_structure",
    "StructureMismatchError",
    "eval_mode",
    "train_mode",
]

#: Module types whose outputs MEDIC treats as neurons (paper, appendix D).
HOOKABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


class StructureMismatchError(ValueError):
    """Teacher and student (or a model and a list of layer names) do not line up."""


def hookable_layers(model: nn.Module, kinds: Sequence[str] = ("conv", "norm", "linear")) -> list[str]:
    """Qualified names of the conv / norm / linear modules of ``model``, in definition order.

    ``kinds`` selects a subset: any of ``"conv"``, ``"norm"``, ``"linear"``.
    """
    wanted = set(kinds)
    unknown = wanted - {"conv", "norm", "linear"}
    if unknown:
        raise ValueError(f"unknown layer kinds {sorted(unknown)}; use any of 'conv', 'norm', 'linear'")
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        kind = _kind(module)
        if kind is not None and kind in wanted:
            names.append(name)
    return names


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, HOOKABLE_TYPES):
        return "norm"
    return None


#: Named layer sets for MEDIC's hooked neurons (module kinds, see :func:`hookable_layers`).
#: ``"conv+bn"`` is the MEDIC authors' published removal command (``--hook-plane "conv+bn"``):
#: convolution and normalisation outputs, not the dense layers — in particular not the logits.
#: ``"conv+bn+linear"`` (alias ``"all"``) is the paper's text: every conv, norm and dense output.
#: ``"conv+bn-last"``: ``"conv+bn"`` without the model's last stage, found by running one dummy
#: input (:func:`medic_viz.stages.forward_trace`), not from module names: in a network with skip
#: connections everything computed after its last merge (residual add, concatenation …) at a coarser
#: resolution than the last convolution's output (WRN's ``block3``, a ResNet's ``layer4``); in a
#: network without one (small_cnn, VGG, MobileNet-V1) the last convolution and what follows: the
#: features the classifier reads. ``"conv+bn-inner"``: also without the first convolution and
#: what runs before the second one — the filters that see pixels (BENCHMARKS.md §3a–3b: cloning
#: either end carries the backdoor back). ``"conv+bn-inner-res"`` (tried by issue 27's rule 4, not
#: adopted: BENCHMARKS.md §6): ``"conv+bn-inner"`` where a network without skip connections loses every layer at the
#: last convolution's resolution (VGG-11's and MobileNet-V1's 2×2 stage), not only the last
#: convolution. "First", "second", "last" and "after" are forward order.
#: ``"auto"``, MEDIC's default: ``"conv+bn-inner"``, or for a model with too few convolutions
#: the first of :data:`AUTO_ORDER` that selects anything. Wrapping a model (``nn.Sequential(
#: normalize, model)``, the importer's ``NormalizedModel``) or tracing it with ``torch.fx`` does
#: not change which modules these presets select.
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "conv+bn": ("conv", "norm"),
    "conv+bn+linear": ("conv", "norm", "linear"),
    "all": ("conv", "norm", "linear"),
    "conv+bn-last": ("conv", "norm"),
    "conv+bn-inner": ("conv", "norm"),
    "conv+bn-inner-res": ("conv", "norm"),
    "auto": ("conv", "norm", "linear"),
}

#: Presets cut at the model's convolutions: (drop up to the 2nd convolution?, drop from the last stage?).
_PRESET_CUTS: dict[str, tuple[bool, bool, bool]] = {
    "conv+bn-last": (False, True, False), "conv+bn-inner": (True, True, False), "conv+bn-inner-res": (True, True, True)}


#: ``"auto"`` (MEDIC's default): the first of these presets that selects a layer — so a model
#: with fewer than three convolutions still gets a layer set (the result records which).
AUTO_ORDER: tuple[str, ...] = ("conv+bn-inner", "conv+bn-last", "conv+bn", "conv+bn+linear")


def _preset_layers(model: nn.Module, preset: str, input_shape: Sequence[int] | None = None) -> list[str]:
    if preset == "auto":
        for candidate in AUTO_ORDER:
            names = _preset_layers(model, candidate, input_shape)
            if names:
                return names
        return []
    names = hookable_layers(model, LAYER_PRESETS[preset])
    if preset not in _PRESET_CUTS:
        return names
    drop_first, drop_last, by_resolution = _PRESET_CUTS[preset]
    need = 2 + int(drop_first)
    modules = dict(model.named_modules())
    if sum(_kind(modules[n]) == "conv" for n in names) < need:
        return []  # too few convolutions: no need to run the model
    trace = forward_trace(model, input_shape, types=HOOKABLE_TYPES)
    position = {n: i for i, (n, _) in enumerate(trace.order)}
    convs = [i for i, (n, _) in enumerate(trace.order) if _kind(modules[n]) == "conv"]
    if len(convs) < need:
        return []
    lo = convs[1] if drop_first else 0
    hi = last_stage_start(trace, convs, plain_by_resolution=by_resolution) if drop_last else len(trace.order)
    return [n for n in names if n in position and lo <= position[n] < hi]  # in definition order


#: A layer selection: None (every hookable layer), a preset name, one module name, a sequence
#: of module names, or a predicate ``(name, module) -> bool`` over the hookable layers.
LayerSpec = Union[str, Iterable[str], Callable[[str, nn.Module], bool], None]


def resolve_layers(model: nn.Module, layers: LayerSpec, *, input_shape: Sequence[int] | None = None) -> list[str]:
    """Validate a layer selection against ``model`` and return the module names, in order.

    ``None`` means every hookable layer. A string is a preset of :data:`LAYER_PRESETS`
    (``"conv+bn"``, ``"conv+bn+linear"``, ``"all"``, ``"conv+bn-last"``, ``"conv+bn-inner"``) or a
    single module name; a sequence gives module names; a callable ``(name, module) -> bool`` picks among the hookable layers.
    Unknown names raise ``ValueError`` listing the presets and every hookable layer.
    ``input_shape``: one input's ``(channels, height, width)``, for the presets that cut at the
    model's stages (``"auto"``, ``"conv+bn-last"``, ``"conv+bn-inner"``: they run one dummy input,
    :func:`medic_viz.stages.forward_trace`); default: what a zoo model says, else 32 px.
    """
    if layers is None:
        names = hookable_layers(model)
        if not names:
            raise ValueError(
                f"{type(model).__name__} has no conv, norm or linear modules to capture; MEDIC needs "
                "a model built from nn.Conv*/nn.*Norm/nn.Linear submodules"
            )
        return names
    modules = dict(model.named_modules())
    if callable(layers) and not isinstance(layers, (str, bytes)):
        names = [n for n in hookable_layers(model) if layers(n, modules[n])]
        if not names:
            raise ValueError(f"the layer predicate selected none of {type(model).__name__}'s hookable layers {_listing(model)}")
        return names
    if isinstance(layers, str):
        if layers in LAYER_PRESETS and layers not in modules:
            names = _preset_layers(model, layers, input_shape)
            if not names:
                raise ValueError(f"layer preset {layers!r} selects no module of {type(model).__name__}; "
                                 f"hookable layers are: {_listing(model)}")
            return names
        layers = [layers]
    try:
        names = list(layers)
    except TypeError:
        raise ValueError(f"layers must be None, a preset {sorted(LAYER_PRESETS)}, module names or a predicate; "
                         f"got {layers!r}") from None
    if not names:
        raise ValueError(f"the layer selection is empty; give a preset {sorted(LAYER_PRESETS)} or module names")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"layer names must be strings, got {bad!r}")
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        raise ValueError(
            f"unknown layer name(s) {missing} for {type(model).__name__}; valid are the presets "
            f"{', '.join(repr(p) for p in LAYER_PRESETS)} or the hookable layers: {_listing(model)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"layer names repeat in {names}; give each layer once")
    return names


def _listing(model: nn.Module, limit: int = 200) -> str:
    available = hookable_layers(model)
    return ", ".join(available[:limit]) + (f" … ({len(available)} in all)" if len(available) > limit else "")


#: Per model and mode (train/eval): the layers whose outputs an in-place op overwrites later in
#: the forward pass (learned on the first recorded forward, see ``protect_inplace="auto"``).
_INPLACE_TARGETS: "weakref.WeakKeyDictionary[nn.Module, dict[bool, dict[str, bool]]]" = weakref.WeakKeyDictionary()


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


class LayerRecorder:
    """Context manager that records the outputs of named modules during forward passes.

    Inside ``with LayerRecorder(model, names) as rec:`` every forward of ``model`` fills
    ``rec.outputs[name]`` with the tensor that module returned (a module called twice in one
    forward raises, since a neuron must have one value per input).

    ``make_leaf``: the first recorded output that does not require grad is turned into a leaf
    that does, so that ``torch.autograd.grad(loss, rec.tensors())`` works on a frozen model
    without computing weight or input gradients.
    ``protect_inplace``: hand downstream modules a copy, so an in-place op after the module
    cannot change the recorded value. ``True``: copy every layer's output. ``"auto"``
    (default): on the first recorded forward of a model (per train/eval mode) copy every
    output and watch the copies' version counters; from then on copy only the outputs that an
    in-place op (``ReLU(inplace=True)``, ``out += shortcut``) actually overwrote. ``False``:
    no copies (only safe for models without in-place ops).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        *,
        make_leaf: bool = False,
        protect_inplace: bool | Literal["auto"] = "auto",
    ) -> None:
        if protect_inplace not in (True, False, "auto"):
            raise ValueError(f"protect_inplace must be True, False or 'auto', got {protect_inplace!r}")
        self.model = model
        self.names = resolve_layers(model, names)
        self.make_leaf = make_leaf
        self.protect_inplace = protect_inplace
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._probes: dict[str, tuple[torch.Tensor, int | None]] = {}
        self._known: dict[str, bool] = {}

    def _needs_copy(self, name: str) -> bool:
        if self.protect_inplace is True:
            return True
        if self.protect_inplace is False:
            return False
        return self._known.get(name, True)  # unknown layers are copied (and probed)

    def _learn_inplace(self) -> None:
        """After a forward: remember which probed outputs an in-place op overwrote."""
        if self.protect_inplace != "auto" or not self._probes:
            return
        learned = {n: (v0 is None or _version(copy) != v0) for n, (copy, v0) in self._probes.items()}
        self._known = {**self._known, **learned}
        _INPLACE_TARGETS.setdefault(self.model, {})[self.model.training] = dict(self._known)
        self._probes = {}

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}, expected a tensor")
            if name in self.outputs:
                raise RuntimeError(
                    f"layer {name!r} ran twice in one forward pass; MEDIC needs one output per "
                    "module per input (use separate modules instead of reusing one), or call "
                    "LayerRecorder.clear() between forward passes"
                )
            if self.make_leaf and not output.requires_grad:
                output = output.detach().requires_grad_(True)
            self.outputs[name] = output
            if self._needs_copy(name):
                copy = output.clone()
                if self.protect_inplace == "auto" and name not in self._known:
                    self._probes[name] = (copy, _version(copy))
                return copy
            return output if self.make_leaf else None

        return hook

    def clear(self) -> None:
        self._learn_inplace()
        self.outputs = {}

    def tensors(self) -> list[torch.Tensor]:
        """Recorded outputs in ``names`` order (raises if a layer did not run)."""
        self._learn_inplace()
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass; are they used by forward()?")
        return [self.outputs[n] for n in self.names]

    def __enter__(self) -> "LayerRecorder":
        modules = dict(self.model.named_modules())
        if self.protect_inplace == "auto":
            self._known = dict(_INPLACE_TARGETS.get(self.model, {}).get(self.model.training, {}))
        try:
            for name in self.names:
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
        if exc[0] is None:
            self._learn_inplace()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class ActivationCache(Mapping[str, torch.Tensor]):
    """Dict-like ``{layer name: activation}`` from one forward pass, plus optional gradients.

    ``cache["layer1.0.conv1"]`` → activation tensor ``(B, C, H, W)`` (or ``(B, F)``);
    ``cache.grads[name]`` → ∂loss/∂activation of the same shape (if requested);
    ``cache.output`` → the model's output (logits).
    """

    def __init__(
        self,
        activations: dict[str, torch.Tensor],
        grads: dict[str, torch.Tensor] | None = None,
        output: torch.Tensor | None = None,
    ) -> None:
        self._acts = activations
        self.grads: dict[str, torch.Tensor] = grads or {}
        self.output = output

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._acts[name]
        except KeyError:
            raise KeyError(f"{name!r} not in cache; cached layers: {list(self._acts)[:12]}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    @property
    def has_grads(self) -> bool:
        return bool(self.grads)

    def to(self, device: str | torch.device) -> "ActivationCache":
        return ActivationCache(
            {k: v.to(device) for k, v in self._acts.items()},
            {k: v.to(device) for k, v in self.grads.items()},
            None if self.output is None else self.output.to(device),
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in list(self._acts.items())[:4])
        more = " …" if len(self._acts) > 4 else ""
        return f"ActivationCache({len(self)} layers{', with grads' if self.grads else ''}: {shapes}{more})"


def run_with_cache(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Iterable[str] | None = None,
    *,
    target: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    with_grads: bool = False,
) -> ActivationCache:
    """Run ``model(x)`` once and cache the outputs of ``layers`` (default: all hookable).

    ``x``: input batch ``(B, C, H, W)``. With ``with_grads=True`` also caches
    ∂loss/∂activation, where loss = ``loss_fn(logits, target)`` (default: cross-entropy summed
    over the batch, i.e. each sample's own gradient). Activations are detached copies; the
    model's mode (train/eval) and parameters' ``requires_grad`` are left as they were.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor batch, got {type(x).__name__}")
    if with_grads and target is None:
        raise ValueError("with_grads=True needs target= (the labels the loss is computed against)")
    names = resolve_layers(model, layers)
    rec = LayerRecorder(model, names, make_leaf=with_grads)
    with rec:
        if with_grads:
            with torch.enable_grad():
                out = model(x)
                fn = loss_fn or (lambda o, t: nn.functional.cross_entropy(o, t, reduction="sum"))
                loss = fn(out, cast(torch.Tensor, target))  # target is given with with_grads (checked above)
                acts = rec.tensors()
                grads = torch.autograd.grad(loss, acts, allow_unused=True)
            grad_map = {
                n: (torch.zeros_like(a) if g is None else g.detach()) for n, a, g in zip(names, acts, grads)
            }
        else:
            with torch.no_grad():
                out = model(x)
            acts = rec.tensors()
            grad_map = None
    return ActivationCache({n: a.detach() for n, a in zip(names, acts)}, grad_map, out.detach())


def check_same_structure(teacher: nn.Module, student: nn.Module, layers: Sequence[str] | None = None) -> None:
    """Raise :class:`StructureMismatchError` unless ``student`` has the teacher's structure:
    the same hookable layer names, module types and parameter shapes."""
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    names = list(layers) if layers is not None else hookable_layers(teacher)
    problems = []
    for n in names:
        if n not in s_mods:
            problems.append(f"student has no module {n!r}")
            continue
        if type(t_mods[n]) is not type(s_mods[n]):
            problems.append(f"{n}: teacher {type(t_mods[n]).__name__} vs student {type(s_mods[n]).__name__}")
            continue
        for pn, tp in t_mods[n].named_parameters(recurse=False):
            sp = getattr(s_mods[n], pn, None)
            if sp is None or tuple(sp.shape) != tuple(tp.shape):
                problems.append(
                    f"{n}.{pn}: teacher shape {tuple(tp.shape)} vs student "
                    f"{None if sp is None else tuple(sp.shape)}"
                )
    extra = [n for n in hookable_layers(student) if n not in t_mods]
    problems += [f"student has extra layer {n!r}" for n in extra]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; … ({len(problems)} problems)" if len(problems) > 8 else "")
        raise StructureMismatchError(
            "MEDIC clones a model into one of the same structure, pairing layers by name, but the "
            f"student does not match the teacher: {shown}. Build the student with the teacher's "
            "architecture (or leave student=None to get a fresh copy of the teacher's structure)."
        )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in eval mode, restoring its previous mode afterwards (also when
    the block raises)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in train mode (e.g. to re-estimate BatchNorm statistics),
    restoring its previous mode afterwards (also when the block raises)."""
    was_training = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)
