"""The alert evidence writer: in order, off the caller's thread, bounded (drops and counts what it cannot keep)."""

import threading
from pathlib import Path

import numpy as np

from trainer.serve.runtime.snapshots import Frame, SnapshotWriter, write_jpeg


def test_a_full_writer_drops_and_counts_new_jobs_and_finishes_the_queued_ones_on_close(tmp_path):
    started, release, done = threading.Event(), threading.Event(), []

    def write(what, path: Path) -> Path:
        started.set()
        release.wait()  # the disk is slow: the first job holds the thread
        done.append(what)
        return path

    writer = SnapshotWriter(max_pending=2)
    assert writer.submit(write, "first", tmp_path / "1")
    started.wait()
    assert writer.submit(write, "second", tmp_path / "2") and writer.submit(write, "third", tmp_path / "3")
    assert not writer.submit(write, "fourth", tmp_path / "4")  # the queue holds 2: dropped
    assert writer.dropped == 1
    release.set()
    writer.close()
    assert done == ["first", "second", "third"]


def test_a_failing_write_is_logged_and_the_next_one_still_runs(tmp_path, caplog):
    def fail(what, path):
        raise OSError(28, "No space left on device")

    frame = Frame(0.0, 0.0, np.full((48 * 3 // 2, 64), 128, np.uint8))
    writer = SnapshotWriter(max_pending=4)
    writer.submit(fail, None, tmp_path / "a.jpg")
    writer.submit(write_jpeg, frame, tmp_path / "b.jpg")
    writer.close()
    assert "writing" in caplog.text and str(tmp_path / "a.jpg") in caplog.text
    assert (tmp_path / "b.jpg").read_bytes().startswith(b"\xff\xd8")  # a JPEG
