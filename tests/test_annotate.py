"""annotate_video and plot_probabilities on small videos made here with PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from tests.support.videos import write_gray_video
from trainer.serve.runtime.annotate import annotate_video, fight_gif, plot_probabilities

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decoded_rgb(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def video_props(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.average_rate, stream.width, stream.height, stream.codec_context.name


@pytest.mark.parametrize(
    "name, size, rate, codec",
    [
        ("pal.mp4", (96, 72), Fraction(25), "libx264"),
        ("ntsc.mkv", (64, 48), Fraction(30000, 1001), "mpeg4"),
        ("ntsc.mp4", (96, 72), Fraction(30000, 1001), "libx264"),
    ],
)
def test_keeps_frame_count_rate_and_size(tmp_path, name, size, rate, codec):
    src = write_gray_video(tmp_path / name, *size, frames=27, rate=rate, codec=codec)
    dst = tmp_path / "out" / "nested" / "annotated.mp4"  # parents are created

    written = annotate_video(src, dst, np.linspace(0, 1, 27))

    assert written == 27
    frames, out_rate, width, height, codec_name = video_props(dst)
    assert (frames, out_rate, (width, height), codec_name) == (27, rate, size, "h264")
    assert isinstance(out_rate, Fraction)
    assert [p.name for p in dst.parent.iterdir()] == ["annotated.mp4"]  # no temp file left


def test_overlay_draws_top_left_only(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", frames=20)
    dst = tmp_path / "annotated.mp4"
    annotate_video(src, dst, [0.8] * 20)

    for before, after in zip(decoded_rgb(src), decoded_rgb(dst), strict=True):
        diff = np.abs(before.astype(int) - after.astype(int))
        assert diff[:10, :30].mean() > 30  # the dark box and text
        assert diff[48:, 64:].mean() < 4  # only re-encoding noise away from the box


def _count_bar_colours(rgb: np.ndarray) -> tuple[int, int]:
    """(red, green) pixel counts in the top-left quarter, where the box is."""
    r, g, b = (rgb[: rgb.shape[0] // 2, : rgb.shape[1] // 2, c].astype(int) for c in range(3))
    red = (r > 150) & (r - g > 80) & (r - b > 80)
    green = (g > 130) & (g - r > 60) & (g - b > 60)
    return int(red.sum()), int(green.sum())


def test_bar_red_at_or_above_threshold_green_below(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", frames=20)
    dst = tmp_path / "annotated.mp4"
    probs = [0.9] * 10 + [0.35] * 9 + [0.6]  # per-frame: the colour must follow the index
    annotate_video(src, dst, probs, threshold=0.6)

    frames = decoded_rgb(dst)
    for i in (0, 9, 19):  # at and above threshold
        red, green = _count_bar_colours(frames[i])
        assert red > 20 and green == 0, (i, red, green)
    for i in (10, 18):
        red, green = _count_bar_colours(frames[i])
        assert green > 10 and red == 0, (i, red, green)


def test_odd_size_is_padded_by_one_pixel_and_keeps_every_frame(tmp_path):
    src = write_gray_video(tmp_path / "odd.mkv", 97, 73, frames=25)
    dst = tmp_path / "annotated.mp4"
    assert video_props(src)[2:4] == (97, 73)

    assert annotate_video(src, dst, [0.1] * 25) == 25

    frames, rate, width, height, _ = video_props(dst)
    assert (frames, rate, width, height) == (25, Fraction(25), 98, 74)
    before, after = decoded_rgb(src)[5], decoded_rgb(dst)[5]
    # The picture is not scaled: the source lies at the same place, padding on the right/bottom.
    diff = np.abs(before[40:, 60:].astype(int) - after[40:73, 60:97].astype(int))
    assert diff.mean() < 4


def audio_packets(path) -> tuple[str, list[bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        payloads = [bytes(p) for p in container.demux(stream) if p.size]
        return stream.codec_context.codec.canonical_name, payloads


@pytest.mark.parametrize(
    "container, audio_codec, remuxed",
    [("mp4", "aac", True), ("ts", "aac", True), ("mkv", "mp3", True), ("mkv", "pcm_s16le", False)],
)
def test_audio_is_kept(tmp_path, container, audio_codec, remuxed):
    src = write_gray_video(tmp_path / f"talk.{container}", frames=25, audio_codec=audio_codec)
    dst = tmp_path / "annotated.mp4"

    assert annotate_video(src, dst, [0.2] * 25) == 25

    src_codec, src_packets = audio_packets(src)
    out_codec, out_packets = audio_packets(dst)
    if remuxed:  # copied as they are (ADTS headers from .ts are the one thing mp4 drops)
        assert out_codec == src_codec
        assert len(out_packets) == len(src_packets)
        assert all(s.endswith(o) for s, o in zip(src_packets, out_packets))
    else:  # pcm in mp4 is not widely playable: re-encoded
        assert out_codec == "aac"
    with av.open(str(dst)) as out:
        samples = sum(f.samples for f in out.decode(audio=0))
    assert abs(samples - 44100) < 2048  # the whole second of sine, give or take codec padding
    assert video_props(dst)[:2] == (25, Fraction(25))


def test_no_audio_stream_when_source_has_none(tmp_path):
    src = write_gray_video(tmp_path / "silent.mp4", frames=20)
    dst = tmp_path / "annotated.mp4"
    annotate_video(src, dst, [0.2] * 20)
    with av.open(str(dst)) as out:
        assert not out.streams.audio


@pytest.mark.parametrize("n_probs", [0, 19, 21])
def test_mismatched_probs_length_raises_and_writes_nothing(tmp_path, n_probs):
    src = write_gray_video(tmp_path / "src.mp4", frames=20)
    out_dir = tmp_path / "out"
    dst = out_dir / "annotated.mp4"

    with pytest.raises(ValueError, match=rf"{n_probs}\b.*\b20 frames"):
        annotate_video(src, dst, [0.5] * n_probs)
    assert list(out_dir.iterdir()) == []


def test_failure_keeps_previous_output(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", frames=20)
    dst = tmp_path / "annotated.mp4"
    dst.write_bytes(b"previous")
    with pytest.raises(ValueError):
        annotate_video(src, dst, [0.5] * 3)
    assert dst.read_bytes() == b"previous"


@pytest.mark.parametrize("bad", [[0.5, float("nan")], [0.5, 1.2], [[0.5, 0.5]]])
def test_rejects_values_that_are_not_probabilities(tmp_path, bad):
    src = write_gray_video(tmp_path / "src.mp4", frames=2)
    with pytest.raises(ValueError, match="probabilities"):
        annotate_video(src, tmp_path / "annotated.mp4", bad)


def test_plot_probabilities_writes_png(tmp_path):
    times = np.arange(0, 12, 0.5)
    probs = np.clip(np.sin(times / 2) ** 2, 0, 1)
    path = tmp_path / "plots" / "scores.png"

    plot_probabilities(times, probs, 0.7, [(2.0, 4.5), (8.0, 10.0)], path, title="cam 3")

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    assert matplotlib.image.imread(path).shape[2] in (3, 4)
    assert [p.name for p in path.parent.iterdir()] == ["scores.png"]


def test_plot_probabilities_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="3.*2"):
        plot_probabilities([0, 1, 2], [0.1, 0.2], 0.5, [], tmp_path / "p.png")


def test_fight_gif_shows_the_most_violent_seconds(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", 640, 480, frames=100)  # 4 s at 25 fps
    probs = [0.1] * 40 + [0.9] * 25 + [0.2] * 35  # the fight: frames 40-64, one second
    dst = tmp_path / "gifs" / "fight.gif"

    assert fight_gif(src, dst, probs, threshold=0.5, seconds=1.0, fps=10, max_width=320) == (40, 65)

    assert dst.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    with Image.open(dst) as gif:
        assert gif.format == "GIF" and gif.size == (320, 240) and gif.info["loop"] == 0
        assert gif.n_frames == 13  # every 2nd frame of 25 (25 fps / 10 fps, rounded)
        assert gif.info["duration"] == 80
        gif.seek(0)
        red, green = _count_bar_colours(np.asarray(gif.convert("RGB")))
        assert red > 20 and green == 0  # the overlay, red: frame 40 is above the threshold
    assert [p.name for p in dst.parent.iterdir()] == ["fight.gif"]


def test_fight_gif_of_a_video_shorter_than_the_window_and_bad_probs(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", frames=12)
    dst = tmp_path / "short.gif"
    assert fight_gif(src, dst, [0.3] * 12, seconds=3.0, fps=25) == (0, 12)
    with Image.open(dst) as gif:
        assert gif.n_frames == 12 and gif.size == (96, 72)
    with pytest.raises(ValueError, match=r"11 values but .* 12 frames"):
        fight_gif(src, tmp_path / "bad.gif", [0.3] * 11)
    assert not (tmp_path / "bad.gif").exists()


def test_a_hot_frame_outlines_its_hottest_region_and_a_calm_one_does_not(tmp_path):
    src = write_gray_video(tmp_path / "src.mp4", frames=10)
    dst = tmp_path / "annotated.mp4"
    box = (0.5, 0.5, 0.9, 0.9)  # the lower right, away from the top-left overlay
    annotate_video(src, dst, [0.9] * 5 + [0.1] * 5, threshold=0.5, frame_boxes=[box] * 10)

    for i, (before, after) in enumerate(zip(decoded_rgb(src), decoded_rgb(dst), strict=True)):
        h, w = after.shape[:2]
        edge = after[round(0.5 * h) : round(0.9 * h), round(0.5 * w)].astype(int)  # the box's left edge
        red = ((edge[:, 0] > 150) & (edge[:, 0] - edge[:, 1] > 80)).mean()
        inside = np.abs(before.astype(int) - after.astype(int))[round(0.6 * h) : round(0.8 * h),
                                                                  round(0.6 * w) : round(0.8 * w)]
        assert (red > 0.8) if i < 5 else (red == 0), (i, red)
        assert inside.mean() < 4  # an outline, the region itself untouched
