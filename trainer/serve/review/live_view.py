"""What the review app shows of the cameras right now: the `LiveView` protocol and the store's view of it.

`fightwatch watch --ui` passes a view over its Monitor (status, fps and lag from `stats()`, the newest frame of
each camera's ring as a JPEG); `fightwatch review` has no cameras, only the store, so `StoreLiveView` gives each
camera's latest recorded status and no pictures.

A camera is a dict: {"id": str, "status": "online" | "reconnecting" | "offline", "fps": float | None,
"lag_s": float | None, "since": ISO time | None, "detail": str | None}; fps, lag_s, since and detail may be None
or absent.
"""

from __future__ import annotations

from typing import Protocol

from trainer.serve.alerting.store import AlertStore
from trainer.serve.runtime.cameras import PRESENCE
from trainer.serve.runtime.snapshots import jpeg_bytes

CAMERA_STATUSES = ("online", "reconnecting", "offline")


class LiveView(Protocol):
    def cameras(self) -> list[dict]:
        """Every camera, as the module doc says; called a few times a second, so it must be cheap."""

    def latest_jpeg(self, camera: str) -> bytes | None:
        """The camera's newest frame as JPEG bytes; None when there is none (unknown camera, no frame yet)."""


class StoreLiveView:
    """The cameras as the store last heard of them: their latest status event, no frames."""

    def __init__(self, store: AlertStore):
        self.store = store

    def cameras(self) -> list[dict]:
        return [{"id": c.camera, "status": c.status, "fps": None, "lag_s": None, "since": c.since, "detail": c.detail}
                for c in self.store.cameras()]

    def latest_jpeg(self, camera: str) -> bytes | None:
        return None


class MonitorLiveView:
    """`fightwatch watch --ui`'s cameras: status, fps and lag from the monitor's cameras, the newest decoded frame.

    Duck-typed over trainer.serve.runtime.monitor.Monitor (its `cameras` dict), read from the web server's threads: a
    frame is encoded once, however many pages show it."""

    def __init__(self, monitor):
        self.monitor = monitor
        self._encoded: dict[str, tuple[object, bytes]] = {}  # camera -> (the Frame, its JPEG)

    def cameras(self) -> list[dict]:
        return [{"id": cam.id, "status": PRESENCE.get(cam.status, "reconnecting"),  # starting: connecting
                 "fps": cam.fps, "lag_s": round(cam.stats.lag_s, 3), "detail": cam.error}
                for cam in self.monitor.cameras.values()]

    def latest_jpeg(self, camera: str) -> bytes | None:
        cam = self.monitor.cameras.get(camera)
        if cam is None:
            return None
        with cam.ring_lock:
            frame = cam.ring[-1] if cam.ring else None
        if frame is None:
            return None
        cached = self._encoded.get(camera)
        if cached is None or cached[0] is not frame:
            cached = self._encoded[camera] = (frame, jpeg_bytes(frame, quality=75))
        return cached[1]
