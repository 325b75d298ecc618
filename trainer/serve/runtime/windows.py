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

    def __init__(self, duration: int, stride: int):
        if duration < 1 or stride < 1:
            raise ValueError("duration and stride must be >= 1")
        self.duration, self.stride = duration, stride
        self.recent: deque[Item] = deque(maxlen=duration)
        self.frames = 0  # pushed so far
        self._next_start, self._covered = 0, 0

    def push(self, item: Item) -> Cut[Item] | None:
        """The window that this frame completes, if any."""
        self.recent.append(item)
        self.frames += 1
        if self.frames != self._next_start + self.duration:
            return None
        self._covered, self._next_start = self.frames, self._next_start + self.stride
        return Cut(self.frames - self.duration, list(self.recent))

    def finish(self) -> Cut[Item] | None:
        """At the end of a video: the tail window (or the short video's one window), when frames are uncovered."""
        if self._covered >= self.frames:
            return None
        return Cut(self.frames - len(self.recent), list(self.recent))


def loop_padded(frames: np.ndarray, duration: int) -> np.ndarray:
    """A short window's frames repeated from its first until there are `duration`; a full one as it is."""
    return frames if len(frames) >= duration else frames[temporal_indices(len(frames), duration, 0)]
