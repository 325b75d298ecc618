"""The cameras' side of `fightwatch watch`: one decode thread per camera (`CameraReader.run`).

Each thread opens its source with PyAV, decodes, keeps a ring buffer of the last seconds (small yuv420p frames,
for an alert's clip and snapshot), cuts the model's windows (trainer/serve/runtime/windows.py, as `score` does) and
hands them to the WindowQueue. Files are replayed at their frame rate (`realtime`) or as fast as scoring allows.

Reconnects: a file that ends is finished; a file that cannot be opened is dropped (status failed). A URL or a
device is live: when it ends or errors (or sends nothing for `timeout_s`) it is reconnected after
reconnect_delay_s, doubling per failure in a row up to reconnect_max_delay_s, `max_reconnects` times in all
(None: forever); one that cannot be opened at start is retried the same way. So a recording served over HTTP
replays again and again: watch recordings as files.

Time: a camera's stream time (`*_s` fields) is seconds since its first frame, from the frames' own timestamps,
kept continuous across timestamp jumps and reconnects (a reconnect adds the wall time it took; `StreamClock`).

Damage: packets the decoder rejects (a corrupt or lost RTP packet, a damaged recording) are skipped without a
reconnect, as data/decode.py reads every video; windows across a short gap are scored on the frames around it,
those across a longer one skipped (decode.max_gap_frames). What was lost is counted in the stats and reported as
a camera event at most once a minute (`LOSS_REPORT_S`) and when a connection ends. A live stream whose decoder
rejects every packet for `timeout_s` worth of frames is reconnected, as one that stalls.

Backpressure: a live source (stream, device, or a file replayed in real time) never waits for scoring: when a
camera already has `max_queued` windows waiting, its oldest is dropped and counted (windows_dropped). A file
replayed as fast as possible waits instead, so every window is scored.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np

from data.clips import MAX_PIXELS, Resizer, limit_picture_size, resized
from data.dataset import crop_box, temporal_indices
from data.decode import DecodeLog, decoded_frames
from trainer.serve.alerting.policy import AlertState
from trainer.serve.runtime.region_memory import Remembered
from trainer.serve.runtime.regions import decode_side, region_boxes, window_regions
from trainer.serve.runtime.snapshots import Frame
from trainer.serve.runtime.sources import Source
from trainer.serve.runtime.watch_config import WatchConfig
from trainer.serve.runtime.window_queue import WindowQueue
from trainer.serve.runtime.windows import Cut, WindowCutter

log = logging.getLogger(__name__)

TERMINAL = ("finished", "failed", "gave_up", "stopped")
PRESENCE = {"running": "online", "reconnecting": "reconnecting", **{status: "offline" for status in TERMINAL}}
COUNTERS = ("frames_in", "windows", "windows_dropped", "views_scored", "views_kept", "alerts", "reconnects", "drops",
            "open_failures", "frames_lost", "packets_rejected", "windows_skipped")
LOSS_REPORT_S = 60.0  # a camera reading through damage reports what it lost at most this often


@dataclass
class CameraStats:
    frames_in: int = 0  # frames decoded
    windows: int = 0  # windows scored
    windows_dropped: int = 0  # windows a live source pushed out because scoring lagged
    views_scored: int = 0  # model inputs scored: the centre squares and regions of its windows
    views_kept: int = 0  # views that kept a recent calm score instead (region_memory.py)
    alerts: int = 0  # alerts raised
    reconnects: int = 0  # reconnect attempts (streams and devices)
    drops: int = 0  # connections lost after opening
    open_failures: int = 0
    frames_lost: int = 0  # frames lost to damaged or missing packets (data/decode.py)
    packets_rejected: int = 0  # packets the decoder refused, skipped without a reconnect
    windows_skipped: int = 0  # windows across a gap longer than decode.max_gap_frames
    lag_s: float = 0.0  # wall time from the newest frame of the last scored window arriving to its score
    max_lag_s: float = 0.0


@dataclass(frozen=True)
class CameraWindow:
    camera: str
    start_s: float
    end_s: float
    # `duration` (H, W, 3) uint8 frames: without regions the centre square at the model's size, the view itself;
    # with them the frames at the regions' decode side, which the inference thread cuts only the views it scores
    # from (a view that keeps a calm score is never cut: region_memory.py)
    frames: list[np.ndarray]
    boxes: tuple | None  # the regions' boxes normalised to the frame; None: the centre square alone (no regions)
    regions: tuple | None  # regions.Region in the decoded frame's pixels, the centre square first; None without
    key: Frame  # the middle frame: the snapshot when this window is the hottest
    last: Frame  # the newest frame: anchors stream time to the wall clock


class StreamClock:
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


@dataclass
class ActiveAlert:
    """What the monitor keeps of a raised alert until it ends."""

    alert_id: str
    snapshot: Path
    clip: Path | None
    snapshot_prob: float
    start_time: str
    raised_time: str


class Camera:
    """One camera's state: its decode thread's (status, ring buffer, clock) and the inference thread's (alerts).

    `on_status(camera)` is called on each change of `status`, `on_loss(camera, what)` with what damage lost since
    its last report (see the module doc), each in the thread that changed it."""

    def __init__(self, source: Source, on_status: Callable[["Camera"], None] | None = None,
                 on_loss: Callable[["Camera", str], None] | None = None):
        self.source, self.id = source, source.camera
        self.stats = CameraStats()
        self._status = "starting"  # running, reconnecting, then one of TERMINAL
        self.on_status, self.on_loss = on_status, on_loss
        self.error: str | None = None
        self.fps: float | None = None
        self.ring: deque[Frame] = deque(maxlen=1)
        self.ring_lock = threading.Lock()
        self.clock = StreamClock()
        self.first_attempt = threading.Event()
        self.opened_once = False
        self.done = False  # the decode thread has ended, its last window queued
        self.thread: threading.Thread | None = None
        # inference thread only
        self.closed = False  # alert state finished (a final `end` sent)
        self.state = AlertState()
        self.hot_prob, self.hot_frame = -1.0, None  # the hottest window's middle frame of this streak/alert
        self.active: ActiveAlert | None = None
        self.scored: deque[tuple[float, float, float]] = deque(maxlen=256)  # (start_s, end_s, prob), newest last
        self.region_memory: list[Remembered] = []  # its views scored lately (region_memory.py)
        self.anchor: Frame | None = None  # newest frame of the last scored window

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, status: str) -> None:
        old, self._status = self._status, status
        if status != old and self.on_status is not None:
            self.on_status(self)


class _OpenFailed(Exception):
    pass


class LossReport:
    """What one connection's decode lost (its DecodeLog and its windows skipped), counted into the camera's stats
    as it grows and put in words at most once per LOSS_REPORT_S, the first loss at once."""

    def __init__(self, loss: DecodeLog, cutter: WindowCutter):
        self.loss, self.cutter = loss, cutter
        self.counted = self.reported = (0, 0, 0)
        self.reported_at = -math.inf

    def update(self, stats: CameraStats, now: float, final: bool) -> str | None:
        """Count into `stats`; the words for what is new since the last report when one is due (always when
        `final`), else None."""
        counts = (self.loss.lost, self.loss.rejected, self.cutter.skipped)
        for name, count, before in zip(("frames_lost", "packets_rejected", "windows_skipped"), counts, self.counted):
            setattr(stats, name, getattr(stats, name) + count - before)
        self.counted = counts
        if counts == self.reported or not (final or now - self.reported_at >= LOSS_REPORT_S):
            return None
        lost, rejected, skipped = (count - before for count, before in zip(counts, self.reported))
        self.reported, self.reported_at = counts, now
        return (f"read through damage: {lost} frame(s) lost, {rejected} packet(s) rejected by the decoder, "
                f"{skipped} window(s) skipped across gaps over decode.max_gap_frames")


class CameraReader:
    """The decode thread of one camera: `run()` until the source is done or `stop` is set."""

    def __init__(self, cam: Camera, cfg: WatchConfig, duration: int, size: int, queue: WindowQueue,
                 stop: threading.Event):
        self.cam, self.cfg, self.duration, self.size, self.queue, self.stop = cam, cfg, duration, size, queue, stop
        self._to_yuv, self._to_rgb = Resizer(), Resizer()  # the review ring's and the model's, each its own size

    def run(self) -> None:
        cam = self.cam
        try:
            self._loop()
        except Exception as e:  # a bug: this camera stops, the others go on
            log.exception("camera %s: decode thread failed", cam.id)
            cam.error = f"internal error: {type(e).__name__}: {e}"  # before the status: its listeners read it
            cam.status = "failed"
        finally:
            if cam.status not in TERMINAL:
                cam.status = "stopped"
            cam.first_attempt.set()
            cam.done = True
            self.queue.wake()

    def _loop(self) -> None:
        cam, source, failures = self.cam, self.cam.source, 0
        while not self.stop.is_set():
            try:
                container = self._open()
            except _OpenFailed as e:
                cam.stats.open_failures += 1
                cam.error = str(e)
                log.error("camera %s (%s): %s", cam.id, source.display, e)
                cam.first_attempt.set()
                if source.kind == "file":
                    cam.status = "failed"
                    return
                failures += 1
                if not self._backoff(failures):
                    return
                continue
            cam.opened_once = True
            cam.first_attempt.set()
            cam.status = "running"
            if cam.stats.reconnects:
                log.info("camera %s: connected again (reconnect %d)", cam.id, cam.stats.reconnects)
            try:
                n, error = self._read(container)
            finally:
                container.close()
            if self.stop.is_set():
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
            if not self._backoff(failures):
                return

    def _backoff(self, failures: int) -> bool:
        """Wait before the next attempt; False when giving up or stopping."""
        cam, limit = self.cam, self.cfg.max_reconnects
        if limit is not None and cam.stats.reconnects >= limit:
            cam.status = "gave_up" if cam.opened_once else "failed"
            log.error("camera %s (%s): giving up after %d reconnect(s)", cam.id, cam.source.display,
                      cam.stats.reconnects)
            return False
        delay = min(self.cfg.reconnect_max_delay_s, self.cfg.reconnect_delay_s * 2 ** min(failures - 1, 30))
        cam.status = "reconnecting"
        log.warning("camera %s: reconnecting in %.1f s", cam.id, delay)
        if self.stop.wait(delay):
            return False
        cam.stats.reconnects += 1
        return True

    def _open(self):
        source, started = self.cam.source, time.monotonic()
        try:
            if source.kind == "file":
                if not Path(source.url).is_file():
                    raise _OpenFailed("no such video file")
                container = av.open(source.url, metadata_errors="replace")
            else:
                options = {"rtsp_transport": "tcp"} if source.url.lower().startswith(("rtsp://", "rtsps://")) else {}
                options.update(self.cfg.demuxer_options)
                container = av.open(source.url, format="v4l2" if source.kind == "device" else None,
                                    container_options=options, timeout=(self.cfg.timeout_s, self.cfg.timeout_s),
                                    metadata_errors="replace")
        except av.error.FFmpegError as e:  # its str() quotes the URL, credentials and all: not logged
            # PyAV's timeout cut it short (FFmpeg's RTSP client then reports the half-read answer as invalid data)
            timed_out = isinstance(e, (av.error.ExitError, av.error.TimeoutError)) or (
                source.kind != "file" and time.monotonic() - started >= self.cfg.timeout_s)
            reason = f"no answer for {self.cfg.timeout_s:g} s" if timed_out else e.strerror or type(e).__name__
            raise _OpenFailed(f"cannot open: {reason}") from None
        except (OSError, ValueError) as e:
            raise _OpenFailed(f"cannot open: {str(e).replace(source.url, source.display)}") from None
        if not container.streams.video:
            container.close()
            raise _OpenFailed("no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg does not know the codec, or cannot decode it
            container.close()
            raise _OpenFailed("no decoder for its video codec")
        # score's and prepare's cap: a camera, or a hostile stream, must not make the decoder allocate 16K frames
        too_large = limit_picture_size(stream)
        if too_large:
            container.close()
            raise _OpenFailed(f"video too large: {too_large} is over {MAX_PIXELS / 1e6:.1f} megapixels (8K)")
        return container

    def _read(self, container) -> tuple[int, str | None]:
        """Decode one connection; cut and queue windows. Returns (frames, error or None)."""
        cam, cfg = self.cam, self.cfg
        stream = container.streams.video[0]
        if cam.source.kind == "file":
            stream.thread_type = "AUTO"  # frame threads add latency: only where there is no live edge
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and 0.5 <= float(rate) <= 300 else 25.0
        self._set_fps(fps)
        with cam.ring_lock:
            last_wall = cam.ring[-1].wall if cam.ring else None
        cam.clock.connect(1 / fps, 0.0 if last_wall is None else time.time() - last_wall)
        live = cam.source.kind != "file" or cfg.realtime
        pace = cam.source.kind == "file" and cfg.realtime
        cutter: WindowCutter[tuple[Frame, np.ndarray]] = WindowCutter(self.duration, cfg.stride,
                                                                      cfg.decode.max_gap_frames)
        loss = DecodeLog(fps)
        report = LossReport(loss, cutter)
        error, origin, stalled = None, None, False
        # a live stream whose decoder takes nothing for timeout_s worth of frames is lost, as one that stalls
        give_up = math.ceil(cfg.timeout_s * fps) if cam.source.kind != "file" else None
        try:
            asked = time.monotonic()
            for lost, frame in decoded_frames(container, stream, loss, give_up_after=give_up):
                # A read that took the whole timeout was cut short by PyAV's timeout; FFmpeg's RTP demuxer then
                # hands out the frame it was holding back (its end is only known from the next one) instead of
                # failing, and only the next read fails, a second timeout later: the stall is now.
                stalled = cam.source.kind != "file" and time.monotonic() - asked >= cfg.timeout_s
                if self.stop.is_set():
                    break
                t = cam.clock.time_of(frame.time)
                if pace:
                    if origin is None:
                        origin = time.monotonic() - t
                    delay = origin + t - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        break
                item = (self._keep(frame, t), self._crop(frame))
                for cut in [*cutter.gap(lost), cutter.push(item)]:
                    if cut is not None:
                        self._emit(cut, fps, live)
                cam.stats.frames_in += 1
                self._count_loss(report, final=False)
                if stalled:
                    break
                asked = time.monotonic()
        except (av.error.ExitError, av.error.TimeoutError):  # PyAV's read timeout interrupted FFmpeg
            stalled = True
        error = loss.stopped  # the demuxer's error, or a decoder that takes nothing, ends a connection
        if stalled:
            error = f"no data for {cfg.timeout_s:g} s"
        if cam.source.kind == "file" and not self.stop.is_set():
            tail = cutter.finish()  # the frames after the last window, or a file shorter than one
            if tail is not None:
                self._emit(tail, fps, live)
        self._count_loss(report, final=True)
        return loss.decoded, error

    def _count_loss(self, report: "LossReport", final: bool) -> None:
        what = report.update(self.cam.stats, time.monotonic(), final)
        if what and self.cam.on_loss is not None:
            self.cam.on_loss(self.cam, what)

    def _set_fps(self, fps: float) -> None:
        cam, cfg = self.cam, self.cfg
        # the review clip's seconds (clip_seconds before an alert, as many in it), plus what decode may run ahead
        # of scoring (queued and in-batch windows)
        capacity = math.ceil(2 * cfg.clip_seconds * fps) + (2 * cfg.max_queued + 2) * cfg.stride + self.duration
        with cam.ring_lock:
            if cam.ring.maxlen != capacity:
                cam.ring = deque(cam.ring, maxlen=capacity)
        cam.fps = fps

    def _keep(self, frame: av.VideoFrame, t: float) -> Frame:
        width, height = frame.width, frame.height
        if height > self.cfg.clip_height:
            width, height = width * self.cfg.clip_height / height, self.cfg.clip_height
        width, height = max(2, int(width) // 2 * 2), max(2, int(height) // 2 * 2)
        yuv = self._to_yuv(frame, width, height, "yuv420p", interpolation=None)
        kept = Frame(t, time.time(), yuv if yuv.flags.owndata else yuv.copy())
        with self.cam.ring_lock:
            self.cam.ring.append(kept)
        return kept

    def _crop(self, frame: av.VideoFrame) -> np.ndarray:
        """What the window is cut from, resized as `score` resizes (data.clips.iter_frames): the model's centre
        crop without regions; with them the frame at the regions' decode side (never above its own)."""
        regions_on = self.cfg.regions.budget > 0
        side = decode_side(self.size, self.cfg.regions)
        width, height = resized(frame.width, frame.height, min(side, frame.width, frame.height) if regions_on else side)
        rgb = self._to_rgb(frame, width, height)
        if regions_on:
            return rgb
        y, x = crop_box(height, width, self.size, "c")
        return rgb[y:y + self.size, x:x + self.size]

    def _emit(self, cut: Cut[tuple[Frame, np.ndarray]], fps: float, live: bool) -> None:
        kept = [frame for frame, _ in cut.items]
        crops = [crop for _, crop in cut.items]
        crops = [crops[i] for i in temporal_indices(len(crops), self.duration, 0)]  # a short window loops
        found = boxes = None
        if self.cfg.regions.budget > 0:  # found here, in the camera's thread; cut in inference's (see CameraWindow)
            found = window_regions(crops, self.cfg.regions)
            boxes = region_boxes(found, crops[0].shape[1], crops[0].shape[0])
        window = CameraWindow(self.cam.id, kept[0].t, kept[-1].t + 1 / fps, crops, boxes, found,
                              kept[len(kept) // 2], kept[-1])
        if self.queue.put(self.cam.id, window, block=not live, stop=self.stop):
            self.cam.stats.windows_dropped += 1
