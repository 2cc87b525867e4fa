"""Checks on a checkpoint file around the restricted loader, for :func:`medic_viz.io.load_state_dict_file`.

* :func:`sniff_format` names the format from the first bytes (never from the file name);
* :func:`check_safetensors_header` and :func:`check_torch_zip` bound the sizes a file declares
  (:data:`~medic_viz.limits.MAX_TENSOR_BYTES`, :data:`~medic_viz.limits.MAX_CHECKPOINT_BYTES`)
  before any tensor is read, and refuse TorchScript archives;
* :func:`check_loaded_tensors` refuses sparse tensors and views whose storage is smaller than the
  tensor (stride-0 or overlapping: a 1-float file posing as a 30000x30000 matrix) before
  anything copies them;
* :func:`numpy_scalar_globals` lets torch's safe loader read numpy *scalars* (``best_acc``
  saved as ``np.float64``) as plain Python numbers, through inert stand-ins: no numpy
  constructor runs, and only numeric dtypes are accepted.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from medic_viz import limits

__all__ = [
    "sniff_format",
    "check_safetensors_header",
    "check_torch_zip",
    "check_legacy_torch",
    "check_loaded_tensors",
    "numpy_scalar_globals",
]

#: Largest safetensors JSON header read (the safetensors library's own limit is 100 MB).
_MAX_HEADER_BYTES = 100 * 2**20
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
_STORAGE_ITEMSIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
                     "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}
#: numpy type codes a checkpoint's scalar metadata may use (numbers and booleans only).
_NUMPY_CODES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
_RESAVE = "re-save the weights alone with `torch.save(model.state_dict(), path)`"


def sniff_format(path: Path) -> str:
    """"empty", "safetensors", "zip" (torch.save), "pickle" (legacy torch.save / raw pickle) or "unknown"."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if size == 0:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def check_safetensors_header(path: Path) -> None:
    """Bound every tensor a safetensors header declares, before the library reads any of them."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > min(_MAX_HEADER_BYTES, os.path.getsize(path) - 8):
            raise ValueError(f"{path}: the safetensors header declares {n:,} bytes, more than the file or "
                             f"{_MAX_HEADER_BYTES:,} allow; the file is truncated or corrupted")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid safetensors file (its header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a valid safetensors file (its header is not a JSON object)")
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        shape, itemsize = entry.get("shape"), _SAFETENSORS_ITEMSIZE.get(str(entry.get("dtype")), 8)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"{path}: not a valid safetensors file (tensor {limits.quoted(name)} has shape "
                             f"{limits.quoted(shape)})")
        nbytes = int(np.prod(shape, dtype=object)) * itemsize
        total += nbytes
        limits.check_tensor_bytes(nbytes, total, str(path), name)


def _is_torchscript(names: list[str]) -> bool:
    return any(n.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in n for n in names)


def check_torch_zip(path: Path) -> None:
    """Refuse a TorchScript archive, and bound the uncompressed size of a torch.save zip's records."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (a damaged zip archive: {exc}); "
                         "download or save it again") from None
    if _is_torchscript([i.filename for i in infos]):
        raise ValueError(f"{path}: a TorchScript archive (torch.jit.save), which medic_viz does not read; "
                         "load it where you trust it (torch.jit.load) and " + _RESAVE)
    total = 0  # the storages (records under data/); every record, the pickle too, is bounded alone
    for info in infos:
        total += info.file_size if "/data/" in info.filename else 0
        limits.check_tensor_bytes(info.file_size, total, str(path), info.filename)


def check_legacy_torch(path: Path) -> None:
    """Bound the storages a legacy (pre-zip) torch.save file declares, read statically from its
    pickles without executing anything: torch allocates each declared storage before reading it,
    and all their bytes must be in the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        stream = io.BytesIO(fh.read(min(size, 64 * 2**20)))
    storages: list[tuple[str, int]] = []
    total, pending, args = 0, None, []  # pending: a storage type seen; args: its key, location, numel
    for _ in range(5):  # magic, protocol, sys info, the objects, the storage keys
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL" and str(arg).startswith("torch ") and str(arg).endswith("Storage"):
                    pending, args = str(arg)[6:-7], []
                elif pending is not None and arg is not None and op.name not in ("BINPUT", "LONG_BINPUT", "PUT"):
                    args.append(arg)
                    if len(args) == 3:
                        numel = args[2] if isinstance(args[2], int) else 0
                        storages.append((str(args[0]), numel * _STORAGE_ITEMSIZE.get(pending, 1)))
                        pending = None
        except Exception:  # noqa: BLE001 - undecodable: torch.load reports it
            break
        if stream.tell() >= len(stream.getbuffer()):
            break
    for name, nbytes in storages:
        total += nbytes
        limits.check_tensor_bytes(nbytes, total, str(path), name)
    if total > size:
        raise ValueError(f"{path}: the checkpoint declares {total:,} bytes of tensors but the file holds {size:,}; "
                         "it is truncated, corrupted or hostile: download or save it again")


def check_loaded_tensors(state_dict: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse sparse tensors, tensors over the limits, and views whose storage is smaller than the
    tensor (stride 0 or overlapping), before anything copies them."""
    total = 0
    for name, tensor in state_dict.items():
        if tensor.layout != torch.strided:
            raise ValueError(f"{path}: tensor {limits.quoted(name)} is {str(tensor.layout).replace('torch.', '')} "
                             "(not a dense array of weights); convert it with `.to_dense()` before saving, e.g. "
                             "`torch.save({k: v.to_dense() for k, v in state_dict.items()}, path)`")
        nbytes = tensor.numel() * tensor.element_size()
        total += nbytes
        limits.check_tensor_bytes(nbytes, total, str(path), name)
        if tensor.numel() > 1 and (
            tensor.untyped_storage().nbytes() < nbytes
            or any(st == 0 and sz > 1 for st, sz in zip(tensor.stride(), tensor.shape))
        ):
            raise ValueError(f"{path}: tensor {limits.quoted(name)} of shape {tuple(tensor.shape)} is a view with "
                             f"stride {tensor.stride()} over {tensor.untyped_storage().nbytes():,} stored bytes "
                             "(overlapping or stride-0 elements); weights never look like that: the file is "
                             f"corrupted or hostile; {_RESAVE}")


class _NumpyDType:
    """Inert stand-in for ``numpy.dtype`` while unpickling: a numeric type code, nothing else."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = False) -> None:
        if not isinstance(code, str) or code not in _NUMPY_CODES:
            raise pickle.UnpicklingError(f"numpy dtype {limits.quoted(code)} is not a plain number type")
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] == ">":
            self.dtype = self.dtype.newbyteorder(">")


def _numpy_scalar(dtype: Any, data: Any = None) -> bool | int | float:
    """Stand-in for ``numpy.core.multiarray.scalar``: the scalar as a plain Python number."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype.dtype)[0].item()


def numpy_scalar_globals() -> list[tuple[Callable[..., Any], str]]:
    """Entries for ``torch.serialization.safe_globals``: numpy scalars become Python numbers."""
    return [(_NumpyDType, "numpy.dtype"), (_numpy_scalar, "numpy._core.multiarray.scalar"),
            (_numpy_scalar, "numpy.core.multiarray.scalar")]
