"""extract_window: frames by timestamp across codecs and containers, resizing, rotation, bad files."""

import math
from fractions import Fraction

import av
import numpy as np
import pytest

from data.clips import Resizer, resized
from data.errors import InputError
from data.extract import REASONS, ClipError, WindowBuffer, _timed_frames, extract_window
from tests.support import videos
from tests.support.videos import decode_index, write_video

needs_vp9 = pytest.mark.skipif("libvpx-vp9" not in av.codecs_available, reason="PyAV built without libvpx-vp9")

# (file name, write_video keywords)
SOURCES = [
    pytest.param("h264.mp4", {}, id="h264-mp4"),
    pytest.param("h264.mkv", {}, id="h264-mkv"),
    pytest.param("h264.ts", {}, id="h264-ts"),
    pytest.param("mpeg4.avi", {"codec": "mpeg4"}, id="mpeg4-avi"),
    pytest.param("vp9.webm", {"codec": "libvpx-vp9"}, id="vp9-webm", marks=needs_vp9),
    pytest.param("mjpeg.avi", {"codec": "mjpeg", "pix_fmt": "yuvj420p"}, id="mjpeg-avi"),
    pytest.param("mjpeg.mkv", {"codec": "mjpeg", "pix_fmt": "yuvj420p"}, id="mjpeg-mkv"),
]


def indices(frames):
    return [decode_index(frame) for frame in frames]


def on_screen(frame_times, start, fps, count):
    """Expected source index per output instant, in exact arithmetic: the latest frame at or before it."""
    times = [Fraction(t).limit_denominator(1000) for t in frame_times]
    instants = [Fraction(start).limit_denominator(1000) + Fraction(k) / Fraction(fps) for k in range(count)]
    return [max(i for i, t in enumerate(times) if t <= instant) for instant in instants]


@pytest.mark.parametrize("name, kwargs", SOURCES)
def test_constant_rate_windows(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, 40, **kwargs)  # 1.6 s, keyframes every 10 frames
    first = extract_window(path, 0, 0.4)
    assert first.shape == (10, 128, 171, 3) and first.dtype == np.uint8
    assert indices(first) == list(range(10))
    assert indices(extract_window(path, 0.7, 1.1)) == list(range(17, 27))  # starts mid-GOP
    assert indices(extract_window(path, 1.2, 1.6)) == list(range(30, 40))  # up to the very end


def test_windows_of_one_shape_are_cut_into_the_same_memory(tmp_path):
    path = write_video(tmp_path / "a.mp4", 40)
    buffer = WindowBuffer()
    first = extract_window(path, 0, 0.4, buffer=buffer)
    assert indices(first) == list(range(10))
    second = extract_window(path, 0.7, 1.1, buffer=buffer)
    assert second is first and indices(second) == list(range(17, 27))  # the first window's frames are gone
    assert np.array_equal(second, extract_window(path, 0.7, 1.1))
    longer = extract_window(path, 0, 0.8, buffer=buffer)
    assert longer.shape[0] == 20 and not np.shares_memory(longer, first)


@pytest.mark.parametrize("name, kwargs", SOURCES)
def test_seeks_to_the_keyframe_before_the_window(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, 40, **kwargs)
    with av.open(str(path)) as container:
        first_time, _, _ = next(_timed_frames(container, container.streams.video[0], 0.7, []))
    assert first_time <= 0.7 + 1e-9
    if not name.endswith(".ts"):  # MPEG-TS has no index: its seek misses and backs off to the start
        assert first_time >= 0.4 - 1e-9  # from the keyframe at frame 10 (MJPEG: every frame), not from 0


@pytest.mark.parametrize("name, kwargs", [
    pytest.param("h264.mp4", {}, id="h264-mp4"),
    pytest.param("h264.mkv", {}, id="h264-mkv"),
    pytest.param("mpeg4.avi", {"codec": "mpeg4"}, id="mpeg4-avi"),
])
def test_30_fps_source_resampled_to_25(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, 45, fps=30, **kwargs)
    frames = extract_window(path, 0.2, 1.0, fps=25)
    assert len(frames) == 20
    assert indices(frames) == [math.floor((Fraction(1, 5) + Fraction(k, 25)) * 30) for k in range(20)]


VFR_TIMES = [0, 0.04, 0.2, 0.21, 0.5, 0.6, 0.61, 0.9, 1.0, 1.3]


@pytest.mark.parametrize("name, kwargs", [
    pytest.param("vfr.mp4", {}, id="h264-mp4"),
    pytest.param("vfr.mkv", {}, id="h264-mkv"),
    pytest.param("vfr.webm", {"codec": "libvpx-vp9"}, id="vp9-webm", marks=needs_vp9),
])
def test_variable_frame_rate_gives_the_frame_on_screen(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, len(VFR_TIMES), frame_times=VFR_TIMES, **kwargs)
    assert indices(extract_window(path, 0, 1.2)) == on_screen(VFR_TIMES, 0, 25, 30)
    assert indices(extract_window(path, 0.45, 1.25, fps=10)) == on_screen(VFR_TIMES, 0.45, 10, 8)


@pytest.mark.parametrize("name, kwargs", [
    pytest.param("late.mp4", {}, id="h264-mp4"),
    pytest.param("late.mkv", {}, id="h264-mkv"),
    pytest.param("late.ts", {}, id="h264-ts"),
    pytest.param("late.webm", {"codec": "libvpx-vp9"}, id="vp9-webm", marks=needs_vp9),
])
def test_times_count_from_the_first_frame(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, 20, frame_times=[1 + i / 25 for i in range(20)], **kwargs)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.start_time * stream.time_base == 1  # the source really starts at 1 s
    assert indices(extract_window(path, 0, 0.2)) == [0, 1, 2, 3, 4]
    assert indices(extract_window(path, 0.5, 0.8)) == list(range(12, 20))
    with pytest.raises(ClipError) as error:
        extract_window(path, 0.7, 0.9)  # 0.8 s of video from its first frame
    assert error.value.reason == "too_short"


@pytest.mark.parametrize("name, size, kwargs", [
    pytest.param("wide.mp4", (64, 48), {}, id="64x48-h264"),
    pytest.param("tall.mp4", (48, 64), {}, id="48x64-h264"),
    pytest.param("odd.avi", (65, 49), {"codec": "mpeg4"}, id="65x49-mpeg4"),
    pytest.param("odd.mkv", (65, 49), {"codec": "mjpeg", "pix_fmt": "yuvj420p"}, id="65x49-mjpeg"),
    pytest.param("odd.mp4", (65, 49), {"pix_fmt": "yuv444p"}, id="65x49-h264-444"),
])
@pytest.mark.parametrize("short_side", [32, 128])
def test_resize_keeps_the_aspect(tmp_path, name, size, kwargs, short_side):
    path = write_video(tmp_path / name, 5, size=size, **kwargs)
    frames = extract_window(path, 0, 0.2, short_side=short_side)
    width, height = resized(*size, short_side)
    assert frames.shape == (5, height, width, 3) and min(width, height) == short_side
    assert width / height == pytest.approx(size[0] / size[1], rel=0.02)
    assert indices(frames) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name, kwargs", [
    pytest.param("a.mp4", {"size": (66, 50)}, id="h264"),
    pytest.param("b.mkv", {"size": (65, 49), "codec": "mjpeg", "pix_fmt": "yuvj420p"}, id="mjpeg"),
    pytest.param("c.mp4", {"size": (65, 49), "pix_fmt": "yuv444p"}, id="h264-444"),
])
def test_kept_scaling_contexts_give_pyavs_own_pixels(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, 6, **kwargs)
    to_rgb, to_yuv = Resizer(), Resizer()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            for width, height in ((43, 32), (65, 49), (130, 98)):
                if frame.format.name in Resizer.SCALED_AS_THEY_ARE:  # scaled in its own format, then converted
                    expected = frame.reformat(width, height, interpolation="AREA").to_ndarray(format="rgb24")
                else:
                    expected = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
                assert np.array_equal(to_rgb(frame, width, height), expected)
            assert np.array_equal(to_yuv(frame, 32, 24, "yuv420p", interpolation=None),
                                  frame.to_ndarray(width=32, height=24, format="yuv420p"))


@pytest.mark.parametrize("kind", ["fight", "crowd"])
def test_scaling_a_420_frame_first_keeps_its_colours(tmp_path, kind):
    """The two steps against swscale's one pass to RGB (the reference, ~3x slower): a few levels apart on
    average and no colour cast (swscale's fast YUV-to-RGB rounds ~1 level darker)."""
    from data.synthetic import render_clip
    from data.synthetic import write_video as write_h264

    path = tmp_path / f"{kind}.mp4"
    write_h264(path, render_clip(kind, 0.4, seed=3, width=480, height=360))
    to_rgb = Resizer()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            ours = to_rgb(frame, 171, 128).astype(int)
            one_pass = frame.to_ndarray(width=171, height=128, format="rgb24", interpolation="AREA").astype(int)
            assert np.abs(ours - one_pass).mean() < 4.5
            assert np.abs((ours - one_pass).mean(axis=(0, 1))).max() < 2.5


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("rotation, pyav_rotation", [(90, -90), (180, 180), (270, 90)])
def test_rotated_video_comes_out_upright(tmp_path, ext, rotation, pyav_rotation):
    # coded 64x48 with a phone's `rotate` tag: a player turns it clockwise by `rotation`
    path = write_video(tmp_path / f"phone.{ext}", 5, size=(64, 48), rotation=rotation)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (64, 48)
        # PyAV reports the display matrix as a counter-clockwise turn: -90 for the usual portrait phone video
        assert frame.rotation % 360 == pyav_rotation % 360
    frames = extract_window(path, 0, 0.2)
    assert frames.shape == ((5, 171, 128, 3) if rotation % 180 else (5, 128, 171, 3))
    assert indices(frames) == [0, 1, 2, 3, 4]  # red cell top-left: upright, not mirrored or turned


def test_file_from_the_ffmpeg_cli(tmp_path):
    path = videos.write_with_ffmpeg(tmp_path / "cli.avi", 40)
    assert indices(extract_window(path, 0.7, 1.1)) == list(range(17, 27))


def _truncated(tmp_path, name, **kwargs):
    path = videos.truncate(write_video(tmp_path / name, 100, **kwargs))  # 4 s, cut to 60 % of its bytes
    assert indices(extract_window(path, 0, 0.4)) == list(range(10))  # its first part still decodes
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


FRAGMENTED = "frag_keyframe+empty_moov"  # an mp4 whose every fragment is readable without the rest

BAD_FILES = {
    "missing": lambda d: d / "nowhere.mp4",
    "empty": lambda d: _write(d / "empty.mp4", b""),
    "text": lambda d: _write(d / "notes.mp4", b"not a video\n" * 50),
    "noise": lambda d: _write(d / "noise.mkv", np.random.default_rng(0).bytes(20000)),
    "noise-frames": lambda d: videos.scramble_frames(write_video(d / "scrambled.mkv", 20)),
    # the index (moov) of a plain mp4 is written last: cut off, nothing of the file can be read
    "cut-plain-mp4": lambda d: videos.truncate(write_video(d / "cut.mp4", 100)),
    "cut-mkv": lambda d: _truncated(d, "cut.mkv"),
    "cut-fragmented-mp4": lambda d: _truncated(d, "cut.mp4", container_options={"movflags": FRAGMENTED}),
    "cut-faststart-mp4": lambda d: _truncated(d, "cut.mp4", container_options={"movflags": "faststart"}),
    "short": lambda d: write_video(d / "short.mp4", 40),
    "audio-only": lambda d: videos.write_audio_only(d / "song.m4a"),
    "unknown-codec": lambda d: videos.write_unknown_codec(d / "odd.avi"),
}


@pytest.mark.parametrize("kind, start, end, reason", [
    ("missing", 0, 1, "missing"),
    ("empty", 0, 1, "empty"),
    ("text", 0, 1, "corrupt"),
    ("noise", 0, 1, "corrupt"),
    ("noise-frames", 0, 0.4, "corrupt"),
    ("cut-plain-mp4", 0, 0.4, "corrupt"),
    ("cut-mkv", 1, 3, "truncated"),  # across the cut
    ("cut-mkv", 3, 3.5, "truncated"),  # after it
    ("cut-fragmented-mp4", 1, 3, "truncated"),
    ("cut-faststart-mp4", 1, 3, "truncated"),
    ("cut-faststart-mp4", 3, 3.5, "truncated"),
    ("short", 1.2, 1.64, "too_short"),  # one frame past the end
    ("short", 5, 6, "too_short"),  # starts beyond the end
    ("audio-only", 0, 0.5, "no_video_stream"),
    ("unknown-codec", 0, 0.2, "unsupported_codec"),
], ids=lambda v: str(v))
def test_bad_files_raise_clip_error_with_a_reason(tmp_path, kind, start, end, reason):
    path = BAD_FILES[kind](tmp_path)
    with pytest.raises(ClipError) as error:
        extract_window(path, start, end)
    assert error.value.reason == reason
    assert path.name in str(error.value) and f"[{start:g} s, {end:g} s)" in str(error.value)


def test_clip_error_is_an_input_error():
    error = ClipError("truncated", "x.mp4: cut off")
    assert isinstance(error, InputError) and error.reason in REASONS
    with pytest.raises(ValueError):
        ClipError("bad luck", "x.mp4")


@pytest.mark.parametrize("start, end, fps", [(-1, 1, 25), (1, 1, 25), (0, 0.01, 25), (0, 1, 0)])
def test_bad_windows_are_value_errors(tmp_path, start, end, fps):
    with pytest.raises(ValueError):
        extract_window(tmp_path / "any.mp4", start, end, fps=fps)
