"""The views a false alarm showed the model, as training clips of their own (`fightwatch review --export`).

With regions on, watch scores each window's centre square and the squares around what moves in it
(trainer/serve/runtime/regions.py). A false alarm's review clip, exported whole, teaches a retrained model the
centre square; the squares around a sprinting player or a scramble, which watch scores at a larger scale, stay
unseen, and once the centre square is calm they raise the next alarm (measured on six ball-game false alarms of
the demo's model: after a retrain on the whole clips, a region view still scored 0.82). So a clip reviewed false
positive also gives its motion regions: the clip is cut into windows of WINDOW frames, each window's regions are
found as watch finds them, and the MAX_VIEWS that move most at distinct places (IoU at most DUPLICATE_IOU with
one taken) are written as clips of their square (their window's frames). Every view of a false alarm is calm;
a true positive's are not exported, as a region may show a bystander.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from data.clips import VideoFrames
from trainer.serve.runtime.regions import DUPLICATE_IOU, Region, RegionConfig, iou, window_regions
from trainer.serve.runtime.snapshots import Frame, write_mp4

WINDOW = 16  # frames per view clip: one scored segment, what the model takes in
MAX_VIEWS = 6  # view clips per false alarm: a handful of places weigh against its whole clip, not dozens
FPS = 25.0  # the rate view clips are written at (a clip's own rate is not needed: training resamples by time)


class Candidate(NamedTuple):
    """A motion region of the clip's `window`-th window."""

    window: int
    region: Region


def pick_views(candidates: list[Candidate], max_views: int = MAX_VIEWS) -> list[Candidate]:
    """The candidates that move most (most moving pixels first, then the earliest), skipping one whose view
    overlaps a view taken by more than DUPLICATE_IOU (the same place shows the model the same thing), at most
    max_views. Pure."""
    taken: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (-c.region.motion, c.window)):
        if len(taken) == max_views:
            break
        if all(iou(candidate.region.view, kept.region.view) <= DUPLICATE_IOU for kept in taken):
            taken.append(candidate)
    return taken


def write_view_clips(clip: Path, out_stem: Path, cfg: RegionConfig) -> list[Path]:
    """Write `clip`'s picked views next to `out_stem` as `<out_stem>.view<k>.mp4`; their paths."""
    windows: list[list[np.ndarray] | None] = []
    candidates: list[Candidate] = []
    chunk: list[np.ndarray] = []
    for frame in VideoFrames(clip).arrays():  # InputError names the clip when it cannot be decoded
        chunk.append(frame)
        if len(chunk) == WINDOW:
            found = window_regions(chunk, cfg)[1:]  # [0]: the centre square, which the whole clip shows
            candidates += [Candidate(len(windows), region) for region in found]
            windows.append(chunk if found else None)  # only windows with regions are cut from
            chunk = []
    paths = []
    for k, (window, region) in enumerate(sorted(pick_views(candidates), key=lambda c: c.window)):
        view = region.view
        side = view.width // 2 * 2  # H.264's 4:2:0 wants even sides
        cut = [frame[view.y1:view.y1 + side, view.x1:view.x1 + side] for frame in windows[window]]
        path = out_stem.with_name(f"{out_stem.name}.view{k}.mp4")
        write_mp4([Frame(i / FPS, 0.0, _yuv(rgb)) for i, rgb in enumerate(cut)], path, FPS)
        paths.append(path)
    return paths


def _yuv(rgb: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray()
