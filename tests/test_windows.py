"""The one window plan of score, watch and evaluation: every stride, the tail, the short video."""

import numpy as np
import pytest

from trainer.serve.runtime.windows import WindowCutter, loop_padded


def cut(n_frames, stride, duration=16):
    cutter = WindowCutter(duration, stride)
    cuts = [c for c in map(cutter.push, range(n_frames)) if c is not None]
    tail = cutter.finish()
    return cuts + ([tail] if tail else [])


@pytest.mark.parametrize("n, stride, expected", [
    (48, 16, [(0, 16), (16, 32), (32, 48)]),            # exact: no tail
    (50, 16, [(0, 16), (16, 32), (32, 48), (34, 50)]),  # tail: the last 16 frames, overlapping
    (10, 16, [(0, 10)]),                                # shorter than a window: its frames (padded later)
    (40, 8, [(0, 16), (8, 24), (16, 32), (24, 40)]),
    (41, 8, [(0, 16), (8, 24), (16, 32), (24, 40), (25, 41)]),
    (50, 20, [(0, 16), (20, 36), (34, 50)]),            # stride > duration: frames between skipped, tail kept
    (36, 20, [(0, 16), (20, 36)]),
    (0, 16, []),
])
def test_windows_cover_every_frame_with_the_tail_and_short_videos(n, stride, expected):
    cuts = cut(n, stride)
    assert [(c.start, c.end) for c in cuts] == expected
    assert all(c.items == list(range(c.start, c.end)) for c in cuts)  # the frames themselves, in order
    if stride <= 16:
        assert set().union(*(range(c.start, c.end) for c in cuts)) == set(range(n))


def test_loop_padding_repeats_a_short_window_from_its_first_frame():
    frames = np.arange(5)[:, None]
    assert loop_padded(frames, 8)[:, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    full = np.arange(16)[:, None]
    assert loop_padded(full, 16) is full


def test_bad_plan():
    with pytest.raises(ValueError):
        WindowCutter(16, 0)
