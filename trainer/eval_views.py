"""Video-level evaluation the way the field reports it: several clips per video, one or three crops each.

As MMAction2's test pipeline (SampleFrames in test mode, then CenterCrop or ThreeCrop): `clip_starts` spreads
`clips` windows of `sample_duration` frames evenly over the video (a video shorter than one window is one window,
loop-padded); each window is scored on the centre square of the frames resized so their short side is the model's
`sample_size`, or with `crops=3` on the three squares along the long side (start, centre, end). The video's
fight probability averages its views: their probabilities (`prob`) or their logits before the softmax (`logit`).
RWF-2000's and Hockey Fights' published accuracies are video-level figures of this kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from data.clips import VideoFrames
from data.dataset import to_input
from data.decode import DecodeConfig
from trainer.accel import AccelPlan
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.runtime.windows import loop_padded


@dataclass(frozen=True)
class EvalConfig:
    clips: int  # windows per video
    crops: Literal[1, 3]
    average: Literal["prob", "logit"]
    batch_size: int

    def __post_init__(self):
        if self.clips < 1 or self.batch_size < 1 or self.crops not in (1, 3) or self.average not in ("prob", "logit"):
            raise ValueError("clips and batch size must be >= 1, crops 1 or 3, average prob or logit")


def clip_starts(n_frames: int, duration: int, clips: int) -> list[int]:
    """First frames of `clips` windows spread evenly over n_frames (MMAction2's SampleFrames, test mode). Pure."""
    if n_frames <= duration:
        return [0]
    interval = (n_frames - duration + 1) / clips
    return sorted({int(interval / 2 + interval * i) for i in range(clips)})


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of each size x size view: the centre, or three along the long side. Pure."""
    centre = ((height - size) // 2, (width - size) // 2)
    if crops == 1:
        return [centre]
    if width >= height:
        return [(centre[0], 0), centre, (centre[0], width - size)]
    return [(0, centre[1]), centre, (height - size, centre[1])]


class VideoViews(NamedTuple):
    logits: np.ndarray  # of every view (clips x crops, 2)
    frames: int  # decoded
    warnings: list[str]  # what damage lost (data/decode.py); empty for a clean read


def view_logits(model: ResNet3D, model_cfg: ModelConfig, path: str | Path, cfg: EvalConfig,
                plan: AccelPlan, decode: DecodeConfig = DecodeConfig()) -> VideoViews:
    """One video's views scored; `model` prepared for `plan`. InputError for a missing or unreadable file. Frames
    lost to damage are closed up: a clip is short, and its views spread over what decodes."""
    size, duration = model_cfg.sample_size, model_cfg.sample_duration
    video = VideoFrames(path, short_side=size, decode=decode)
    frames = np.stack(video.arrays())
    views = []
    for start in clip_starts(len(frames), duration, cfg.clips):
        window = loop_padded(frames[start:start + duration], duration)
        for y, x in crop_offsets(window.shape[1], window.shape[2], size, cfg.crops):
            views.append(to_input(window[:, y:y + size, x:x + size], size, model_cfg.normalization))
    logits = []
    for i in range(0, len(views), cfg.batch_size):
        with torch.inference_mode(), plan.autocast():
            logits.append(model(plan.input(torch.stack(views[i:i + cfg.batch_size]))).float())
    return VideoViews(torch.cat(logits).numpy(), len(frames), video.log.warnings())


def video_fight_prob(logits: np.ndarray, average: str) -> float:
    """The video's fight probability from its views' logits: mean probability, or probability of the mean logit."""
    logits = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if average == "logit":
        return float(torch.softmax(logits.mean(0), 0)[1])
    return float(torch.softmax(logits, 1)[:, 1].mean())
