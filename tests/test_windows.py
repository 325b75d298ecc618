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


def cut_with_gap(frames_before, lost, frames_after, stride, max_gap, duration=16):
    """Windows of a stream that loses `lost` frames after its first `frames_before`; items are frame numbers."""
    cutter = WindowCutter(duration, stride, max_gap)
    cuts = [c for c in map(cutter.push, range(frames_before)) if c is not None]
    cuts += cutter.gap(lost)
    after = range(frames_before + lost, frames_before + lost + frames_after)
    cuts += [c for c in map(cutter.push, after) if c is not None]
    tail = cutter.finish()
    return cuts + ([tail] if tail else []), cutter


def test_a_short_gap_is_filled_with_the_frame_before_it():
    cuts, cutter = cut_with_gap(20, 3, 25, stride=16, max_gap=3)
    assert [(c.start, c.end) for c in cuts] == [(0, 16), (16, 32), (32, 48)] and cutter.skipped == 0
    assert cuts[1].items == [16, 17, 18, 19, 19, 19, 19, 23, 24, 25, 26, 27, 28, 29, 30, 31]


@pytest.mark.parametrize("before, stride, skipped, starts", [
    (20, 16, 1, [0, 30, 46]),      # [16, 32) would span it: skipped; the next starts on the frame after the gap
    (32, 16, 0, [0, 16, 42, 58]),  # the gap falls between windows: nothing spans it
    (20, 8, 2, [0, 30, 38, 46]),   # [8, 24) and [16, 32) would span it
])
def test_windows_across_a_long_gap_are_skipped_and_counted(before, stride, skipped, starts):
    cuts, cutter = cut_with_gap(before, 10, 32, stride=stride, max_gap=3)
    assert [c.start for c in cuts] == starts and cutter.skipped == skipped
    assert all(c.items == list(range(c.start, c.end)) for c in cuts)  # no window holds a frame from both sides
    assert cutter.frames == before + 10 + 32  # frames keep their numbers across the gap


def test_frames_lost_before_the_first_are_counted_in_its_number():
    cuts, cutter = cut_with_gap(0, 5, 16, stride=16, max_gap=8)
    assert [(c.start, c.end) for c in cuts] == [(5, 21)] and cutter.skipped == 0
