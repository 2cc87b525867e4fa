"""Weights into a model: keys, shapes and dtypes checked before anything is copied.

:func:`load_weights_into` copies a state_dict (or a file read by
:func:`medic_viz.checkpoints.load_state_dict_file`) into a model strictly; weights that do not
fit the architecture raise :class:`CheckpointMismatchError` naming the missing, unexpected and
mis-shaped keys (:func:`mismatch_report`), and the target model is left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medic_viz import limits
from medic_viz.checkpoints import load_state_dict_file, strip_prefixes

__all__ = ["CheckpointMismatchError", "mismatch_report", "load_weights_into"]


class CheckpointMismatchError(ValueError):
    """A state_dict's keys or tensor shapes do not fit the model it is loaded into."""


def mismatch_report(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    strict: bool,
) -> str | None:
    """Describe how ``state_dict`` fails to fit ``model`` (None when it fits)."""
    expected = model.state_dict()
    # torch fills a missing BatchNorm ``num_batches_tracked`` itself; do not report it.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    shape_errors: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    dtype_errors: list[str] = []
    not_tensors: list[str] = []
    for key, value in state_dict.items():
        target = expected.get(key)
        if not isinstance(value, torch.Tensor):
            not_tensors.append(f"{key} ({type(value).__name__})")
        elif isinstance(target, torch.Tensor):
            if value.shape != target.shape:
                shape_errors.append((key, tuple(value.shape), tuple(target.shape)))
            elif target.is_floating_point() and not value.is_floating_point():
                # load_state_dict would cast 0/1 ints or bools into float weights without a word
                dtype_errors.append(f"{key}: checkpoint {str(value.dtype).removeprefix('torch.')} vs model "
                                    f"{str(target.dtype).removeprefix('torch.')}")
    if not shape_errors and not dtype_errors and not not_tensors and (not strict or (not missing and not unexpected)):
        return None

    lines = [f"checkpoint does not fit the model ({type(model).__name__}):"]
    if strict and missing:
        lines.append(f"  {len(missing)} missing key(s) (in the model, not in the checkpoint): {limits.listed(missing)}")
    if strict and unexpected:
        lines.append(
            f"  {len(unexpected)} unexpected key(s) (in the checkpoint, not in the model): {limits.listed(unexpected)}"
        )
    if shape_errors:
        described = [f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in shape_errors]
        lines.append(f"  {len(shape_errors)} shape mismatch(es): " + "; ".join(described[:limits.MAX_LISTED_NAMES]))
        if len(described) > limits.MAX_LISTED_NAMES:
            lines[-1] += f"; … and {len(described) - limits.MAX_LISTED_NAMES} more"
    if dtype_errors:
        lines.append(
            f"  {len(dtype_errors)} weight(s) stored as integers or booleans where the model has floating-point "
            f"weights: {limits.listed(dtype_errors)}. Real trained weights are floats; the file is corrupted or was "
            "converted wrongly (it would load as a model that scores at chance)"
        )
    if not_tensors:
        lines.append(f"  {len(not_tensors)} entr(y/ies) that are not tensors: {limits.listed(not_tensors)}")

    hint = (
        "Likely fix: the weights come from a different architecture or number of classes; check "
        "`architecture` and `num_classes` in the model card (or the arguments of import_checkpoint / build_model)."
    )
    param_keys = [k for k, _ in model.named_parameters()]
    final_layer = param_keys[-1].rpartition(".")[0] if param_keys else None
    for key, ckpt_shape, model_shape in shape_errors:
        if key.rpartition(".")[0] == final_layer and ckpt_shape and model_shape and ckpt_shape[:1] != model_shape[:1]:
            hint += f" The checkpoint's final layer has {ckpt_shape[0]} outputs; the model has {model_shape[0]}."
            break
    if strict and any(k.startswith("normalize.") for k in missing + unexpected):
        hint += (
            " The `normalize.*` buffers differ: the model card's `normalize` (in-model normalisation) "
            "must match how the checkpoint was trained."
        )
    if strict and missing and unexpected and not (set(expected) & set(state_dict)):
        hint += " No key is shared at all: this checkpoint belongs to a different architecture."
    lines.append(hint)
    return "\n".join(lines)


def load_weights_into(
    model: nn.Module,
    state_dict_or_path: Mapping[str, torch.Tensor] | str | Path,
    *,
    strict: bool = True,
) -> nn.Module:
    """Copy weights (a state_dict, or a file read by :func:`load_state_dict_file`) into ``model``.

    Keys and shapes are checked *before* anything is copied, so on
    :class:`CheckpointMismatchError` the model is unchanged. With ``strict=False`` missing and
    unexpected keys are allowed, shape mismatches are not. Returns ``model`` (same object).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(state_dict_or_path, (str, Path)):
        state_dict: dict[str, Any] = load_state_dict_file(state_dict_or_path)
    elif isinstance(state_dict_or_path, Mapping):
        state_dict = strip_prefixes(dict(state_dict_or_path), model.state_dict().keys())
    else:
        raise TypeError(
            f"state_dict_or_path must be a state_dict (dict of tensors) or a file path, "
            f"got {type(state_dict_or_path).__name__}"
        )
    report = mismatch_report(model, state_dict, strict=strict)
    if report is not None:
        raise CheckpointMismatchError(report)
    model.load_state_dict(state_dict, strict=strict)
    return model
