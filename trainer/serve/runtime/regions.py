"""Where a window moves: the regions of a frame that the model looks at, besides the whole frame (issue 25).

The model sees 112x112. Squeezed into that, a fight a quarter of a wide CCTV frame across is a few dozen
pixels and goes unseen. So, as NVRs do before running a detector, each 16-frame window is first searched for
motion on a small grey copy of its frames (`small_grey`, `motion_mask`), the moving parts become boxes
(`motion_boxes`), and the boxes become square regions with context (`regions`); every region is cut at one
place from all 16 frames and resized to the model's input (`crop_regions`), and the window's fight probability
is the highest of its regions'. A budget caps the regions per window, so the cost follows activity, not the
frame's resolution.

Boxes (`Box`) are in pixels of the frame they were found in: integer edges, x2 and y2 exclusive, so a box
cuts `frame[y1:y2, x1:x2]`. output.json carries them normalised to the frame, 0-1, AVA's convention
(`normalised`).

`regions(...)[0]` is always the whole-frame view, and it is the frame's centre square (its short side), the
view the model is trained on and today's only input: with budget 0 scoring sees what it saw before. A squeeze
of the full 16:9 frame would distort people 1.78x, a letterbox would spend 44% of the input on black bars the
model never saw; the sides the centre square cuts off are what the motion regions cover. The motion regions
follow, most moving area first; all regions are squares, so `crop_regions` never changes an aspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from data.views import CONTEXT, MIN_SIDE, square_around

# Luma (BT.601) in 8-bit fixed point: weights sum to 256.
LUMA_WEIGHTS = (77, 150, 29)
# A pixel moves when its change beats this many median absolute frame differences (noise's own scale): for
# gaussian noise the median |difference| is 0.67 of its sigma, so 6 medians is 4 sigmas, 6e-5 of samples.
NOISE_MULTIPLE = 6.0
# Frame-to-frame steps in which a pixel must change: one is a flicker (a keyframe's pulse, a glitch).
MIN_MOVING_STEPS = 2
# Set pixels a moving pixel needs in its 3x3 neighbourhood, itself included: isolated specks and pairs are noise.
MIN_NEIGHBOURS = 3
# Moving pixels of the small copy below which a mover is noise (2x2 of 64 rows: 3% x 3% of the short side).
MIN_MOVING_PIXELS = 4
# A region overlapping one ranked before it (or the whole-frame view) by more than this shows the model nothing new.
DUPLICATE_IOU = 0.5


class Box(NamedTuple):
    """Pixel edges in a frame (or mask): x2, y2 exclusive, so the box cuts `image[y1:y2, x1:x2]`."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


@dataclass(frozen=True)
class RegionConfig:
    """The `score.regions` section: how each window's regions are found. The defaults and why:

    budget 2: two separate spots of activity per window besides the whole frame, so at most 3x today's
        forward passes; a window with no motion costs what it does today.
    motion_side 64: the motion search runs on 64 rows (short side) whatever the camera's resolution; one of
        its pixels is 1/64 of the short side, a fifth of the smallest region, fine enough to place it.
    threshold 10: the grey-level change that counts as motion at the least. The floor under the noise's own
        threshold (NOISE_MULTIPLE median differences): above a compressed stream's flicker on a small copy (a
        few levels), below a person against the background (tens).
    context 0.25: a motion box grows by a quarter of its size (an eighth each side) before squaring: the
        moving limbs already span the people, and fights fill the training clips; at 0.5 a fight 1/8 of a 720p
        view came out a third smaller in the model's input and scored 0.2-0.5 where at 0.25 it scored 0.6-0.9
        (the demo's held-out wide view, seed 0's model).
    min_side 0.2: regions are at least a fifth of the short side (144 px of 720p for the model's 112): a
        smaller cut would be upsampled from too few pixels, and a small motion (a hand) needs its body.
    merge 0.05: moving pixels at most a twentieth of the short side apart (3 pixels of the 64-row copy, half a
        standing person's width in a wide view) are one mover: the arms and legs of one fight. At 0.1 a
        bystander walking past a small fight joined it into one box near the whole frame's size, dropped as its
        near-duplicate: the fight went unseen.
    decode_side 448: with regions on, frames are decoded at this short side (never above the video's own) and
        the regions cut from them: 4x the model's 112, so the smallest region (min_side) is ~90 px, near the
        model's input, while a 1080p or 4K frame is not decoded and resized at full size.
    """

    budget: int = 2  # motion regions per window besides the whole frame; 0: the whole frame only
    motion_side: int = 64  # short side (px) of the small grey copy motion is searched on
    threshold: float = 10.0  # grey levels (0-255) a pixel must change by more than, at least, to count as moving
    context: float = CONTEXT  # a motion box grows by this fraction of its size before it is made square
    min_side: float = MIN_SIDE  # smallest region side, as a fraction of the frame's short side
    merge: float = 0.05  # moving pixels at most this far apart (fraction of the short side) are one mover
    decode_side: int = 448  # short side (px) frames are decoded at to cut regions from (budget > 0)

    def __post_init__(self):
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0 (motion regions besides the whole frame), got {self.budget}")
        if self.motion_side < 16:
            raise ValueError(f"motion_side must be >= 16 (px of the small copy's short side), got {self.motion_side}")
        if not 0 < self.threshold < 255:
            raise ValueError(f"threshold must be between 0 and 255 grey levels, got {self.threshold}")
        if not self.context >= 0:
            raise ValueError(f"context must be >= 0 (a fraction of the motion box's size), got {self.context}")
        if not 0 < self.min_side <= 1:
            raise ValueError(f"min_side must be > 0 and <= 1 (a fraction of the short side), got {self.min_side}")
        if not 0 <= self.merge <= 1:
            raise ValueError(f"merge must be between 0 and 1 (a fraction of the short side), got {self.merge}")
        if self.decode_side < self.motion_side:
            raise ValueError(f"decode_side must be >= motion_side ({self.motion_side}), got {self.decode_side}")


def normalised(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """The box as fractions of the frame (0-1, AVA's convention), rounded to 4 decimals, as output.json has it."""
    return (round(box.x1 / width, 4), round(box.y1 / height, 4), round(box.x2 / width, 4), round(box.y2 / height, 4))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes in the same units; 0 when either is empty."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_bottom_centre(box: Sequence[float]) -> tuple[float, float]:
    """(x, y) of the middle of the box's bottom edge, where people stand: the point zone rules test."""
    return (box[0] + box[2]) / 2, box[3]


def centre_square(width: int, height: int) -> Box:
    """The whole-frame view: the frame's centre square, its side the short side (the view the model trained on)."""
    side = min(width, height)
    x1, y1 = (width - side) // 2, (height - side) // 2
    return Box(x1, y1, x1 + side, y1 + side)


def small_grey(frames: Sequence[np.ndarray], motion_side: int) -> np.ndarray:
    """T frames (H, W, 3) uint8 RGB (an array or a list) -> (T, h, w) uint8 luma with short side `motion_side` (the
    frame's, if smaller).

    Each small pixel is the frame's pixel at its block's centre, sampled, not averaged: a fixed camera's pixels
    stay put, so sampling only misses movers thinner than the spacing, and `motion_mask`'s threshold adapts to
    the noise averaging would have removed; it costs 1-2 ms on 16 frames of 720p where averaging costs 120.
    """
    height, width = frames[0].shape[:2]
    scale = min(1.0, motion_side / min(height, width))
    rows, cols = max(1, round(height * scale)), max(1, round(width * scale))
    ys = ((np.arange(rows) + 0.5) * height / rows).astype(np.intp)
    xs = ((np.arange(cols) + 0.5) * width / cols).astype(np.intp)
    rgb = np.stack([frame[ys[:, None], xs[None, :]] for frame in frames]).astype(np.uint16)
    luma = rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]
    return ((luma + 128) >> 8).astype(np.uint8)


def motion_mask(grey: np.ndarray, threshold: float) -> np.ndarray:
    """(T, h, w) uint8 grey window -> (h, w) bool: the pixels that move in it.

    A pixel moves when its frame-to-frame change beats the level in at least MIN_MOVING_STEPS steps, the level
    being the larger of `threshold` and NOISE_MULTIPLE times the window's median absolute change (the sensor's
    own noise: gaussian noise of sigma 2.5 gives a level of 14). Each step's median change is taken off first,
    so a global lighting drift or an exposure step is not motion. Pixels with fewer than MIN_NEIGHBOURS moving
    pixels in their 3x3 neighbourhood (themselves included) are dropped as specks. A window of fewer than
    MIN_MOVING_STEPS + 1 frames has no motion.
    """
    steps = np.diff(grey.astype(np.int16), axis=0)
    if len(steps) < MIN_MOVING_STEPS:
        return np.zeros(grey.shape[1:], bool)
    # the medians from a quarter of the pixels: as good an estimate, 4x cheaper
    steps -= _median(steps[:, ::2, ::2].reshape(len(steps), -1), axis=1)[:, None, None]
    change = np.abs(steps)
    level = max(threshold, NOISE_MULTIPLE * float(_median(change[:, ::2, ::2], axis=None)))
    moving = (change > int(level)).sum(axis=0) >= MIN_MOVING_STEPS  # changes are whole: > int(level) is > level
    return moving & (_neighbourhood_count(moving) >= MIN_NEIGHBOURS)


def _median(values: np.ndarray, axis: int | None) -> np.ndarray:
    """The middle value (the upper one of an even count) along `axis`: np.partition, 20x faster than np.median."""
    middle = (values.size if axis is None else values.shape[axis]) // 2
    return np.take(np.partition(values, middle, axis=axis), middle, axis=axis)


def _neighbourhood_count(mask: np.ndarray) -> np.ndarray:
    """Set pixels in each pixel's 3x3 neighbourhood, itself included (outside the mask counts as unset)."""
    h, w = mask.shape
    padded = np.pad(mask, 1).astype(np.uint8)
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


class Mover(NamedTuple):
    """One mover of a motion mask: its box in the mask's pixels and how many of them move."""

    box: Box
    pixels: int


def motion_boxes(mask: np.ndarray, merge_gap: int = 0, min_pixels: int = MIN_MOVING_PIXELS) -> list[Mover]:
    """The movers of an (h, w) mask, boxes in its pixels, most moving pixels first.

    A mover is the moving pixels 8-connected through gaps of at most `merge_gap` unset pixels (in x and in y):
    the fragments of one moving body are one mover. Movers of fewer than `min_pixels` are dropped. The work
    follows the mask's size and its runs of moving pixels, never pairs of movers, so a scatter of movers (rain,
    leaves) costs what one does.
    """
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return []
    height, width = mask.shape
    # each pixel spread over the next merge_gap pixels right and down, so a gap of merge_gap closes
    joined = np.pad(mask, ((0, merge_gap), (0, merge_gap)))
    for _ in range(merge_gap):
        joined[1:] |= joined[:-1]
        joined[:, 1:] |= joined[:, :-1]
    labels = np.zeros(joined.shape, np.intp)
    labels[joined] = _component_of_each_pixel(joined)
    ids, mover = np.unique(labels[ys, xs], return_inverse=True)
    pixels = np.bincount(mover)
    x1, y1 = np.full(len(ids), width), np.full(len(ids), height)
    x2, y2 = np.zeros(len(ids), np.intp), np.zeros(len(ids), np.intp)
    np.minimum.at(x1, mover, xs), np.minimum.at(y1, mover, ys)
    np.maximum.at(x2, mover, xs + 1), np.maximum.at(y2, mover, ys + 1)
    ranked = np.argsort(-pixels, kind="stable")
    return [Mover(Box(int(x1[i]), int(y1[i]), int(x2[i]), int(y2[i])), int(pixels[i]))
            for i in ranked if pixels[i] >= min_pixels]


def _component_of_each_pixel(mask: np.ndarray) -> np.ndarray:
    """The 8-connected component of each set pixel, in np.nonzero's (row-major) order, as the index of one of its
    runs. Runs of set pixels per row are joined with the runs they touch in the row above (union-find)."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    run_rows, run_starts = np.nonzero(edges == 1)
    run_ends = np.nonzero(edges == -1)[1]  # exclusive; row-major order pairs each start with its end
    rows, starts, ends = run_rows.tolist(), run_starts.tolist(), run_ends.tolist()  # python ints: 3x faster in the loop
    first_run = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).tolist()
    parent = list(range(len(rows)))

    def root(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    for row in range(1, mask.shape[0]):
        above, above_end = first_run[row - 1], first_run[row]
        here, here_end = first_run[row], first_run[row + 1]
        while above < above_end and here < here_end:
            if starts[here] <= ends[above] and starts[above] <= ends[here]:  # overlap or diagonal touch
                parent[root(here)] = root(above)
            if ends[above] < ends[here]:
                above += 1
            else:
                here += 1
    return np.repeat(np.array([root(run) for run in range(len(rows))], np.intp), run_ends - run_starts)


class Region(NamedTuple):
    """A region of a window: `view`, the square the model sees, `moving`, the box of what moved there (what an
    alert says is where the fight is: the view adds context around it), and `motion`, its moving pixels on the
    small grey copy (how much it moves: region_memory.py rescores a view whose motion grows). The whole-frame view
    moved as a whole: its `motion` is all the window's moving pixels."""

    view: Box
    moving: Box
    motion: int = 0


def regions(grey_small: np.ndarray, frame_width: int, frame_height: int, cfg: RegionConfig) -> list[Region]:
    """The window's regions in the frame's pixels: [the whole-frame view (centre_square)] + up to cfg.budget
    motion regions, most moving area first.

    `grey_small` is the window's small grey copy (T, h, w), small_grey(frames, cfg.motion_side). Each motion
    box is scaled to the frame (its `moving` box) and made a square with context (its `view`: data.views'
    square_around with cfg.context and cfg.min_side, the squaring actor-centred training clips get). A view with
    IoU > DUPLICATE_IOU with one before it (the whole-frame view included) is a near-duplicate and dropped
    without using the budget.
    """
    whole = centre_square(frame_width, frame_height)
    if cfg.budget == 0:
        return [Region(whole, whole)]
    rows, cols = grey_small.shape[1:]
    mask = motion_mask(grey_small, cfg.threshold)
    found = [Region(whole, whole, int(mask.sum()))]
    scale_x, scale_y = frame_width / cols, frame_height / rows
    for box, pixels in motion_boxes(mask, round(cfg.merge * min(rows, cols))):
        x1, x2 = box.x1 * scale_x, box.x2 * scale_x
        y1, y2 = box.y1 * scale_y, box.y2 * scale_y
        square = Box(*square_around(x1, y1, x2, y2, frame_width, frame_height, cfg.context, cfg.min_side))
        if all(iou(square, kept.view) <= DUPLICATE_IOU for kept in found):
            found.append(Region(square, Box(round(x1), round(y1), round(x2), round(y2)), pixels))
            if len(found) > cfg.budget:
                break
    return found


def crop_regions(frames: Sequence[np.ndarray], boxes: Sequence[Box], size: int) -> np.ndarray:
    """T frames (H, W, 3) uint8 (an array or a list) -> (R, T, size, size, 3) uint8: each box cut at its place from
    every frame and resized to size x size, bilinear with antialiasing (as data/dataset.py's to_input resizes),
    ready for to_input. A box that is not square is squeezed; regions() gives only squares."""
    import torch  # the box functions above stay importable without torch
    import torch.nn.functional as F

    out = np.empty((len(boxes), len(frames), size, size, 3), np.uint8)
    for i, box in enumerate(boxes):
        cut = np.stack([frame[box.y1 : box.y2, box.x1 : box.x2] for frame in frames])
        if cut.shape[1:3] == (size, size):
            out[i] = cut
            continue
        # (T, 3, h, w) over NHWC memory: torch's uint8 channels-last resize, ~6x faster than in float
        pixels = torch.from_numpy(cut).permute(0, 3, 1, 2)
        resized = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = resized.permute(0, 2, 3, 1).numpy()
    return out


class WindowViews(NamedTuple):
    """One window's model inputs: `views` (R, T, size, size, 3) uint8; `boxes`, each view's `moving` box
    normalised to the frame, and `regions`, the views in the decoded frame's pixels (None, None: the centre
    square alone, no regions)."""

    views: np.ndarray
    boxes: tuple[tuple[float, float, float, float], ...] | None
    regions: tuple[Region, ...] | None


def window_regions(frames: Sequence[np.ndarray], cfg: RegionConfig) -> tuple[Region, ...]:
    """One window's regions (its frames decoded at cfg.decode_side, an array or a list; budget > 0)."""
    height, width = frames[0].shape[:2]
    return tuple(regions(small_grey(frames, cfg.motion_side), width, height, cfg))


def region_boxes(found: Sequence[Region], width: int, height: int) -> tuple[tuple[float, float, float, float], ...]:
    """Each region's `moving` box normalised to the width x height frame: what outputs say."""
    return tuple(normalised(region.moving, width, height) for region in found)


def window_views(frames: np.ndarray, size: int, cfg: RegionConfig) -> WindowViews:
    """One window's views, every one cut. Budget 0: the frames' centre square (already cut when the frames are
    size x size), the input of scoring before regions. Otherwise window_regions() of the frames."""
    height, width = frames.shape[1:3]
    if cfg.budget == 0:
        if (height, width) == (size, size):  # the decode loops cut the centre square per frame: no copy of it then
            return WindowViews(frames[None], None, None)
        return WindowViews(crop_regions(frames, [centre_square(width, height)], size), None, None)
    found = window_regions(frames, cfg)
    return WindowViews(crop_regions(frames, [region.view for region in found], size),
                       region_boxes(found, width, height), found)


def decode_side(size: int, cfg: RegionConfig) -> int:
    """The short side a scorer decodes frames at: the model's own without regions, cfg.decode_side with them."""
    return size if cfg.budget == 0 else cfg.decode_side
