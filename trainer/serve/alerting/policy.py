"""When to alert: a pure state machine over scored windows, one state per camera.

An alert starts when `consecutive` windows in a row score at or above
`threshold` (one hot window is often a flicker), ends after `calm_to_end`
calm windows, and a camera stays quiet for `cooldown_s` after an alert ends so
a scuffle that pauses does not page the guard twice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AlertPolicy:
    threshold: float
    consecutive: int
    calm_to_end: int
    cooldown_s: float

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.consecutive < 1 or self.calm_to_end < 1 or self.cooldown_s < 0:
            raise ValueError("consecutive and calm_to_end must be >= 1, cooldown_s >= 0")


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    prob: float
    box: tuple[float, ...] | None = None  # where in the frame it is hottest (normalised x1, y1, x2, y2), if known


@dataclass(frozen=True)
class Alert:
    camera: str
    start_s: float  # start of the first hot window
    raised_s: float  # end of the window that raised it: when a live system could know
    peak_prob: float
    end_s: float | None = None  # end of the last hot window; None while active
    box: tuple[float, ...] | None = None  # the raising window's hottest region (normalised), if it had regions


@dataclass(frozen=True)
class AlertState:
    hot: int = 0
    hot_start_s: float = 0.0
    hot_peak: float = 0.0
    calm: int = 0
    active: Alert | None = None
    last_hot_end_s: float = 0.0
    quiet_until_s: float = -math.inf


def step(policy: AlertPolicy, state: AlertState, window: Window, camera: str) -> tuple[AlertState, list[tuple[str, Alert]]]:
    """Advance one camera's state by one window; return the new state and ('start'|'end', alert) events."""
    hot = window.prob >= policy.threshold
    if state.active is not None:
        alert = dataclasses.replace(state.active, peak_prob=max(state.active.peak_prob, window.prob))
        if hot:
            return dataclasses.replace(state, active=alert, calm=0, last_hot_end_s=window.end_s), []
        if state.calm + 1 < policy.calm_to_end:
            return dataclasses.replace(state, active=alert, calm=state.calm + 1), []
        ended = dataclasses.replace(alert, end_s=state.last_hot_end_s)
        return AlertState(quiet_until_s=window.end_s + policy.cooldown_s), [("end", ended)]
    if not hot:
        return dataclasses.replace(state, hot=0, hot_peak=0.0), []
    start_s = window.start_s if state.hot == 0 else state.hot_start_s
    peak = max(state.hot_peak, window.prob)
    if state.hot + 1 < policy.consecutive or window.end_s < state.quiet_until_s:
        return dataclasses.replace(state, hot=state.hot + 1, hot_start_s=start_s, hot_peak=peak), []
    alert = Alert(camera, start_s, window.end_s, peak, box=window.box)
    return AlertState(active=alert, last_hot_end_s=window.end_s, quiet_until_s=state.quiet_until_s), [("start", alert)]


def detect_alerts(policy: AlertPolicy, windows: list[Window], camera: str) -> list[Alert]:
    """All alerts over a finished video; one still active at the end closes at the last hot window."""
    state, alerts = AlertState(), []
    for window in windows:
        state, events = step(policy, state, window, camera)
        alerts += [alert for kind, alert in events if kind == "end"]
    if state.active is not None:
        alerts.append(dataclasses.replace(state.active, end_s=state.last_hot_end_s))
    return alerts
