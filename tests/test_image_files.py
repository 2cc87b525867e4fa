"""The one bounded image decoder (``medic_viz.data.images.read_image_pixels``) behind both trigger
images and the inputs a user picks (``to_image_tensor``): real range, bounds before decoding,
one error line naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from _support import png_with_text_chunk
from medic_viz import limits
from medic_viz.data.images import read_image_pixels, to_image_tensor


def test_a_picked_16_bit_image_keeps_its_range(tmp_path):
    # Before: PIL's convert("L") clipped 16-bit values at 255, so mid-grey 32768 read as white.
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "grey16.png")
    image = to_image_tensor(tmp_path / "grey16.png", (1, 4, 4))
    torch.testing.assert_close(image, torch.full((1, 4, 4), 128 / 255))


def test_a_picked_png_with_a_huge_text_chunk_is_one_line_naming_the_file(tmp_path):
    png_with_text_chunk(tmp_path / "bomb.png", 100)
    with pytest.raises(ValueError, match=r"bomb\.png: could not read an image \(Decompressed data too large") as info:
        to_image_tensor(tmp_path / "bomb.png", (3, 32, 32))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    with pytest.raises(ValueError, match="could not read the image bytes"):
        to_image_tensor((tmp_path / "bomb.png").read_bytes(), (3, 32, 32))


def test_image_sizes_are_checked_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(tmp_path / "wide.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ValueError, match=r"wide\.png: 80x64 pixels is larger than an image may be \(40 a side\)"):
        read_image_pixels(tmp_path / "wide.png", max_side=40)
    assert decoded == []  # refused from the header alone
    monkeypatch.setattr(limits, "MAX_IMAGE_FILE_BYTES", 10)
    with pytest.raises(ValueError, match=r"wide\.png: .* bytes is larger than an image may be"):
        to_image_tensor(tmp_path / "wide.png", (1, 32, 32))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png: is empty"):
        read_image_pixels(tmp_path / "empty.png")


def test_an_8_bit_pick_is_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    expected = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(to_image_tensor(buf.getvalue(), (3, 5, 7)), expected)
