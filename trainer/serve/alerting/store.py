"""The alert store: `fightwatch watch`'s alerts, their reviews and the cameras' status changes in one SQLite file.

The watch process writes (trainer/serve/alerting/sinks/ StoreSink) while a review app reads and reviews, from other
threads or another process: the file is in WAL mode (readers never block the writer), every thread gets its own
connection, writes take the write lock up front (BEGIN IMMEDIATE) and wait up to `busy_timeout_s` for it.
Reopening the same file finds everything that was committed; the schema's version is PRAGMA user_version, so a
later version migrates in `_MIGRATIONS`.

API (times are ISO 8601 UTC text, `YYYY-MM-DDTHH:MM:SS.mmmZ`, so text order is time order; paths are absolute)

    store = AlertStore("runs/watch/alerts.db")        # creates the file and its folder when missing
    # watch's side: idempotent on the alert id, so a replayed event does not duplicate
    store.record_start(alert)                          # a monitor `start` payload (alert_id, camera, start_s, ...,
                                                       # box: where, [x1, y1, x2, y2] normalised to the frame, or None)
    store.record_end(alert)                            # its `end` payload; inserts the row when the start was lost
    store.record_camera_event(camera, "online" | "reconnecting" | "offline", detail=None)
    store.record_windows(alert_id, [(start_s, end_s, prob), ...])   # the scored windows around the alert
    # the reviewer's side
    store.alerts(camera=None, day=None, review=None, limit=100, offset=0) -> [AlertRecord]
        # review: "unreviewed" | "ack" | "false_positive" | "true_positive"; day: a UTC date of the start;
        # unreviewed first, then newest first
    store.count_alerts(camera=None, day=None, review=None) -> int
    store.alert(alert_id) -> AlertDetail | None        # the alert and its whole review history, oldest first
    store.review(alert_id, verdict, who) -> Review     # UnknownAlert for an id not in the store
    store.review_many(alert_ids, verdict, who) -> [Review]   # all or none
    store.undo_review(alert_id, who) -> Review | None  # the review undone; the one before it (or none) counts again
    store.cameras() -> [CameraStatus]                  # each camera's latest event
    store.camera_events(camera=None, limit=100, day=None) -> [CameraEvent]   # newest first
    store.alert_windows(alert_id) -> [Window]          # trainer/serve/alerting/policy.py's, by start; "why it fired"
    store.data_version() -> int                        # moves whenever anything commits, here or in another process
    store.close()                                      # every thread's connection

An alert's review state is its latest review that was not undone; every review stays in `reviews`, so an undo
is itself on record (undone_at, undone_by).

Retention (what expires, the media cap) is trainer/serve/alerting/retention.py's."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from data.errors import InputError
from trainer.serve.alerting.policy import Window

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
VERDICTS = ("ack", "false_positive", "true_positive")
REVIEW_STATES = ("unreviewed", *VERDICTS)
KEPT_VERDICT = "true_positive"  # reviewed fights: never expired, their files never deleted for the cap


class UnknownAlert(LookupError):
    """An alert id that is not in the store."""


@dataclass(frozen=True)
class AlertRecord:
    id: str
    camera: str
    source: str | None  # the camera's source, credentials redacted
    state: str  # active | ended
    start_s: float  # stream seconds (the camera's clock)
    raised_s: float
    end_s: float | None
    start_time: str
    raised_time: str
    end_time: str | None
    peak_prob: float
    threshold: float | None
    snapshot: str | None  # the hottest frame's JPEG (after the end: the peak's)
    clip: str | None  # the mp4 up to the raise
    snapshot_gone: bool  # deleted by retention
    clip_gone: bool
    end_reason: str | None  # calm, source ended, source lost, stopped, max-seconds, interrupted
    review: str  # one of REVIEW_STATES
    reviewed_by: str | None
    reviewed_at: str | None
    # where in the frame: the hottest region of the window that raised it, [x1, y1, x2, y2] in 0-1 (AVA's
    # convention); None when unknown (a model run without regions, an alert from before schema version 3)
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Review:
    id: int
    alert_id: str
    verdict: str  # one of VERDICTS
    who: str
    at: str
    undone_at: str | None
    undone_by: str | None


@dataclass(frozen=True)
class AlertDetail:
    alert: AlertRecord
    reviews: tuple[Review, ...]  # oldest first, undone ones included


@dataclass(frozen=True)
class CameraEvent:
    id: int
    camera: str
    kind: str  # online | reconnecting | offline
    at: str
    detail: str | None


@dataclass(frozen=True)
class CameraStatus:
    camera: str
    status: str  # the kind of its latest event
    since: str
    detail: str | None


def utc_text(when: datetime | float | None = None) -> str:
    """A time as the store keeps it (now when None); the format of the monitor's *_time fields."""
    if when is None:
        when = time.time()
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, timezone.utc)
    elif when.tzinfo is None:
        raise ValueError(f"{when} has no time zone")
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normal_time(text: str | None) -> str | None:
    # parsed and written again, so that comparisons as text hold whatever format the caller used
    return None if text is None else utc_text(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _create_v1(db: sqlite3.Connection) -> None:
    _execute_script(db, """
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            camera TEXT NOT NULL,
            source TEXT,
            state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
            start_s REAL NOT NULL, raised_s REAL NOT NULL, end_s REAL,
            start_time TEXT NOT NULL, raised_time TEXT NOT NULL, end_time TEXT,
            peak_prob REAL NOT NULL,
            threshold REAL,
            snapshot TEXT, clip TEXT,
            end_reason TEXT,
            review_id INTEGER REFERENCES reviews(id)  -- the latest review not undone (NULL: unreviewed)
        );
        CREATE INDEX alerts_by_start ON alerts (start_time);
        CREATE INDEX alerts_by_camera ON alerts (camera, start_time);
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            verdict TEXT NOT NULL CHECK (verdict IN ('ack', 'false_positive', 'true_positive')),
            who TEXT NOT NULL,
            at TEXT NOT NULL,
            undone_at TEXT, undone_by TEXT
        );
        CREATE INDEX reviews_by_alert ON reviews (alert_id, id);
        CREATE TABLE media (  -- every snapshot and clip an alert named (a peak snapshot adds one at the end)
            path TEXT PRIMARY KEY,
            alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('snapshot', 'clip')),
            gone_at TEXT  -- deleted by retention
        );
        CREATE INDEX media_by_alert ON media (alert_id);
        CREATE TABLE camera_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX camera_events_by_camera ON camera_events (camera, id);
        CREATE INDEX camera_events_by_time ON camera_events (at);
    """)


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    # not executescript: that commits first, and a migration is to happen in the caller's transaction
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def _add_windows_v2(db: sqlite3.Connection) -> None:
    _execute_script(db, """
        CREATE TABLE alert_windows (
            alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            start_s REAL NOT NULL, end_s REAL NOT NULL,
            prob REAL NOT NULL,
            PRIMARY KEY (alert_id, start_s)
        ) WITHOUT ROWID;
    """)


def _add_box_v3(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE alerts ADD COLUMN box TEXT")  # JSON [x1, y1, x2, y2]; NULL: unknown, as for older alerts


_MIGRATIONS = {0: _create_v1, 1: _add_windows_v2, 2: _add_box_v3}  # user_version -> the step to the next version
_ALERT_SELECT = """
    SELECT a.id, a.camera, a.source, a.state, a.start_s, a.raised_s, a.end_s, a.start_time, a.raised_time,
           a.end_time, a.peak_prob, a.threshold, a.snapshot, a.clip,
           EXISTS (SELECT 1 FROM media m WHERE m.path = a.snapshot AND m.gone_at IS NOT NULL),
           EXISTS (SELECT 1 FROM media m WHERE m.path = a.clip AND m.gone_at IS NOT NULL),
           a.end_reason, COALESCE(r.verdict, 'unreviewed'), r.who, r.at, a.box
    FROM alerts a LEFT JOIN reviews r ON r.id = a.review_id
"""


_REVIEW_SELECT = "SELECT id, alert_id, verdict, who, at, undone_at, undone_by FROM reviews"


def _alert_record(row) -> AlertRecord:
    values = list(row)
    values[14], values[15] = bool(values[14]), bool(values[15])
    values[20] = None if values[20] is None else tuple(json.loads(values[20]))
    return AlertRecord(*values)


def _box_text(box) -> str | None:
    """A payload's box as the store keeps it: JSON [x1, y1, x2, y2] of floats; None stays None. ValueError for
    anything but 4 numbers."""
    if box is None:
        return None
    values = [float(v) for v in box]
    if len(values) != 4:
        raise ValueError(f"a box is [x1, y1, x2, y2], not {box!r}")
    return json.dumps(values)


class AlertStore:
    """One SQLite file of alerts, reviews and camera events, shared by threads and processes; see the module doc."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 10.0):
        self.path = Path(path).absolute()
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []  # every thread's, for close()
        self._lock = threading.Lock()
        self._closed = False
        self._version_db: sqlite3.Connection | None = None  # data_version()'s, shared by the threads under _lock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate()
        except (OSError, sqlite3.DatabaseError) as e:
            self.close()
            raise InputError(f"{self.path}: cannot open the alert store: {e}") from None

    # -- connections --------------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"alert store {self.path} is closed")
                # check_same_thread off only so that close() may close it; each thread still has its own
                db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
                self._connections.append(db)
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                log.warning("%s: WAL mode refused; readers will block the writer", self.path)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses nothing committed; power loss the last
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextmanager
    def write_lock(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once, so it waits (busy_timeout) instead of failing
        half-way when another connection writes."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file (any thread's of this store, another
        store's, another process's): PRAGMA data_version on a connection of its own that never writes. For a live view
        to poll cheaply; the values mean nothing else."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"alert store {self.path} is closed")
            if self._version_db is None:
                self._version_db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                                   check_same_thread=False)
                self._connections.append(self._version_db)
            return self._version_db.execute("PRAGMA data_version").fetchone()[0]

    def _migrate(self) -> None:
        with self.write_lock() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this fightwatch's "
                                            f"({SCHEMA_VERSION}); upgrade fightwatch")
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](db)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"AlertStore({str(self.path)!r})"

    # -- watch's side -------------------------------------------------------------------------------------------

    def record_start(self, alert: dict) -> bool:
        """Record a monitor `start` payload; False when the alert was already there (a replay: left as it is)."""
        snapshot, clip = _absolute(alert.get("snapshot")), _absolute(alert.get("clip"))
        with self.write_lock() as db:
            inserted = db.execute(
                "INSERT INTO alerts (id, camera, source, state, start_s, raised_s, start_time, raised_time,"
                " peak_prob, threshold, snapshot, clip, box) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (alert["alert_id"], alert["camera"], alert.get("source"), alert["start_s"], alert["raised_s"],
                 _normal_time(alert["start_time"]), _normal_time(alert["raised_time"]), alert["peak_prob"],
                 alert.get("threshold"), snapshot, clip, _box_text(alert.get("box")))).rowcount == 1
            if inserted:
                _add_media(db, alert["alert_id"], snapshot=snapshot, clip=clip)
        return inserted

    def record_end(self, alert: dict) -> None:
        """Record a monitor `end` payload: the alert ends (inserted whole when its start never reached the store)."""
        snapshot, clip = _absolute(alert.get("snapshot")), _absolute(alert.get("clip"))
        with self.write_lock() as db:
            db.execute(
                "INSERT INTO alerts (id, camera, source, state, start_s, raised_s, end_s, start_time, raised_time,"
                " end_time, peak_prob, threshold, snapshot, clip, end_reason, box)"
                " VALUES (?, ?, ?, 'ended', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET state = 'ended', end_s = excluded.end_s,"
                " end_time = excluded.end_time, peak_prob = max(peak_prob, excluded.peak_prob),"
                " snapshot = COALESCE(excluded.snapshot, snapshot), clip = COALESCE(excluded.clip, clip),"
                " end_reason = excluded.end_reason, box = COALESCE(box, excluded.box)",  # the start's box stays
                (alert["alert_id"], alert["camera"], alert.get("source"), alert["start_s"], alert["raised_s"],
                 alert.get("end_s"), _normal_time(alert["start_time"]), _normal_time(alert["raised_time"]),
                 _normal_time(alert.get("end_time")), alert["peak_prob"], alert.get("threshold"), snapshot, clip,
                 alert.get("reason"), _box_text(alert.get("box"))))
            _add_media(db, alert["alert_id"], snapshot=snapshot, clip=clip)

    def record_camera_event(self, camera: str, kind: str, detail: str | None = None,
                            at: datetime | float | None = None) -> None:
        with self.write_lock() as db:
            db.execute("INSERT INTO camera_events (camera, kind, at, detail) VALUES (?, ?, ?, ?)",
                       (camera, kind, utc_text(at), detail))

    def record_windows(self, alert_id: str, windows: Iterable[tuple[float, float, float]]) -> None:
        """Record scored windows (start_s, end_s, prob) of an alert; a window already there (same start) is
        replaced, so a replay does not duplicate. UnknownAlert for an id not in the store."""
        with self.write_lock() as db:
            if db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise UnknownAlert(alert_id)
            db.executemany("INSERT OR REPLACE INTO alert_windows (alert_id, start_s, end_s, prob) VALUES (?, ?, ?, ?)",
                           [(alert_id, float(s), float(e), float(p)) for s, e, p in windows])

    # -- the reviewer's side ------------------------------------------------------------------------------------

    def alerts(self, camera: str | None = None, day: date | None = None, review: str | None = None,
               limit: int = 100, offset: int = 0) -> list[AlertRecord]:
        """Alerts matching the filters (None: any), unreviewed first, then newest first."""
        where, params = _alert_filter(camera, day, review)
        rows = self._db().execute(
            f"{_ALERT_SELECT} {where} ORDER BY a.review_id IS NOT NULL, a.start_time DESC, a.id DESC"
            " LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return [_alert_record(row) for row in rows]

    def count_alerts(self, camera: str | None = None, day: date | None = None, review: str | None = None) -> int:
        where, params = _alert_filter(camera, day, review)
        return self._db().execute(f"SELECT count(*) FROM alerts a LEFT JOIN reviews r ON r.id = a.review_id {where}",
                                  params).fetchone()[0]

    def alert(self, alert_id: str) -> AlertDetail | None:
        db = self._db()
        db.execute("BEGIN")  # one snapshot of the alert and its reviews
        try:
            row = db.execute(f"{_ALERT_SELECT} WHERE a.id = ?", (alert_id,)).fetchone()
            reviews = db.execute(f"{_REVIEW_SELECT} WHERE alert_id = ? ORDER BY id", (alert_id,)).fetchall()
        finally:
            db.execute("COMMIT")
        return None if row is None else AlertDetail(_alert_record(row), tuple(Review(*r) for r in reviews))

    def review(self, alert_id: str, verdict: str, who: str, at: datetime | float | None = None) -> Review:
        return self.review_many([alert_id], verdict, who, at)[0]

    def review_many(self, alert_ids: Iterable[str], verdict: str, who: str,
                    at: datetime | float | None = None) -> list[Review]:
        """Review every alert in `alert_ids` with one verdict, in one transaction: UnknownAlert applies none."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        if not who:
            raise ValueError("a review needs who made it")
        when, reviews = utc_text(at), []
        with self.write_lock() as db:
            for alert_id in alert_ids:
                if db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                    raise UnknownAlert(alert_id)
                review_id = db.execute("INSERT INTO reviews (alert_id, verdict, who, at) VALUES (?, ?, ?, ?)",
                                       (alert_id, verdict, who, when)).lastrowid
                db.execute("UPDATE alerts SET review_id = ? WHERE id = ?", (review_id, alert_id))
                reviews.append(Review(review_id, alert_id, verdict, who, when, None, None))
        return reviews

    def undo_review(self, alert_id: str, who: str, at: datetime | float | None = None) -> Review | None:
        """Undo the alert's latest review that is not undone; the one before it counts again. None: nothing to
        undo."""
        when = utc_text(at)
        with self.write_lock() as db:
            row = db.execute("SELECT review_id FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise UnknownAlert(alert_id)
            if row[0] is None:
                return None
            db.execute("UPDATE reviews SET undone_at = ?, undone_by = ? WHERE id = ?", (when, who, row[0]))
            db.execute("UPDATE alerts SET review_id = (SELECT max(id) FROM reviews WHERE alert_id = ?"
                       " AND undone_at IS NULL) WHERE id = ?", (alert_id, alert_id))
            return Review(*db.execute(f"{_REVIEW_SELECT} WHERE id = ?", (row[0],)).fetchone())

    def cameras(self) -> list[CameraStatus]:
        rows = self._db().execute(
            "SELECT camera, kind, at, detail FROM camera_events"
            " WHERE id IN (SELECT max(id) FROM camera_events GROUP BY camera) ORDER BY camera").fetchall()
        return [CameraStatus(*row) for row in rows]

    def camera_events(self, camera: str | None = None, limit: int = 100, day: date | None = None) -> list[CameraEvent]:
        """Camera events, newest first; day: a UTC date."""
        clauses, params = [], []
        if camera is not None:
            clauses.append("camera = ?")
            params.append(camera)
        if day is not None:
            clauses.append("at >= ? AND at < ?")
            params += _day_bounds(day)
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self._db().execute(f"SELECT id, camera, kind, at, detail FROM camera_events {where}"
                                  " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [CameraEvent(*row) for row in rows]

    def alert_windows(self, alert_id: str) -> list[Window]:
        rows = self._db().execute("SELECT start_s, end_s, prob FROM alert_windows WHERE alert_id = ? ORDER BY start_s",
                                  (alert_id,)).fetchall()
        return [Window(*row) for row in rows]


def _alert_filter(camera: str | None, day: date | None, review: str | None) -> tuple[str, tuple]:
    clauses, params = [], []
    if camera is not None:
        clauses.append("a.camera = ?")
        params.append(camera)
    if day is not None:
        clauses.append("a.start_time >= ? AND a.start_time < ?")
        params += _day_bounds(day)
    if review is not None:
        if review not in REVIEW_STATES:
            raise ValueError(f"review state {review!r} is not one of {', '.join(REVIEW_STATES)}")
        clauses.append("r.verdict IS NULL" if review == "unreviewed" else "r.verdict = ?")
        params += [] if review == "unreviewed" else [review]
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _day_bounds(day: date) -> list[str]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return [utc_text(start), utc_text(start + timedelta(days=1))]


def _absolute(path: str | None) -> str | None:
    # the watch process's working directory is not the review app's
    return None if path is None else os.path.abspath(path)


def _add_media(db: sqlite3.Connection, alert_id: str, snapshot: str | None, clip: str | None) -> None:
    for kind, path in (("snapshot", snapshot), ("clip", clip)):
        if path is not None:
            db.execute("INSERT INTO media (path, alert_id, kind) VALUES (?, ?, ?) ON CONFLICT (path) DO NOTHING",
                       (path, alert_id, kind))
