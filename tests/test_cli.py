"""The command line's bad-input contract: one line naming the thing, exit 2, no traceback."""

import pytest

from tests.support.commands import assert_one_line_error, fightwatch

pytestmark = pytest.mark.slow  # every test here runs the installed command

def test_help_explains_the_commands():
    result = fightwatch("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "score" in result.stdout and "examples:" in result.stdout


def test_unknown_config_key(tmp_path):
    assert_one_line_error(fightwatch("demo", "--set", "train.lrr=1"), "unknown key 'train.lrr'")


def test_missing_config_file(tmp_path):
    assert_one_line_error(fightwatch("demo", "--config", str(tmp_path / "none.yaml")), "none.yaml", "not found")


def test_run_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(fightwatch("demo", f"run_dir={blocker}"), str(blocker), "not a directory")


@pytest.fixture
def checkpoint(tmp_path):
    from tests.support.models import MODEL_CFG
    from trainer.checkpoint import save_checkpoint
    from trainer.model import ResNet3D

    path = tmp_path / "model.pth"
    save_checkpoint(path, ResNet3D(MODEL_CFG), MODEL_CFG, epoch=1)
    return path


def test_score_unreadable_video(tmp_path, checkpoint):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "input").write_text("broken.mp4\n")
    result = fightwatch("score", "--input", str(tmp_path / "input"), "--video_root", str(tmp_path / "videos"),
                        "--output", str(tmp_path / "output.json"), "--model", str(checkpoint), "--mode", "score")
    assert_one_line_error(result, "broken.mp4")
    assert "broken.mp4" in (tmp_path / "output.json").read_text()


def test_score_missing_video_and_missing_model(tmp_path, checkpoint):
    (tmp_path / "videos").mkdir()
    (tmp_path / "input").write_text("absent.mp4\n")
    common = ["--input", str(tmp_path / "input"), "--video_root", str(tmp_path / "videos"),
              "--output", str(tmp_path / "o.json")]
    assert_one_line_error(fightwatch("score", *common, "--model", str(checkpoint)), "input:1", "absent.mp4")
    (tmp_path / "input").write_text("")
    assert_one_line_error(fightwatch("score", *common, "--model", str(tmp_path / "no.pth")), "no.pth")
