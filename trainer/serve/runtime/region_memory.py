"""Which of a live window's views the model scores, and which keep the score they got a moment ago (issue 25).

With regions on, each window of a camera shows the model its centre square and up to `budget` regions where it
moves: up to three forward passes where the whole frame alone took one. On a calm camera most of them show the
model what the window before showed it: windows at stride 8 overlap by half, and calm people stay put. So a view
that scored calm keeps its score, for at most `recheck_s` of stream time, while the same place (IoU above
SAME_PLACE_IOU with the view scored) moves no more than it did then (its motion at most GROWTH times as many
moving pixels, plus noise's MIN_MOVING_PIXELS). A view that is new, moves more, scored hot, or whose score is
older than recheck_s is scored. A calm camera then costs about one forward pass per window; a busy one costs
what it did; a fight that starts where it was calm is scored at its first window when its motion grows, and
within recheck_s when it doesn't.

`plan_views` is the rule, a pure function of a camera's memory and its next window's regions; `watch`
(monitor.py) keeps the memory per camera and plans a camera's window once its previous one is scored, so a score
still queued is never what a view keeps. `score` scores every view of every window: the offline reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

from trainer.serve.runtime.regions import MIN_MOVING_PIXELS, Box, Region, iou

# A view overlapping a remembered one by more than this shows the model the same place.
SAME_PLACE_IOU = 0.5
# A place whose moving pixels grow past this multiple of what they were when it was scored is scored again.
GROWTH = 1.5


@dataclass
class Score:
    """A view's fight probability; None until the forward pass it is queued in has run."""

    prob: float | None = None


class Remembered(NamedTuple):
    """A view scored at window start `scored_s` while `motion` pixels moved in it."""

    view: Box
    motion: int
    scored_s: float
    score: Score


class Plan(NamedTuple):
    """Per region the Score it takes (`to_score` lists the regions whose Scores are new, for the model to fill),
    and the camera's memory after this window."""

    scores: list[Score]
    to_score: list[int]
    memory: list[Remembered]


def keeps_score(remembered: Remembered, region: Region, start_s: float, recheck_s: float,
                calm_below: float) -> bool:
    """Whether `region`, in a window starting at `start_s`, may take `remembered`'s score instead of a forward pass."""
    prob = remembered.score.prob
    return (prob is not None and prob < calm_below  # scored (not still queued) and calm
            and start_s - remembered.scored_s < recheck_s
            and region.motion <= GROWTH * remembered.motion + MIN_MOVING_PIXELS)


def plan_views(memory: Sequence[Remembered], found: Sequence[Region], start_s: float, recheck_s: float,
         calm_below: float) -> Plan:
    """Which of a window's regions (regions.regions(), the whole-frame view first) to score, and what the
    camera remembers after it: each region's own entry, the remembered one where it keeps its score. A region is
    matched with the remembered view it overlaps most, when by more than SAME_PLACE_IOU. recheck_s 0: every
    region is scored."""
    scores, to_score, after = [], [], []
    for i, region in enumerate(found):
        overlaps = [(iou(region.view, kept.view), kept) for kept in memory]
        best = max(overlaps, key=lambda pair: pair[0], default=(0.0, None))
        if best[1] is not None and best[0] > SAME_PLACE_IOU and keeps_score(best[1], region, start_s, recheck_s,
                                                                           calm_below):
            kept = best[1]
        else:
            kept = Remembered(region.view, region.motion, start_s, Score())
            to_score.append(i)
        scores.append(kept.score)
        after.append(kept)
    return Plan(scores, to_score, after)
