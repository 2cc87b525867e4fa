"""Tracks: groups of near-identical training images (GTSRB's training set is 30-frame tracks of
one physical sign each), so that a clean subset can be drawn from few tracks — fewer *distinct*
images per class, a harder clean fit than the same number of frames drawn at random.

GTSRB's layout, which :func:`frame_tracks` reads and checks: the training images sorted by class,
each class a run of consecutive ``frames``-image tracks (the last one of a class may be shorter;
``gtsrb32.npz`` keeps it — consecutive frames differ by 14 grey levels on average, images
across a track boundary by 65).
"""

from __future__ import annotations

import torch

__all__ = ["CLEAN_FROM", "GTSRB_TRACK_FRAMES", "frame_tracks"]

#: Frames per track in GTSRB's training set.
GTSRB_TRACK_FRAMES = 30
#: Where a clean subset's images come from: at random (``"images"``, the default) or whole
#: tracks of :func:`frame_tracks` first (``"tracks"``).
CLEAN_FROM = ("images", "tracks")


def frame_tracks(labels: torch.Tensor, frames: int = GTSRB_TRACK_FRAMES) -> torch.Tensor:
    """Track id of every image, int64 ``(N,)``: within each class's run of consecutive images,
    blocks of ``frames`` (GTSRB's layout). Refused (ValueError) when the labels are not sorted by
    class — the images are then not in tracks this function can see."""
    labels = torch.as_tensor(labels).flatten()
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a whole number >= 1, got {frames!r}")
    if len(labels) and bool((labels[1:] < labels[:-1]).any()):
        raise ValueError("tracks need the training images in GTSRB's order (sorted by class, each track's frames "
                         "consecutive); these labels are not sorted by class: use clean_from='images'")
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.int64)
    new_class = torch.ones(len(labels), dtype=torch.bool)
    new_class[1:] = labels[1:] != labels[:-1]
    class_start = torch.cummax(torch.where(new_class, torch.arange(len(labels)), 0), 0).values
    offset = torch.arange(len(labels)) - class_start
    starts = new_class | (offset % frames == 0)
    return torch.cumsum(starts.to(torch.int64), 0) - 1
