"""Helpers several test files share (pytest puts ``tests/`` on the import path: ``import _support``).

- :func:`free_port`, :func:`poll`: servers started by the browser tests (loopback only);
- :func:`png_with_text_chunk`: a small PNG whose text chunk inflates to many megabytes;
- :func:`write_tiny_npz`: a 16 + 8 image, 4-class ``.npz`` dataset for CLI tests;
- :class:`TinyConvNet`: conv → BN → ReLU → pool → linear, for the analysis tests.
"""

from __future__ import annotations

import io
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

__all__ = ["free_port", "poll", "png_with_text_chunk", "write_tiny_npz", "TinyConvNet"]


class TinyConvNet(nn.Module):
    """3×3 conv (3→4) → BN → ReLU → avg-pool → linear(4→``classes``)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """``fn()``'s first truthy value, tried every ``interval`` s; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def png_with_text_chunk(path: Path, megabytes: int) -> None:
    """A 3x3 PNG at ``path`` whose zTXt chunk inflates to ``megabytes`` MB (the file itself is small)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    body = b"Comment\x00\x00" + zlib.compress(b"a" * (megabytes << 20), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body) & 0xFFFFFFFF)
    path.write_bytes(png[:33] + chunk + png[33:])


def write_tiny_npz(path: Path) -> Path:
    """16 training and 8 test 32x32 RGB images of 4 classes (random pixels, seed 0) at ``path``."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y_train=np.arange(16) % 4,
             x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_test=np.arange(8) % 4)
    return path
