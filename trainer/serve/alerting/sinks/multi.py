"""Several sinks as one: each alert to every sink, one sink's failure kept from the others."""

from __future__ import annotations

import logging
import time
from typing import Iterable

from trainer.serve.alerting.sinks.base import CameraPresence, Sink

log = logging.getLogger(__name__)


class MultiSink(Sink):
    """Sends each alert to every sink; one that fails is logged and does not keep it from the others."""

    def __init__(self, sinks: Iterable[Sink]):
        self.sinks = list(sinks)

    def send(self, alert: dict) -> None:
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception:  # e.g. a full disk under a JSON-lines file must not silence the webhook
                log.exception("alert sink %r failed", sink)

    def camera_status(self, change: CameraPresence) -> None:
        for sink in self.sinks:
            try:
                sink.camera_status(change)
            except Exception:
                log.exception("alert sink %r failed on camera %s's status", sink, change.camera)

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        for sink in self.sinks:
            try:
                sink.windows(alert_id, scored)
            except Exception:
                log.exception("alert sink %r failed on alert %s's windows", sink, alert_id)

    def close(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for sink in self.sinks:
            sink.close(max(0.0, deadline - time.monotonic()))

    def __repr__(self):
        return f"MultiSink({self.sinks!r})"
