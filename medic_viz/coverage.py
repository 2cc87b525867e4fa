"""What MEDIC's cloning loss reaches: the parameters upstream of at least one hooked layer get
a pull towards the teacher; every other parameter (the layers after the last hooked output,
the classifier) learns from the clean labels alone.

With plenty of clean data that costs nothing; with scarce or hard data the label-only part is
where accuracy is lost (issue 27: a third party's WRN-16-1 on natural photographs lost 15
points with the default cut, which leaves WRN's last stage — about three quarters of its
parameters — to 2,500 labels). :func:`cloning_coverage` measures it exactly, from the autograd
graph of one dummy forward pass (no module names, so a wrapped model gives the same answer).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, cast

import torch
import torch.nn as nn

from medic_viz.capture import eval_mode

__all__ = ["CloningCoverage", "cloning_coverage", "coverage_record", "LABEL_ONLY_WARNING_SHARE"]

#: Above this share of parameters learned from labels alone, a run says so.
LABEL_ONLY_WARNING_SHARE = 0.5


class CloningCoverage(NamedTuple):
    """``matched``: number of parameters (elements) upstream of a hooked layer; ``label_only``:
    the rest; ``share_label_only``: ``label_only / (matched + label_only)``;
    ``label_only_modules``: names of the modules holding label-only parameters, in model order
    (only the outermost module whose every parameter is label-only is named)."""

    matched: int
    label_only: int
    share_label_only: float
    label_only_modules: tuple[str, ...]

    def summary(self) -> str:
        """One line: how much of the model the clean labels alone train."""
        names = ", ".join(self.label_only_modules[:6]) + (" …" if len(self.label_only_modules) > 6 else "")
        return (f"{100 * self.share_label_only:.0f} % of the parameters ({self.label_only:,} of "
                f"{self.matched + self.label_only:,}) are after every hooked layer and learn from the clean labels "
                f"alone" + (f" ({names})" if names else ""))


def _outermost(model: nn.Module, label_only: set[int]) -> tuple[str, ...]:
    names: list[str] = []
    for name, module in model.named_modules():
        params = [p for p in module.parameters()]
        if not name or not params or not all(id(p) in label_only for p in params):
            continue
        if any(name.startswith(n + ".") for n in names):
            continue
        names.append(name)
    return tuple(names)


def cloning_coverage(model: nn.Module, layers: Sequence[str], input_shape: Sequence[int]) -> CloningCoverage:
    """Which parameters of ``model`` the cloning loss on the outputs of ``layers`` (module
    names) reaches, from one forward pass of a fixed random input of ``input_shape``
    (``(C, H, W)``) in eval mode (no running statistics change) and one backward of a random
    projection of the hooked outputs. A parameter is matched when the autograd graph connects
    it to a hooked output. Shared parameters count once."""
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"no module named {missing[0]!r} in the model; hookable names: medic_viz.capture.hookable_layers")
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output)

    handles = [modules[n].register_forward_hook(keep) for n in layers]
    try:
        generator = torch.Generator().manual_seed(0)
        device = params[0].device if params else torch.device("cpu")
        x = torch.rand((1, *map(int, input_shape)), generator=generator).to(device)
        with eval_mode(model), torch.enable_grad():
            model(x)
            if not outputs:
                raise ValueError("none of the hooked layers ran in a forward pass; check the layer names")
            loss = cast(torch.Tensor, sum((o.float() * torch.randn(o.shape, generator=generator).to(o.device)).sum()
                                          for o in outputs))  # outputs is not empty (checked above)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        outputs.clear()
    label_only = {id(p) for p, g in zip(params, grads) if g is None}
    n_label_only = sum(p.numel() for p in params if id(p) in label_only)
    n_matched = sum(p.numel() for p in params if id(p) not in label_only)
    total = n_matched + n_label_only
    return CloningCoverage(n_matched, n_label_only, n_label_only / total if total else 0.0,
                           _outermost(model, label_only))


def coverage_record(teacher: nn.Module, layers: Sequence[str], image_shape: Sequence[int], n_images: int) -> dict:
    """What a MEDIC run records of its coverage: ``label_only_share``, ``label_only_modules``
    and, above :data:`LABEL_ONLY_WARNING_SHARE`, a one-line ``coverage_note`` (shown by the CLI
    and the run views); ``n_images``: the clean images the run trains on."""
    coverage = cloning_coverage(teacher, layers, image_shape)
    record: dict = {"label_only_share": round(coverage.share_label_only, 4),
                    "label_only_modules": list(coverage.label_only_modules)}
    if coverage.share_label_only > LABEL_ONLY_WARNING_SHARE:
        record["coverage_note"] = (f"{coverage.summary()}, here {n_images:,} clean images: with scarce or hard "
                                   "data that part can cost clean accuracy (layers='conv+bn' clones every "
                                   "conv/norm output; holdout_fraction=0.1 measures the cost on clean data)")
    return record
