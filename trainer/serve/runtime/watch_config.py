"""`fightwatch watch`'s settings: windows, batching, files, clips, reconnects, timeouts and counters.

The `watch:` section of an experiment config (configs/*.yaml) holds the one default of each; the command's
flags override them (cluster/commands/watch.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.decode import DecodeConfig
from trainer.serve.alerting.retention import Retention
from trainer.serve.alerting.zones import Zone
from trainer.serve.runtime.regions import RegionConfig


@dataclass(frozen=True)
class WatchConfig:
    stride: int  # frames between window starts
    batch_size: int  # most windows per forward pass
    realtime: bool  # replay files at their frame rate
    out_dir: Path = field(metadata={"path": True})  # snapshots and clips, a folder per camera
    clip_seconds: float  # the alert clip: this many seconds up to the raise; the review clip: from this long before it
    clip_height: int  # ring buffer / clip / snapshot height (smaller sources keep theirs)
    max_queued: int  # windows waiting per camera
    max_pending_writes: int  # snapshot/clip writes waiting (a clip holds seconds of frames); more are dropped
    reconnect_delay_s: float  # first backoff; doubles per failure in a row
    reconnect_max_delay_s: float
    max_reconnects: int | None  # per camera, in all; None: forever
    timeout_s: float  # open and read timeout of streams and devices
    options: tuple[str, ...]  # FFmpeg demuxer options for streams and devices, "KEY=VALUE" each
    stats_every_s: float  # log the counters this often; 0: never
    max_seconds: float | None  # stop after this long
    scores_path: Path | None = field(metadata={"path": True})  # append every scored window here as a JSON line
    store: Path | None = field(metadata={"path": True})  # the alert store (SQLite): alerts, reviews, camera events
    retention: Retention  # what the store keeps
    regions: RegionConfig  # where each window moves, scored besides the whole frame (regions.py)
    decode: DecodeConfig  # how far damaged video is read through (data/decode.py)
    calm_recheck_s: float  # with regions: a view that scored calm keeps its score this long at most (region_memory.py)
    zones: tuple[Zone, ...]  # named polygons per camera; required ones limit where its alerts may be

    def __post_init__(self):
        if min(self.stride, self.batch_size, self.max_queued, self.max_pending_writes) < 1:
            raise ValueError("stride, batch size, max queued windows and max pending writes must be >= 1")
        if not self.clip_seconds > 0 or self.clip_height < 16:
            raise ValueError("clip seconds must be > 0 and clip height >= 16")
        if not (self.reconnect_delay_s >= 0 and self.reconnect_max_delay_s >= self.reconnect_delay_s):
            raise ValueError("reconnect delay must be >= 0 and at most the maximum reconnect delay")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max reconnects must be >= 0")
        if self.calm_recheck_s < 0:
            raise ValueError("calm recheck seconds must be >= 0")
        if not self.timeout_s > 0 or self.stats_every_s < 0:
            raise ValueError("timeout must be > 0 and stats interval >= 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError("max seconds must be > 0")
        bad = [o for o in self.options if not o.partition("=")[0] or "=" not in o]
        if bad:
            raise ValueError(f"options are KEY=VALUE, got {bad[0]!r}")

    @property
    def demuxer_options(self) -> dict[str, str]:
        return dict(o.split("=", 1) for o in self.options)
