"""Decoding video files into RGB frame arrays with PyAV (through damage: data/decode.py), resized so the short
side is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from data.decode import DecodeConfig, DecodeLog, declared_frames, decoded_frames
from data.errors import InputError

# The largest picture the H.264 and HEVC levels allow (8K: 8192x4320, 35.4 MP). A header that claims more is a
# damaged or hostile file: flat H.264 at 16384x16384 is a few KB a frame, and the decoder would allocate 400 MB each.
MAX_PIXELS = 8192 * 4320


def limit_picture_size(stream) -> str | None:
    """Cap the decoder of `stream` at MAX_PIXELS before it opens (FFmpeg's max_pixels: a frame that grows past
    it mid-stream fails to decode instead of being allocated); "WxH" when the header already claims more."""
    context = stream.codec_context
    context.options = {**context.options, "max_pixels": str(MAX_PIXELS)}
    if context.width * context.height > MAX_PIXELS:
        return f"{context.width}x{context.height}"
    return None


@dataclass(frozen=True)
class ClipConfig:
    fps: float  # clips are resampled to this rate by timestamps
    short_side: int  # and resized so their short side is this
    decode: DecodeConfig = DecodeConfig()  # how far damaged video is read through (data/decode.py)

    def __post_init__(self):
        if self.short_side < 16 or self.fps <= 0:
            raise ValueError("short_side must be at least 16 and fps > 0")


@dataclass(frozen=True)
class VideoInfo:
    fps: Fraction
    frames: int
    width: int
    height: int


def resized(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is `short_side`."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class Resizer:
    """Frames of one stream to arrays of another size and pixel format (swscale), through kept scaling contexts.

    PyAV's `frame.to_ndarray(width=..., height=...)` sets up a new swscale context, with its own threads, for
    every frame: that costs 2-3x the conversion itself and more than decoding the frame. One reformatter per
    stream keeps its context (the pixels are identical), and one swscale thread per stream leaves the cores to
    the other streams and the model. A 4:2:0 frame (what H.264 and most video decode to) is first scaled in its
    own format and then converted at the new size: swscale's scale-and-convert to RGB in one pass takes ~3x the
    time of the two (0.25 against 0.08 ms for 480x360 to 171x128), for colours within a few levels of it
    (tests/test_extract.py)."""

    SCALED_AS_THEY_ARE = ("yuv420p", "yuvj420p")

    def __init__(self):
        self._scale, self._convert = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame, width: int, height: int, format: str = "rgb24",
                 interpolation: str | None = "AREA") -> np.ndarray:
        if frame.format.name in self.SCALED_AS_THEY_ARE and format != frame.format.name:
            frame = self._scale.reformat(frame, width, height, interpolation=interpolation, threads=1)
        return self._convert.reformat(frame, width, height, format, interpolation=interpolation,
                                      threads=1).to_ndarray()


def _open(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot open video: {e}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream")
    if container.streams.video[0].codec_context is None:  # FFmpeg does not know the codec, or cannot decode it
        container.close()
        raise InputError(f"{path}: no decoder for its video codec")
    too_large = limit_picture_size(container.streams.video[0])
    if too_large:
        container.close()
        raise InputError(f"{path}: video too large: {too_large} is over {MAX_PIXELS / 1e6:.1f} megapixels (8K)")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size and frame count (counted by decoding where the header does not say)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        frames = stream.frames or sum(1 for _ in VideoFrames(path))
        return VideoInfo(Fraction(fps), frames, stream.codec_context.width, stream.codec_context.height)


class VideoFrames:
    """A video file's frames as RGB uint8 arrays (H, W, 3), optionally resized (swscale, area) to `short_side`
    (with upscale=False a video smaller than that keeps its size).

    Iterating yields (frames lost just before it, frame), read through damage as data/decode.py reads; `log` then
    says what was lost. At the end, InputError naming the file when nothing decoded or damage took more than
    `decode.max_loss_share` of it."""

    def __init__(self, path: str | Path, short_side: int | None = None, upscale: bool = True,
                 decode: DecodeConfig = DecodeConfig()):
        self.path, self.short_side, self.upscale, self.decode = Path(path), short_side, upscale, decode
        self.log: DecodeLog | None = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self.log = DecodeLog(float(stream.average_rate or stream.guessed_rate or 25),
                                 declared_frames(container, stream))
            size, to_rgb = None, Resizer()
            for lost, frame in decoded_frames(container, stream, self.log):
                if self.short_side and size is None:
                    side = self.short_side if self.upscale else min(self.short_side, frame.width, frame.height)
                    size = resized(frame.width, frame.height, side)
                width, height = size or (frame.width, frame.height)
                try:
                    picture = to_rgb(frame, width, height)
                except av.error.FFmpegError as e:  # swscale refuses the frame's size or format (damaged headers)
                    raise InputError(f"{self.path}: a {frame.width}x{frame.height} {frame.format.name} frame "
                                     f"cannot be converted to RGB ({e})") from None
                yield lost, picture
        self.log.check(str(self.path), self.decode)

    def arrays(self) -> list[np.ndarray]:
        """Every frame, as decoded (gaps closed up)."""
        return [frame for _, frame in self]
