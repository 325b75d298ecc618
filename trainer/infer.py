"""Scoring a video in 16-frame segments, in the layout of video-classification-3d-cnn-pytorch.

As in that tool's `--mode score`, frames are numbered from 1, a segment is
`[i, i+15]` inclusive, and `scores` are the raw logits; each segment also
carries its start and end in seconds and the fight probability (softmax).
Unlike that tool, the whole video is covered: when frames are left after the
last full segment, one more segment is scored on the video's last 16 frames
(it overlaps the one before), and a video shorter than 16 frames is
loop-padded into one segment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

from data.clips import iter_frames, probe
from data.dataset import crop_box, temporal_indices, to_input
from trainer.alerts import Window
from trainer.model import ModelConfig, ResNet3D

CLASS_NAMES = ("no fight", "fight")


@dataclass(frozen=True)
class ScoreConfig:
    stride: int
    batch_size: int

    def __post_init__(self):
        if self.stride < 1 or self.batch_size < 1:
            raise ValueError("stride and batch_size must be >= 1")


def segment_starts(n_frames: int, duration: int, stride: int) -> list[int]:
    """0-based first frames of the scored segments, covering every frame (see module doc)."""
    if n_frames <= duration:
        return [0]
    starts = list(range(0, n_frames - duration + 1, stride))
    if starts[-1] + duration < n_frames:
        starts.append(n_frames - duration)
    return starts


def score_video(model: ResNet3D, model_cfg: ModelConfig, path: str | Path, cfg: ScoreConfig) -> dict:
    """One output.json entry: {"video", "fps", "frames", "clips": [...]}."""
    path = Path(path)
    info = probe(path)
    fps = float(info.fps)
    clips, batch = [], []

    def flush():
        x = torch.stack([to_input(frames, model_cfg.sample_size, model_cfg.normalization) for _, frames in batch])
        with torch.no_grad():
            logits = model(x)
        probs = torch.softmax(logits.float(), 1)[:, 1]
        for (start, _), row, prob in zip(batch, logits.tolist(), probs.tolist()):
            end = start + model_cfg.sample_duration
            clips.append({
                "segment": [start + 1, end],
                "label": CLASS_NAMES[int(np.argmax(row))],
                "scores": row,
                "start_s": round(start / fps, 4),
                "end_s": round(end / fps, 4),
                "fight_prob": prob,
            })
        batch.clear()

    model.eval()
    duration, size = model_cfg.sample_duration, model_cfg.sample_size
    # Decode once, holding only the last `duration` frames; the header's frame count plans the
    # segments, the decoded count is what the entry reports.
    starts = deque(segment_starts(info.frames, duration, cfg.stride))
    recent: deque[np.ndarray] = deque(maxlen=duration)
    n_frames = 0
    for frame in iter_frames(path, short_side=size):
        y, x = crop_box(frame.shape[0], frame.shape[1], size, "c")
        recent.append(frame[y : y + size, x : x + size])
        n_frames += 1
        while starts and starts[0] + duration == n_frames:
            batch.append((starts.popleft(), np.stack(recent)))
            if len(batch) == cfg.batch_size:
                flush()
    if starts and recent:  # shorter than one segment, or fewer frames than the header said: loop-pad the rest
        frames = np.stack(recent)
        batch.append((max(0, n_frames - duration), frames[temporal_indices(len(frames), duration, 0)]))
    if batch:
        flush()
    return {"video": path.name, "fps": fps, "frames": n_frames, "clips": clips}


def frame_probabilities(entry: dict, n_frames: int) -> list[float]:
    """Fight probability per frame: each frame takes the last segment that covers it."""
    probs = [0.0] * n_frames
    for clip in entry["clips"]:
        first, last = clip["segment"]
        for i in range(first - 1, min(last, n_frames)):
            probs[i] = clip["fight_prob"]
    return probs


def windows(entry: dict) -> list[Window]:
    return [Window(c["start_s"], c["end_s"], c["fight_prob"]) for c in entry["clips"]]
