"""In-memory image datasets: uint8 tensors, batching on any device, augmentation.

Every dataset in medic_viz is an :class:`ImageArrays`: images as a uint8 tensor of shape
``(N, C, H, W)`` (values 0–255), labels as int64 ``(N,)``, class names, and the augmentation
that suits it (horizontal flips only where labels survive them). Keeping whole datasets in
memory (CIFAR-10 is 150 MB as uint8) lets training move them to the GPU once and augment there,
which is what makes a 60-epoch MEDIC run take seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medic_viz.checks import MAX_SEED, check_number, check_whole

__all__ = [
    "Augmentation",
    "ImageArrays",
    "DatasetSplits",
    "iterate_batches",
    "clean_subset",
    "holdout_subset",
    "split_holdout",
    "HOLDOUT_SEED_SALT",
]

#: Added to the seed of :func:`holdout_subset`'s draw, so it is not the clean subset's stream.
HOLDOUT_SEED_SALT = 7919


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied to float batches on the batch's device.

    ``crop_pad``: random crop after zero-padding by this many pixels (0 = off).
    ``hflip``: random horizontal flip (only for datasets whose labels survive a flip).
    ``rotate_deg``: random rotation in ``[-rotate_deg, rotate_deg]`` degrees (0 = off).
    ``erase``: Cutout (DeVries & Taylor, 2017) — one square of side ``round(erase · min(H, W))``
    pixels per image, centred uniformly at random and clipped at the border, is set to the
    image's mean colour, after the other steps (0 = off; below 1).
    """

    crop_pad: int = 4
    hflip: bool = False
    rotate_deg: float = 0.0
    erase: float = 0.0

    def __post_init__(self) -> None:
        check_number("erase", self.erase, 0.0, 1.0, high_open=True)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch ``(B, C, H, W)``; returns a new tensor of the same shape."""
        if x.ndim != 4:
            raise ValueError(f"augmentation expects a batch (B, C, H, W), got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device="cpu").to(dev)

        if self.rotate_deg > 0:
            angle = (rand(b) * 2 - 1) * self.rotate_deg * torch.pi / 180.0
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.crop_pad > 0:
            p = self.crop_pad
            padded = F.pad(x, (p, p, p, p))
            # One gather with per-sample offsets: build index grids instead of a Python loop.
            off_y = (rand(b) * (2 * p + 1)).long().clamp_(max=2 * p)
            off_x = (rand(b) * (2 * p + 1)).long().clamp_(max=2 * p)
            rows = (torch.arange(h, device=dev)[None, :] + off_y[:, None])  # (B, H)
            cols = (torch.arange(w, device=dev)[None, :] + off_x[:, None])  # (B, W)
            bi = torch.arange(b, device=dev)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.hflip:
            flip = rand(b) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        side = round(self.erase * min(h, w))
        if side > 0:
            cy, cx = (rand(b) * h).long().clamp_(max=h - 1), (rand(b) * w).long().clamp_(max=w - 1)
            top, left = cy - side // 2, cx - side // 2
            ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
            inside_y = (ys[None, :] >= top[:, None]) & (ys[None, :] < top[:, None] + side)  # (B, H)
            inside_x = (xs[None, :] >= left[:, None]) & (xs[None, :] < left[:, None] + side)  # (B, W)
            square = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (B, 1, H, W)
            x = torch.where(square, x.mean(dim=(2, 3), keepdim=True), x)
        return x.contiguous()


NO_AUGMENTATION = Augmentation(crop_pad=0, hflip=False, rotate_deg=0.0)


@dataclass
class ImageArrays:
    """A labelled image set held in memory.

    ``images``: uint8 tensor ``(N, C, H, W)``, 0–255. ``labels``: int64 ``(N,)``.
    ``classes``: class names, ``len(classes)`` = number of classes.
    ``augmentation``: what training on this data should use.
    ``groups``: optional int64 ``(N,)`` group id per image — images of one group are near
    copies (GTSRB's 30-frame tracks, :func:`medic_viz.data.tracks.frame_tracks`); kept by
    :meth:`subset`, and :func:`split_holdout` then holds out whole groups. None: every image
    its own.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str = "dataset"
    augmentation: Augmentation = field(default_factory=Augmentation)
    groups: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            self.images = torch.as_tensor(np.asarray(self.images))
        if not isinstance(self.labels, torch.Tensor):
            self.labels = torch.as_tensor(np.asarray(self.labels))
        if self.images.dtype != torch.uint8:
            raise ValueError(
                f"{self.name}: images must be uint8 0-255, got {self.images.dtype}; "
                "use ImageArrays.from_float() for images in [0, 1]"
            )
        if self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"{self.name}: images must have shape (N, C, H, W) with C = 1 or 3, got "
                f"{tuple(self.images.shape)}; for NHWC arrays use ImageArrays.from_numpy(..., layout='NHWC')"
            )
        self.labels = self.labels.long().reshape(-1)
        if len(self.labels) != len(self.images):
            raise ValueError(
                f"{self.name}: {len(self.images)} images but {len(self.labels)} labels; they must match"
            )
        self.classes = tuple(str(c) for c in self.classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"{self.name}: labels range {int(self.labels.min())}..{int(self.labels.max())} but only "
                f"{len(self.classes)} classes are named; pass classes= with one name per class"
            )
        if self.groups is not None:
            if not isinstance(self.groups, torch.Tensor):
                self.groups = torch.as_tensor(np.asarray(self.groups))
            self.groups = self.groups.long().reshape(-1)
            if len(self.groups) != len(self.labels):
                raise ValueError(f"{self.name}: {len(self.labels)} images but {len(self.groups)} group ids; give one "
                                 "group id per image, or groups=None")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_numpy(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str] | None = None,
        *,
        layout: str = "NHWC",
        name: str = "dataset",
        augmentation: Augmentation | None = None,
    ) -> "ImageArrays":
        """Build from numpy arrays: uint8 images in ``layout`` ("NHWC" or "NCHW"; a 3-D
        ``(N, H, W)`` array is taken as grey images)."""
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8 0-255, got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[:, None] if layout == "NCHW" else images[..., None]
        if images.ndim != 4:
            raise ValueError(f"{name}: images must be 4-D ({layout}), got shape {images.shape}")
        if layout == "NHWC":
            images = images.transpose(0, 3, 1, 2)
        elif layout != "NCHW":
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        if images.shape[1] not in (1, 3):
            raise ValueError(
                f"{name}: expected 1 or 3 channels, got shape {images.shape} as {layout}; "
                "is the layout right?"
            )
        if classes is None:
            n = int(labels.max()) + 1 if labels.size else 0
            classes = [str(i) for i in range(n)]
        return cls(
            torch.from_numpy(np.ascontiguousarray(images)),
            torch.from_numpy(labels.astype(np.int64)),
            tuple(classes),
            name=name,
            augmentation=augmentation or Augmentation(),
        )

    @classmethod
    def from_float(cls, images: torch.Tensor, labels: torch.Tensor, like: "ImageArrays") -> "ImageArrays":
        """Quantise float images in [0, 1] ``(N, C, H, W)`` to uint8, keeping ``like``'s metadata."""
        q = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        return replace(like, images=q, labels=labels.detach().cpu().long(), groups=None)

    # -- views ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | Sequence[int] | np.ndarray) -> "ImageArrays":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return replace(self, images=self.images[idx], labels=self.labels[idx],
                       groups=None if self.groups is None else self.groups[idx])

    def digest(self) -> str:
        """Hex SHA-256 of the images, labels and groups (with their shapes): the same exactly when
        the content is the same, whatever the name (what a training checkpoint is tied to)."""
        hasher = hashlib.sha256()
        for part in (self.images, self.labels, self.groups):
            if part is None:
                hasher.update(b"none")
                continue
            array = np.ascontiguousarray(part.detach().cpu().numpy())
            hasher.update(f"{array.dtype.str}{array.shape}".encode())
            hasher.update(array.data.cast("B"))
        return hasher.hexdigest()

    def floats(self, indices: torch.Tensor | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """Images as float32 in [0, 1], ``(N, C, H, W)``, on ``device``."""
        imgs = self.images if indices is None else self.images[indices]
        return imgs.to(device, non_blocking=True).float().div_(255.0)

    def __repr__(self) -> str:
        return (
            f"ImageArrays(name={self.name!r}, n={len(self)}, shape={self.image_shape}, "
            f"classes={self.num_classes})"
        )


@dataclass
class DatasetSplits:
    """A train/test pair with shared classes."""

    train: ImageArrays
    test: ImageArrays

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


def iterate_batches(
    data: ImageArrays,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    augment: bool = False,
    images_on_device: torch.Tensor | None = None,
    drop_last: bool = False,
    augmentation: Augmentation | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches: x float32 ``(B, C, H, W)`` in [0, 1] and y int64 ``(B,)``,
    both on ``device``. ``images_on_device`` may hold ``data.images`` already moved there
    (uint8), so that epochs do not copy the dataset again. With ``augment``, ``augmentation``
    (default: ``data.augmentation``) is applied."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    src = images_on_device if images_on_device is not None else data.images
    labels = data.labels.to(device) if images_on_device is not None else data.labels
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        idx_dev = idx.to(src.device)
        x = src[idx_dev].to(device, non_blocking=True).float().div_(255.0)
        y = labels[idx.to(labels.device)].to(device, non_blocking=True)
        if augment:
            x = (augmentation or data.augmentation)(x, generator)
        yield x, y


def _clean_subset_indices(data: ImageArrays, fraction: float, seed: int,
                          tracks: torch.Tensor | None = None) -> torch.Tensor:
    fraction = check_number("fraction", fraction, 0.0, 1.0, low_open=True, advice="MEDIC's default is 0.05 (5%)")
    seed = check_whole("seed", seed, 0, MAX_SEED)
    if tracks is not None and tuple(tracks.shape) != (len(data),):
        raise ValueError(f"tracks must hold one id per image ({len(data)}), got shape {tuple(tracks.shape)}")
    g = torch.Generator().manual_seed(seed)
    picked: list[torch.Tensor] = []
    for c in range(data.num_classes):
        members = torch.nonzero(data.labels == c).flatten()
        if len(members) == 0:
            continue
        k = max(1, int(round(fraction * len(members))))
        if tracks is None:
            picked.append(members[torch.randperm(len(members), generator=g)[:k]])
            continue
        ids = torch.unique(tracks[members])  # the class's tracks in a seeded order, whole tracks first
        order = ids[torch.randperm(len(ids), generator=g)]
        rank = torch.empty(int(ids.max()) + 1, dtype=torch.int64)
        rank[order] = torch.arange(len(order))
        by_track = members[torch.argsort(rank[tracks[members]] * len(members) + torch.arange(len(members)))]
        picked.append(by_track[:k])
    if not picked:
        raise ValueError(f"{data.name}: dataset is empty, cannot take a subset")
    idx = torch.cat(picked)
    return idx[torch.randperm(len(idx), generator=g)]


def clean_subset(data: ImageArrays, fraction: float, seed: int = 0, tracks: torch.Tensor | None = None) -> ImageArrays:
    """A class-balanced random subset holding ``fraction`` of ``data`` (MEDIC uses 0.05).

    Each class contributes ``round(fraction * n_class)`` images (at least one where the class
    has any), chosen by ``seed``; the result is the same for the same seed. ``tracks`` (a group
    id per image, e.g. :func:`medic_viz.data.tracks.frame_tracks`): the images come from as few
    groups as that takes — the class's groups in a seeded random order, whole groups first, the
    last one's first images — the same count, fewer distinct scenes; the subset keeps them as its
    ``groups`` (so :func:`split_holdout` holds out whole tracks).
    """
    idx = _clean_subset_indices(data, fraction, seed, tracks)
    out = data.subset(idx)
    if tracks is not None:
        out.groups = torch.as_tensor(tracks).long()[idx]
    out.name = f"{data.name}[{fraction:g} seed={seed}{' by tracks' if tracks is not None else ''}]"
    return out


def holdout_subset(data: ImageArrays, fraction: float, seed: int = 0, holdout_fraction: float | None = None) -> ImageArrays:
    """Clean images of ``data`` that ``clean_subset(data, fraction, seed)`` did not pick: a
    hold-out for choosing a defence's settings on images it does not train on.

    Rule: per class, the images outside that clean subset in a random order drawn with seed
    ``seed + HOLDOUT_SEED_SALT``, the first ``round(holdout_fraction · n_class)`` of them (at
    least one where any remain); ``holdout_fraction`` None: ``fraction`` (as many images as the
    clean subset). Sorted by index; the same for the same arguments. ``data`` is normally the
    training set, which a grid's teachers trained on too (the hold-out is new to the defence,
    not to the trojaned model)."""
    share = fraction if holdout_fraction is None else holdout_fraction
    share = check_number("holdout_fraction", share, 0.0, 1.0, low_open=True)
    taken = torch.zeros(len(data), dtype=torch.bool)
    taken[_clean_subset_indices(data, fraction, seed)] = True
    g = torch.Generator().manual_seed(int(seed) + HOLDOUT_SEED_SALT)
    picked: list[torch.Tensor] = []
    for c in range(data.num_classes):
        members = torch.nonzero(data.labels == c).flatten()
        rest = members[~taken[members]]
        if len(members) == 0 or len(rest) == 0:
            continue
        k = min(len(rest), max(1, int(round(share * len(members)))))
        picked.append(rest[torch.randperm(len(rest), generator=g)[:k]])
    if not picked:
        raise ValueError(f"{data.name}: the clean subset takes every image; no hold-out is left (use a smaller fraction)")
    out = data.subset(torch.cat(picked).sort().values)
    out.name = f"{data.name}[holdout of {fraction:g} seed={seed}]"
    return out


def split_holdout(clean: ImageArrays, holdout_fraction: float, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
    """Split ``clean`` into (fit, holdout), class-stratified, holdout ≈ ``holdout_fraction``.

    Per class, in an order drawn with ``seed``: ``round(holdout_fraction · n_class)`` images (at
    least one, never all). With ``clean.groups`` whole groups instead — the class's groups in a
    seeded order until at least that many images are held out, never every group of the class
    (a class of one group holds nothing out): a held-out image then has no near copy in training,
    so the hold-out measures what new scenes would."""
    if not (0.0 < holdout_fraction < 1.0):
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    g = torch.Generator().manual_seed(int(seed))
    fit, hold = [], []
    for c in range(clean.num_classes):
        members = torch.nonzero(clean.labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        k = int(round(holdout_fraction * len(members)))
        if clean.groups is not None:
            held = _whole_groups(clean.groups[members], max(k, 1), g)
            hold.append(members[held])
            fit.append(members[~held])
            continue
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        hold.append(members[:k])
        fit.append(members[k:])
    fit_idx, hold_idx = torch.cat(fit), torch.cat(hold)
    if len(hold_idx) == 0 or len(fit_idx) == 0:
        what = " whole groups" if clean.groups is not None else ""
        raise ValueError(f"clean set of {len(clean)} images is too small to hold {holdout_fraction:.0%} out{what}"
                         + (" (every class is one group: give groups=None to hold out images)" if what else ""))
    return clean.subset(fit_idx), clean.subset(hold_idx)


def _whole_groups(groups: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Mask over one class's images: whole groups, in a seeded order, until ≥ ``k`` images, never all."""
    ids = torch.unique(groups)
    held = torch.zeros(len(groups), dtype=torch.bool)
    for gid in ids[torch.randperm(len(ids), generator=g)][:-1]:  # the last group always stays to fit
        if int(held.sum()) >= k:
            break
        held |= groups == gid
    return held
