"""`fightwatch watch`: cameras (video files, RTSP/HTTP streams, capture devices) scored by one model, alerts out.

Threads
    decode, one per camera (trainer/serve/runtime/cameras.py): windows of the camera's frames, their regions found,
        into the WindowQueue, reconnecting live sources with backoff.
    inference, the thread that calls Monitor.run: takes what is ready (round robin over the cameras, up to
        `batch_size` windows), cuts the views it scores (not those that keep a calm score: region_memory.py) and
        scores them in one forward pass under the accel plan, advances each camera's
        alert state with trainer.serve.alerting.policy.step and sends start/end events to the sink (non-blocking).
    writer, one (trainer/serve/runtime/snapshots.py): the JPEG snapshot (the hottest frame) and the mp4 clip (H.264)
        of each alert, so encoding never delays scoring.

Each camera's status changes (online, reconnecting, offline) go to the sink's `camera_status`, from the thread
that changed it. When no camera could be opened at all, run() raises InputError. A camera's alert state survives its
reconnects; when the camera is done, its active alert ends (`reason`: source ended / source lost / stopped /
max-seconds / interrupted).

Alerts
    `start`: camera, start_s (first hot window's start) and raised_s (the raising window's end) with their
    wall-clock times, peak_prob so far, the snapshot (middle frame of the hottest window so far) and the
    clip (clip_seconds up to raised_s). `end`: the final peak_prob and end_s (last hot window's end), a new
    `-peak.jpg` snapshot when a later window was hotter, and the review clip `-full.mp4`: from clip_seconds
    before the start to the newest frame (the calm windows that ended it included), as far back as the ring of
    2 x clip_seconds reaches. Snapshot and clips are clip_height tall at most.

Time
    Stream time (`*_s` fields) is each camera's (trainer/serve/runtime/cameras.py). Wall-clock times (`*_time`
    fields, ISO 8601 UTC) map stream time onto the clock through the arrival time of the newest decoded
    frame; for a file replayed with realtime off they are compressed like the replay itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import secrets
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from data.dataset import to_input
from data.errors import InputError
from trainer.accel import AccelPlan
from trainer.model import ModelConfig
from trainer.serve.alerting.policy import Alert, AlertPolicy, AlertState, Window, step
from trainer.serve.alerting.sinks.base import CameraPresence
from trainer.serve.alerting.zones import counting
from trainer.serve.runtime.cameras import COUNTERS, PRESENCE, TERMINAL, ActiveAlert, Camera, CameraReader, CameraWindow
from trainer.serve.runtime.region_memory import Score, plan_views
from trainer.serve.runtime.regions import crop_regions
from trainer.serve.runtime.snapshots import Frame, SnapshotWriter, write_jpeg, write_mp4
from trainer.serve.runtime.sources import Source
from trainer.serve.runtime.watch_config import WatchConfig
from trainer.serve.runtime.window_queue import WindowQueue

log = logging.getLogger(__name__)


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
        self.cameras = {s.camera: Camera(s, on_status=self._camera_status, on_loss=self._camera_loss) for s in sources}
        if len(self.cameras) != len(sources):
            raise InputError("camera ids must be unique")
        for zone in cfg.zones:
            if zone.camera not in self.cameras:
                raise InputError(f"watch.zones: zone {zone.name} is of camera {zone.camera}, which is not watched "
                                 f"(cameras: {', '.join(self.cameras)})")
            if zone.required and cfg.regions.budget == 0:
                log.warning("camera %s: required zone %s needs regions to place a fight (watch.regions.budget is 0):"
                            " its alerts are not limited to it", zone.camera, zone.name)
        self.queue = WindowQueue(cfg.max_queued)
        self._stop = threading.Event()
        self._writer: SnapshotWriter | None = None
        self._t0 = time.monotonic()
        self._nan_warned = False
        self._scores = None  # cfg.scores_path, open while running
        self.run_tag = secrets.token_hex(2) + "-"  # in alert ids: `<camera>-<UTC second>-<run tag>-<n>`

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
        if self.cfg.scores_path is not None:
            try:
                self._scores = open(self.cfg.scores_path, "a", buffering=1)  # a line at a time: tail -f works
            except OSError as e:
                raise InputError(f"{self.cfg.scores_path}: cannot open the scores file: {e.strerror or e}") from None
        self.model.eval()
        self._writer = SnapshotWriter(self.cfg.max_pending_writes)
        self._t0 = time.monotonic()
        for cam in self.cameras.values():
            reader = CameraReader(cam, self.cfg, self.model_cfg.sample_duration, self.model_cfg.sample_size,
                                  self.queue, self._stop)
            cam.thread = threading.Thread(target=reader.run, name=f"decode-{cam.id}", daemon=True)
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
                self._writer.close()
            if self._scores is not None:
                self._scores.close()
        log.info("watch ended (%s): %s", reason, json.dumps(self.stats()["total"]))

    def _score(self, items: list[CameraWindow]) -> None:
        """Every camera's windows, their regions included, through the model; a window scores its hottest view.
        With regions, a view that scored calm a moment ago keeps its score (region_memory.py), so a camera's later
        window is planned once its earlier one is scored: a round per window of one camera (one when scoring
        keeps up), a forward pass per round."""
        rounds: dict[int, list[int]] = defaultdict(list)
        turn: Counter[str] = Counter()
        for k, window in enumerate(items):
            rounds[turn[window.camera]].append(k)
            turn[window.camera] += window.regions is not None
        window_scores: dict[int, list[Score]] = {}
        for _, round_items in sorted(rounds.items()):
            batch = []
            for k in round_items:
                window, cam = items[k], self.cameras[items[k].camera]
                if window.regions is None:
                    scores, to_score = [Score()], [0]
                else:
                    scores, to_score, cam.region_memory = plan_views(
                        cam.region_memory, window.regions, window.start_s, self.cfg.calm_recheck_s,
                        self.policy.threshold / 2)
                cam.stats.views_scored += len(to_score)
                cam.stats.views_kept += len(scores) - len(to_score)
                window_scores[k] = scores
                batch += zip([scores[i] for i in to_score], self._cut(window, to_score))
            self._forward(batch)
        now = time.time()
        for k, window in enumerate(items):
            scores = window_scores[k]
            # outside the camera's required zones a region scores nothing: its alerts are where they may be
            probs = [score.prob if counts else 0.0
                     for score, counts in zip(scores, counting(window.camera, window.boxes, self.cfg.zones))]
            hottest = max(range(len(probs)), key=lambda i: probs[i] if math.isfinite(probs[i]) else -1.0)
            prob, box = probs[hottest], window.boxes[hottest] if window.boxes is not None else None
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
            if self._scores is not None:
                self._scores.write(json.dumps({"camera": cam.id, "start_s": round(window.start_s, 4),
                                               "end_s": round(window.end_s, 4), "fight_prob": prob,
                                               **({"box": list(box)} if box is not None else {})}) + "\n")
            self._advance(cam, window, prob, box)

    def _cut(self, window: CameraWindow, indices: list[int]) -> np.ndarray:
        """The window's views `indices` (of its regions; [0] without), (len(indices), T, size, size, 3) uint8."""
        if window.regions is None:  # the frames are the centre square already
            return np.stack(window.frames)[None]
        return crop_regions(window.frames, [window.regions[i].view for i in indices], self.model_cfg.sample_size)

    def _forward(self, batch: list[tuple[Score, np.ndarray]]) -> None:
        """The model's fight probability of each (score, view) into its score, in one forward pass."""
        if not batch:
            return
        size, norm = self.model_cfg.sample_size, self.model_cfg.normalization
        x = self.plan.input(torch.stack([to_input(view, size, norm) for _, view in batch]))
        with torch.inference_mode(), self.plan.autocast():
            logits = self.model(x)
        for (score, _), prob in zip(batch, torch.softmax(logits.float(), 1)[:, 1].tolist()):
            score.prob = prob

    def _advance(self, cam: Camera, window: CameraWindow, prob: float, box: tuple | None) -> None:
        if prob >= self.policy.threshold and prob > cam.hot_prob:
            cam.hot_prob, cam.hot_frame = prob, window.key
        scored = (window.start_s, window.end_s, prob)
        cam.scored.append(scored)
        ongoing = cam.active  # raised by an earlier window: this one is part of it, the calm one that ends it too
        cam.state, events = step(self.policy, cam.state, Window(window.start_s, window.end_s, prob, box), cam.id)
        for kind, alert in events:
            if kind == "start":
                self._raise(cam, alert, window)
            else:
                self._end(cam, alert, "calm")
        if ongoing is not None:
            self._send_windows(ongoing.alert_id, [scored])
        if cam.state.active is None and cam.state.hot == 0:
            cam.hot_prob, cam.hot_frame = -1.0, None

    def _raise(self, cam: Camera, alert: Alert, window: CameraWindow) -> None:
        cam.stats.alerts += 1
        now = time.time()
        # the run's tag keeps ids of two runs apart, e.g. first alerts raised in the same second (one alert store)
        alert_id = f"{cam.id}-{datetime.fromtimestamp(now, timezone.utc):%Y%m%dT%H%M%SZ}-{self.run_tag}{cam.stats.alerts}"
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
        cam.active = ActiveAlert(alert_id, snapshot, clip, cam.hot_prob, start_time, raised_time)
        log.warning("ALERT %s: camera %s, fight probability %.2f, from %.2f s of its stream",
                    alert_id, cam.id, alert.peak_prob, alert.start_s)
        self._send({
            "event": "start", "alert_id": alert_id, "camera": cam.id, "source": cam.source.display,
            "start_s": round(alert.start_s, 4), "raised_s": round(alert.raised_s, 4),
            "start_time": start_time, "raised_time": raised_time,
            "peak_prob": round(alert.peak_prob, 4), "threshold": self.policy.threshold,
            "snapshot": str(snapshot), "clip": None if clip is None else str(clip),
            "box": None if alert.box is None else list(alert.box),
        })
        # what led up to it, as far back as its clip reaches: the review app draws why it fired
        self._send_windows(alert_id, [w for w in cam.scored if w[1] > alert.raised_s - self.cfg.clip_seconds])

    def _end(self, cam: Camera, alert: Alert, reason: str) -> None:
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
        # the review clip: from clip_seconds before the start to the newest frame, the calm that ended it included
        # (as far back as the ring reaches: 2 x clip_seconds)
        with cam.ring_lock:
            frames = [f for f in cam.ring if f.t >= alert.start_s - self.cfg.clip_seconds]
        clip = active.clip
        if frames:
            clip = active.snapshot.with_name(f"{active.alert_id}-full.mp4")
            self._submit(write_mp4, frames, clip, cam.fps or 25.0)
        log.info("alert %s ended (%s): camera %s, peak %.2f, %.2f-%.2f s",
                 active.alert_id, reason, cam.id, alert.peak_prob, alert.start_s, end_s)
        self._send({
            "event": "end", "alert_id": active.alert_id, "camera": cam.id, "source": cam.source.display,
            "start_s": round(alert.start_s, 4), "raised_s": round(alert.raised_s, 4), "end_s": round(end_s, 4),
            "start_time": active.start_time, "raised_time": active.raised_time, "end_time": end_time,
            "peak_prob": round(alert.peak_prob, 4), "snapshot": str(snapshot),
            "clip": None if clip is None else str(clip), "reason": reason,
            "box": None if alert.box is None else list(alert.box),
        })

    def _close(self, cam: Camera, reason: str) -> None:
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

    def _camera_status(self, cam: Camera) -> None:
        presence = PRESENCE.get(cam.status)
        if presence is None:  # starting
            return
        if presence == "online":
            detail = f"after {cam.stats.reconnects} reconnect(s)" if cam.stats.reconnects else None
        elif presence == "reconnecting":
            detail = cam.error
        elif cam.status in ("failed", "gave_up"):
            detail = f"{cam.status}: {cam.error}"
        else:  # finished or stopped; an error from before a reconnect is no longer the reason
            detail = cam.status
        try:
            self.sink.camera_status(CameraPresence(cam.id, presence, detail, time.time()))
        except Exception:  # the decode thread that called this goes on
            log.exception("alert sink %r failed on camera %s's status", self.sink, cam.id)

    def _camera_loss(self, cam: Camera, what: str) -> None:
        """Damage read through (cameras.py): a camera event of the camera, still online, saying what was lost."""
        log.warning("camera %s: %s", cam.id, what)
        try:
            self.sink.camera_status(CameraPresence(cam.id, "online", what, time.time()))
        except Exception:  # the decode thread that called this goes on
            log.exception("alert sink %r failed on camera %s's status", self.sink, cam.id)

    def _send_windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        try:
            self.sink.windows(alert_id, scored)
        except Exception:
            log.exception("alert sink %r failed; alert %s's windows not recorded", self.sink, alert_id)

    def _submit(self, write, what, path: Path, *args) -> None:
        self._writer.submit(write, what, path, *args)

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
        total["writes_dropped"] = self._writer.dropped if self._writer is not None else 0
        total["max_lag_s"] = max((c["max_lag_s"] for c in cameras.values()), default=0.0)
        return {"elapsed_s": round(time.monotonic() - self._t0, 3), "total": total, "cameras": cameras}
