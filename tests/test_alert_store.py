"""The alert store: a real SQLite file, reopened, written and read from several threads; retention's plan."""

import os
import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone

import pytest

from data.errors import InputError
from trainer.serve.alerting.policy import Window
from trainer.serve.alerting.retention import MediaFile, Retention, apply_retention, plan_media_cap
from trainer.serve.alerting.store import SCHEMA_VERSION, AlertStore, UnknownAlert, utc_text

NOW = datetime(2024, 5, 20, 12, 0, tzinfo=timezone.utc)


def start_payload(alert_id, camera="gate", at=NOW, folder=None, peak=0.9):
    folder = folder or "out"
    return {"event": "start", "alert_id": alert_id, "camera": camera, "source": f"/v/{camera}.mp4",
            "start_s": 1.0, "raised_s": 1.96, "start_time": utc_text(at), "raised_time": utc_text(at + timedelta(seconds=1)),
            "peak_prob": peak, "threshold": 0.5, "snapshot": f"{folder}/{alert_id}.jpg", "clip": f"{folder}/{alert_id}.mp4"}


def end_payload(alert_id, camera="gate", at=NOW, folder=None, peak=0.97, snapshot=None):
    start = start_payload(alert_id, camera, at, folder)
    del start["threshold"]
    return {**start, "event": "end", "end_s": 4.0, "end_time": utc_text(at + timedelta(seconds=3)), "peak_prob": peak,
            "snapshot": snapshot or start["snapshot"], "reason": "calm"}


def test_alerts_survive_a_reopen_and_replays_do_not_duplicate(tmp_path):
    path = tmp_path / "db" / "alerts.db"  # the folder is made
    with AlertStore(path) as store:
        assert store.record_start(start_payload("a1")) is True
        assert store.record_start(start_payload("a1", peak=0.6)) is False  # a replay: left as it was
        assert store.alert("a1").alert.state == "active"
    with AlertStore(path) as store:
        store.record_end(end_payload("a1", snapshot="out/a1-peak.jpg"))
        store.record_end(end_payload("a1", snapshot="out/a1-peak.jpg"))
        assert store.count_alerts() == 1
    with AlertStore(path) as store:
        alert = store.alert("a1").alert
        assert alert.state == "ended" and alert.end_reason == "calm" and alert.end_s == 4.0
        assert alert.peak_prob == 0.97 and alert.threshold == 0.5  # the threshold only the start carried
        assert alert.start_time == "2024-05-20T12:00:00.000Z" and alert.end_time == "2024-05-20T12:00:03.000Z"
        assert alert.snapshot == os.path.abspath("out/a1-peak.jpg")  # absolute: the reader's cwd differs
        assert alert.clip.endswith("/out/a1.mp4") and not alert.clip_gone and alert.review == "unreviewed"
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_end_whose_start_was_lost_is_recorded_whole(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        store.record_end(end_payload("lost"))
        alert = store.alert("lost").alert
        assert alert.state == "ended" and alert.start_s == 1.0 and alert.threshold is None


def test_a_file_that_is_no_store_or_from_a_newer_version_is_an_input_error(tmp_path):
    (tmp_path / "text.db").write_text("not a database, just text that is long enough to be read " * 20)
    with pytest.raises(InputError, match="text.db: cannot open the alert store"):
        AlertStore(tmp_path / "text.db")
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(InputError, match="new.db: .*schema version 7 is newer"):
        AlertStore(tmp_path / "new.db")


def test_listing_puts_unreviewed_first_then_newest_and_filters(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        for i, (camera, hours) in enumerate([("gate", 0), ("gate", 1), ("door", 2), ("gate", 30), ("door", 31)]):
            store.record_start(start_payload(f"a{i}", camera, NOW + timedelta(hours=hours)))
        store.review("a4", "ack", "ana")  # the newest, reviewed: after every unreviewed one
        store.review("a0", "true_positive", "ana")
        assert [a.id for a in store.alerts()] == ["a3", "a2", "a1", "a4", "a0"]
        assert [a.id for a in store.alerts(limit=2, offset=2)] == ["a1", "a4"]
        assert [a.id for a in store.alerts(camera="gate")] == ["a3", "a1", "a0"]
        assert [a.id for a in store.alerts(day=date(2024, 5, 21))] == ["a3", "a4"]  # UTC days of the start
        assert [a.id for a in store.alerts(review="unreviewed")] == ["a3", "a2", "a1"]
        assert [a.id for a in store.alerts(review="true_positive", camera="gate")] == ["a0"]
        assert store.count_alerts(camera="door") == 2 and store.count_alerts(review="ack") == 1
        reviewed = store.alerts(review="ack")[0]
        assert (reviewed.review, reviewed.reviewed_by) == ("ack", "ana") and reviewed.reviewed_at.endswith("Z")
        with pytest.raises(ValueError, match="review state 'fight'"):
            store.alerts(review="fight")


def test_reviews_keep_their_history_and_undo_goes_back_one(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        store.record_start(start_payload("a1"))
        store.review("a1", "ack", "ana")
        store.review("a1", "true_positive", "bo")
        assert store.alert("a1").alert.review == "true_positive"
        undone = store.undo_review("a1", "cy")
        assert (undone.verdict, undone.who, undone.undone_by) == ("true_positive", "bo", "cy")
        assert (store.alert("a1").alert.review, store.alert("a1").alert.reviewed_by) == ("ack", "ana")
        store.undo_review("a1", "cy")
        assert store.alert("a1").alert.review == "unreviewed" and store.undo_review("a1", "cy") is None
        history = store.alert("a1").reviews
        assert [(r.verdict, r.who, r.undone_by) for r in history] == [("ack", "ana", "cy"), ("true_positive", "bo", "cy")]
        with pytest.raises(UnknownAlert):
            store.review("nope", "ack", "ana")
        with pytest.raises(UnknownAlert):
            store.undo_review("nope", "ana")
        with pytest.raises(ValueError, match="verdict 'fight'"):
            store.review("a1", "fight", "ana")
        assert store.alert("nope") is None


def test_bulk_review_is_all_or_nothing(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        for alert_id in ("a1", "a2"):
            store.record_start(start_payload(alert_id))
        with pytest.raises(UnknownAlert):
            store.review_many(["a1", "missing", "a2"], "false_positive", "ana")
        assert store.count_alerts(review="unreviewed") == 2
        reviews = store.review_many(["a1", "a2"], "false_positive", "ana")
        assert [r.alert_id for r in reviews] == ["a1", "a2"] and store.count_alerts(review="false_positive") == 2


def test_cameras_show_their_latest_event(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        store.record_camera_event("gate", "online", at=NOW)
        store.record_camera_event("door", "online", at=NOW)
        store.record_camera_event("gate", "reconnecting", "stream lost: ended", at=NOW + timedelta(seconds=5))
        assert [(c.camera, c.status, c.detail) for c in store.cameras()] == [
            ("door", "online", None), ("gate", "reconnecting", "stream lost: ended")]
        assert store.cameras()[1].since == "2024-05-20T12:00:05.000Z"
        assert [e.kind for e in store.camera_events("gate")] == ["reconnecting", "online"]



def test_an_alerts_windows_are_kept_replaced_on_replay_and_go_with_the_alert(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        store.record_start(start_payload("a1", at=NOW - timedelta(days=40)))
        store.record_windows("a1", [(0.64, 1.28, 0.7), (0.0, 0.64, 0.2)])
        store.record_windows("a1", [(0.64, 1.28, 0.75), (1.28, 1.92, 0.9)])  # a replayed window replaces
        assert store.alert_windows("a1") == [Window(0.0, 0.64, 0.2), Window(0.64, 1.28, 0.75),
                                             Window(1.28, 1.92, 0.9)]
        with pytest.raises(UnknownAlert):
            store.record_windows("nope", [(0.0, 0.64, 0.2)])
        apply_retention(store, Retention(alert_days=30, camera_event_days=None, media_cap_mb=None), now=NOW)
        assert store.alert_windows("a1") == []


def test_a_version_1_store_gains_the_windows_table_and_keeps_its_alerts(tmp_path):
    from trainer.serve.alerting import store as alert_store

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    alert_store._create_v1(db)  # the file as the first released version left it
    db.execute("INSERT INTO alerts (id, camera, state, start_s, raised_s, start_time, raised_time, peak_prob)"
               " VALUES ('a1', 'gate', 'ended', 1, 2, '2024-05-20T12:00:00.000Z', '2024-05-20T12:00:01.000Z', 0.9)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with AlertStore(path) as store:
        assert store.alert("a1").alert.camera == "gate"
        store.record_windows("a1", [(0.0, 0.64, 0.8)])
        assert store.alert_windows("a1") == [Window(0.0, 0.64, 0.8)]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_alerts_box_round_trips_and_an_alert_without_one_has_none(tmp_path):
    path = tmp_path / "a.db"
    with AlertStore(path) as store:
        store.record_start({**start_payload("boxed"), "box": [0.25, 0.1, 0.5, 0.6]})
        store.record_start(start_payload("plain"))  # a model run without regions: no "box"
        store.record_start({**start_payload("null"), "box": None})
        store.record_end({**end_payload("lost"), "box": (0.0, 0.5, 0.5, 1.0)})  # its start never arrived
        store.record_end({**end_payload("boxed"), "box": None})  # an end without one keeps the start's
        with pytest.raises(ValueError, match="a box is"):
            store.record_start({**start_payload("bad"), "box": [0.1, 0.2]})
    with AlertStore(path) as store:
        assert store.alert("boxed").alert.box == (0.25, 0.1, 0.5, 0.6)
        assert store.alert("plain").alert.box is None and store.alert("null").alert.box is None
        assert store.alert("lost").alert.box == (0.0, 0.5, 0.5, 1.0)
        assert {a.id: a.box for a in store.alerts()}["boxed"] == (0.25, 0.1, 0.5, 0.6)
        assert store.alert("bad") is None


def test_a_version_2_store_gains_the_box_column_and_keeps_its_alerts(tmp_path):
    from trainer.serve.alerting import store as alert_store

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    alert_store._create_v1(db)  # the file as the second released version left it: v1, then its windows table
    alert_store._add_windows_v2(db)
    db.execute("INSERT INTO alerts (id, camera, state, start_s, raised_s, start_time, raised_time, peak_prob)"
               " VALUES ('a1', 'gate', 'ended', 1, 2, '2024-05-20T12:00:00.000Z', '2024-05-20T12:00:01.000Z', 0.9)")
    db.execute("INSERT INTO alert_windows VALUES ('a1', 0.0, 0.64, 0.8)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with AlertStore(path) as store:
        old = store.alert("a1").alert
        assert (old.camera, old.peak_prob, old.box) == ("gate", 0.9, None)
        assert store.alert_windows("a1") == [Window(0.0, 0.64, 0.8)]
        store.record_start({**start_payload("a2"), "box": [0.1, 0.2, 0.3, 0.4]})
        assert store.alert("a2").alert.box == (0.1, 0.2, 0.3, 0.4)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_camera_events_filter_by_utc_day(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        store.record_camera_event("gate", "online", at=NOW)
        store.record_camera_event("gate", "offline", at=NOW + timedelta(days=1))
        store.record_camera_event("door", "offline", at=NOW + timedelta(days=1))
        assert [e.kind for e in store.camera_events(day=date(2024, 5, 20))] == ["online"]
        assert [e.camera for e in store.camera_events(day=date(2024, 5, 21))] == ["door", "gate"]
        assert [e.camera for e in store.camera_events("gate", day=date(2024, 5, 21))] == ["gate"]


def test_data_version_moves_on_every_commit_from_any_connection(tmp_path):
    with AlertStore(tmp_path / "a.db") as store, AlertStore(tmp_path / "a.db") as other:
        version = store.data_version()
        assert store.data_version() == version  # nothing committed
        store.record_start(start_payload("a1"))  # this store's own writes count: another connection made them
        assert store.data_version() != version
        version = store.data_version()
        reviewer = threading.Thread(target=other.review, args=("a1", "ack", "ana"))  # another store, another thread
        reviewer.start()
        reviewer.join()
        assert store.data_version() != version

def media(name, kind="clip", size=100, age_h=0, kept=False):
    return MediaFile(name, kind, size, utc_text(NOW - timedelta(hours=age_h)), kept)


def test_the_media_cap_deletes_the_oldest_clips_first_and_never_kept_ones():
    files = [media("new.mp4", age_h=1), media("old.mp4", age_h=9), media("kept.mp4", age_h=20, kept=True),
             media("old.jpg", "snapshot", 10, age_h=9), media("new.jpg", "snapshot", 10, age_h=1)]
    assert plan_media_cap(files, 320) == []  # 320 bytes on disk: fits
    assert [f.path for f in plan_media_cap(files, 300)] == ["old.mp4"]
    assert [f.path for f in plan_media_cap(files, 120)] == ["old.mp4", "new.mp4"]  # clips before snapshots
    assert [f.path for f in plan_media_cap(files, 110)] == ["old.mp4", "new.mp4", "old.jpg"]
    # the kept clip alone is over the cap: everything else goes, the kept one stays
    assert [f.path for f in plan_media_cap(files, 50)] == ["old.mp4", "new.mp4", "old.jpg", "new.jpg"]
    assert plan_media_cap([media("absent.mp4", size=0)], 0) == []  # nothing to free


def test_retention_expires_old_alerts_but_keeps_reviewed_fights_and_caps_the_media(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with AlertStore(tmp_path / "a.db") as store:
        for alert_id, days in (("old", 40), ("old_fight", 41), ("recent", 2), ("recent_fight", 3), ("now", 0)):
            store.record_start(start_payload(alert_id, at=NOW - timedelta(days=days), folder=folder))
            store.record_end(end_payload(alert_id, at=NOW - timedelta(days=days), folder=folder))
            (folder / f"{alert_id}.jpg").write_bytes(b"j" * 1000)
            (folder / f"{alert_id}.mp4").write_bytes(b"m" * 100_000)
        store.review("old_fight", "true_positive", "ana")
        store.review("recent_fight", "true_positive", "ana")
        store.review("old", "false_positive", "ana")
        store.record_camera_event("gate", "online", at=NOW - timedelta(days=31))
        store.record_camera_event("gate", "offline", at=NOW - timedelta(days=1))

        # 4 alerts left after the expiry: 4 clips (400 kB) and 4 snapshots; a 0.25 MB cap deletes 2 clips
        report = apply_retention(store, Retention(alert_days=30, camera_event_days=30, media_cap_mb=0.25), now=NOW)
        assert (report.alerts_deleted, report.camera_events_deleted, report.files_deleted) == (1, 1, 4)
        assert report.bytes_freed == 101_000 + 200_000
        assert store.alert("old") is None and not (folder / "old.mp4").exists() and not (folder / "old.jpg").exists()
        assert {a.id for a in store.alerts()} == {"old_fight", "recent", "recent_fight", "now"}
        gone = {a.id: a.clip_gone for a in store.alerts()}
        assert gone == {"old_fight": False, "recent_fight": False, "recent": True, "now": True}  # fights kept
        assert not (folder / "recent.mp4").exists() and (folder / "recent.jpg").exists()
        assert (folder / "old_fight.mp4").exists() and (folder / "recent_fight.mp4").exists()
        assert [e.kind for e in store.camera_events()] == ["offline"]
        # a second pass has nothing to do; reviewing a fight later does not bring its clip back, it stays marked
        assert apply_retention(store, Retention(30, 30, 0.25), now=NOW) == type(report)()


def test_a_writer_thread_and_reader_threads_share_the_file(tmp_path):
    path, n = tmp_path / "a.db", 150
    writer_store, reader_store = AlertStore(path), AlertStore(path)  # two stores: as two processes would be
    errors, seen, done = [], [], threading.Event()

    def write():
        try:
            for i in range(n):
                writer_store.record_start(start_payload(f"a{i:03d}", at=NOW + timedelta(seconds=i)))
                writer_store.record_camera_event("gate", "online" if i % 2 else "reconnecting")
                writer_store.record_end(end_payload(f"a{i:03d}", at=NOW + timedelta(seconds=i)))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            done.set()

    def read_and_review():
        try:
            while not done.is_set():
                listed = reader_store.alerts(limit=20)
                seen.append(reader_store.count_alerts())
                if listed:
                    reader_store.review(listed[0].id, "ack", "reader")  # writes too: contention on the lock
                reader_store.cameras()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read_and_review) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert seen and max(seen) <= n
    assert reader_store.count_alerts() == n and reader_store.count_alerts(review="ack") > 0
    assert all(a.state == "ended" for a in reader_store.alerts(limit=n))
    writer_store.close()
    reader_store.close()
