"""Reading CIFAR batches (Python pickles) without running code from them.

torchvision opens ``cifar-10-batches-py`` with plain ``pickle.load``, which calls whatever a
tampered file names. :class:`CifarBatchUnpickler` rebuilds only what a genuine batch holds —
numpy arrays, dicts, lists, strings, numbers — and refuses any other global before anything is
called; every constructor a batch may name is wrapped so that no argument from the file can make
it allocate without bound. :func:`load_cifar_batch` also bounds the file's size
(:data:`medic_viz.limits.MAX_PICKLE_BYTES`).
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medic_viz import limits

__all__ = ["CifarBatchUnpickler", "UnsafeDataError", "load_cifar_batch"]


class UnsafeDataError(pickle.UnpicklingError, ValueError):
    """A dataset file holds something other than plain data, or sizes no genuine file has.

    Both a :class:`pickle.UnpicklingError` (what a refused pickle always raised) and a
    :class:`ValueError` (what every other bad-input error in medic_viz is)."""


def _refuse(what: str) -> UnsafeDataError:
    return UnsafeDataError(
        f"refusing to load {what} from a CIFAR batch: a CIFAR-10 batch holds only numpy arrays and "
        "plain containers, so this file is not a genuine CIFAR batch (it may be corrupted or "
        "malicious); delete it and download the dataset again"
    )


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing dtypes that hold Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f"refusing to rebuild a numpy array of Python objects (dtype {dtype}); "
            "a CIFAR batch holds only numeric arrays"
        )
    return dtype


def _numpy_core_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1)."""
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy < 2
        mod = importlib.import_module(f"numpy.core.{module}")
    return getattr(mod, name)


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a CIFAR pickle: accepted only as the first argument of
    ``_reconstruct`` (which then builds an empty array), never called itself — calling the real
    class with a shape from the file would allocate whatever the file asks for."""

    def __repr__(self) -> str:  # pragma: no cover - diagnostics only
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()
#: ``_reconstruct`` only ever builds the empty placeholder that ``__setstate__`` then fills.
_MAX_RECONSTRUCT_ELEMENTS = 1


def _safe_reconstruct(reconstruct: Callable[..., Any]) -> Callable[..., Any]:
    def build(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise _refuse(f"an array of type {type(subtype).__name__}")
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) and 0 <= d for d in dims) or int(np.prod(dims, dtype=object)) > _MAX_RECONSTRUCT_ELEMENTS:
            raise _refuse(f"a placeholder array of shape {shape!r}")
        return reconstruct(np.ndarray, dims, dtype)

    return build


def _safe_encode(text: Any = "", encoding: str = "latin1", *rest: Any) -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes (``encode(text, "latin1")``), nothing else:
    other codecs (zlib, bz2, rot13, hex …) can transform data without bound."""
    if rest or not isinstance(text, str) or str(encoding).replace("-", "").replace("_", "").lower() != "latin1":
        raise _refuse("a _codecs.encode call other than text.encode('latin1')")
    return codecs.encode(text, "latin1")


def _safe_bytes(*args: Any) -> bytes:
    """``bytes()`` or ``bytes(<bytes-like>)`` only: ``bytes(10**15)`` would allocate a petabyte."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise _refuse(f"bytes({', '.join(type(a).__name__ for a in args)})")


def _safe_container(kind: type) -> Callable[..., Any]:
    """``dict``/``list``/``tuple``/``str`` of an existing object only (never of a number)."""

    def build(*args: Any) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, dict, str, bytes))):
            raise _refuse(f"{kind.__name__}({', '.join(type(a).__name__ for a in args)})")
        return kind(*args)

    build.__name__ = kind.__name__
    return build


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name (as written by Python 2 or 3, numpy 1 or 2),
    each wrapped so that no argument from the file can make it allocate without bound."""
    reconstruct = _safe_reconstruct(_numpy_core_attr("multiarray", "_reconstruct"))
    scalar = _numpy_core_attr("multiarray", "scalar")
    frombuffer = _numpy_core_attr("numeric", "_frombuffer")  # views its buffer; a bad shape raises
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _safe_dtype,
        # bytes pickled by Python 3 at protocol 2: _codecs.encode(text, "latin1")
        ("_codecs", "encode"): _safe_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for builtins in ("builtins", "__builtin__"):
        allowed[(builtins, "bytes")] = _safe_bytes
        for kind in (dict, list, tuple, str):
            allowed[(builtins, kind.__name__)] = _safe_container(kind)
    return allowed


class CifarBatchUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only what a CIFAR batch holds: numpy arrays, dicts, lists,
    strings and numbers. Any other global (``os.system``, ``builtins.eval``, an arbitrary
    class…) raises :class:`pickle.UnpicklingError` before anything is called."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if CifarBatchUnpickler._allowed is None:
            CifarBatchUnpickler._allowed = _allowed_globals()
        try:
            return CifarBatchUnpickler._allowed[(module, name)]
        except KeyError:
            raise _refuse(f"{module}.{name}") from None


def load_cifar_batch(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR pickle (a data batch or ``batches.meta``) safely.

    Returns the dict with ``str`` keys (Python-2 files are decoded as latin-1, as the CIFAR
    site recommends). Raises :class:`UnsafeDataError` (a :class:`pickle.UnpicklingError` and a
    ValueError) for anything but plain data, for a file larger than
    :data:`medic_viz.limits.MAX_PICKLE_BYTES`, and for a file that is not a readable pickle.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limits.MAX_PICKLE_BYTES:
            raise UnsafeDataError(
                f"{path}: {size:,} bytes is larger than any CIFAR batch (limit {limits.MAX_PICKLE_BYTES:,}); "
                "delete it and download the dataset again"
            )
        try:
            obj = CifarBatchUnpickler(f, encoding="latin1").load()
        except UnsafeDataError as exc:
            raise UnsafeDataError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError, RecursionError, UnicodeError, struct.error) as exc:
            raise UnsafeDataError(
                f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc}); delete it and download "
                "the dataset again"
            ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict in a CIFAR batch file, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
