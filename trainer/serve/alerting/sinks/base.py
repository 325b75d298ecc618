"""The sink interface: `send` an alert, hear of camera status changes and scored windows, `close`; and the
JSON encoding every sink writes (NaN refused, path-like values as strings)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from data.errors import InputError


def _json_default(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"alert field of type {type(value).__name__} is not JSON-serializable")


def to_json(payload: dict) -> str:
    # allow_nan=False: NaN is not JSON and would break the receiver's parser, so fail in the caller.
    return json.dumps(payload, default=_json_default, allow_nan=False)


def open_append(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot append to {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class CameraPresence:
    """A camera's status change, as sinks hear of it."""

    camera: str
    presence: str  # online | reconnecting | offline
    detail: str | None  # why: the error, or how the camera ended (finished, failed, gave_up, stopped)
    wall: float  # time.time() of the change


class Sink:
    """Where alerts go. `send` returns quickly; `close` delivers what is pending, waiting up to timeout_s."""

    def send(self, alert: dict) -> None:
        raise NotImplementedError

    def camera_status(self, change: CameraPresence) -> None:
        """A camera went online, reconnecting or offline (called from the thread that changed it, mostly its
        decode thread). Ignored by default."""

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        """Scored windows (start_s, end_s, fight probability) around an alert: those before its raise, then each
        one while it lasts (called from the inference thread). Ignored by default."""

    def close(self, timeout_s: float = 10.0) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
