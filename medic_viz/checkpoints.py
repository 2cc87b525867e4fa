"""Reading a third-party weights file safely: :func:`load_state_dict_file`, the only way medic_viz
reads a checkpoint (model folders' ``model.safetensors`` too, :mod:`medic_viz.io`).

Nothing in a file is executed: safetensors holds raw tensors; anything else is read with
``torch.load(..., weights_only=True)`` only. medic_viz never calls ``pickle.load`` and never
``torch.load(weights_only=False)``: a file that holds Python objects (which can execute code
while being unpickled) or a whole pickled ``nn.Module`` is refused with
:class:`UnsafeCheckpointError`, whose message says (from a static scan of its pickles) how to
convert the file in an environment you trust. Sizes are bounded before anything is allocated:

* :func:`sniff_format` names the format from the first bytes (never from the file name);
* :func:`check_safetensors_header` and :func:`check_torch_zip` bound the sizes a file declares
  (:data:`~medic_viz.limits.MAX_TENSOR_BYTES`, :data:`~medic_viz.limits.MAX_CHECKPOINT_BYTES`)
  before any tensor is read, and refuse TorchScript archives; :func:`check_legacy_torch` does the
  same for a legacy (pre-zip) torch.save file, read statically;
* :func:`check_loaded_tensors` refuses sparse tensors and views whose storage is smaller than the
  tensor (stride-0 or overlapping: a 1-float file posing as a 30000x30000 matrix) before
  anything copies them;
* :func:`numpy_scalar_globals` lets torch's safe loader read numpy *scalars* (``best_acc``
  saved as ``np.float64``) as plain Python numbers, through inert stand-ins: no numpy
  constructor runs, and only numeric dtypes are accepted.

Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and DataParallel /
torch.compile key prefixes removed (:func:`strip_prefixes`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from medic_viz import limits

__all__ = [
    "UnsafeCheckpointError",
    "load_state_dict_file",
    "strip_prefixes",
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
# Keys under which training scripts commonly nest the state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# Prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class UnsafeCheckpointError(ValueError):
    """A checkpoint would need arbitrary Python objects unpickled (code execution) to load."""



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
    total, pending = 0, None  # pending: a storage type seen; args: its key, location, numel
    args: list[Any] = []
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


def numpy_scalar_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """Entries for ``torch.serialization.safe_globals``: numpy scalars become Python numbers."""
    return [(_NumpyDType, "numpy.dtype"), (_numpy_scalar, "numpy._core.multiarray.scalar"),
            (_numpy_scalar, "numpy.core.multiarray.scalar")]


# --------------------------------------------------------------------------------------------
# Reading a checkpoint file
# --------------------------------------------------------------------------------------------

_STRING_OPS = frozenset(
    {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)

# Protocol-2 pickles name Python 3 modules by their Python 2 names.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _scan_pickle(data: bytes, globals_found: list[str], strings: set[str], max_pickles: int = 8) -> None:
    """Statically list the globals a pickle stream imports, WITHOUT executing anything.

    Uses :func:`pickletools.genops`, which only decodes opcodes. Follows consecutive pickles
    (torch's legacy format stores several) and stops silently at anything undecodable.
    """
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            return
        memo: dict[int, Any] = {}
        stack: list[Any] = []  # only strings matter; everything else is None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in _STRING_OPS:
                    value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                    stack.append(value)
                    if isinstance(value, str) and len(value) < 200:
                        strings.add(value)
                elif name in ("GLOBAL", "INST"):
                    module, _, qualname = str(arg).partition(" ")
                    globals_found.append(f"{_PY2_MODULES.get(module, module)}.{qualname}")
                    stack.append(None)
                elif name == "STACK_GLOBAL":
                    top_module, top_name = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                    top_module = _PY2_MODULES.get(top_module, top_module) if isinstance(top_module, str) else "?"
                    globals_found.append(f"{top_module}.{top_name if isinstance(top_name, str) else '?'}")
                    stack.append(None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1] if stack else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = stack[-1] if stack else None  # type: ignore[arg-type]  # PUT's arg: an int
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo.get(int(arg)))  # type: ignore[arg-type]  # GET's arg: an int
                elif name in ("PROTO", "FRAME", "MARK", "STOP"):
                    pass
                else:
                    stack.append(None)
                del stack[:-4]
        except Exception:  # noqa: BLE001 - best effort diagnostics only
            return


def _pickle_contents(path: Path) -> tuple[list[str], set[str]]:
    """Globals and short strings referenced by the pickle(s) in a torch checkpoint or raw pickle."""
    globals_found: list[str] = []
    strings: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".pkl") and info.file_size < 256 * 2**20:
                        _scan_pickle(archive.read(info), globals_found, strings, max_pickles=1)
        else:
            with open(path, "rb") as fh:
                _scan_pickle(fh.read(64 * 2**20), globals_found, strings)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        pass
    return globals_found, strings


def _is_plain_tensor_global(name: str) -> bool:
    """Globals that a checkpoint of plain tensors legitimately references."""
    if name == "collections.OrderedDict":
        return True
    if name.startswith(("torch.nn.", "torch.optim.")):
        return False
    return name.startswith("torch.")


_RESAVE_HINT = (
    "If you trust the file, re-save its weights in a trusted environment: load it there "
    "(torch.load(path, weights_only=False) only on a file you trust), then "
    "`torch.save(model.state_dict(), 'weights.pt')`, or convert to safetensors with "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`."
)


def _torch_reason(exc: BaseException) -> str:
    """The specific reason in torch's weights_only error (skipping its generic preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else type(exc).__name__)
    return lines[0] if lines else type(exc).__name__


def _unsafe_error(path: Path, cause: BaseException) -> UnsafeCheckpointError:
    """Explain why the restricted loader refused ``path``, using a static scan of its pickles."""
    globals_found, strings = _pickle_contents(path)
    module_classes = [g for g in globals_found if g.startswith("torch.nn.modules.")]
    looks_like_module = bool(module_classes) or {"_modules", "_parameters"} <= strings
    foreign = sorted({g for g in globals_found if not _is_plain_tensor_global(g)})
    if looks_like_module:
        classes = [g for g in foreign if not g.startswith("builtins.")]
        shown = ", ".join(classes[:5]) or "nn.Module classes"
        return UnsafeCheckpointError(
            f"{path}: the file is a whole pickled nn.Module ({shown}), not a state_dict. Loading it "
            "would unpickle arbitrary Python classes, which can execute code, so medic_viz refuses it; "
            "medic_viz only loads plain tensors. Save `model.state_dict()` instead of the model: "
            "`torch.save(model.state_dict(), path)` (or safetensors.torch.save_file(model.state_dict(), "
            "'model.safetensors')), in an environment where you trust the file. To convert this file, on a "
            "machine where you trust it (and have the code that defines its classes): "
            f"`model = torch.load({str(path)!r}, weights_only=False)`, then "
            "`torch.save(model.state_dict(), 'weights.pt')`, and import weights.pt."
        )
    if foreign and all(g.startswith(("numpy.", "_codecs.")) for g in foreign):
        kinds = ", ".join([limits.quoted(g) for g in foreign if g.startswith("numpy.")][:limits.MAX_LISTED_NAMES])
        return UnsafeCheckpointError(
            f"{path}: the file holds numpy objects ({kinds}) that torch's safe loader "
            "(torch.load(weights_only=True)) does not accept, beside or instead of the weights; medic_viz reads "
            "plain tensors (and numpy scalars) only: re-save the state dict alone with "
            "`torch.save(model.state_dict(), path)`, or convert numpy arrays to tensors first"
        )
    if foreign:
        most = limits.MAX_LISTED_NAMES
        listed = ", ".join(limits.quoted(g) for g in foreign[:most]) + (" …" if len(foreign) > most else "")
        return UnsafeCheckpointError(
            f"{path}: the file contains Python objects that would execute code when loaded "
            f"(it references {listed}). medic_viz only loads plain tensors and refuses it. "
            + _RESAVE_HINT
        )
    return UnsafeCheckpointError(
        f"{path}: the restricted loader (torch.load with weights_only=True) could not read this file "
        f"({_torch_reason(cause)}). It is "
        "probably a raw pickle or holds objects other than tensors; medic_viz only loads plain tensors "
        "and never unpickles arbitrary objects. " + _RESAVE_HINT
    )


def _torch_load_restricted(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors turned into medic_viz errors."""
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its restricted loader may not read; the
            # failure, if any, is reported below with a clearer message.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*(TorchScript|sparse tensor invariants)")
            # an open file, not the path: torch would pick its loader from a .safetensors name
            with torch.serialization.safe_globals(numpy_scalar_globals()), open(path, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe_error(path, exc) from exc
    except RuntimeError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise _unsafe_error(path, exc) from exc
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({limits.shortened(str(exc), 300)})") from exc
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: could not read the checkpoint ({type(exc).__name__}: {exc}); it is "
                         "truncated or damaged: download or save it again") from exc
    except Exception as exc:  # torch raises KeyError/ValueError/... on junk files (re-raised below)
        globals_found, _ = _pickle_contents(path)
        if any(not _is_plain_tensor_global(g) for g in globals_found):
            raise _unsafe_error(path, exc) from exc
        raise ValueError(
            f"{path}: not a PyTorch checkpoint or safetensors file "
            f"({type(exc).__name__}: {limits.shortened(str(exc), 300)}); "
            "expected a state_dict saved with torch.save or safetensors"
        ) from exc


def strip_prefixes(state_dict: dict[str, Any], model_keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Remove ``module.``/``_orig_mod.`` when every key carries it (and the model's keys do not)."""
    model_keys = list(model_keys) if model_keys is not None else None
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                if model_keys and all(k.startswith(prefix) for k in model_keys):
                    continue
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _unwrap_state_dict(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """Find the state_dict in what torch.load returned (plain, or nested under a common key)."""
    for _depth in range(3):
        if isinstance(obj, nn.Module):
            raise UnsafeCheckpointError(
                f"{path}: the file is a whole pickled nn.Module ({type(obj).__name__}), not a state_dict; "
                "save `model.state_dict()` instead: `torch.save(model.state_dict(), path)`."
            )
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"{path}: expected a state_dict (a dict of tensors), found a {type(obj).__name__}"
            )
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if not all(isinstance(k, str) for k in obj):
                raise ValueError(f"{path}: state_dict keys must be strings")
            return dict(obj)
        wrappers = [k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], (Mapping, nn.Module))]
        # {"state_dict": {}, "net": weights}: take the first entry that holds something
        wrapper = next((k for k in wrappers if isinstance(obj[k], nn.Module) or obj[k]), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    described = ", ".join(f"{limits.quoted(k)}: {type(v).__name__}" for k, v in list(obj.items())[:limits.MAX_LISTED_NAMES])
    raise ValueError(
        f"{path}: could not find a state_dict (a dict of tensors) in the checkpoint: no tensors found among its "
        f"entries {{{described}}}, bare or under one of {list(_WRAPPER_KEYS)}; extract the model weights and "
        "save them with `torch.save(model.state_dict(), path)`."
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch checkpoint, safely, onto the CPU.

    The format is told from the content, not the name (:func:`sniff_format`): safetensors
    is read with ``safetensors.torch.load_file``, anything else with ``torch.load(...,
    map_location="cpu", weights_only=True)`` only (numpy scalars in its metadata become plain
    numbers). Declared sizes are checked against :data:`~medic_viz.limits.MAX_TENSOR_BYTES` and
    :data:`~medic_viz.limits.MAX_CHECKPOINT_BYTES` before tensors are read; sparse tensors,
    stride-0/overlapping views and TorchScript archives are refused. Common
    wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``) are unwrapped and a
    ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key is removed.

    Raises FileNotFoundError for a missing file, :class:`UnsafeCheckpointError` for files that
    would need arbitrary objects unpickled (including a whole pickled ``nn.Module``), and
    ValueError for files that are neither format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; pass a weights file, or use load_model() for a medic_viz model directory"
        )
    kind = sniff_format(path)  # from the content: a .pth.tar may well be safetensors
    if kind == "empty":
        raise ValueError(f"{path} is empty (0 bytes); download or save the checkpoint again")
    if kind == "safetensors" or (kind == "unknown" and path.suffix.lower() == ".safetensors"):
        if kind == "safetensors":
            check_safetensors_header(path)
        try:
            state_dict = safetensors.torch.load_file(str(path), device="cpu")
        except safetensors.SafetensorError as exc:
            raise ValueError(f"{path}: not a valid safetensors file ({limits.shortened(str(exc), 300)})") from exc
        state_dict = dict(state_dict)
    else:
        if kind == "zip":
            check_torch_zip(path)
        elif kind == "pickle":
            check_legacy_torch(path)
        state_dict = _unwrap_state_dict(_torch_load_restricted(path), path)
    check_loaded_tensors(state_dict, path)
    return strip_prefixes(state_dict)
