"""Render fight scores for people to review: an annotated copy of a video and a probability plot.

``annotate_video`` draws, on every frame, the label and fight probability with a bar (red at or
above the alert threshold, green below) on a translucent dark box in the top-left corner, and, where
the score had regions and the frame is at or above the threshold, a red frame around the hottest region; it
writes H.264/yuv420p MP4 that plays anywhere. It streams frame by frame, keeps the frame count
and frame rate of the source, and carries the source's audio along.

``fight_gif`` writes a short GIF of the most violent few seconds (the window of frames with the
highest mean fight probability), overlay included, at a reduced rate and size for chat and email.

``plot_probabilities`` draws the score over time with the threshold and the alert intervals.

All write atomically: a temp file beside the destination is renamed over it only once complete,
so a crash never leaves a truncated video or plot where a viewer (or a watcher) would pick it up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from data.decode import frames_by_number
from data.files import atomic_path

# Audio codecs copied into the MP4 untouched; every common player decodes them. Others become AAC.
_REMUX_AUDIO_CODECS = frozenset({"aac", "mp3"})

_BOX_RGBA = (0, 0, 0, 150)
_TRACK_RGBA = (255, 255, 255, 70)
_TEXT_RGB = (255, 255, 255)
_ALERT_RGB = (230, 30, 30)
_CALM_RGB = (30, 200, 60)


def annotate_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    frame_probs: Sequence[float],
    threshold: float = 0.5,
    labels: tuple[str, str] = ("no fight", "fight"),
    frame_boxes: Sequence[Sequence[float] | None] | None = None,
) -> int:
    """Write ``dst``: ``src`` with each frame's label, fight probability and bar drawn on it.

    ``frame_boxes[i]``, when given, is where frame i is hottest (x1, y1, x2, y2 normalised to the frame, or
    None): outlined in red when the frame is at or above the threshold.

    ``frame_probs[i]`` is the fight probability of frame i of the first video stream, numbered as
    ``score`` numbers them (data.decode.frames_by_number: a frame lost to damage shows the one before
    it); ``labels`` are (below threshold, at or above threshold). The output is H.264 (libx264,
    yuv420p) MP4 with exactly one frame per source frame, timed at the source's average frame
    rate, so frame i of the output is frame i of the source. yuv420p needs even dimensions: an
    odd width or height is padded by one edge-replicated pixel (never scaled or cropped). Display
    rotation metadata is not applied or carried over. The first audio stream is kept: AAC and MP3
    are copied as they are, anything else is re-encoded to AAC.

    Returns the number of frames written. Raises ValueError if ``frame_probs`` is not one
    probability in [0, 1] per decoded frame; ``dst`` is then left untouched.
    """
    probs = _probabilities(frame_probs)
    dst = Path(dst)
    with atomic_path(dst) as tmp, av.open(os.fspath(src), metadata_errors="replace") as inp:
        if not inp.streams.video:
            raise ValueError(f"{src} has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        # average_rate is unknown for some raw streams; guessed_rate is FFmpeg's own fallback.
        rate = vin.average_rate or vin.guessed_rate
        # The output restarts the clock at 0 on the first frame; audio is shifted to match.
        start = vin.start_time * vin.time_base if vin.start_time is not None else Fraction(0)

        with av.open(os.fspath(tmp), "w", format="mp4") as out:
            vout = out.add_stream("libx264", rate=rate)
            vout.width, vout.height = vin.width + vin.width % 2, vin.height + vin.height % 2
            vout.pix_fmt = "yuv420p"
            if vin.sample_aspect_ratio:
                vout.sample_aspect_ratio = vin.sample_aspect_ratio
            audio = _AudioRelay(ain, out, start) if ain is not None else None
            overlay = _Overlay(vin.height, labels)

            n_frames = 0
            for frame in frames_by_number(inp, vin, (ain, audio.relay) if audio is not None else None):
                # Past the end of probs, only count: the error below reports the true length.
                if n_frames < len(probs):
                    image = frame.to_image()
                    box = frame_boxes[n_frames] if frame_boxes is not None else None
                    overlay.draw(image, probs[n_frames], threshold, box)
                    out.mux(vout.encode(_to_frame(image, vout.width, vout.height, n_frames)))
                n_frames += 1
            if n_frames != len(probs):
                raise ValueError(
                    f"frame_probs has {len(probs)} values but {src} has {n_frames} frames"
                )
            out.mux(vout.encode(None))
            if audio is not None:
                audio.finish()
    return n_frames


def fight_gif(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    frame_probs: Sequence[float],
    threshold: float = 0.5,
    seconds: float = 3.0,
    fps: float = 10.0,
    max_width: int = 320,
    labels: tuple[str, str] = ("no fight", "fight"),
) -> tuple[int, int]:
    """Write ``dst``: a looping GIF of the ``seconds`` of ``src`` with the highest mean fight probability.

    ``frame_probs`` is one probability per decoded frame, as for ``annotate_video``, whose overlay
    the GIF frames carry. Frames are taken every ``round(source rate / fps)`` frames (at least every
    frame) and scaled down to at most ``max_width`` pixels wide. The window is ``seconds`` of source
    frames (the whole video when shorter); of equal windows the earliest wins.

    Returns the window as 0-based (first frame, end frame exclusive). Raises ValueError as
    ``annotate_video`` does; ``dst`` is then left untouched.
    """
    if seconds <= 0 or fps <= 0 or max_width < 16:
        raise ValueError("seconds and fps must be > 0 and max_width >= 16")
    probs = _probabilities(frame_probs)
    with av.open(os.fspath(src), metadata_errors="replace") as inp:
        if not inp.streams.video:
            raise ValueError(f"{src} has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        rate = float(vin.average_rate or vin.guessed_rate or 25)
        length = max(1, min(len(probs), round(seconds * rate)))
        sums = np.concatenate([[0.0], np.cumsum(probs)])
        first = int(np.argmax(sums[length:] - sums[:-length])) if probs else 0
        end = first + length
        step = max(1, round(rate / fps))
        overlay = _Overlay(vin.height, labels)
        images, n_frames = [], 0
        for frame in frames_by_number(inp, vin):
            if first <= n_frames < end and (n_frames - first) % step == 0:
                image = frame.to_image()
                overlay.draw(image, probs[n_frames], threshold)
                if image.width > max_width:
                    height = max(1, round(image.height * max_width / image.width))
                    image = image.resize((max_width, height), Image.Resampling.LANCZOS)
                images.append(image)
            n_frames += 1
    if n_frames != len(probs):
        raise ValueError(f"frame_probs has {len(probs)} values but {src} has {n_frames} frames")
    if not images:
        raise ValueError(f"{src} has no frames")
    with atomic_path(Path(dst)) as tmp:
        # GIF delays are in centiseconds; Pillow rounds the millisecond duration to them.
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=round(1000 * step / rate), optimize=False)
    return first, end


def plot_probabilities(
    times_s: Sequence[float],
    probs: Sequence[float],
    threshold: float,
    alert_intervals: Sequence[tuple[float, float]],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Write a PNG of fight probability over time, the threshold, and alert intervals shaded red.

    Each probability holds from its time until the next one (a step plot), as the alerting sees it.
    """
    if len(times_s) != len(probs):
        raise ValueError(f"times_s has {len(times_s)} values but probs has {len(probs)}")
    # Figure + Agg canvas directly: no pyplot global state and no display needed.
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (start, end) in enumerate(alert_intervals):
        ax.axvspan(start, end, color="red", alpha=0.2, lw=0, label="alert" if i == 0 else None)
    ax.step(times_s, probs, where="post", color="tab:blue", label="fight probability")
    ax.axhline(threshold, color="black", linestyle="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fight probability")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small", frameon=False)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _probabilities(values: Sequence[float]) -> list[float]:
    probs = np.asarray(values, dtype=float)
    # A NaN would silently compare as "no fight"; refuse it rather than hide a model fault.
    if probs.ndim != 1 or not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("frame_probs must be a flat sequence of probabilities in [0, 1]")
    return probs.tolist()


class _Overlay:
    """Draws label, probability and bar; the layout is fixed per video so the box never jitters."""

    def __init__(self, frame_height: int, labels: tuple[str, str]):
        self.labels = labels
        self.font = ImageFont.load_default(size=max(10, round(frame_height / 24)))
        bboxes = [self.font.getbbox(f"{label} 1.00") for label in labels]
        self.text_top = min(b[1] for b in bboxes)
        text_h = max(b[3] for b in bboxes) - self.text_top
        self.pad = max(2, round(text_h / 4))
        self.bar_w = max(b[2] for b in bboxes)
        self.bar_h = max(3, round(text_h / 2))
        self.bar_y = self.pad + text_h + self.pad
        self.box = (0, 0, 2 * self.pad + self.bar_w, self.bar_y + self.bar_h + self.pad)

    def draw(self, image: Image.Image, prob: float, threshold: float, box: Sequence[float] | None = None) -> None:
        alert = prob >= threshold
        # "RGBA" mode blends the translucent fills into the RGB frame instead of overwriting it.
        draw = ImageDraw.Draw(image, "RGBA")
        if alert and box is not None:
            w, h = image.size
            draw.rectangle((box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1), outline=_ALERT_RGB,
                           width=max(2, round(h / 180)))
        draw.rectangle(self.box, fill=_BOX_RGBA)
        text = f"{self.labels[alert]} {prob:.2f}"
        draw.text((self.pad, self.pad - self.text_top), text, font=self.font, fill=_TEXT_RGB)
        x0, y0, y1 = self.pad, self.bar_y, self.bar_y + self.bar_h - 1
        draw.rectangle((x0, y0, x0 + self.bar_w - 1, y1), fill=_TRACK_RGBA)
        filled = round(prob * self.bar_w)
        if filled:
            draw.rectangle((x0, y0, x0 + filled - 1, y1), fill=_ALERT_RGB if alert else _CALM_RGB)


def _to_frame(image: Image.Image, width: int, height: int, index: int) -> av.VideoFrame:
    """Output frame ``index``, padded to the even encoder size by repeating the edge pixels."""
    pixels = np.asarray(image)
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    # The index as pts in the encoder's 1/rate time base: constant rate, nothing dropped or doubled.
    frame.pts = index
    return frame


class _AudioRelay:
    """Carries the source's audio stream into the output, shifted by the video's start time."""

    def __init__(
        self, src: av.AudioStream, out: av.container.OutputContainer, video_start: Fraction
    ):
        self.out, self.start = out, video_start
        # canonical_name is the format's ("mp3"); the decoder's own name may differ ("mp3float").
        self.copy = src.codec_context.codec.canonical_name in _REMUX_AUDIO_CODECS
        if self.copy:
            self.dst = out.add_stream_from_template(src)
        else:
            self.dst = out.add_stream("aac", rate=src.sample_rate)

    def relay(self, packet: av.Packet) -> None:
        if not self.copy:
            for frame in packet.decode():
                if frame.pts is not None:
                    frame.pts -= round(self.start / frame.time_base)
                self.out.mux(self.dst.encode(frame))
        elif packet.size:  # skip the empty packet demux sends at the end to flush decoders
            shift = round(self.start / packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.dst
            self.out.mux(packet)

    def finish(self) -> None:
        if not self.copy:
            self.out.mux(self.dst.encode(None))
