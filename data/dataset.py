"""A torch Dataset over the clip store with 3D-ResNets-PyTorch's sampling.

Train: a random `sample_duration`-frame temporal crop (loop-padded when the
clip is shorter), a multi-scale random corner crop resized to `sample_size`,
and a horizontal flip. Val/test: the centre frames and a centre crop.
Randomness derives from (seed, epoch, index), so every epoch is reproducible
whatever the worker count, and a resumed run draws what the straight one did.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.store import ClipStore

# Hara's MultiScaleCornerCrop: scales 1, 2^-1/4, ... and five crop positions.
CROP_SCALES = tuple(2 ** (-i / 4) for i in range(5))
CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")


def temporal_indices(n_frames: int, duration: int, start: int) -> np.ndarray:
    """`duration` frame indices from `start`, looping when the clip is too short."""
    return (start + np.arange(duration)) % n_frames


def crop_box(height: int, width: int, size: int, position: str) -> tuple[int, int]:
    """Top-left (y, x) of a size x size crop at a named position."""
    y = {"c": (height - size) // 2, "tl": 0, "tr": 0, "bl": height - size, "br": height - size}[position]
    x = {"c": (width - size) // 2, "tl": 0, "bl": 0, "tr": width - size, "br": width - size}[position]
    return y, x


class Normalization(NamedTuple):
    """Pixels are scaled from 0-255 to 0-value_scale, then (x - mean) / std per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_scale: float


def to_input(frames: np.ndarray, sample_size: int, norm: Normalization) -> torch.Tensor:
    """(T, h, w, 3) uint8 crop -> normalised float (3, T, sample_size, sample_size)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    if x.shape[-1] != sample_size or x.shape[-2] != sample_size:
        x = F.interpolate(x, size=(sample_size, sample_size), mode="bilinear", align_corners=False, antialias=True)
    if norm.value_scale != 255:
        x *= norm.value_scale / 255
    return (x - torch.tensor(norm.mean).view(3, 1, 1, 1)) / torch.tensor(norm.std).view(3, 1, 1, 1)


def center_view(n_frames: int, height: int, width: int, duration: int) -> tuple[np.ndarray, int, int, int]:
    """The deterministic val/test view: centre frames, the centre square (resized later).

    Returns (frame indices, crop top, crop left, crop size).
    """
    t = temporal_indices(n_frames, duration, max(0, (n_frames - duration) // 2))
    size = min(height, width)
    return (t, *crop_box(height, width, size, "c"), size)


class ClipDataset(Dataset):
    def __init__(self, store: ClipStore, rows: list[dict], sample_size: int, sample_duration: int,
                 norm: Normalization, train: bool, seed: int = 0):
        self.store, self.rows = store, rows
        self.sample_size, self.duration = sample_size, sample_duration
        self.norm = norm
        self.train, self.seed, self.epoch = train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """A training clip's view of the current epoch, or a validation clip's centre view."""
        if self.train:
            return self.view(index, self.epoch)
        row = self.rows[index]
        (t, y, x, size), flip = center_view(*self.store.shape(row["clip_id"]), self.duration), False
        return self._input(row, t, y, x, size, flip)

    def view(self, index: int, draw: int) -> tuple[torch.Tensor, int]:
        """The random training view seeded by (seed, draw, index): draw d is what epoch d trains on."""
        row = self.rows[index]
        t, y, x, size, flip = random_view(np.random.default_rng((self.seed, draw, index)),
                                          *self.store.shape(row["clip_id"]), self.duration)
        return self._input(row, t, y, x, size, flip)

    def _input(self, row: dict, t, y: int, x: int, size: int, flip: bool) -> tuple[torch.Tensor, int]:
        # Only the frames of the view are read and decoded.
        view = self.store.read(row["clip_id"], t)[:, y : y + size, x : x + size]
        return to_input(view[:, :, ::-1] if flip else view, self.sample_size, self.norm), int(row["label_id"])


def random_view(rng: np.random.Generator, n_frames: int, height: int, width: int, duration: int):
    """A training view: random temporal crop, multi-scale corner crop, flip. Returns (t, y, x, size, flip)."""
    t = temporal_indices(n_frames, duration, int(rng.integers(0, max(1, n_frames - duration + 1))))
    size = int(min(height, width) * CROP_SCALES[rng.integers(len(CROP_SCALES))])
    y, x = crop_box(height, width, size, CROP_POSITIONS[rng.integers(len(CROP_POSITIONS))])
    return t, y, x, size, bool(rng.random() < 0.5)
