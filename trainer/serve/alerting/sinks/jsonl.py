"""Alerts as JSON lines, appended to a file or written to stdout."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from trainer.serve.alerting.sinks.base import Sink, open_append, to_json


class JsonLinesSink(Sink):
    """One JSON line per alert, appended to `path` or written to stdout for "-", flushed per line for `tail -f`."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._file = None if str(path) == "-" else open_append(Path(path))
        self._lock = threading.Lock()  # several cameras' loops may share one sink; keep lines whole

    def send(self, alert: dict) -> None:
        line = to_json(alert) + "\n"
        with self._lock:
            out = sys.stdout if self._file is None else self._file  # looked up per write: honours a redirect
            out.write(line)
            out.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        if self._file is not None:
            self._file.close()

    def __repr__(self):
        return f"JsonLinesSink({str(self.path)!r})"
