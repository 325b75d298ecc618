"""A few hundred mutated videos through clip extraction and scoring (scripts/faults/fuzz_videos.py, whose full
run is 10,000 files): no worker crashes or hangs, and every failure is a one-line reason naming the file."""

import importlib.util
import os
import signal
import sys

import pytest

from data.clips import MAX_PIXELS, VideoFrames
from data.errors import InputError
from data.extract import ClipError, extract_window
from tests.support.commands import ROOT
from tests.support.videos import write_video

SEED = 17  # not the script's default, so CI and the full run see different files


@pytest.fixture(scope="module")
def fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_videos", ROOT / "scripts" / "faults" / "fuzz_videos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # worker processes
def test_mutated_videos_neither_crash_nor_hang(fuzzer, tmp_path):
    tally = fuzzer.fuzz(300, SEED, timeout=30, jobs=2, out=tmp_path, progress=False)
    assert tally.files == 300
    assert tally.crashes == [] and tally.hangs == []
    assert tally.failures > 100 and tally.one_line == tally.failures
    assert set(tally.mutations) == set(fuzzer.MUTATIONS)
    for step in ("extract", "score"):  # both steps saw good files and bad ones
        assert tally.reasons[f"{step}: ok"] > 0
        assert sum(n for reason, n in tally.reasons.items() if reason.startswith(f"{step}: ")) == 300
    assert not any((tmp_path / "work").iterdir()) and not any((tmp_path / "findings").iterdir())


@pytest.mark.slow  # the installed command
def test_fightwatch_score_gives_one_error_line_for_mutated_videos(fuzzer, tmp_path):
    cli = fuzzer.cli_sample(list(range(0, 300, 30)), SEED, timeout=30, batch=10, out=tmp_path)
    assert (cli.runs, cli.files) == (1, 10)
    assert cli.crashes == [] and cli.hangs == 0


@pytest.mark.slow  # worker processes
def test_the_watchdog_counts_a_stopped_worker_as_a_hang_and_a_killed_one_as_a_crash(fuzzer, tmp_path):
    """Without this, 0 hangs and 0 crashes could mean the harness cannot see them."""
    video = fuzzer.write_seeds(tmp_path / "seeds")[0]
    worker = fuzzer.Worker(tmp_path / "worker.log", memory_gb=4)
    try:
        assert worker.check(video, timeout=30) == {"extract": {"ok": True}, "score": {"ok": True},
                                                   "decode": {"ok": True, "frames": 30}}
        os.kill(worker.proc.pid, signal.SIGSEGV)
        worker.proc.wait()
        assert worker.check(video, timeout=30) == {"died": "signal SIGSEGV", "step": None}
    finally:
        worker.close()
    worker = fuzzer.Worker(tmp_path / "worker.log", memory_gb=4)
    try:
        os.kill(worker.proc.pid, signal.SIGSTOP)
        assert worker.check(video, timeout=2) == {"hang": None}
    finally:
        worker.close()


def test_a_picture_over_8k_is_refused_before_decoding(tmp_path):
    """A flat H.264 frame compresses to little at any size: the header's size is refused, not allocated."""
    path = write_video(tmp_path / "huge.mp4", 2, size=(8704, 4352))  # 37.9 MP
    assert 8704 * 4352 > MAX_PIXELS
    with pytest.raises(ClipError, match=r"huge.mp4: .*8704x4352 is over 35.4 megapixels") as error:
        extract_window(path, 0, 0.08)
    assert error.value.reason == "too_large"
    with pytest.raises(InputError, match=r"huge.mp4: video too large: 8704x4352"):
        next(iter(VideoFrames(path)))
