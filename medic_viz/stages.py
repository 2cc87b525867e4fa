"""The order a model computes in, from one dummy forward pass — what MEDIC's layer presets cut at.

:func:`forward_trace` runs one fixed-seed input through a model and records, in forward order,
the modules that ran (first call only) with the spatial size of their output, and where
tensors computed from the input were merged (a residual add, a concatenation, a gate's
product). :func:`last_stage_start` reads the model's last stage off that trace. Neither
depends on module names or on how the model is wrapped: ``nn.Sequential(normalize, model)``, the
importer's ``NormalizedModel`` and a ``torch.fx`` trace of a model give the same trace up to the
names' prefix.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = ["LayerTrace", "forward_trace", "last_stage_start", "DEFAULT_TRACE_SIZE"]

#: Side of the dummy input when neither the caller nor the model (a zoo model's ``zoo_config``)
#: says what the model is run at: the zoo's smallest size.
DEFAULT_TRACE_SIZE = 32


class LayerTrace(NamedTuple):
    """What one dummy forward pass shows of a model (see :func:`forward_trace`).

    ``order``: the recorded modules that ran, in the order of their first call, each with the
    spatial size of its output (``()`` for a dense output). ``merges``: the positions in that
    order (``i`` = after ``i`` modules had returned) and spatial sizes of the operations that
    combined two or more different tensors computed from the input (a residual add,
    ``torch.cat``, a gate's product); operations with parameters, buffers or constants do not
    count."""

    order: tuple[tuple[str, tuple[int, ...]], ...]
    merges: tuple[tuple[int, tuple[int, ...]], ...]


def _flat_tensors(obj: object, out: list) -> list:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _flat_tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _flat_tensors(o, out)
    return out


class _MergeWatch(TorchFunctionMode):
    """Marks every tensor computed from the dummy input and notes the operations that take two
    or more different such tensors (weak references only: nothing is kept alive)."""

    def __init__(self, x: torch.Tensor, clock: list[int], merges: list) -> None:
        super().__init__()
        self.derived: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary({id(x): x})
        self.clock = clock
        self.merges = merges

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        seen = {id(t) for t in _flat_tensors((args, kwargs), []) if self.derived.get(id(t)) is t}
        if seen:
            outs = _flat_tensors(out, [])
            for t in outs:
                self.derived[id(t)] = t
            if len(seen) >= 2 and outs:
                self.merges.append((self.clock[0], tuple(outs[0].shape[2:])))
        return out


#: Per model: {(input shape, device, dtype, module structure): LayerTrace}.
_TRACES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, LayerTrace]]" = weakref.WeakKeyDictionary()


def _trace_input_shapes(model: nn.Module, input_shape: Sequence[int] | None) -> list[tuple[int, ...]]:
    """The input shapes to try, best guess first."""
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"input_shape must be one input's (channels, *spatial), e.g. (3, 32, 32); got {tuple(input_shape)}")
        return [shape]
    for m in model.modules():  # a zoo model, wrapped or not, says what it is run at
        cfg = getattr(m, "zoo_config", None)
        if isinstance(cfg, dict) and isinstance(cfg.get("in_channels"), int) and isinstance(cfg.get("input_size"), int):
            return [(cfg["in_channels"], cfg["input_size"], cfg["input_size"])]
    # else a convolution's input channels (fewest first: an image has fewer than the features)
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)
             and not isinstance(m, nn.modules.lazy.LazyModuleMixin)]
    shapes = sorted({(m.in_channels,) + (DEFAULT_TRACE_SIZE,) * len(m.kernel_size) for m in convs})[:3]
    if not shapes:
        raise ValueError(f"cannot tell which input {type(model).__name__} takes; pass input_shape=(channels, height, width)")
    return shapes


def forward_trace(model: nn.Module, input_shape: Sequence[int] | None = None, *,
                  types: tuple[type[nn.Module], ...] | None = None) -> LayerTrace:
    """Run one dummy input through ``model`` (batch 1, eval mode, no grad, a fixed-seed uniform
    image of ``input_shape`` = ``(channels, *spatial)``; default: a zoo model's ``zoo_config``,
    else the fewest input channels of any convolution, then the next fewest, at
    :data:`DEFAULT_TRACE_SIZE` px) and return its
    :class:`LayerTrace` of the modules of ``types`` (default: every module without children).
    Hooks are removed and every module's train/eval mode restored also when
    the forward raises (then ``ValueError`` naming the input shape). The global RNG is not
    touched; a model with uninitialised lazy modules is traced on a copy. Cached per model,
    input shape and module structure."""
    first: ValueError | None = None
    for shape in _trace_input_shapes(model, input_shape):
        try:
            return _forward_trace(model, shape, types)
        except ValueError as exc:
            first = first or exc
    assert first is not None
    raise first


def _forward_trace(model: nn.Module, shape: tuple[int, ...], types: tuple[type[nn.Module], ...] | None) -> LayerTrace:
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    key = (shape, str(device), dtype, types, tuple((n, type(m)) for n, m in model.named_modules()))
    cached = _TRACES.get(model, {}).get(key)
    if cached is not None:
        return cached
    target = model
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params() for m in model.modules()):
        target = copy.deepcopy(model)  # a forward would initialise them
    names = {m: n for n, m in reversed(list(target.named_modules()))
             if n and (isinstance(m, types) if types is not None else not next(m.children(), None))}
    clock = [0]
    order: list[tuple[str, tuple[int, ...]]] = []
    merges: list[tuple[int, tuple[int, ...]]] = []
    done: set[str] = set()

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names[module]
        if name in done:  # a module called twice counts where it first ran
            return
        done.add(name)
        outs = _flat_tensors(output, [])
        order.append((name, tuple(outs[0].shape[2:]) if outs else ()))
        clock[0] = len(order)

    modes = [(m, m.training) for m in target.modules()]
    handles = []
    try:
        for m in names:
            handles.append(m.register_forward_hook(hook))
        target.eval()
        x = torch.rand((1,) + shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        try:
            with torch.no_grad(), _MergeWatch(x, clock, merges):
                target(x)
        except Exception as exc:
            raise ValueError(
                f"could not run a {shape} input through {type(model).__name__} to find its layers' order "
                f"({type(exc).__name__}: {exc}); pass input_shape=(channels, height, width) of the images it takes"
            ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    trace = LayerTrace(tuple(order), tuple(merges))
    _TRACES.setdefault(model, {})[key] = trace
    return trace


def last_stage_start(trace: LayerTrace, convs: list[int], *, plain_by_resolution: bool = False) -> int:
    """Position (in ``trace.order``; ``convs``: the convolutions' positions there, two or more)
    where the model's last stage begins: the first module after
    the last merge that ran before the last convolution at a coarser resolution than the last
    convolution's output — WRN's ``block3``, a ResNet's ``layer4`` — unless no such merge comes
    after the second convolution (a network without skip connections: small_cnn, VGG,
    MobileNet-V1); then the last convolution itself, or with ``plain_by_resolution`` the first
    module whose output has the last convolution's resolution (VGG-11's and MobileNet-V1's 2×2
    convolutions) if that leaves the first two convolutions before it."""
    last = convs[-1]
    final = math.prod(trace.order[last][1])
    coarser = [pos for pos, size in trace.merges if pos <= last and len(size) and math.prod(size) > final]
    start = coarser[-1] if coarser else -1
    # the stage must leave the first two convolutions before it (else it is the whole body)
    if start > convs[1]:
        return start
    if plain_by_resolution:
        same = next(pos for pos, (_, size) in enumerate(trace.order) if pos <= last and size == trace.order[last][1])
        if same > convs[1]:
            return same
    return last
