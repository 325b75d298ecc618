"""The model's windows of a frame stream, the one plan that `score`, `watch` and evaluation follow.

A window is `duration` consecutive frames (the model's sample_duration, 16), one starting every `stride`
frames, numbered from frame 0: with stride 16 each frame is in exactly one window, with stride 8 in two, with
stride > duration the frames between windows are skipped, by request. Unlike video-classification-3d-cnn-pytorch
(which drops the frames after the last full window), a finished video is covered to its end:
- when frames are left after the last regular window, one more window is cut on the video's last `duration`
  frames; it overlaps the one before, e.g. 50 frames at stride 16 give [0, 16), [16, 32), [32, 48), [34, 50);
- a video shorter than one window is one window of its n frames, loop-padded to `duration` for the model
  (as that tool's LoopPadding does; `loop_padded`).
A live stream has no end, so `finish()` is only called for files. The cutter counts the frames it is given
(a header's frame count is not trusted) and holds only the last `duration` of them.

Frames lost to damage (data/decode.py) keep their numbers: `gap(lost)` before the frame after them. A gap of at
most `max_gap` frames is filled with the frame before it (on screen until the next, as a player shows it), so the
windows across it are scored on the frames around it; a longer one skips the windows that would span it (counted
in `skipped`), and the next window starts on the frame after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from data.dataset import temporal_indices

Item = TypeVar("Item")


@dataclass(frozen=True)
class Cut(Generic[Item]):
    start: int  # 0-based first frame
    items: list[Item]  # what was pushed for each of its frames, oldest first (fewer than duration: a short video)

    @property
    def end(self) -> int:
        """One past the last frame."""
        return self.start + len(self.items)


class WindowCutter(Generic[Item]):
    """Push one item per decoded frame (a crop, or a crop with its frame); windows come out as they complete."""

    def __init__(self, duration: int, stride: int, max_gap: int = 0):
        if duration < 1 or stride < 1 or max_gap < 0:
            raise ValueError("duration and stride must be >= 1, max_gap >= 0")
        self.duration, self.stride, self.max_gap = duration, stride, max_gap
        self.recent: deque[Item] = deque(maxlen=duration)
        self.frames = 0  # pushed or lost so far: the next frame's number, from 0
        self.skipped = 0  # windows not cut because they would span a gap longer than max_gap
        self._next_start, self._covered = 0, 0

    def push(self, item: Item) -> Cut[Item] | None:
        """The window that this frame completes, if any."""
        self.recent.append(item)
        self.frames += 1
        if self.frames != self._next_start + self.duration:
            return None
        self._covered, self._next_start = self.frames, self._next_start + self.stride
        return Cut(self.frames - self.duration, list(self.recent))

    def gap(self, lost: int) -> list[Cut[Item]]:
        """`lost` frames are missing before the next push: the windows that filling a short gap completes."""
        if lost <= 0:
            return []
        if lost <= self.max_gap and self.recent:
            last = self.recent[-1]
            return [cut for cut in (self.push(last) for _ in range(lost)) if cut is not None]
        if self.frames > self._next_start:  # windows begun before the gap (the tail window of a file too)
            self.skipped += -(-(self.frames - self._next_start) // self.stride)
        self.frames += lost
        self.recent.clear()
        self._next_start = self._covered = self.frames
        return []

    def finish(self) -> Cut[Item] | None:
        """At the end of a video: the tail window (or the short video's one window), when frames are uncovered."""
        if self._covered >= self.frames:
            return None
        return Cut(self.frames - len(self.recent), list(self.recent))


def loop_padded(frames: np.ndarray, duration: int) -> np.ndarray:
    """A short window's frames repeated from its first until there are `duration`; a full one as it is."""
    return frames if len(frames) >= duration else frames[temporal_indices(len(frames), duration, 0)]
