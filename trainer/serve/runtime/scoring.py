"""Scoring a video in 16-frame segments, in the layout of video-classification-3d-cnn-pytorch.

As in that tool's `--mode score`, frames are numbered from 1, a segment is
`[i, i+15]` inclusive (`sample_duration` frames; segment starts `stride` = 16
frames apart by default, so each frame is scored once), and `scores` are the
raw logits with `label` the class of the highest (trainer/serve/runtime/class_names.py:
no fight / fight, or a released model's Kinetics names); each segment also carries
its start and end in seconds (`end_s` is the end of its last frame, i.e.
`last / fps`) and, for fightwatch's two classes, the fight probability
(softmax), which alerts and annotation need. With regions on (`score.regions.budget` > 0,
trainer/serve/runtime/regions.py) a fight model also scores where the window moves: the segment gets
`regions`, [{"box": [x1, y1, x2, y2] normalised to the frame, "fight_prob"}, ...] with the whole-frame view
first, its `fight_prob` is the highest of them and `label` and `scores` are that region's. `--mode feature` writes,
as that tool's feature mode does, `features` instead of `label` and `scores`:
the pooled vector `ResNet3D.features` (512-d for ResNet-18/34 at width 64;
in general 8 x width x block expansion), plus the same start/end seconds.

The windows follow trainer/serve/runtime/windows.py (the one plan `watch` follows too): the whole video is
covered, the short tail by one overlapping last window, a video shorter than 16 frames by its frames
loop-padded; with a stride larger than 16 the frames between segments are skipped, by request.

Damaged video is read through (data/decode.py): frames keep their numbers across what was lost, a segment across
a gap of at most `decode.max_gap_frames` is scored on the frames around it, segments across a longer one are
skipped, and the entry's `warnings` say what was lost and skipped (empty for a clean read). A video is an error
entry only when nothing decodes or damage took more than `decode.max_loss_share` of it.

Precision: `score_video` takes an `AccelPlan` (trainer/accel.py). The model is
prepared once with `prepare_model` (apply(plan, model), no optimizer), each
batch goes through `plan.input` and the forward runs under `plan.autocast()`,
so bf16 autocast and channels_last_3d are used where the plan says; outputs are
returned as fp32.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, TypeVar

import av
import numpy as np
import torch

from data.clips import VideoFrames
from data.dataset import crop_box, to_input
from data.decode import DecodeConfig
from data.errors import InputError
from trainer.accel import AccelPlan, apply, stem_in_fp32
from trainer.compiled import choose_runtime, compiled_model
from trainer.model import ModelConfig, ResNet3D
from trainer.openvino_model import check_installed, openvino_model
from trainer.quantize import checked_program, quantized_model
from trainer.serve.alerting.policy import Window
from trainer.serve.runtime.class_names import FIGHT_CLASSES
from trainer.serve.runtime.regions import RegionConfig, decode_side, window_views
from trainer.serve.runtime.windows import WindowCutter, loop_padded

log = logging.getLogger(__name__)
T = TypeVar("T")

MODES = ("score", "feature")
# The plan when none is given: plain fp32, contiguous, as torch runs by default.
FP32_PLAN = AccelPlan("fp32", "torch", False, "fp32: default (no accel plan given)")


@dataclass(frozen=True)
class ScoreConfig:
    stride: int
    batch_size: int  # model inputs per forward pass (a window with regions is several)
    regions: RegionConfig = field(default=RegionConfig(budget=0))  # the whole frame only, unless a config says
    decode: DecodeConfig = DecodeConfig()  # how far damaged video is read through (data/decode.py)

    def __post_init__(self):
        if self.stride < 1 or self.batch_size < 1:
            raise ValueError("stride and batch_size must be >= 1")


def check_fight_model(model_cfg: ModelConfig, path: str | Path) -> None:
    """InputError unless the model tells fight from no fight (what alerts and evaluation need)."""
    if model_cfg.n_classes != len(FIGHT_CLASSES):
        raise InputError(f"{path}: checkpoint has {model_cfg.n_classes} classes, fightwatch detects "
                         f"{len(FIGHT_CLASSES)} ({', '.join(FIGHT_CLASSES)}); use a model fine-tuned by "
                         "fightwatch train")


def prepare_model(model: ResNet3D, plan: AccelPlan, model_cfg: ModelConfig | None = None,
                  runtime: str = "eager", model_path: Path | None = None) -> torch.nn.Module:
    """The model in eval mode, prepared for `plan` (apply without an optimizer) and compiled where `runtime` says
    (auto | eager | compile | int8 | openvino: trainer/compiled.py; these need the input size, `model_cfg`, and
    give logits only, no `features`; int8 runs the program `fightwatch quantize` saved beside `model_path`, in place
    of the model; openvino converts the fp32 model); logs the path taken."""
    runtime, why = choose_runtime(runtime, sum(p.numel() for p in model.parameters()), plan.kernels)
    if runtime == "int8":
        program = checked_program(model_path)
        log.info("scoring in int8 (%s), %d threads (%s)", program, torch.get_num_threads(), why)
        return quantized_model(program)
    shape = (3, model_cfg.sample_duration, model_cfg.sample_size, model_cfg.sample_size) if model_cfg else None
    if runtime == "openvino":
        check_installed()
        log.info("scoring with OpenVINO in %s, %d threads (%s; %s)", plan.precision, torch.get_num_threads(),
                 plan.reason, why)
        return openvino_model(model.eval(), plan, shape)
    model, _ = apply(plan, model.eval())
    model, stem = stem_in_fp32(model, plan, shape) if shape else (model, "")
    log.info("scoring in %s%s with %s kernels, %s, %d threads (%s; %s%s)", plan.precision,
             " channels_last_3d" if plan.channels_last else "", plan.kernels, runtime, torch.get_num_threads(),
             plan.reason, why, f"; {stem}" if stem else "")
    if runtime == "compile":
        return compiled_model(model, plan, shape)
    return model


def frame_rate(path: str | Path) -> Fraction:
    """The video's average frame rate (FFmpeg's guess where the header has none; 25 as a last resort)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            return Fraction(stream.average_rate or stream.guessed_rate or 25)
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot open video: {e}") from None


class CutWindow(NamedTuple):
    """A window ready for the model: its 0-based first frame, its frame count (before loop-padding), and its
    views (R, T, size, size, 3) uint8 with their boxes normalised to the frame (None: only the centre square)."""

    start: int
    length: int
    views: np.ndarray
    boxes: tuple[tuple[float, float, float, float], ...] | None


class WindowBatches:
    """The video's windows (trainer/serve/runtime/windows.py's plan) as model views, in batches of about
    `batch_size` views, the loop-padded tail last. Once iterated, `frames` is the video's frame count (decoded and
    lost) and `warnings` what was lost and skipped.

    With `regions.budget` 0 a window is its frames' centre square, decoded at the model's size. Otherwise frames
    are decoded at `regions.decode_side` and each window is cut into its regions (regions.py): the centre square
    and where it moves. Decoding and cutting happen here, so a thread can run it ahead of the model
    (`prefetched`)."""

    def __init__(self, path: Path, size: int, duration: int, stride: int, batch_size: int,
                 region_cfg: RegionConfig = RegionConfig(budget=0), decode: DecodeConfig = DecodeConfig()):
        self.path, self.size, self.duration, self.stride, self.batch_size = path, size, duration, stride, batch_size
        self.region_cfg, self.decode = region_cfg, decode
        self.frames = 0
        self.warnings: list[str] = []

    def _cut(self, start: int, length: int, frames: np.ndarray) -> CutWindow:
        views, boxes, _ = window_views(loop_padded(frames, self.duration), self.size, self.region_cfg)
        return CutWindow(start, length, views, boxes)

    def __iter__(self) -> Iterator[list[CutWindow]]:
        whole_frame_only = self.region_cfg.budget == 0
        cutter: WindowCutter[np.ndarray] = WindowCutter(self.duration, self.stride, self.decode.max_gap_frames)
        batch: list[CutWindow] = []
        video = VideoFrames(self.path, decode_side(self.size, self.region_cfg), whole_frame_only, self.decode)
        for lost, frame in video:
            if whole_frame_only:  # the centre square now: a window holds 16 small crops, not 16 frames
                y, x = crop_box(frame.shape[0], frame.shape[1], self.size, "c")
                frame = frame[y : y + self.size, x : x + self.size]
            for cut in [*cutter.gap(lost), cutter.push(frame)]:
                if cut is None:
                    continue
                batch.append(self._cut(cut.start, self.duration, np.stack(cut.items)))
                if sum(len(w.views) for w in batch) >= self.batch_size:
                    yield batch
                    batch = []
        self.frames = cutter.frames
        self.warnings = video.log.warnings() + (
            [f"{cutter.skipped} segment{'s' * (cutter.skipped != 1)} skipped: they span a gap of more than "
             f"{self.decode.max_gap_frames} lost frames (decode.max_gap_frames)"] if cutter.skipped else [])
        tail = cutter.finish()
        if tail is not None:
            batch.append(self._cut(tail.start, len(tail.items), np.stack(tail.items)))
        if batch:
            yield batch


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """`items` produced by a daemon thread up to `depth` ahead of the caller (0: in the caller's thread), in
    order; the producer's exception is raised here. PyAV decodes and numpy crops without the GIL, so decoding
    the next windows overlaps the model's forward pass."""
    if depth < 1:
        yield from items
        return
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as e:  # handed to the consumer, raised in its thread
            ready.put((done, e))

    thread = threading.Thread(target=produce, name="decode-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()  # the consumer stopped early (an error in the model): let the producer end
        thread.join()


def score_video(model: ResNet3D, model_cfg: ModelConfig, path: str | Path, cfg: ScoreConfig, *,
                plan: AccelPlan | None = None, mode: str = "score",
                class_names: tuple[str, ...] = FIGHT_CLASSES, decode_ahead: int = 2) -> dict:
    """One output.json entry: {"video", "fps", "frames", "clips": [...]}.

    `model` must already be prepared for `plan` (prepare_model); None means plain fp32. `class_names`
    label the model's outputs; with fightwatch's (FIGHT_CLASSES) each segment also gets its fight_prob.
    `decode_ahead`: batches a thread decodes while the model runs (0: decode, then score, in turn).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "score" and model_cfg.n_classes != len(class_names):
        raise ValueError(f"{len(class_names)} class names for a {model_cfg.n_classes}-class model")
    fight = mode == "score" and class_names == FIGHT_CLASSES
    plan = plan or FP32_PLAN
    path = Path(path)
    fps = float(frame_rate(path))
    clips: list[dict] = []
    model.eval()
    region_cfg = cfg.regions if fight else RegionConfig(budget=0)  # regions find fights: not labels, not features
    windows_ = WindowBatches(path, model_cfg.sample_size, model_cfg.sample_duration, cfg.stride, cfg.batch_size,
                             region_cfg, cfg.decode)
    for batch in prefetched(windows_, decode_ahead):
        x = plan.input(torch.stack([to_input(view, model_cfg.sample_size, model_cfg.normalization)
                                    for window in batch for view in window.views]))
        with torch.inference_mode(), plan.autocast():
            out = model.features(x) if mode == "feature" else model(x)
        out = out.float()
        rows = out.tolist()
        probs = torch.softmax(out, 1)[:, 1].tolist() if fight else [None] * len(rows)
        first = 0
        for window in batch:
            views = range(first, first + len(window.views))
            first = views.stop
            hottest = max(views, key=lambda i: probs[i]) if fight else views.start
            end = window.start + window.length
            clip = {"segment": [window.start + 1, end]}
            if mode == "score":
                clip |= {"label": class_names[int(np.argmax(rows[hottest]))], "scores": rows[hottest]}
            else:
                clip["features"] = rows[hottest]
            clip |= {"start_s": round(window.start / fps, 4), "end_s": round(end / fps, 4)}
            if fight:
                clip["fight_prob"] = probs[hottest]
            if window.boxes is not None:
                clip["regions"] = [{"box": list(box), "fight_prob": probs[i]} for box, i in zip(window.boxes, views)]
            clips.append(clip)
    return {"video": path.name, "fps": fps, "frames": windows_.frames, "clips": clips, "warnings": windows_.warnings}


def _per_frame(entry: dict, n_frames: int, value, default=None) -> list:
    """value(segment) for each frame: each frame takes the last segment that covers it."""
    values = [default] * n_frames
    for clip in entry["clips"]:
        first, last = clip["segment"]
        values[first - 1 : min(last, n_frames)] = [value(clip)] * max(0, min(last, n_frames) - first + 1)
    return values


def frame_probabilities(entry: dict, n_frames: int) -> list[float]:
    """Fight probability per frame: each frame takes the last segment that covers it."""
    return _per_frame(entry, n_frames, lambda clip: clip["fight_prob"], 0.0)


def frame_boxes(entry: dict, n_frames: int) -> list[tuple[float, ...] | None]:
    """The hottest region's normalised box per frame (None without regions), as frame_probabilities takes."""
    return _per_frame(entry, n_frames, hottest_box)


def hottest_box(clip: dict) -> tuple[float, ...] | None:
    """The normalised box of a segment's hottest region, None without regions."""
    if "regions" not in clip:
        return None
    return tuple(max(clip["regions"], key=lambda r: r["fight_prob"])["box"])


def windows(entry: dict) -> list[Window]:
    return [Window(c["start_s"], c["end_s"], c["fight_prob"], hottest_box(c)) for c in entry["clips"]]
