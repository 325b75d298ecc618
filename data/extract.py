"""Cut a time window out of a long video as frames resampled to a fixed rate by timestamps.

Times are seconds from the video stream's first frame: a frame's time is (pts - stream.start_time) *
time_base. AVA timestamps count from the start of the movie, which in ordinary files is the first video
frame; files that start at an offset (MPEG-TS, remuxed broadcasts) count from 0 too, as players show
them. Where audio starts before the video, times shift by that lead (usually a fraction of a second).

Rotation comes from the display matrix that PyAV (14 or later) reads into VideoFrame.rotation: quarter
turns are applied, mirroring is not.

Damaged video is read through as data/decode.py reads it: the frame before a short gap stays on screen across it
(the timestamps do that), and a clip across a gap of more than `max_gap_frames` lost frames fails as `damaged`
(training on a frozen picture teaches nothing); `log` says what the read lost.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from data.clips import MAX_PIXELS, Resizer, limit_picture_size, resized
from data.decode import DecodeConfig, DecodeLog, decoded_frames
from data.errors import InputError
from data.views import actor_square

REASONS = ("missing", "empty", "corrupt", "truncated", "too_short", "no_video_stream", "unsupported_codec",
           "too_large", "damaged")

# Output instants are float sums (start_s + k/fps), frame times exact fractions: without the slack a
# frame at exactly an instant could lose to float rounding and the previous frame be shown instead.
_EPS = 1e-6


class ClipError(InputError):
    """A video that cannot give the requested window; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class WindowBuffer:
    """Memory that extract_window fills again for each window of the same shape. A fresh (T, H, W, 3) array of
    some MB is fresh pages from the kernel, a page fault per 4 KB: 6-9 ms of a 60 ms window at 480x360 to short side
    128. A window's frames stay valid until the next window is cut into the buffer."""

    def __init__(self):
        self._array = np.empty(0, np.uint8)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._array.shape != shape:
            self._array = np.empty(shape, np.uint8)
        return self._array


def extract_window(path, start_s: float, end_s: float, fps: float = 25.0, short_side: int = 128,
                   buffer: WindowBuffer | None = None, actors: Sequence[Sequence[float]] | None = None,
                   decode: DecodeConfig = DecodeConfig(), log: list[DecodeLog] | None = None) -> np.ndarray:
    """RGB uint8 frames (T, H, W, 3), T = round((end_s - start_s) * fps), upright, short side `short_side`; in
    `buffer`'s memory when given. With `actors` (boxes normalised to the upright frame, AVA's), the frames are
    their actor view (data/views.py), short_side x short_side, at one place for the whole window. `log`, when
    given, gets the DecodeLog of the read (its warnings: what damage lost), also when the window fails.

    Frame k is the source frame on screen at start_s + k / fps: the latest one whose time is at or before
    that instant, so variable frame rates come out right. Raises ClipError for any bad file.
    """
    count = round((end_s - start_s) * fps)
    if not (start_s >= 0 and fps > 0 and count >= 1):
        raise ValueError(f"bad window [{start_s}, {end_s}) s at {fps} fps: needs 0 <= start and one frame or more")
    path = Path(path)

    def fail(reason, why):
        return ClipError(reason, f"{path}: window [{start_s:g} s, {end_s:g} s): {why}")

    if not path.is_file():
        raise fail("missing", "no such video file")
    if path.stat().st_size == 0:
        raise fail("empty", "the file is empty")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise fail("corrupt", f"not a readable media file ({e})") from None
    with container:
        if not container.streams.video:
            raise fail("no_video_stream", "the file has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg does not know the codec, or has no decoder for it
            raise fail("unsupported_codec", "no decoder for its video codec")
        too_large = limit_picture_size(stream)
        if too_large:
            raise fail("too_large", f"{too_large} is over {MAX_PIXELS / 1e6:.1f} megapixels (8K)")
        stream.thread_type = "AUTO"
        instants = start_s + np.arange(count) / fps
        # a source frame on screen at several instants is converted once
        to_rgb, shape = Resizer(), []

        @functools.lru_cache(maxsize=1)
        def picture(frame):
            try:
                return _picture(frame, short_side, to_rgb, shape, actors)
            except av.error.FFmpegError as e:  # swscale refuses the frame's size or format (damaged headers)
                raise fail("corrupt", f"a {frame.width}x{frame.height} {frame.format.name} frame cannot be "
                                      f"converted to RGB ({e})") from None
        frames, shown, decoded, error, reads = [], None, False, None, [] if log is None else log
        try:
            for t, lost, frame in _timed_frames(container, stream, start_s, reads):
                decoded = True
                # instants of the window fall in the gap before this frame
                if lost > decode.max_gap_frames and len(frames) < count and instants[len(frames)] < t - _EPS:
                    raise fail("damaged", f"{lost} frames lost before {t:.3f} s, over decode.max_gap_frames "
                                          f"{decode.max_gap_frames}")
                while len(frames) < count and instants[len(frames)] < t - _EPS:
                    frames.append(picture(frame if shown is None else shown))  # before the first: the first
                if len(frames) == count:
                    break
                shown, shown_t = frame, t
        except av.error.FFmpegError as e:
            error = e  # a seek into damaged or cut-off data
        # what the read met: the demuxer's error that ended it, else the packets the decoder rejected
        error = error or reads[-1].stopped or "; ".join(reads[-1].warnings()) or None
        if shown is not None:
            # the last frame stays on screen for its duration (its rate's frame time where it has none)
            shown_until = shown_t + (float(shown.duration * stream.time_base) if shown.duration
                                     else 1 / float(stream.guessed_rate or fps))
            while len(frames) < count and instants[len(frames)] < shown_until - _EPS:
                frames.append(picture(shown))
        if len(frames) < count:
            raise fail(*_why_short(container, stream, instants[len(frames)], decoded, error))
        return np.stack(frames, out=buffer.array((count, *frames[0].shape)) if buffer else None)


def _timed_frames(container, stream, start_s: float, reads: list[DecodeLog]):
    """(seconds, frames lost just before it, frame) in presentation order, from the last frame at or before start_s
    onwards; each seek's read gets a DecodeLog appended to `reads` (the last one is the read that counts).

    The seek goes to the keyframe at or before start_s by the demuxer's index. An index by decode
    timestamps, a sparse or missing one (MPEG-TS has none) or a file cut short can land later than that,
    nowhere or on broken data: then seek further back, down to the start, which then has no frame at all.
    """
    origin, time_base = stream.start_time or 0, stream.time_base
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    back = 0.0
    while True:
        target = max(start_s - back, 0.0)
        reads.append(DecodeLog(rate))
        try:
            container.seek(origin + int(target / time_base), stream=stream, backward=True, any_frame=False)
            # a frame without a timestamp cannot be placed in time
            timed = ((float((frame.pts - origin) * time_base), lost, frame)
                     for lost, frame in decoded_frames(container, stream, reads[-1], after_seek=True)
                     if frame.pts is not None)
            first = next(timed, None)
        except av.error.FFmpegError:
            if target == 0:
                raise
            first = None
        if target == 0 or first is not None and first[0] <= start_s + _EPS:
            break
        back = 2 * back or 1.0
    if first is not None:
        yield first
        yield from timed


def _picture(frame, short_side: int, to_rgb: Resizer, shape: list,
             actors: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """The frame as upright RGB, short side `short_side` (swscale, area, as data.clips); with `actors`, their
    actor view's square, short_side x short_side.

    `shape` holds the first picture's upright (height, width) and crop (top, left, or None): a later frame of
    another size or turn (a damaged or spliced stream) is scaled to it, so the window's frames stack."""
    # frame.rotation is the display matrix's counter-clockwise turn in degrees (phones: -90 for portrait),
    # and np.rot90 turns counter-clockwise too; quarter turns commute with the resize. A degenerate matrix
    # has no angle (NaN): shown as coded.
    turns = round(frame.rotation / 90) if math.isfinite(frame.rotation) else 0
    if not shape:
        upright = (frame.width, frame.height) if turns % 2 == 0 else (frame.height, frame.width)
        if actors is None:
            width, height = resized(*upright, short_side)
            shape.append(((height, width), None))
        else:  # the whole frame scaled so that the actor square comes out short_side across, then cut
            left, top, right, _ = actor_square(actors, *upright)
            scale = short_side / (right - left)
            width, height = max(short_side, round(upright[0] * scale)), max(short_side, round(upright[1] * scale))
            shape.append(((height, width), (min(round(top * scale), height - short_side),
                                            min(round(left * scale), width - short_side))))
    (height, width), crop = shape[0]
    coded = (width, height) if turns % 2 == 0 else (height, width)
    picture = np.rot90(to_rgb(frame, *coded), turns)
    if crop is None:
        return picture
    return picture[crop[0] : crop[0] + short_side, crop[1] : crop[1] + short_side]


def _why_short(container, stream, missing_at: float, decoded: bool, error) -> tuple[str, str]:
    """(reason, explanation) for decoding that stopped before the instant `missing_at`."""
    if stream.duration:
        video_end = float(stream.duration * stream.time_base)
    elif container.duration:
        # microseconds, by FFmpeg's rule from the container's start, but by Matroska's from 0
        start = 0 if "matroska" in container.format.name else container.start_time or 0
        video_end = (start + container.duration) / 1e6 - float((stream.start_time or 0) * stream.time_base)
    else:
        video_end = None
    if video_end is not None and missing_at >= video_end - _EPS:
        return "too_short", f"the video ends at {video_end:.3f} s"
    if not decoded:  # not even from the start of the file
        return "corrupt", "no frame of the video decodes" + (f" ({error})" if error else "")
    if video_end is None and error is None:
        return "too_short", f"the video ends before {missing_at:.3f} s"  # no header to say it should not
    return "truncated", (f"the data ends before {missing_at:.3f} s of a {video_end:.3f} s video" if video_end
                         else f"the data breaks off before {missing_at:.3f} s") + (f" ({error})" if error else "")
