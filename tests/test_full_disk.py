"""A disk that fills up (a small real tmpfs) while `fightwatch prepare` extracts clips, while `fightwatch train`
writes a checkpoint, while `fightwatch watch` writes an alert's snapshot and clips and while `score` writes
annotated files: one line saying which file found no space, nothing half-written left where a reader would trust
it, no alert lost, and once there is room again the next run completes. The cases are scripts/faults/full_disk.py's
(which runs them at several sizes), at one size each."""

import logging

import pytest

from cluster.commands.score import Video, score_job
from scripts.faults.full_disk import prepare_case, resize, temp_files, tmpfs, train_case, watch_case
from tests.support.models import MODEL_CFG, fixed_output_model
from tests.support.videos import decoded_frames, write_video
from tests.support.watch import FPS
from trainer.model import ResNet3D
from trainer.serve.alerting.policy import AlertPolicy
from trainer.serve.runtime.scoring import ScoreConfig

pytestmark = pytest.mark.slow  # real mounts and real fightwatch processes


@pytest.fixture(autouse=True)
def can_mount(tmp_path):
    try:
        with tmpfs(tmp_path / "probe", "4k"):
            pass
    except OSError as e:
        pytest.skip(str(e))


def test_extraction_into_a_full_store_fails_in_one_line_and_the_rerun_completes(tmp_path):
    assert prepare_case(tmp_path, "96k") is None


def test_a_checkpoint_that_finds_the_disk_full_fails_in_one_line_and_the_rerun_resumes(prepared, tmp_path):
    # ~0.5 MB a checkpoint: epoch 1's last.pth and best.pth fit, epoch 2's last.pth (beside the old) does not
    assert train_case(tmp_path, "1200k", prepared) is None


def test_alert_evidence_that_finds_the_disk_full_is_one_line_each_and_no_alert_is_lost(tmp_path):
    video = write_video(tmp_path / "gate.mp4", 50, fps=FPS)
    assert watch_case(tmp_path, "4k", fixed_output_model(tmp_path / "fight.pth", "fight"), video) is None


def test_annotated_files_that_find_the_disk_full_cost_only_themselves(tmp_path, caplog):
    video = Video.of(write_video(tmp_path / "gate.mp4", 48, fps=FPS))
    model = ResNet3D(MODEL_CFG).eval()

    def score():
        return score_job(model, MODEL_CFG, [video], tmp_path / "output.json", ScoreConfig(16, 8),
                         AlertPolicy(0.5, 2, 2, 0.0), review)[0][0]

    with tmpfs(tmp_path / "review", "4k") as review, caplog.at_level(logging.ERROR):
        entry = score()
        assert entry["frames"] == 48 and "no space left on device" in entry["annotated_error"].lower()
        assert str(review) in entry["annotated_error"] and not temp_files(review)
        assert [r.getMessage() for r in caplog.records if not r.exc_info] == [
            f"gate.mp4: annotated files not written: {entry['annotated_error']}"]
        resize(review, "4m")
        entry = score()
        assert "annotated_error" not in entry and decoded_frames(review / "gate_annotated.mp4") == 48
