"""Live monitoring: cameras (video files, RTSP/HTTP streams, capture devices) scored by one model, alerts out.

Threads
    decode, one per camera: opens the source with PyAV, decodes, keeps a ring buffer of the last seconds
        (small yuv420p frames, for the alert's clip and snapshot), cuts a window of the model's
        `sample_duration` frames every `stride` frames and hands it to the WindowQueue. Files are replayed
        at their frame rate (`realtime`) or as fast as scoring allows; a dropped stream reconnects with
        exponential backoff.
    inference, the thread that calls Monitor.run: takes what is ready (round robin over the cameras, up to
        `batch_size` windows), scores it in one forward pass under the accel plan, advances each camera's
        alert state with trainer.alerts.step and sends start/end events to the sink (non-blocking).
    writer, one: the JPEG snapshot (the hottest frame) and the mp4 clip (H.264) of each alert, so encoding
        never delays scoring. Both are written atomically (temp file, rename): a path in an alert names
        either nothing yet or the complete file.

Sources
    A file that ends is finished; a file that cannot be opened is dropped (status failed). A URL or a
    device is live: when it ends or errors (or sends nothing for `timeout_s`) it is reconnected after
    reconnect_delay_s, doubling per failure in a row up to reconnect_max_delay_s, `max_reconnects` times in
    all (None: forever); one that cannot be opened at start is retried the same way. So a recording served
    over HTTP replays again and again: watch recordings as files. When no camera could be opened at all,
    run() raises InputError. A camera's alert state survives its reconnects; when the camera is done, its
    active alert ends (`reason`: source ended / source lost / stopped / max-seconds / interrupted).

Alerts
    `start`: camera, start_s (first hot window's start) and raised_s (the raising window's end) with their
    wall-clock times, peak_prob so far, the snapshot (middle frame of the hottest window so far) and the
    clip (clip_seconds up to raised_s). `end`: the final peak_prob and end_s (last hot window's end), a new
    `-peak.jpg` snapshot when a later window was hotter. Snapshot and clip are clip_height tall at most.

Time
    A camera's stream time (`*_s` fields) is seconds since its first frame, from the frames' own
    timestamps, kept continuous across timestamp jumps and reconnects (a reconnect adds the wall time it
    took). Wall-clock times (`*_time` fields, ISO 8601 UTC) map stream time onto the clock through the
    arrival time of the newest decoded frame; for a file replayed with realtime off they are compressed
    like the replay itself.

Backpressure
    A live source (stream, device, or a file replayed in real time) never waits for scoring: when a camera
    already has `max_queued` windows waiting, its oldest is dropped and counted (windows_dropped). A file
    replayed as fast as possible waits instead, so every window is scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from data.clips import resized
from data.dataset import crop_box, temporal_indices, to_input
from data.errors import InputError
from data.store import atomic_path
from trainer.accel import AccelPlan
from trainer.alerts import Alert, AlertPolicy, AlertState, Window, step
from trainer.model import ModelConfig

log = logging.getLogger(__name__)

KINDS = ("file", "stream", "device")
TERMINAL = ("finished", "failed", "gave_up", "stopped")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # never "." or "..": it names a folder
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


# ---------------------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    camera: str  # id: a letter or digit, then letters, digits, '_', '.', '-' (it names a folder and files)
    url: str  # a file path, a stream URL or a device path, as given
    kind: str  # "file" | "stream" | "device"

    @property
    def display(self) -> str:
        """The URL for logs and alerts: without user:password@ and with the query (tokens) elided."""
        return redact(self.url)


def redact(url: str) -> str:
    if not _SCHEME.match(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://<unparsable URL>"
    netloc = ("***@" if parts.username is not None or parts.password is not None else "") + (
        f"[{host}]" if ":" in host else host) + port
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def _kind(url: str) -> str:
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() != "file":
        return "stream"
    if url.startswith("/dev/"):
        return "device"
    return "file"


def _derived_name(url: str, kind: str) -> str:
    if kind == "stream":
        parts = urllib.parse.urlsplit(url)
        path = parts.path.rsplit(".", 1)[0] if "." in parts.path.rsplit("/", 1)[-1] else parts.path
        raw = f"{parts.hostname or 'stream'}{path}"
    else:
        raw = Path(url.removeprefix("file://")).stem or "camera"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")[:64]
    return name or "camera"


def _parse(text: str) -> tuple[Source, bool]:
    text = text.strip()
    if not text:
        raise InputError("empty camera source")
    name, sep, rest = text.partition("=")
    explicit = bool(sep and _NAME.fullmatch(name) and rest and not os.path.exists(text))
    url = rest if explicit else text
    kind = _kind(url)
    if kind == "file":
        url = url.removeprefix("file://")
    return Source(name if explicit else _derived_name(url, kind), url, kind), explicit


def parse_source(text: str) -> Source:
    """`NAME=URL` or a bare URL/path (the id then comes from the file name or the URL's host and path).

    NAME is a letter or digit, then letters, digits, '_', '.', '-' (it names the alert folder and files);
    anything else before '=', or an existing file whose name holds '=', is taken as a path or URL.
    """
    return _parse(text)[0]


def parse_sources(texts) -> list[Source]:
    """Sources with unique ids: a derived id that repeats gets -2, -3, ...; a repeated NAME= is an error."""
    parsed = [_parse(t) for t in texts]
    if not parsed:
        raise InputError("no camera sources given")
    explicit = [s.camera for s, named in parsed if named]
    dupes = sorted({c for c in explicit if explicit.count(c) > 1})
    if dupes:
        raise InputError(f"camera id(s) {', '.join(dupes)} given more than once")
    taken, out = set(explicit), []
    for source, named in parsed:
        camera = source.camera
        if not named:
            base, n = camera, 2
            while camera in taken:
                camera, n = f"{base}-{n}", n + 1
            taken.add(camera)
        out.append(dataclasses.replace(source, camera=camera))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class WatchConfig:
    stride: int = 8  # frames between window starts
    batch_size: int = 8  # most windows per forward pass
    realtime: bool = True  # replay files at their frame rate
    out_dir: Path = Path("runs/watch")
    clip_seconds: float = 5.0  # the alert clip: this many seconds up to the raising window's end
    clip_height: int = 360  # ring buffer / clip / snapshot height (smaller sources keep theirs)
    max_queued: int = 4  # windows waiting per camera
    reconnect_delay_s: float = 1.0  # first backoff; doubles per failure in a row
    reconnect_max_delay_s: float = 30.0
    max_reconnects: int | None = None  # per camera, in all; None: forever
    timeout_s: float = 10.0  # open and read timeout of streams and devices
    options: tuple[tuple[str, str], ...] = ()  # FFmpeg demuxer options for streams and devices
    stats_every_s: float = 60.0  # log the counters this often; 0: never
    max_seconds: float | None = None  # stop after this long

    def __post_init__(self):
        if self.stride < 1 or self.batch_size < 1 or self.max_queued < 1:
            raise ValueError("stride, batch size and max queued windows must be >= 1")
        if not self.clip_seconds > 0 or self.clip_height < 16:
            raise ValueError("clip seconds must be > 0 and clip height >= 16")
        if not (self.reconnect_delay_s >= 0 and self.reconnect_max_delay_s >= self.reconnect_delay_s):
            raise ValueError("reconnect delay must be >= 0 and at most the maximum reconnect delay")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max reconnects must be >= 0")
        if not self.timeout_s > 0 or self.stats_every_s < 0:
            raise ValueError("timeout must be > 0 and stats interval >= 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError("max seconds must be > 0")


# ---------------------------------------------------------------------------------------------------------------
# Frames, windows and the queue between decode and inference


@dataclass(frozen=True)
class Frame:
    """One decoded frame as kept in the ring buffer: stream time, arrival (time.time()), yuv420p planes."""

    t: float
    wall: float
    yuv: np.ndarray  # (height * 3 // 2, width) uint8, the layout of PyAV's yuv420p to_ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.yuv.shape[1], self.yuv.shape[0] * 2 // 3


@dataclass(frozen=True)
class _Window:
    camera: str
    start_s: float
    end_s: float
    frames: np.ndarray  # (duration, size, size, 3) uint8, the model's centre crop
    key: Frame  # the middle frame: the snapshot when this window is the hottest
    last: Frame  # the newest frame: anchors stream time to the wall clock


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


class _Clock:
    """A camera's stream time: seconds since its first frame, from frame timestamps, never going back."""

    def __init__(self):
        self.last: float | None = None
        self.next = 0.0
        self.origin: float | None = None
        self.dt = 0.04

    def connect(self, dt: float, gap_s: float = 0.0) -> None:
        """A new connection whose first frame comes `gap_s` (wall time) after the last frame of the previous one."""
        self.dt, self.origin = dt, None
        if self.last is not None:
            self.next = self.last + max(dt, gap_s)

    def time_of(self, raw: float | None) -> float:
        if raw is None or not math.isfinite(raw):
            t = self.next
        else:
            if self.origin is None:
                self.origin = raw - self.next
            t = raw - self.origin
            if self.last is not None and not self.last < t <= self.last + max(5.0, 10 * self.dt):
                self.origin = raw - self.next  # a jump (wrap, discontinuity, restart): continue evenly
                t = self.next
        self.last, self.next = t, t + self.dt
        return t


# ---------------------------------------------------------------------------------------------------------------
# Writing snapshots and clips (on the writer thread)


def _av_frame(frame: Frame, size: tuple[int, int] | None = None) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(frame.yuv, format="yuv420p")
    if size is not None and size != frame.size:
        out = out.reformat(width=size[0], height=size[1])
    return out


def write_jpeg(frame: Frame, path: Path) -> Path:
    """One frame as a JPEG (PyAV's MJPEG encoder), written atomically."""
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mjpeg") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height = frame.size
        stream.pix_fmt = "yuvj420p"
        if hasattr(stream.codec_context, "qscale"):
            stream.codec_context.qscale = 3
        container.mux(stream.encode(_av_frame(frame).reformat(format="yuvj420p")))
        container.mux(stream.encode())
    return path


def write_mp4(frames: list[Frame], path: Path, fps: float) -> Path:
    """Frames as an H.264 mp4 at their own timestamps (ms), written atomically; sizes follow the first."""
    if not frames:
        raise ValueError("no frames for the clip")
    size = frames[0].size
    with (atomic_path(path) as tmp,
          av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container):
        stream = container.add_stream("libx264", rate=round(fps) or 25, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        last_pts, t0 = -1, frames[0].t
        for frame in frames:
            pts = max(round((frame.t - t0) * 1000), last_pts + 1)
            out = _av_frame(frame, size)
            out.pts, out.time_base, last_pts = pts, Fraction(1, 1000), pts
            container.mux(stream.encode(out))
        container.mux(stream.encode())
    return path


# ---------------------------------------------------------------------------------------------------------------
# The monitor

COUNTERS = ("frames_in", "windows", "windows_dropped", "alerts", "reconnects", "drops", "open_failures")


@dataclass
class CameraStats:
    frames_in: int = 0  # frames decoded
    windows: int = 0  # windows scored
    windows_dropped: int = 0  # windows a live source pushed out because scoring lagged
    alerts: int = 0  # alerts raised
    reconnects: int = 0  # reconnect attempts (streams and devices)
    drops: int = 0  # connections lost after opening
    open_failures: int = 0
    lag_s: float = 0.0  # wall time from the newest frame of the last scored window arriving to its score
    max_lag_s: float = 0.0


@dataclass
class _Active:
    alert_id: str
    snapshot: Path
    clip: Path | None
    snapshot_prob: float
    start_time: str
    raised_time: str


class _OpenFailed(Exception):
    pass


class _Camera:
    def __init__(self, source: Source):
        self.source, self.id = source, source.camera
        self.stats = CameraStats()
        self.status = "starting"  # running, reconnecting, then one of TERMINAL
        self.error: str | None = None
        self.fps: float | None = None
        self.ring: deque[Frame] = deque(maxlen=1)
        self.ring_lock = threading.Lock()
        self.clock = _Clock()
        self.first_attempt = threading.Event()
        self.opened_once = False
        self.done = False  # the decode thread has ended, its last window queued
        self.thread: threading.Thread | None = None
        # inference thread only
        self.closed = False  # alert state finished (a final `end` sent)
        self.state = AlertState()
        self.hot_prob, self.hot_frame = -1.0, None  # the hottest window's middle frame of this streak/alert
        self.active: _Active | None = None
        self.anchor: Frame | None = None  # newest frame of the last scored window


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wall_at(t: float, anchor: Frame) -> float:
    return anchor.wall + (t - anchor.t)


class Monitor:
    """Watches `sources` with one model until they end, `stop()`, Ctrl-C or max_seconds; see the module doc.

    `run()` returns the counters (`stats()`); it raises InputError when no source could be opened at start.
    The caller owns `sink` (and closes it); the monitor finishes its snapshot and clip writes before returning.
    """

    def __init__(self, model: torch.nn.Module, model_cfg: ModelConfig, plan: AccelPlan, sources: list[Source],
                 policy: AlertPolicy, sink, cfg: WatchConfig):
        if not sources:
            raise InputError("no camera sources given")
        self.model, self.model_cfg, self.plan = model, model_cfg, plan
        self.policy, self.sink, self.cfg = policy, sink, cfg
        self.cameras = {s.camera: _Camera(s) for s in sources}
        if len(self.cameras) != len(sources):
            raise InputError("camera ids must be unique")
        self.queue = WindowQueue(cfg.max_queued)
        self._stop = threading.Event()
        self._writer: ThreadPoolExecutor | None = None
        self._t0 = time.monotonic()
        self._nan_warned = False

    def stop(self) -> None:
        """Ask the monitor to stop (from any thread or a signal handler)."""
        self._stop.set()
        self.queue.wake()

    # -- the inference thread ---------------------------------------------------------------------------------

    def run(self) -> dict:
        try:
            self.cfg.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.cfg.out_dir}: cannot create the output directory: {e.strerror or e}") from None
        self.model.eval()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="watch-writer")
        self._t0 = time.monotonic()
        for cam in self.cameras.values():
            cam.thread = threading.Thread(target=self._camera_main, args=(cam,), name=f"decode-{cam.id}", daemon=True)
            cam.thread.start()
        reason = "stopped"
        try:
            reason = self._loop()
        except KeyboardInterrupt:
            reason = "interrupted"
            log.info("interrupted: stopping")
        finally:
            self._shutdown(reason)
        return self.stats()

    def _check_start(self) -> bool:
        """True once every camera has tried to open; InputError when every one of them failed."""
        if not all(cam.first_attempt.is_set() for cam in self.cameras.values()):
            return False
        if not any(cam.opened_once for cam in self.cameras.values()):
            reasons = "; ".join(f"{cam.id} ({cam.source.display}): {cam.error}" for cam in self.cameras.values())
            raise InputError(f"no camera source could be opened: {reasons}")
        return True

    def _loop(self) -> str:
        deadline = None if self.cfg.max_seconds is None else self._t0 + self.cfg.max_seconds
        every = self.cfg.stats_every_s
        next_stats = time.monotonic() + every if every else math.inf
        started = False  # every camera has tried to open (a stream that hangs may take the open timeout)
        while not self._stop.is_set():
            started = started or self._check_start()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "max-seconds"
            if now >= next_stats:
                log.info("watch stats: %s", json.dumps(self.stats()))
                next_stats = now + every
            items = self.queue.take(self.cfg.batch_size, timeout=0.1)
            if items:
                self._score(items)
            for cam in self.cameras.values():  # a camera that was stopped is closed by _shutdown, with its reason
                if cam.done and not cam.closed and cam.status != "stopped" and not self.queue.depth(cam.id):
                    self._close(cam, "source ended" if cam.status == "finished" else "source lost")
            if not items and all(cam.closed or cam.done and cam.status == "stopped" for cam in self.cameras.values()):
                self._check_start()  # all done: raises when none of them ever opened
                return "sources ended"
        return "stopped"

    def _shutdown(self, reason: str) -> None:
        self.stop()
        join_s = min(self.cfg.timeout_s, 5.0) + 1.0
        for cam in self.cameras.values():
            if cam.thread is not None:
                cam.thread.join(join_s)
                if cam.thread.is_alive():
                    log.warning("camera %s: decode thread still blocked in a read; leaving it", cam.id)
            if cam.status not in TERMINAL:
                cam.status = "stopped"
        try:
            for cam in self.cameras.values():
                self._close(cam, reason)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
        log.info("watch ended (%s): %s", reason, json.dumps(self.stats()["total"]))

    def _score(self, items: list[_Window]) -> None:
        size, norm = self.model_cfg.sample_size, self.model_cfg.normalization
        x = self.plan.input(torch.stack([to_input(w.frames, size, norm) for w in items]))
        with torch.inference_mode(), self.plan.autocast():
            logits = self.model(x)
        probs = torch.softmax(logits.float(), 1)[:, 1].tolist()
        now = time.time()
        for window, prob in zip(items, probs):
            cam = self.cameras[window.camera]
            if cam.closed:  # a window that raced the final close; nothing left to decide
                continue
            cam.stats.windows += 1
            cam.stats.lag_s = max(0.0, now - window.last.wall)
            cam.stats.max_lag_s = max(cam.stats.max_lag_s, cam.stats.lag_s)
            cam.anchor = window.last
            if not math.isfinite(prob):
                if not self._nan_warned:
                    log.warning("the model gave a non-finite fight probability; counted as calm")
                    self._nan_warned = True
                prob = 0.0
            self._advance(cam, window, prob)

    def _advance(self, cam: _Camera, window: _Window, prob: float) -> None:
        if prob >= self.policy.threshold and prob > cam.hot_prob:
            cam.hot_prob, cam.hot_frame = prob, window.key
        cam.state, events = step(self.policy, cam.state, Window(window.start_s, window.end_s, prob), cam.id)
        for kind, alert in events:
            if kind == "start":
                self._raise(cam, alert, window)
            else:
                self._end(cam, alert, "calm")
        if cam.state.active is None and cam.state.hot == 0:
            cam.hot_prob, cam.hot_frame = -1.0, None

    def _raise(self, cam: _Camera, alert: Alert, window: _Window) -> None:
        cam.stats.alerts += 1
        now = time.time()
        alert_id = f"{cam.id}-{datetime.fromtimestamp(now, timezone.utc):%Y%m%dT%H%M%SZ}-{cam.stats.alerts}"
        folder = self.cfg.out_dir / cam.id
        snapshot, clip = folder / f"{alert_id}.jpg", folder / f"{alert_id}.mp4"
        half_frame = 0.5 / (cam.fps or 25.0)  # the frames up to the raising window's end, not the one at it
        with cam.ring_lock:
            frames = [f for f in cam.ring
                      if alert.raised_s - self.cfg.clip_seconds - half_frame <= f.t < alert.raised_s - half_frame]
        self._submit(write_jpeg, cam.hot_frame or window.key, snapshot)
        if frames:
            self._submit(write_mp4, frames, clip, cam.fps or 25.0)
        else:
            clip = None
        start_time, raised_time = _iso(_wall_at(alert.start_s, window.last)), _iso(_wall_at(alert.raised_s, window.last))
        cam.active = _Active(alert_id, snapshot, clip, cam.hot_prob, start_time, raised_time)
        log.warning("ALERT %s: camera %s, fight probability %.2f, from %.2f s of its stream",
                    alert_id, cam.id, alert.peak_prob, alert.start_s)
        self._send({
            "event": "start", "alert_id": alert_id, "camera": cam.id, "source": cam.source.display,
            "start_s": round(alert.start_s, 4), "raised_s": round(alert.raised_s, 4),
            "start_time": start_time, "raised_time": raised_time,
            "peak_prob": round(alert.peak_prob, 4), "threshold": self.policy.threshold,
            "snapshot": str(snapshot), "clip": None if clip is None else str(clip),
        })

    def _end(self, cam: _Camera, alert: Alert, reason: str) -> None:
        active, cam.active = cam.active, None
        if active is None:  # cannot happen: every active state was raised through _raise
            log.error("camera %s: alert ended that was never raised", cam.id)
            return
        snapshot = active.snapshot
        if cam.hot_frame is not None and cam.hot_prob > active.snapshot_prob:  # hotter after the raise
            snapshot = active.snapshot.with_name(f"{active.alert_id}-peak.jpg")
            self._submit(write_jpeg, cam.hot_frame, snapshot)
        end_s = alert.end_s if alert.end_s is not None else alert.raised_s
        end_time = _iso(_wall_at(end_s, cam.anchor)) if cam.anchor is not None else None
        log.info("alert %s ended (%s): camera %s, peak %.2f, %.2f-%.2f s",
                 active.alert_id, reason, cam.id, alert.peak_prob, alert.start_s, end_s)
        self._send({
            "event": "end", "alert_id": active.alert_id, "camera": cam.id, "source": cam.source.display,
            "start_s": round(alert.start_s, 4), "raised_s": round(alert.raised_s, 4), "end_s": round(end_s, 4),
            "start_time": active.start_time, "raised_time": active.raised_time, "end_time": end_time,
            "peak_prob": round(alert.peak_prob, 4), "snapshot": str(snapshot),
            "clip": None if active.clip is None else str(active.clip), "reason": reason,
        })

    def _close(self, cam: _Camera, reason: str) -> None:
        """The camera is done: end its active alert (at its last hot window), once."""
        if cam.closed:
            return
        cam.closed = True
        if cam.state.active is not None:
            self._end(cam, dataclasses.replace(cam.state.active, end_s=cam.state.last_hot_end_s), reason)
        cam.state = AlertState()

    def _send(self, payload: dict) -> None:
        try:
            self.sink.send(payload)
        except Exception:  # e.g. a full disk under --alerts: keep watching, the log says what was lost
            log.exception("alert sink %r failed; alert %s not delivered", self.sink, payload.get("alert_id"))

    def _submit(self, write, what, path: Path, *args) -> None:
        def task():
            try:
                write(what, path, *args)
            except Exception:
                log.exception("writing %s failed", path)

        self._writer.submit(task)

    # -- decode threads ---------------------------------------------------------------------------------------

    def _camera_main(self, cam: _Camera) -> None:
        try:
            self._camera_loop(cam)
        except Exception as e:  # a bug: this camera stops, the others go on
            log.exception("camera %s: decode thread failed", cam.id)
            cam.status, cam.error = "failed", f"internal error: {type(e).__name__}: {e}"
        finally:
            if cam.status not in TERMINAL:
                cam.status = "stopped"
            cam.first_attempt.set()
            cam.done = True
            self.queue.wake()

    def _camera_loop(self, cam: _Camera) -> None:
        source, failures = cam.source, 0
        while not self._stop.is_set():
            try:
                container = self._open(source)
            except _OpenFailed as e:
                cam.stats.open_failures += 1
                cam.error = str(e)
                log.error("camera %s (%s): %s", cam.id, source.display, e)
                cam.first_attempt.set()
                if source.kind == "file":
                    cam.status = "failed"
                    return
                failures += 1
                if not self._backoff(cam, failures):
                    return
                continue
            cam.opened_once = True
            cam.first_attempt.set()
            cam.status = "running"
            if cam.stats.reconnects:
                log.info("camera %s: connected again (reconnect %d)", cam.id, cam.stats.reconnects)
            try:
                n, error = self._read(cam, container)
            finally:
                container.close()
            if self._stop.is_set():
                return
            if source.kind == "file":
                if error:
                    cam.error = error
                    log.error("camera %s (%s): %s after %d frames", cam.id, source.display, error, n)
                cam.status = "finished" if n else "failed"
                log.info("camera %s: file ended after %d frames", cam.id, n)
                return
            cam.stats.drops += 1
            cam.error = f"stream lost: {error or 'ended'}"
            log.warning("camera %s (%s): stream lost after %d frames (%s)", cam.id, source.display, n,
                        error or "ended")
            failures = 1 if n else failures + 1
            if not self._backoff(cam, failures):
                return

    def _backoff(self, cam: _Camera, failures: int) -> bool:
        """Wait before the next attempt; False when giving up or stopping."""
        limit = self.cfg.max_reconnects
        if limit is not None and cam.stats.reconnects >= limit:
            cam.status = "gave_up" if cam.opened_once else "failed"
            log.error("camera %s (%s): giving up after %d reconnect(s)", cam.id, cam.source.display,
                      cam.stats.reconnects)
            return False
        delay = min(self.cfg.reconnect_max_delay_s, self.cfg.reconnect_delay_s * 2 ** min(failures - 1, 30))
        cam.status = "reconnecting"
        log.warning("camera %s: reconnecting in %.1f s", cam.id, delay)
        if self._stop.wait(delay):
            return False
        cam.stats.reconnects += 1
        return True

    def _open(self, source: Source):
        try:
            if source.kind == "file":
                if not Path(source.url).is_file():
                    raise _OpenFailed("no such video file")
                container = av.open(source.url)
            else:
                options = {"rtsp_transport": "tcp"} if source.url.lower().startswith(("rtsp://", "rtsps://")) else {}
                options.update(self.cfg.options)
                container = av.open(source.url, format="v4l2" if source.kind == "device" else None,
                                    container_options=options, timeout=(self.cfg.timeout_s, self.cfg.timeout_s))
        except av.error.FFmpegError as e:  # its str() quotes the URL, credentials and all: not logged
            raise _OpenFailed(f"cannot open: {e.strerror or type(e).__name__}") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise _OpenFailed(f"cannot open: {str(e).replace(source.url, source.display)}") from None
        if not container.streams.video:
            container.close()
            raise _OpenFailed("no video stream")
        return container

    def _read(self, cam: _Camera, container) -> tuple[int, str | None]:
        """Decode one connection; cut and queue windows. Returns (frames, error or None)."""
        source, cfg = cam.source, self.cfg
        stream = container.streams.video[0]
        if source.kind == "file":
            stream.thread_type = "AUTO"  # frame threads add latency: only where there is no live edge
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and 0.5 <= float(rate) <= 300 else 25.0
        self._set_fps(cam, fps)
        with cam.ring_lock:
            last_wall = cam.ring[-1].wall if cam.ring else None
        cam.clock.connect(1 / fps, 0.0 if last_wall is None else time.time() - last_wall)
        duration, size = self.model_cfg.sample_duration, self.model_cfg.sample_size
        live = source.kind != "file" or cfg.realtime
        pace = source.kind == "file" and cfg.realtime
        recent: deque[tuple[Frame, np.ndarray]] = deque(maxlen=duration)
        n, error, origin = 0, None, None
        try:
            for frame in container.decode(stream):
                if self._stop.is_set():
                    break
                t = cam.clock.time_of(frame.time)
                if pace:
                    if origin is None:
                        origin = time.monotonic() - t
                    delay = origin + t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                recent.append((self._keep(cam, frame, t), self._crop(frame, size)))
                n += 1
                cam.stats.frames_in += 1
                if n >= duration and (n - duration) % cfg.stride == 0:
                    self._emit(cam, recent, fps, live)
        except av.error.ExitError:  # PyAV's read timeout interrupted FFmpeg
            error = f"no data for {cfg.timeout_s:g} s"
        except av.error.FFmpegError as e:
            error = e.strerror or type(e).__name__
        if source.kind == "file" and n and not self._stop.is_set():
            if n < duration or (n - duration) % cfg.stride:  # frames after the last window, as `score` does
                self._emit(cam, recent, fps, live)
        return n, error

    def _set_fps(self, cam: _Camera, fps: float) -> None:
        cfg = self.cfg
        # the clip's seconds, plus what decode may run ahead of scoring (queued and in-batch windows)
        capacity = math.ceil(cfg.clip_seconds * fps) + (2 * cfg.max_queued + 2) * cfg.stride \
            + self.model_cfg.sample_duration
        with cam.ring_lock:
            if cam.ring.maxlen != capacity:
                cam.ring = deque(cam.ring, maxlen=capacity)
        cam.fps = fps

    def _keep(self, cam: _Camera, frame: av.VideoFrame, t: float) -> Frame:
        width, height = frame.width, frame.height
        if height > self.cfg.clip_height:
            width, height = width * self.cfg.clip_height / height, self.cfg.clip_height
        width, height = max(2, int(width) // 2 * 2), max(2, int(height) // 2 * 2)
        yuv = frame.to_ndarray(width=width, height=height, format="yuv420p")
        kept = Frame(t, time.time(), yuv if yuv.flags.owndata else yuv.copy())
        with cam.ring_lock:
            cam.ring.append(kept)
        return kept

    @staticmethod
    def _crop(frame: av.VideoFrame, size: int) -> np.ndarray:
        width, height = resized(frame.width, frame.height, size)
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        y, x = crop_box(height, width, size, "c")
        return rgb[y:y + size, x:x + size]

    def _emit(self, cam: _Camera, recent: deque, fps: float, live: bool) -> None:
        duration = self.model_cfg.sample_duration
        frames = np.stack([crop for _, crop in recent])
        if len(frames) < duration:  # a file shorter than one window: loop-padded, as `score` does
            frames = frames[temporal_indices(len(frames), duration, 0)]
        first, last = recent[0][0], recent[-1][0]
        window = _Window(cam.id, first.t, last.t + 1 / fps, frames, recent[len(recent) // 2][0], last)
        if self.queue.put(cam.id, window, block=not live, stop=self._stop):
            cam.stats.windows_dropped += 1

    # -- counters ---------------------------------------------------------------------------------------------

    def stats(self) -> dict:
        cameras = {}
        for cam in self.cameras.values():
            entry = {"source": cam.source.display, "kind": cam.source.kind, "status": cam.status,
                     **dataclasses.asdict(cam.stats), "queued": self.queue.depth(cam.id)}
            entry["lag_s"], entry["max_lag_s"] = round(entry["lag_s"], 3), round(entry["max_lag_s"], 3)
            if cam.fps is not None:
                entry["fps"] = round(cam.fps, 3)
            if cam.error is not None:
                entry["error"] = cam.error
            cameras[cam.id] = entry
        total = {key: sum(c[key] for c in cameras.values()) for key in COUNTERS}
        total["queued"] = sum(c["queued"] for c in cameras.values())
        total["max_lag_s"] = max((c["max_lag_s"] for c in cameras.values()), default=0.0)
        return {"elapsed_s": round(time.monotonic() - self._t0, 3), "total": total, "cameras": cameras}
