"""What the review app's tests share: alerts in a real store with the snapshot and clip watch writes (the same
writers, so the browser plays what watch makes), and a LiveView with cameras set by the test."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av

from tests.support.videos import pattern
from trainer.serve.alerting.store import AlertStore, utc_text
from trainer.serve.runtime.snapshots import Frame, write_jpeg, write_mp4

NOW = datetime(2024, 5, 20, 12, 0, tzinfo=timezone.utc)


def frames(n: int, size=(160, 96), fps=25.0) -> list[Frame]:
    """Frames as the cameras' ring holds them (yuv420p planes), each showing its index."""
    out = []
    for i in range(n):
        yuv = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24").reformat(format="yuv420p").to_ndarray()
        out.append(Frame(t=i / fps, wall=time.time(), yuv=yuv))
    return out


def jpeg_bytes(tmp: Path, index: int = 0) -> bytes:
    return write_jpeg(frames(index + 1)[index], tmp / f"frame{index}.jpg").read_bytes()


def add_alert(store: AlertStore, folder: Path, alert_id: str, camera: str = "gate", at: datetime = NOW,
              peak: float = 0.9, media: bool = True, ended: bool = True, clip_frames: int = 50,
              box: tuple[float, float, float, float] | None = None) -> None:
    """An alert as watch records it: start, windows, end; with a real snapshot and H.264 clip when `media`; `box`:
    where (normalised x1, y1, x2, y2), None for a model run without regions."""
    snapshot, clip = folder / camera / f"{alert_id}.jpg", folder / camera / f"{alert_id}.mp4"
    if media:
        clip_frames_ = frames(clip_frames)
        write_jpeg(clip_frames_[clip_frames // 2], snapshot)
        write_mp4(clip_frames_, clip, 25.0)
    start = {"event": "start", "alert_id": alert_id, "camera": camera, "source": f"rtsp://cam/{camera}",
             "start_s": 10.0, "raised_s": 11.28, "start_time": utc_text(at),
             "raised_time": utc_text(at + timedelta(seconds=1.28)), "peak_prob": peak, "threshold": 0.5,
             "snapshot": str(snapshot), "clip": str(clip), "box": box}
    store.record_start(start)
    store.record_windows(alert_id, [(9.36 + 0.32 * i, 10.0 + 0.32 * i, p)
                                    for i, p in enumerate([0.2, 0.4, 0.7, 0.8, peak, 0.6, 0.3])])
    if ended:
        store.record_end({**start, "event": "end", "end_s": 12.24, "end_time": utc_text(at + timedelta(seconds=2.24)),
                          "reason": "calm"})


class FixedLiveView:
    """A LiveView whose cameras and frames the test sets (watch --ui's is over the Monitor)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cameras: dict[str, dict] = {}
        self._frames: dict[str, bytes] = {}

    def set_camera(self, camera: str, status: str = "online", fps: float | None = 25.0, lag_s: float | None = 0.1,
                   jpeg: bytes | None = None) -> None:
        with self._lock:
            self._cameras[camera] = {"id": camera, "status": status, "fps": fps, "lag_s": lag_s}
            if jpeg is not None:
                self._frames[camera] = jpeg

    def cameras(self) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self._cameras.values()]

    def latest_jpeg(self, camera: str) -> bytes | None:
        with self._lock:
            return self._frames.get(camera)
