"""Zones: named polygons of a camera's view, and the rule that a camera's alerts need one (Frigate's
`required_zones`): where a camera has required zones, only regions whose box's bottom centre (where people stand)
lies in one of them count towards its alerts, so "only the entrance" or "not the boxing ring" can be said.

Polygons and boxes are normalised to the frame (0-1), as output.json's boxes are. A window without regions (no
boxes: regions off) cannot be placed and counts as it is; watch warns at start when a camera has required zones
and regions are off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer.serve.runtime.regions import box_bottom_centre


@dataclass(frozen=True)
class Zone:
    """One entry of `watch.zones`."""

    camera: str  # the camera id the zone belongs to
    name: str
    polygon: tuple[tuple[float, ...], ...]  # its corners (x, y), normalised to the frame, in order
    required: bool  # the camera's alerts need a region in one of its required zones

    def __post_init__(self):
        if not self.camera or not self.name:
            raise ValueError("a zone needs a camera and a name")
        if len(self.polygon) < 3 or any(len(p) != 2 or not all(0 <= v <= 1 for v in p) for p in self.polygon):
            raise ValueError(f"zone {self.name}: polygon needs 3 or more [x, y] corners, each in 0-1")


def contains(polygon: Sequence[Sequence[float]], point: Sequence[float]) -> bool:
    """Whether `point` lies inside `polygon` (even-odd rule, a point on an edge counts as inside). Pure."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]]):
        if min(y1, y2) <= y <= max(y1, y2) and min(x1, x2) <= x <= max(x1, x2):
            cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
            if abs(cross) < 1e-12:
                return True  # on this edge
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def zones_of(box: Sequence[float], zones: Sequence[Zone]) -> list[str]:
    """The names of the zones that hold the box's bottom centre. Pure."""
    foot = box_bottom_centre(box)
    return [zone.name for zone in zones if contains(zone.polygon, foot)]


def counting(camera: str, boxes: Sequence[Sequence[float]] | None, zones: Sequence[Zone]) -> list[bool]:
    """Which of a window's regions count towards the camera's alerts: all of them where the camera has no required
    zone (or the window has no boxes), else those whose bottom centre is in a required zone. Pure."""
    required = [zone for zone in zones if zone.camera == camera and zone.required]
    if boxes is None:
        return [True]
    if not required:
        return [True] * len(boxes)
    return [bool(zones_of(box, required)) for box in boxes]
