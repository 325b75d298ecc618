"""Square views of a frame around people: what a clip shows the model when it is cut around its actors.

The model sees a 112x112 square. A whole AVA frame squeezed into it shows a fight between people a tenth of the
frame tall as a few dozen pixels, while scoring (trainer/serve/runtime/regions.py) shows the model squares around
what moves, people at a quarter to half of the square. `data.view: actor` cuts training clips the same way, so the
model learns at the scale it is asked at: the union of the sample's boxes (AVA's boxes of the people doing the
action at that timestamp, normalised 0-1) grown by CONTEXT of its size, made square, at least MIN_SIDE of the
frame's short side and at most the short side, centred on the people and shifted to lie inside the frame.
`data.view: frame` (the default) keeps the whole frame.

The same squaring makes scoring's regions (`square_around`), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

VIEWS = ("frame", "actor")
# The defaults of scoring's regions (RegionConfig's context and min_side): a box grows by a quarter of its size,
# a square is at least a fifth of the short side.
CONTEXT = 0.25
MIN_SIDE = 0.2


def square_around(x1: float, y1: float, x2: float, y2: float, width: int, height: int, context: float = CONTEXT,
                  min_side: float = MIN_SIDE) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom; integer pixels, right and bottom exclusive) around the box (x1, y1,
    x2, y2) in the pixels of a width x height frame: side max(box width, box height) x (1 + context), at least
    min_side of the short side, at most the short side; centred on the box, then shifted inside the frame."""
    short = min(width, height)
    side = round(min(short, max(min_side * short, max(x2 - x1, y2 - y1) * (1 + context))))
    left = min(max(0, round((x1 + x2 - side) / 2)), width - side)
    top = min(max(0, round((y1 + y2 - side) / 2)), height - side)
    return left, top, left + side, top + side


def actor_square(boxes: Sequence[Sequence[float]], width: int, height: int) -> tuple[int, int, int, int]:
    """The actor view of a width x height frame: square_around the union of `boxes` (normalised 0-1)."""
    if not boxes:
        raise ValueError("an actor view needs at least one box")
    x1, y1 = min(b[0] for b in boxes) * width, min(b[1] for b in boxes) * height
    x2, y2 = max(b[2] for b in boxes) * width, max(b[3] for b in boxes) * height
    return square_around(x1, y1, x2, y2, width, height)
