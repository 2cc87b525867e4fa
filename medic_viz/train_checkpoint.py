"""Resumable training: the whole state of a :func:`medic_viz.training.train` run at the end of an
epoch, in one file, so a run cut short (a killed process, the end of a session) goes on from its
last whole epoch and ends with the same model as a run never interrupted (on the same device and
thread count: CPU kernels are not bit-identical across thread counts).

What is saved: the model's state (parameters and buffers), the trainable parameters outside the
model, the optimiser and schedule, the data order and augmentation generator, torch's global
random streams (CPU, and CUDA when training there), the objective's own state, the step count,
the event history and the seconds spent. A checkpoint names the run it belongs to (its
``fingerprint``: the settings, the data and its content digest, the label, and the method's own
settings where the method adds them, :meth:`TrainCheckpoint.for_run`); loading one for another run
is refused.

The file is loaded with ``torch.load(weights_only=True)`` (no code runs) after a size check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["TrainCheckpoint", "CheckpointMismatchError", "CHECKPOINT_VERSION", "TRAINING_DIR"]

#: The hidden folder where the tool's long runs (the teacher cache, the grid runner) keep their
#: checkpoints while they train; removed when the last one is stored.
TRAINING_DIR = ".training"
#: The layout of the saved state; a file of another version is refused.
CHECKPOINT_VERSION = 1
#: Bytes a checkpoint may take beyond 8 times its parameters' bytes (weights + optimiser moments).
_SLACK_BYTES = 64 * 2**20


class CheckpointMismatchError(ValueError):
    """The checkpoint file belongs to another run (other settings, data or model)."""


class TrainCheckpoint:
    """One training run's epoch-end state at ``path`` (a ``.pt`` file; its folder is created).

    ``train(..., checkpoint=TrainCheckpoint(path))`` resumes from the file when it exists and
    writes it after every epoch (atomically: a file is whole or absent). The caller removes it
    (:meth:`remove`) once the result is safely stored."""

    def __init__(self, path: str | Path, run: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix != ".pt":
            raise ValueError(f"a training checkpoint is a .pt file, got {str(self.path)!r}")
        self.run: dict[str, Any] = dict(run or {})

    def for_run(self, run: Mapping[str, Any]) -> "TrainCheckpoint":
        """The same file, tied also to ``run`` (a method's own settings that the training
        settings do not hold, e.g. MEDIC's ε and layers): a file saved with other values is
        refused. Callables are named by module and qualified name."""
        return TrainCheckpoint(self.path, {**self.run, **run})

    def _with_run(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        return {**fingerprint, "run": self.run} if self.run else fingerprint

    def __repr__(self) -> str:
        return f"TrainCheckpoint({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, strings, lists and dicts of them) for the run
        ``fingerprint`` (JSON-able); replaces the previous epoch's file in one step."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            torch.save({"version": CHECKPOINT_VERSION, "fingerprint": _canonical(self._with_run(fingerprint)), "state": state},
                       tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, fingerprint: dict[str, Any], parameter_bytes: int) -> dict[str, Any] | None:
        """The saved state of the run ``fingerprint``, or None when there is no file. Refuses
        (:class:`CheckpointMismatchError`) a file of another run or version, and (ValueError) one
        larger than 8 × ``parameter_bytes`` + 64 MiB or one torch cannot read as plain data."""
        if not self.exists():
            return None
        size = self.path.stat().st_size
        limit = 8 * int(parameter_bytes) + _SLACK_BYTES
        if size > limit:
            raise ValueError(f"{self.path}: {size} bytes, more than a checkpoint of this model can hold "
                             f"({limit}); delete it to train from the start")
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — a damaged or foreign file: one line, what to do
            raise ValueError(f"{self.path}: not a readable training checkpoint ({type(exc).__name__}); "
                             "delete it to train from the start") from None
        if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
            raise CheckpointMismatchError(f"{self.path}: not a version-{CHECKPOINT_VERSION} training checkpoint; "
                                          "delete it to train from the start")
        if saved.get("fingerprint") != _canonical(self._with_run(fingerprint)):
            raise CheckpointMismatchError(f"{self.path}: a checkpoint of another run (other settings, data or model); "
                                          "delete it to train from the start")
        state = saved.get("state")
        if not isinstance(state, dict):
            raise CheckpointMismatchError(f"{self.path}: holds no training state; delete it to train from the start")
        return state

    def remove(self) -> None:
        """Delete the file (when the run's result is stored)."""
        self.path.unlink(missing_ok=True)


def _canonical(fingerprint: dict[str, Any]) -> str:
    """``fingerprint`` as sorted JSON (compared as text: tuples and lists alike)."""
    return json.dumps(fingerprint, sort_keys=True, default=_named)


def _named(value: Any) -> str:
    """A value JSON cannot hold, as text that is the same in every process (a function by its
    module and qualified name, not its address)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return str(value)
