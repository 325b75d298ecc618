"""A few hundred mutated videos through clip extraction and scoring (scripts/faults/fuzz_videos.py, whose full
run is 10,000 files): no worker crashes or hangs, and every failure is a one-line reason naming the file."""

import importlib.util
import os
import signal

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # worker processes, the installed command

SEED = 17  # not the script's default, so CI and the full run see different files


@pytest.fixture(scope="module")
def fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_videos", ROOT / "scripts" / "faults" / "fuzz_videos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutated_videos_neither_crash_nor_hang(fuzzer, tmp_path):
    tally = fuzzer.fuzz(300, SEED, timeout=30, jobs=2, out=tmp_path, progress=False)
    assert tally.files == 300
    assert tally.crashes == [] and tally.hangs == []
    assert tally.failures > 100 and tally.one_line == tally.failures
    assert set(tally.mutations) == set(fuzzer.MUTATIONS)
    for step in ("extract", "score"):  # both steps saw good files and bad ones
        assert tally.reasons[f"{step}: ok"] > 0 and sum(n for r, n in tally.reasons.items() if r.startswith(step)) == 300
    assert not any((tmp_path / "work").iterdir()) and not any((tmp_path / "findings").iterdir())


def test_fightwatch_score_gives_one_error_line_for_mutated_videos(fuzzer, tmp_path):
    cli = fuzzer.cli_sample(list(range(0, 300, 30)), SEED, timeout=30, batch=10, out=tmp_path)
    assert (cli.runs, cli.files) == (1, 10)
    assert cli.crashes == [] and cli.hangs == 0


def test_the_watchdog_counts_a_stopped_worker_as_a_hang_and_a_killed_one_as_a_crash(fuzzer, tmp_path):
    """Without this, 0 hangs and 0 crashes could mean the harness cannot see them."""
    video = fuzzer.write_seeds(tmp_path / "seeds")[0]
    worker = fuzzer.Worker(tmp_path / "worker.log", memory_gb=4)
    try:
        assert worker.check(video, timeout=30) == {"extract": {"ok": True}, "score": {"ok": True}}
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
