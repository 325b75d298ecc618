"""Alerts, camera status and scored windows into the alert store, with its retention applied on a timer."""

from __future__ import annotations

import logging
import threading

from trainer.serve.alerting.retention import Retention, apply_retention
from trainer.serve.alerting.sinks.base import CameraPresence, Sink
from trainer.serve.alerting.store import AlertStore

log = logging.getLogger(__name__)


class StoreSink(Sink):
    """Records alert starts and ends and camera status changes in an AlertStore (short local writes), and applies
    the store's retention at once and then every `retention_every_s` on a daemon thread."""

    def __init__(self, store: AlertStore, retention: Retention, retention_every_s: float = 600.0):
        self.store, self.retention, self.retention_every_s = store, retention, retention_every_s
        self._stop = threading.Event()
        self._retainer = threading.Thread(target=self._retain, name="store-retention", daemon=True)
        self._retainer.start()

    def send(self, alert: dict) -> None:
        if alert["event"] == "start":
            self.store.record_start(alert)
        elif alert["event"] == "end":
            self.store.record_end(alert)

    def camera_status(self, change: CameraPresence) -> None:
        self.store.record_camera_event(change.camera, change.presence, change.detail, change.wall)

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        self.store.record_windows(alert_id, scored)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._retainer.join(timeout_s)
        self.store.close()

    def _retain(self):
        while True:
            try:
                apply_retention(self.store, self.retention)
            except Exception:  # a locked or full disk now must not end retention for the rest of the run
                log.exception("%r: retention failed", self.store)
            if self._stop.wait(self.retention_every_s):
                return

    def __repr__(self):
        return f"StoreSink({self.store!r})"
