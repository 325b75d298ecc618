"""What the alert store keeps and for how long.

Retention (`apply_retention`, watch runs it at start and every 10 minutes): alerts that started more than
alert_days ago go, with their files and reviews, unless their review state is true_positive ("reviewed fights
are kept"); camera events older than camera_event_days go; and when the snapshots and clips on disk add up to
more than media_cap_mb, files are deleted, clips before snapshots, oldest alert first, never those of an alert
reviewed true_positive or still active, until the rest fits (`plan_media_cap`, a pure function). A file deleted
for the cap keeps its alert row, marked gone (AlertRecord.clip_gone / snapshot_gone)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from trainer.serve.alerting.store import KEPT_VERDICT, AlertStore, utc_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """How long the store keeps things; None: for ever (no cap)."""

    alert_days: float | None  # alerts not reviewed as fights, with their files
    camera_event_days: float | None
    media_cap_mb: float | None  # snapshots and clips on disk

    def __post_init__(self):
        if any(v is not None and not v > 0 for v in (self.alert_days, self.camera_event_days, self.media_cap_mb)):
            raise ValueError("retention days and the media cap must be > 0 (null: keep everything)")


@dataclass(frozen=True)
class MediaFile:
    """A snapshot or clip as retention sees it."""

    path: str
    kind: str  # snapshot | clip
    size: int  # bytes on disk; 0 when absent (not written yet, or removed by hand)
    alert_time: str  # its alert's start_time: the older goes first
    kept: bool  # its alert is reviewed true_positive or still active


@dataclass(frozen=True)
class RetentionReport:
    alerts_deleted: int = 0
    camera_events_deleted: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0


def plan_media_cap(files: Iterable[MediaFile], cap_bytes: int) -> list[MediaFile]:
    """The files to delete so that the rest add up to at most `cap_bytes`: clips before snapshots, oldest alert
    first, never a kept one. When the kept files alone exceed the cap, every other file goes."""
    files = list(files)
    total = sum(f.size for f in files)
    doomed = []
    for f in sorted((f for f in files if not f.kept and f.size > 0), key=lambda f: (f.kind != "clip", f.alert_time, f.path)):
        if total <= cap_bytes:
            break
        doomed.append(f)
        total -= f.size
    return doomed


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _unlink(path: str) -> int | None:
    """Delete a file; the bytes freed (0 when it was already gone), None when it could not be deleted."""
    size = _size(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.warning("retention: cannot delete %s: %s", path, e.strerror or e)
        return None
    return size


def apply_retention(store: AlertStore, policy: Retention, now: datetime | float | None = None) -> RetentionReport:
    """Expire old alerts (with their files) and camera events, then hold the media cap; see the module doc."""
    now = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc) \
        if not isinstance(now, datetime) else now
    alerts = files = freed = events = 0
    if policy.alert_days is not None:
        cutoff = utc_text(now - timedelta(days=policy.alert_days))
        with store.write_lock() as db:  # the deletes and the unlinks under the write lock: no review slips between
            expired = [row[0] for row in db.execute(
                "SELECT a.id FROM alerts a LEFT JOIN reviews r ON r.id = a.review_id"
                " WHERE a.start_time < ? AND r.verdict IS NOT ?", (cutoff, KEPT_VERDICT))]
            for alert_id in expired:
                for (path,) in db.execute("SELECT path FROM media WHERE alert_id = ? AND gone_at IS NULL",
                                          (alert_id,)).fetchall():
                    size = _unlink(path)
                    files, freed = files + bool(size), freed + (size or 0)
                db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            alerts = len(expired)
    if policy.camera_event_days is not None:
        with store.write_lock() as db:
            events = db.execute("DELETE FROM camera_events WHERE at < ?",
                                (utc_text(now - timedelta(days=policy.camera_event_days)),)).rowcount
    if policy.media_cap_mb is not None:
        with store.write_lock() as db:
            media = [MediaFile(path, kind, _size(path), start_time, verdict == KEPT_VERDICT or state == "active")
                     for path, kind, start_time, state, verdict in db.execute(
                         "SELECT m.path, m.kind, a.start_time, a.state, r.verdict FROM media m"
                         " JOIN alerts a ON a.id = m.alert_id LEFT JOIN reviews r ON r.id = a.review_id"
                         " WHERE m.gone_at IS NULL").fetchall()]
            gone_at = utc_text(now)
            for f in plan_media_cap(media, int(policy.media_cap_mb * 1e6)):
                size = _unlink(f.path)
                if size is not None:
                    db.execute("UPDATE media SET gone_at = ? WHERE path = ?", (gone_at, f.path))
                    files, freed = files + 1, freed + size
    report = RetentionReport(alerts, events, files, freed)
    if report != RetentionReport():
        log.info("%s retention: %d alerts, %d camera events, %d files (%.1f MB) deleted", store.path.name,
                 alerts, events, files, freed / 1e6)
    return report
