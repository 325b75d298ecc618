"""Export for retraining: the plan (pure), and the export of a real store that `fightwatch prepare` reads."""

import json
from dataclasses import replace
from datetime import timedelta

from data.folders import folder_manifest
from tests.support.review_fixtures import NOW, add_alert
from trainer.serve.alerting.store import AlertRecord, AlertStore
from trainer.serve.review.export import MANIFEST, ExportEntry, export_file_name, export_reviewed, plan_export


def record(alert_id, review="unreviewed", clip="/clips/x.mp4", clip_gone=False, who="ana"):
    return AlertRecord(alert_id, "gate", None, "ended", 1.0, 2.0, 3.0, "2024-05-20T12:00:00.000Z",
                       "2024-05-20T12:00:01.000Z", "2024-05-20T12:00:02.000Z", 0.9, 0.5, None, clip, False, clip_gone,
                       "calm", review, None if review == "unreviewed" else who, None)


def entry(alert_id, folder, verdict, who="ana"):
    return ExportEntry(alert_id, f"{folder}/{alert_id}.mp4", verdict, "gate", "2024-05-20T12:00:00.000Z", 0.9, who,
                       None, "/clips/x.mp4")


def test_the_plan_copies_new_verdicts_into_their_class_folder_only_once():
    alerts = [record("fp", "false_positive"), record("tp", "true_positive"), record("ack", "ack"), record("new"),
              record("gone", "true_positive", clip_gone=True), record("none", "false_positive", clip=None)]
    plan = plan_export(alerts, [], lambda path: True)
    assert [(e.alert_id, e.file) for e in plan.copy] == [("fp", "nonfights/fp.mp4"), ("tp", "fights/tp.mp4")]
    assert plan.no_clip == ["gone", "none"] and not (plan.move or plan.remove or plan.keep)
    assert plan_export([record("fp", "false_positive")], [], lambda path: False).no_clip == ["fp"]  # deleted by hand
    again = plan_export(alerts, plan.manifest(), lambda path: True)
    assert not (again.copy or again.move or again.remove) and [e.alert_id for e in again.keep] == ["fp", "tp"]


def test_the_plan_follows_changed_reviews_and_keeps_what_retention_deleted():
    before = [entry("flip", "nonfights", "false_positive"), entry("undone", "fights", "true_positive"),
              entry("expired", "nonfights", "false_positive"), entry("same", "fights", "true_positive")]
    alerts = [record("flip", "true_positive"), record("undone"), record("same", "true_positive", who="bo")]
    plan = plan_export(alerts, before, lambda path: False)  # no clip on disk is needed for any of these
    assert [(old.file, new.file) for old, new in plan.move] == [("nonfights/flip.mp4", "fights/flip.mp4")]
    assert [e.alert_id for e in plan.remove] == ["undone"]
    assert [(e.alert_id, e.reviewed_by) for e in plan.keep] == [("same", "bo"), ("expired", "ana")]
    assert [e.file for e in plan.manifest()] == ["fights/flip.mp4", "fights/same.mp4", "nonfights/expired.mp4"]


def test_file_names_are_the_alert_id_made_safe():
    assert export_file_name("gate-20240520T120000Z-1") == "gate-20240520T120000Z-1.mp4"
    assert export_file_name("../../etc/x") == "%2E.%2F..%2Fetc%2Fx.mp4"
    assert export_file_name("cam 1/a") == "cam%201%2Fa.mp4"


def test_export_copies_only_new_clips_and_prepare_reads_the_folders(tmp_path):
    out = tmp_path / "reviewed"
    with AlertStore(tmp_path / "alerts.db") as store:
        for i, verdict in enumerate(["false_positive", "true_positive", "true_positive", "ack", None]):
            add_alert(store, tmp_path, f"a{i}", at=NOW + timedelta(minutes=i), clip_frames=20)
            if verdict:
                store.review(f"a{i}", verdict, "ana")
        report = export_reviewed(store, out)
        assert (report.copied, report.kept, report.no_clip) == (3, 0, 0)
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
            "fights/a1.mp4", "fights/a2.mp4", "nonfights/a0.mp4"]
        assert (out / "fights/a1.mp4").read_bytes() == (tmp_path / "gate/a1.mp4").read_bytes()
        lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
        assert [(e["alert_id"], e["file"], e["verdict"], e["reviewed_by"]) for e in lines] == [
            ("a1", "fights/a1.mp4", "true_positive", "ana"), ("a2", "fights/a2.mp4", "true_positive", "ana"),
            ("a0", "nonfights/a0.mp4", "false_positive", "ana")]
        assert lines[0]["clip"] == str(tmp_path / "gate/a1.mp4") and lines[0]["camera"] == "gate"

        (out / "fights/a1.mp4").write_bytes(b"touched")  # a re-run copies nothing already there
        store.review("a4", "false_positive", "bo")
        store.review("a2", "false_positive", "bo")
        store.undo_review("a0", "bo")
        report = export_reviewed(store, out)
        assert (report.copied, report.moved, report.removed, report.kept) == (1, 1, 1, 1)
        assert (out / "fights/a1.mp4").read_bytes() == b"touched"
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
            "fights/a1.mp4", "nonfights/a2.mp4", "nonfights/a4.mp4"]
        assert export_reviewed(store, out) == replace(report, copied=0, moved=0, removed=0, kept=3)

    (out / "fights/a1.mp4").write_bytes((tmp_path / "gate/a1.mp4").read_bytes())
    rows = folder_manifest(out, val_fraction=0.0, seed=0)
    assert sorted((row["video_id"], row["label"]) for row in rows) == [
        ("fights%2Fa1.mp4", "fight"), ("nonfights%2Fa2.mp4", "nonfight"), ("nonfights%2Fa4.mp4", "nonfight")]
