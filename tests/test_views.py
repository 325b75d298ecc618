"""Actor views: the square around a sample's people that `data.view: actor` cuts clips to (data/views.py)."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.errors import InputError
from data.extract import extract_window
from data.pipeline import group_by_video
from data.store import ClipStore
from data.synthetic import render_wide, write_video
from data.views import MIN_SIDE, actor_square, square_around
from data.ava import read_annotations
from tests.support.videos import write_video as write_pattern_video

AVA_ROWS = Path(__file__).parents[2] / "shared" / "fixtures" / "ava" / "ava_val_v2.2_head.csv"


def test_square_around_grows_squares_and_stays_inside():
    assert square_around(100, 100, 140, 180, 640, 360) == (70, 90, 170, 190)  # 80 tall x 1.25 = 100
    assert square_around(0, 0, 10, 10, 640, 360) == (0, 0, 72, 72)  # at least a fifth of 360, shifted inside
    assert square_around(0, 0, 640, 360, 640, 360) == (140, 0, 500, 360)  # at most the short side


def test_actor_squares_of_real_ava_rows_hold_their_people():
    if not AVA_ROWS.is_file():
        pytest.skip(f"{AVA_ROWS} absent: the real AVA rows live in ../shared")
    rows, _ = read_annotations(AVA_ROWS)
    people = defaultdict(list)
    for row in rows:
        people[row.video_id, row.timestamp, row.action_id].append(row.box)
    assert len(people) > 20
    for (width, height) in [(1280, 720), (640, 480), (360, 640)]:
        for boxes in people.values():
            left, top, right, bottom = actor_square(boxes, width, height)
            side = right - left
            assert side == bottom - top and 0 <= left and 0 <= top and right <= width and bottom <= height
            assert MIN_SIDE * min(width, height) - 1 <= side <= min(width, height)
            union = (min(b[0] for b in boxes) * width, min(b[1] for b in boxes) * height,
                     max(b[2] for b in boxes) * width, max(b[3] for b in boxes) * height)
            if side < min(width, height):  # a square smaller than the frame holds all its people
                assert left <= union[0] + 1 and union[2] - 1 <= right and top <= union[1] + 1 and union[3] - 1 <= bottom


def resized_square(frames: np.ndarray, square, size: int) -> np.ndarray:
    left, top, right, bottom = square
    cut = torch.from_numpy(np.ascontiguousarray(frames[:, top:bottom, left:right])).permute(0, 3, 1, 2).float()
    return F.interpolate(cut, size=(size, size), mode="area").permute(0, 2, 3, 1).numpy()


def test_an_actor_clip_of_a_wide_scene_is_the_fight_cut_from_the_full_frames(tmp_path):
    frames, truth = render_wide(3, width=640, height=360, fight_width=0.15, calm_before=0.4, fight=0.8,
                                calm_after=0.4)
    write_video(tmp_path / "wide.mp4", frames, 25)
    fight = [truth["boxes"][5]["box"]]  # normalised, as AVA's
    clip = extract_window(tmp_path / "wide.mp4", 0.4, 1.0, short_side=64, actors=fight)
    full = extract_window(tmp_path / "wide.mp4", 0.4, 1.0, short_side=360)
    assert clip.shape == (15, 64, 64, 3)
    expected = resized_square(full, actor_square(fight, 640, 360), 64)
    assert np.abs(clip.astype(float) - expected).mean() < 4  # the same pixels, up to the two resizes' rounding
    elsewhere = resized_square(full, (0, 0, 64, 64), 64)
    assert np.abs(clip.astype(float) - elsewhere).mean() > 20


def test_an_actor_box_is_in_the_upright_frame_of_a_phone_video(tmp_path):
    path = write_pattern_video(tmp_path / "phone.mp4", 5, size=(64, 48), rotation=90)  # upright 48 x 64
    box = [[0.5, 0.5, 1.0, 1.0]]  # the bottom right quarter of what a player shows
    clip = extract_window(path, 0, 0.2, short_side=24, actors=box)
    full = extract_window(path, 0, 0.2, short_side=48)
    assert full.shape[1:3] == (64, 48) and clip.shape == (5, 24, 24, 3)
    assert np.abs(clip.astype(float) - resized_square(full, actor_square(box, 48, 64), 24)).mean() < 6


def test_an_actor_view_needs_boxes_and_a_store_keeps_one_cut():
    rows = [{"clip_id": "a_0001", "video_id": "a", "path": "/v/a.mp4", "start_s": 0.0, "end_s": 4.0, "boxes": []}]
    assert group_by_video(rows)[0]["clips"][0] == {"clip_id": "a_0001", "start_s": 0.0, "end_s": 4.0}
    with pytest.raises(InputError, match="a_0001 .*/v/a.mp4.* no boxes for data.view actor"):
        group_by_video(rows, "actor")
    with pytest.raises(InputError, match="data.view must be one of frame, actor"):
        group_by_video(rows, "person")
    rows[0]["boxes"] = [[0.1, 0.2, 0.3, 0.4]]
    assert group_by_video(rows, "actor")[0]["clips"][0]["actors"] == [[0.1, 0.2, 0.3, 0.4]]


def test_a_store_refuses_clips_cut_another_way(tmp_path):
    store = ClipStore(tmp_path / "clips")
    store.check_cut({"fps": 25.0, "short_side": 128, "view": "frame"})
    store.check_cut({"fps": 25.0, "short_side": 128, "view": "frame"})
    with pytest.raises(InputError, match=r"cut.json: the clips here were cut with view='frame', this config asks "
                                         r"for view='actor'; use another run_dir or delete .*clips"):
        store.check_cut({"fps": 25.0, "short_side": 128, "view": "actor"})
