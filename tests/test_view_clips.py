"""A false alarm's view clips: the motion regions watch scored in its clip, each a training clip of its own
(trainer/serve/review/view_clips.py), picked (pure) and cut from real H.264 files, and kept in step with reviews
by the export."""

import json

import numpy as np

from data.clips import VideoFrames
from data.synthetic import write_video
from tests.support.review_fixtures import add_alert
from trainer.serve.alerting.store import AlertStore
from trainer.serve.review.export import MANIFEST, export_reviewed
from trainer.serve.review.view_clips import MAX_VIEWS, WINDOW, Candidate, pick_views, write_view_clips
from trainer.serve.runtime.regions import Box, Region, RegionConfig

WIDTH, HEIGHT = 320, 180
LEFT, RIGHT = Box(20, 20, 44, 44), Box(250, 120, 274, 144)  # a mover in every window, one in the second only


def candidate(window, x1, motion, side=40):
    return Candidate(window, Region(Box(x1, 0, x1 + side, side), Box(x1, 0, x1 + side, side), motion))


def test_the_views_that_move_most_at_distinct_places_are_picked():
    same_place = [candidate(w, 0, motion=10 + w) for w in range(4)]  # one mover over four windows
    elsewhere = [candidate(1, 100, motion=5), candidate(2, 200, motion=50), candidate(3, 205, motion=1)]
    picked = pick_views(same_place + elsewhere)
    assert picked == [candidate(2, 200, 50), candidate(3, 0, 13), candidate(1, 100, 5)]
    many = [candidate(w, 50 * w, motion=100 - w) for w in range(MAX_VIEWS + 3)]
    assert pick_views(many) == many[:MAX_VIEWS]
    assert pick_views([]) == []


def camera_video(path, n_frames: int, seed: int = 0, movers: bool = True):
    """A fixed textured view with sensor noise; white squares jittering at LEFT (always) and RIGHT (in the second
    window), when `movers`."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, (HEIGHT, WIDTH, 3)).astype(float)
    frames = []
    for t in range(n_frames):
        frame = background + rng.normal(0, 2.5, background.shape)
        for box in ([LEFT] + ([RIGHT] if t // WINDOW == 1 else [])) if movers else []:
            dx, dy = rng.integers(-3, 4, 2)
            frame[box.y1 + dy : box.y2 + dy, box.x1 + dx : box.x2 + dx] = 255
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    write_video(path, np.stack(frames))


def test_each_place_that_moves_becomes_one_square_clip_of_a_window(tmp_path):
    camera_video(tmp_path / "alarm.mp4", 3 * WINDOW + 5)  # three windows; the 5 frames after them are no window
    written = write_view_clips(tmp_path / "alarm.mp4", tmp_path / "out" / "alarm", RegionConfig())
    assert [p.name for p in written] == ["alarm.view0.mp4", "alarm.view1.mp4"]
    centres = []
    for path in written:
        frames = np.stack(VideoFrames(path).arrays())
        assert frames.shape[:3] == (WINDOW, frames.shape[1], frames.shape[1]) and frames.shape[1] % 2 == 0
        assert frames.shape[1] >= RegionConfig().min_side * HEIGHT - 2  # at least min_side, less the even cut
        white = np.argwhere(frames.min(axis=-1) > 235)[:, 1:]  # the mover's pixels, (y, x) in the view
        assert len(white) > 0.2 * 24 * 24 * WINDOW  # the mover is in the view, in every frame
        centres.append(white.mean(axis=0) / frames.shape[1])
    assert all(0.3 < c < 0.7 for centre in centres for c in centre)  # centred on it


def test_a_clip_without_motion_gives_no_views(tmp_path):
    camera_video(tmp_path / "still.mp4", 2 * WINDOW, movers=False)
    assert write_view_clips(tmp_path / "still.mp4", tmp_path / "still", RegionConfig()) == []
    assert not list(tmp_path.glob("still.view*"))


def test_the_export_gives_false_positives_views_and_takes_them_back(tmp_path):
    out = tmp_path / "reviewed"
    with AlertStore(tmp_path / "alerts.db") as store:
        add_alert(store, tmp_path, "a0", clip_frames=20)
        clip = tmp_path / "gate" / "a0.mp4"
        camera_video(clip, 2 * WINDOW)  # the alert's clip: what watch recorded, a mover in it
        store.review("a0", "false_positive", "ana")
        report = export_reviewed(store, out)
        assert report.views == 2 and "2 view clip(s) of false alarms written" in report.line()
        entry = json.loads((out / MANIFEST).read_text())
        assert entry["views"] == ["nonfights/a0.view0.mp4", "nonfights/a0.view1.mp4"]
        assert all((out / view).is_file() for view in entry["views"])
        assert export_reviewed(store, out).views == 0  # written once

        (out / MANIFEST).write_text(json.dumps({k: v for k, v in entry.items() if k != "views"}) + "\n")
        for view in entry["views"]:
            (out / view).unlink()
        assert export_reviewed(store, out).views == 2  # a manifest from before views: they are made now

        store.review("a0", "true_positive", "ana")  # a fight after all: its regions may show bystanders
        export_reviewed(store, out)
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["fights/a0.mp4"]
        assert json.loads((out / MANIFEST).read_text())["views"] == []

        store.review("a0", "false_positive", "ana")
        assert export_reviewed(store, out).views == 2
        assert export_reviewed(store, out, RegionConfig(budget=0)).views == 0  # no regions: none, nothing removed
        store.review("a0", "ack", "ana")  # neither class: the clip goes, its views along
        export_reviewed(store, out)
        assert not list(out.rglob("*.mp4"))
