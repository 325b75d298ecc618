"""An alert's evidence: the JPEG snapshot and the mp4 clip, encoded on one writer thread so that encoding
never delays scoring. Both are written atomically (temp file, rename): a path in an alert names either nothing
yet or the complete file. The alert itself never waits on them: one whose file could not be written (a full
disk) was sent all the same, its file is absent (the review app then shows none) and the log has one line
naming the file and why. The writer's queue is bounded: each waiting clip holds seconds of frames, so when
writes fall behind (a slow disk, a storm of alerts) new ones are dropped, logged and counted, not queued
without end.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data.files import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One decoded frame as kept in the ring buffer: stream time, arrival (time.time()), yuv420p planes."""

    t: float
    wall: float
    yuv: np.ndarray  # (height * 3 // 2, width) uint8, the layout of PyAV's yuv420p to_ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.yuv.shape[1], self.yuv.shape[0] * 2 // 3


def _av_frame(frame: Frame, size: tuple[int, int] | None = None) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(frame.yuv, format="yuv420p")
    if size is not None and size != frame.size:
        out = out.reformat(width=size[0], height=size[1])
    return out


def jpeg_bytes(frame: Frame, quality: int = 85) -> bytes:
    """One frame as JPEG bytes (for snapshots, and the review app's live tiles)."""
    buffer = io.BytesIO()
    _av_frame(frame).to_image().save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg(frame: Frame, path: Path) -> Path:
    """One frame as a JPEG, written atomically."""
    data = jpeg_bytes(frame)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_mp4(frames: list[Frame], path: Path, fps: float) -> Path:
    """Frames as an H.264 mp4 at their own timestamps (ms), written atomically; sizes follow the first."""
    if not frames:
        raise ValueError("no frames for the clip")
    size = frames[0].size
    with (atomic_path(path) as tmp,
          av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container):
        stream = container.add_stream("libx264", rate=round(fps) or 25, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        last_pts, t0 = -1, frames[0].t
        for frame in frames:
            pts = max(round((frame.t - t0) * 1000), last_pts + 1)
            out = _av_frame(frame, size)
            out.pts, out.time_base, last_pts = pts, Fraction(1, 1000), pts
            container.mux(stream.encode(out))
        container.mux(stream.encode())
    return path


class SnapshotWriter:
    """One thread running write jobs in order; at most `max_pending` wait, more are dropped and counted."""

    def __init__(self, max_pending: int):
        self._jobs: queue.Queue = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="watch-writer", daemon=True)
        self._thread.start()
        self.dropped = 0

    def submit(self, write: Callable[..., Path], what, path: Path, *args) -> bool:
        """Queue write(what, path, *args); False (dropped, counted, logged) when the queue is full."""
        try:
            self._jobs.put_nowait((write, (what, path, *args)))
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("snapshot/clip writer is %d jobs behind: %s not written", self._jobs.maxsize, path)
            return False

    def close(self) -> None:
        """Finish the queued writes, then stop the thread."""
        self._jobs.put((None, ()))
        self._thread.join()

    def _run(self) -> None:
        while True:
            write, args = self._jobs.get()
            if write is None:
                return
            try:
                write(*args)
            except OSError as e:  # a full disk, a folder gone: one line, no trace
                log.error("writing %s failed, the alert stands without it: %s", args[1], e.strerror or e)
            except Exception:
                log.exception("writing %s failed", args[1])
