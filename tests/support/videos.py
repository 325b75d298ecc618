"""Small real test videos whose frames show their own index, written with PyAV (or the ffmpeg CLI).

Every frame is a grid of flat cells (COLS x ROWS over the upright picture): the top-left cell is red,
marking orientation, and the others are black or white, the bits of the frame index (least significant
first). Flat cells of 12 px or more survive the lossy codecs used here, and the grid is proportional,
so `decode_index` reads it back at any size.

Also videos of other frames: noise (`write_noise_video`) and a moving gray gradient with an optional sine tone
(`write_gray_video`), and `decoded_frames`, the frames a file decodes to.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

COLS, ROWS = 4, 3
MAX_INDEX = 2 ** (COLS * ROWS - 1) - 1

# Per-codec settings that keep the cells clean at these tiny sizes, and fast.
_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "10"},
    "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {"qscale": "2"},
    "mjpeg": {"qscale": "2"},
}


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """The upright RGB picture (height, width, 3) of frame `index`."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} outside 0..{MAX_INDEX}")
    bits = [(255,) * 3 if index >> bit & 1 else (0,) * 3 for bit in range(COLS * ROWS - 1)]
    cells = np.array([(255, 0, 0)] + bits, np.uint8).reshape(ROWS, COLS, 3)
    return cells[(np.arange(height) * ROWS // height)[:, None], (np.arange(width) * COLS // width)[None, :]]


def decode_index(frame_rgb: np.ndarray) -> int:
    """The index drawn by `pattern`; ValueError where the red cell is not top-left (wrong orientation)."""
    height, width = frame_rgb.shape[:2]
    means = []
    for row in range(ROWS):
        for col in range(COLS):
            # the middle half of each cell: its edges blur into the neighbours
            y0, y1 = (4 * row + 1) * height // (4 * ROWS), (4 * row + 3) * height // (4 * ROWS)
            x0, x1 = (4 * col + 1) * width // (4 * COLS), (4 * col + 3) * width // (4 * COLS)
            means.append(frame_rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
    r, g, b = means[0]
    if not (r > 160 and g < 96 and b < 96):
        raise ValueError(f"top-left cell is not red (mean RGB {r:.0f}, {g:.0f}, {b:.0f}): wrong orientation?")
    return sum(1 << bit for bit, mean in enumerate(means[1:]) if mean.mean() > 128)


def write_video(path, n_frames: int, size=(64, 48), fps=25, codec="libx264", pix_fmt="yuv420p",
                container_format=None, frame_times=None, rotation=None, gop: int = 10,
                container_options=None) -> Path:
    """Write frames 0 .. n_frames - 1 at `fps`; return the path.

    size is the coded (width, height). frame_times (seconds, one per frame) give a variable frame rate
    in a 1/1000 time base instead. rotation is the clockwise turn a player applies (the legacy `rotate`
    tag of phone videos): the frames are drawn so that they look upright after it. container_options
    go to the muxer (e.g. {"movflags": "frag_keyframe+empty_moov"}).
    """
    path = Path(path)
    if frame_times is not None and len(frame_times) != n_frames:
        raise ValueError("frame_times needs one time per frame")
    # older PyAV cannot write a display matrix: tag the finished file with the ffmpeg CLI instead
    tag_later = bool(rotation) and not hasattr(av.video.stream.VideoStream, "set_display_matrix")
    target = path.with_name(f"untagged-{path.name}") if tag_later else path
    width, height = size
    upright = (height, width) if rotation and rotation % 180 else (width, height)
    time_base = Fraction(1, 1000) if frame_times is not None else 1 / Fraction(fps)
    with av.open(str(target), "w", format=container_format, options=container_options) as container:
        stream = container.add_stream(codec, rate=fps, options=_OPTIONS.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop  # short GOPs, so that windows start mid-GOP after a seek
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation and not tag_later:
            stream.set_display_matrix(_display_matrix(rotation))
        for i in range(n_frames):
            # drawn turned back (counter-clockwise) by the turn the player will apply
            picture = np.rot90(pattern(i, *upright), k=(rotation or 0) // 90)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i if frame_times is None else round(frame_times[i] * 1000)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return _tag_rotation_with_ffmpeg(target, path, rotation) if tag_later else path


def _display_matrix(clockwise_degrees: int) -> list[int]:
    """The QuickTime/ISO track matrix {a b u; c d v; x y w} of a clockwise turn on screen.

    Spelled out from the spec (x' = a*x + c*y, y' = b*x + d*y, y pointing down), not taken from PyAV's
    set_display_rotation, so that the tests check PyAV's sign convention instead of sharing it.
    """
    theta = math.radians(clockwise_degrees)
    cos, sin = round(math.cos(theta) * 65536), round(math.sin(theta) * 65536)
    return [cos, sin, 0, -sin, cos, 0, 0, 0, 1 << 30]


def _tag_rotation_with_ffmpeg(untagged: Path, path: Path, rotation: int) -> Path:
    """Copy `untagged` to `path` with the ffmpeg CLI adding the display matrix; skips where it cannot.

    ffmpeg 6 and later take -display_rotation (counter-clockwise), older ones a `rotate` tag whose
    direction changed between releases (5.1 turns counter-clockwise): each is checked by reading the
    rotation back, which leans on PyAV's sign, unlike set_display_matrix.
    """
    if not has_ffmpeg():
        pytest.skip("this PyAV cannot write a display matrix, and there is no ffmpeg command line tool")
    for args in (["-display_rotation", -rotation, "-i", untagged],
                 ["-i", untagged, "-metadata:s:v:0", f"rotate={-rotation}"],
                 ["-i", untagged, "-metadata:s:v:0", f"rotate={rotation}"]):
        if _ffmpeg(*args, "-c", "copy", path).returncode == 0:
            with av.open(str(path)) as container:
                if next(container.decode(video=0)).rotation % 360 == -rotation % 360:
                    return path
    pytest.skip(f"neither PyAV nor the ffmpeg command line tool here can write a display matrix into {path.suffix}")


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def _ffmpeg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], capture_output=True, timeout=60)


def write_with_ffmpeg(path, n_frames: int, codec: str = "mpeg4", fps=25, size=(64, 48)) -> Path:
    """The same frames encoded and muxed by the ffmpeg CLI (its defaults, not PyAV's); skips without it."""
    path = Path(path)
    if not has_ffmpeg():
        pytest.skip("no ffmpeg command line tool on PATH")
    source = write_video(path.with_name(f"source-{path.stem}.mkv"), n_frames, size, fps, "mjpeg", "yuvj420p")
    _ffmpeg("-i", source, "-c:v", codec, "-q:v", 2, path).check_returncode()
    return path


def write_audio_only(path, seconds: float = 1.0) -> Path:
    """An AAC tone and no video stream."""
    path = Path(path)
    rate, chunk = 44100, 1024
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
        for i in range(0, len(tone), chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, i:i + chunk], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_unknown_codec(path, n_frames: int = 10) -> Path:
    """An AVI whose video fourcc no FFmpeg decoder claims (MPEG-4 data relabelled 'QQQQ')."""
    path = Path(path)
    write_video(path, n_frames, codec="mpeg4")
    data = path.read_bytes()
    assert data.count(b"FMP4") == 2, "expected the fourcc in the stream header and format"
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))
    return path


def scramble_frames(path, seed: int = 0) -> Path:
    """Overwrite every video packet's payload with noise, keeping the container intact."""
    path = Path(path)
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data, rng = bytearray(path.read_bytes()), np.random.default_rng(seed)
    for pos, size in packets:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def truncate(path, fraction: float = 0.6) -> Path:
    """Cut a file to `fraction` of its bytes, like an interrupted download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def write_noise_video(path, n_frames, size=(64, 48), fps=25):
    """H.264 frames of uniform noise (seeded by n_frames), with PyAV's default encoder settings."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        rng = np.random.default_rng(n_frames)
        for _ in range(n_frames):
            frame = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def gray_frame(width: int, height: int, i: int) -> np.ndarray:
    """A moving gray gradient: no colour of its own, so any red or green comes from an overlay (annotate's)."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    gray = (60 + (x * 2 + y + i * 3) % 120).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def write_gray_video(
    path,
    width=96,
    height=72,
    frames=30,
    rate=Fraction(25),
    codec="libx264",
    audio_codec=None,
):
    """Write `frames` gray gradients (`gray_frame`); with audio_codec, add one second of a 440 Hz mono sine."""
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        # yuv420p needs even sizes; yuv444p lets libx264 write the odd-size source too.
        video.pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"
        if audio_codec:
            sample_rate = 44100
            audio = out.add_stream(audio_codec, rate=sample_rate)
            audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(gray_frame(width, height, i), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio_codec:
            t = np.arange(sample_rate) / sample_rate
            wave = 0.3 * np.sin(2 * np.pi * 440 * t)
            fmt = audio.format.name
            ints = {"s16": np.int16, "s32": np.int32}.get(fmt.rstrip("p"))
            samples = (wave * np.iinfo(ints).max).astype(ints) if ints else wave.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None, :], format=fmt, layout="mono")
            frame.sample_rate, frame.pts = sample_rate, 0
            out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def decoded_frames(path) -> int:
    """How many video frames `path` decodes to."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
