"""A disk that fills up (a small real tmpfs) while `fightwatch prepare` extracts clips, while `fightwatch train`
writes a checkpoint and while `fightwatch watch` writes an alert's snapshot and clips: one line saying which file
found no space, nothing half-written left where a reader would trust it, and once there is room again the next
run completes. scripts/faults/full_disk.py runs the same cases at several sizes."""

import json
import logging
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from data.store import ClipStore
from tests.helpers import FIGHTWATCH, ROOT, TINY, assert_resumed, clean_env, copy_of
from tests.test_watch import FPS, decoded_frames, models, read_jsonl, watch  # noqa: F401 (models: a fixture)
from tests.videos import write_video
from trainer.checkpoint import latest_checkpoint, read_checkpoint
from trainer.serve.alert_store import AlertStore

pytestmark = pytest.mark.slow  # real mounts and real fightwatch processes


@contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (made if missing) for the block; skips where mounting needs root."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root) to make a full disk")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def make_room(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def half_written(folder: Path) -> list[Path]:
    """Temp files (atomic_path's `.<name>.<id>.tmp`) left behind."""
    return sorted(folder.rglob("*.tmp"))


def assert_no_space_line(result, path_part: str) -> str:
    """The process failed with exactly one error line, naming a file under `path_part` and the full disk."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("fightwatch: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert path_part in errors[0] and "no space left on device" in errors[0].lower(), errors[0]
    return errors[0]


def run(*args, timeout=300):
    return subprocess.run([str(FIGHTWATCH), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def test_extraction_into_a_full_store_fails_in_one_line_and_the_rerun_completes(tmp_path):
    run_dir = tmp_path / "run"
    prepare = ["prepare", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY]
    with small_disk(run_dir / "clips", "96k") as clips:
        assert_no_space_line(run(*prepare), str(clips))
        assert not half_written(clips)
        for index in clips.glob("*.index.json"):  # an index means a whole shard: every one of its frames reads
            store = ClipStore(clips)
            for clip_id in json.loads(index.read_text())["clips"]:
                assert len(store.read(clip_id)) == store.shape(clip_id)[0]
        assert not (run_dir / "manifest.jsonl").exists()
        make_room(clips, "8m")
        again = run(*prepare)
        assert again.returncode == 0, again.stderr[-3000:]
        manifest = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
        assert len(manifest) == 20 and not half_written(clips)
        store = ClipStore(clips)
        assert all(store.read(row["clip_id"]).shape[0] == store.shape(row["clip_id"])[0] for row in manifest)


def test_a_checkpoint_that_finds_the_disk_full_fails_in_one_line_and_the_rerun_resumes(prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path, "run")
    train = ["train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY, "train.epochs=3"]
    # ~0.5 MB a checkpoint: epoch 1's last.pth and best.pth fit, epoch 2's last.pth (beside the old) does not
    with small_disk(run_dir / "checkpoints", "1200k") as checkpoints:
        assert_no_space_line(run(*train), str(checkpoints))
        assert not half_written(checkpoints)
        for path in checkpoints.glob("*.pth"):  # what is there is whole, its sidecar agreeing
            read_checkpoint(path, require_checksum=True)
        assert latest_checkpoint(checkpoints)[1]["epoch"] == 1
        make_room(checkpoints, "8m")
        again = run(*train)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_resumed(run_dir, again.stderr, 1, 3)
        assert read_checkpoint(run_dir / "model.pth", require_checksum=True)["epoch"] == 3
        assert not half_written(checkpoints)


def test_alert_evidence_that_finds_the_disk_full_is_one_line_each_and_no_alert_is_lost(models, tmp_path, capsys,
                                                                                         caplog):
    video = write_video(tmp_path / "gate.mp4", 50, fps=FPS)
    alerts, store = tmp_path / "alerts.jsonl", tmp_path / "alerts.db"
    args = ["--model", models["fight"], "--no-realtime", "--alerts", alerts, "--store", store, "--stats-every", 0]
    with small_disk(tmp_path / "out", "4k") as out_dir, caplog.at_level(logging.INFO):
        rc, stats, _ = watch(capsys, *args, "--out-dir", out_dir, f"gate={video}")
        assert rc == 0 and stats["total"]["alerts"] == 1
        start, end = read_jsonl(alerts)  # the alert went out, start and end
        failed = [r for r in caplog.records if r.name == "trainer.serve.snapshots"]
        assert failed and not any(r.exc_info for r in failed)  # one line each
        for record in failed:
            assert "No space left on device" in record.getMessage() and str(out_dir) in record.getMessage()
        missing = [Path(p) for p in (start["snapshot"], start["clip"], end["snapshot"], end["clip"])
                   if not Path(p).is_file()]
        assert len(missing) == len(failed) and not half_written(out_dir)
        with AlertStore(store) as db:  # recorded, its missing files as absent as on disk
            (alert,) = db.alerts()
            assert alert.id == start["alert_id"] and not Path(alert.clip).is_file()

        make_room(out_dir, "1m")
        alerts.unlink()
        rc, stats, _ = watch(capsys, *args, "--out-dir", out_dir, f"gate={video}")
        start, end = read_jsonl(alerts)
        assert rc == 0 and decoded_frames(end["clip"]) == 50 and decoded_frames(start["snapshot"]) == 1
        assert not half_written(out_dir)


def test_annotated_files_that_find_the_disk_full_cost_only_themselves(tmp_path, caplog):
    from cluster.score import Video, score_job
    from tests.test_scoring import MODEL_CFG
    from trainer.model import ResNet3D
    from trainer.serve.alerts import AlertPolicy
    from trainer.serve.scoring import ScoreConfig

    video = Video.of(write_video(tmp_path / "gate.mp4", 48, fps=FPS))
    model = ResNet3D(MODEL_CFG).eval()
    with small_disk(tmp_path / "review", "4k") as review:
        entries, _ = score_job(model, MODEL_CFG, [video], tmp_path / "output.json", ScoreConfig(16, 8),
                               AlertPolicy(0.5, 2, 2, 0.0), review)
        assert entries[0]["frames"] == 48 and "no space left on device" in entries[0]["annotated_error"].lower()
        assert str(review) in entries[0]["annotated_error"] and not half_written(review)
        assert any("annotated files not written" in r.getMessage() and not r.exc_info for r in caplog.records)
        make_room(review, "4m")
        entries, _ = score_job(model, MODEL_CFG, [video], tmp_path / "output.json", ScoreConfig(16, 8),
                               AlertPolicy(0.5, 2, 2, 0.0), review)
        assert "annotated_error" not in entries[0] and decoded_frames(review / "gate_annotated.mp4") == 48
