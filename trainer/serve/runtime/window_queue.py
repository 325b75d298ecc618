"""The queue between the cameras' decode threads and the inference thread."""

from __future__ import annotations

import threading
from collections import deque


class WindowQueue:
    """Per-camera FIFOs of windows, at most `max_per_camera` each; `take` goes round robin over the cameras."""

    def __init__(self, max_per_camera: int):
        self.max = max_per_camera
        self._queues: dict[str, deque] = {}
        self._turn = 0
        self._cond = threading.Condition()

    def put(self, camera: str, item, block: bool, stop: threading.Event) -> bool:
        """Queue `item`; True when it pushed out the camera's oldest window (only with block=False)."""
        with self._cond:
            queue = self._queues.setdefault(camera, deque())
            dropped = False
            if block:
                while len(queue) >= self.max and not stop.is_set():
                    self._cond.wait(0.1)
            elif len(queue) >= self.max:
                queue.popleft()
                dropped = True
            queue.append(item)
            self._cond.notify_all()
            return dropped

    def take(self, n: int, timeout: float) -> list:
        """Up to n windows, round robin (each camera's in order); waits up to timeout for the first."""
        with self._cond:
            if not any(self._queues.values()):
                self._cond.wait(timeout)
            names = list(self._queues)
            if not names:
                return []
            order = names[self._turn % len(names):] + names[:self._turn % len(names)]
            self._turn += 1
            out = []
            while len(out) < n and any(self._queues[c] for c in order):
                for camera in order:
                    if self._queues[camera] and len(out) < n:
                        out.append(self._queues[camera].popleft())
            if out:
                self._cond.notify_all()  # room for blocked producers
            return out

    def depth(self, camera: str) -> int:
        with self._cond:
            return len(self._queues.get(camera, ()))

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
