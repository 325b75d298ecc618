"""Synthetic video generator: determinism, real H.264 files, timeline ground truth, motion as the only cue,
wide views with a small fight and its boxes."""

import json

import av
import numpy as np
import pytest

from data import synthetic
from data.errors import InputError
from data.folders import folder_manifest
from data.synthetic import (LABELS, SCENES, generate_dataset, render_clip, render_timeline, render_wide,
                            write_scene_clips, write_timeline, write_video, write_wide)

W, H = 160, 120  # half size keeps the tests fast; all motion scales with the frame height


def motion_energy(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, one value per frame pair."""
    return np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))


def read_video(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return stream.codec_context.name, stream.average_rate, frames


def test_render_is_deterministic():
    a = render_clip("fight", 0.4, seed=7, width=W, height=H)
    assert a.shape == (10, H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip("fight", 0.4, seed=7, width=W, height=H))
    assert not np.array_equal(a, render_clip("fight", 0.4, seed=8, width=W, height=H))
    assert np.array_equal(render_clip("calm", 0.4, seed=7, width=W, height=H),
                          render_clip("calm", 0.4, seed=7, width=W, height=H))


def test_write_video_is_h264_at_25_fps(tmp_path):
    frames = render_clip("calm", 0.8, seed=1, width=W, height=H)
    path = tmp_path / "new" / "dir" / "clip.mp4"
    write_video(path, frames, fps=25)
    codec, rate, decoded = read_video(path)
    assert (codec, rate) == ("h264", 25)
    assert decoded.shape == frames.shape == (20, H, W, 3)
    # lossy, but the picture survives: far closer to its source than to another clip
    other = render_clip("calm", 0.8, seed=2, width=W, height=H)
    error = np.abs(decoded.astype(int) - frames).mean()
    assert error < 8 and error < np.abs(decoded.astype(int) - other).mean() / 4
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"]  # no temp file left behind


def test_write_video_failure_leaves_no_file(tmp_path, monkeypatch):
    frames = render_clip("calm", 0.4, seed=1, width=W, height=H)
    real_frame, calls = av.VideoFrame, []

    class CrashOnThirdFrame:
        @staticmethod
        def from_ndarray(array, format):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated crash mid-encode")
            return real_frame.from_ndarray(array, format=format)

    monkeypatch.setattr(synthetic.av, "VideoFrame", CrashOnThirdFrame)
    with pytest.raises(RuntimeError, match="simulated"):
        write_video(tmp_path / "clip.mp4", frames)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        write_video(tmp_path / "odd.mp4", frames[:, :, :-1])  # odd width cannot be yuv420p
    assert list(tmp_path.iterdir()) == []


def test_timeline_ground_truth_and_motion(tmp_path):
    args = dict(seed=3, calm_before=2.0, fight=2.0, calm_after=2.0, width=W, height=H)
    truth = write_timeline(tmp_path / "tl.mp4", **args)
    assert json.loads((tmp_path / "tl.json").read_text()) == truth
    assert truth["fight_intervals"] == [[2.0, 4.0]] and truth["seed"] == 3
    assert truth["fps"] == 25 and truth["seconds"] == 6.0 and truth["frames"] == 25 * 6
    assert len(read_video(tmp_path / "tl.mp4")[2]) == truth["frames"]

    frames, same_truth = render_timeline(**args)
    assert same_truth == truth
    energy = motion_energy(frames)  # energy[i] is the change from frame i to i + 1
    before, fight, after = energy[:49].mean(), energy[50:99].mean(), energy[100:].mean()
    assert fight > 1.5 * max(before, after), (before, fight, after)


def test_motion_separates_classes_but_brightness_does_not():
    stats = {label: [] for label in LABELS}
    for label in LABELS:
        for seed in range(6):
            frames = render_clip(label, 1.0, seed=seed, width=W, height=H)
            model_view = frames.reshape(-1, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))  # 80x60, near the model's input
            stats[label].append((motion_energy(frames).mean(), motion_energy(model_view).mean(), frames.mean()))
    calm_motion, calm_small, calm_bright = np.array(stats["calm"]).T
    fight_motion, fight_small, fight_bright = np.array(stats["fight"]).T
    assert fight_motion.mean() > 1.5 * calm_motion.mean(), (fight_motion, calm_motion)
    # downscaling averages the sensor noise away; then every fight clip moves more than every calm one
    assert fight_small.min() > 1.2 * calm_small.max(), (fight_small, calm_small)
    # brightness ranges overlap, so a per-video brightness threshold cannot separate the classes
    overlap = calm_bright.max() > fight_bright.min() and fight_bright.max() > calm_bright.min()
    assert overlap, (calm_bright, fight_bright)


@pytest.mark.parametrize("scene", ["crowd", "ballgame"])
def test_hard_negatives_are_calm_but_move_like_a_fight(scene):
    """The demo's hard negatives (crowds, which it trains on) and the feedback loop's (a ball game, which it does
    not): motion energy in the fights' range, not the calm scenes'."""
    def small_motion(kind, seed):
        frames = render_clip(kind, 1.0, seed=seed, width=W, height=H)
        return motion_energy(frames.reshape(-1, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))).mean()

    hard = [small_motion(scene, seed) for seed in range(6)]
    calm, fight = [small_motion("calm", s) for s in range(6)], [small_motion("fight", s) for s in range(6)]
    assert min(hard) > 1.2 * max(calm) and np.mean(hard) > 0.5 * np.mean(fight), (hard, calm, fight)
    assert SCENES[scene] == "calm"
    assert np.array_equal(render_clip(scene, 0.4, seed=3, width=W, height=H),
                          render_clip(scene, 0.4, seed=3, width=W, height=H))
    with pytest.raises(InputError, match="scene 'riot': expected one of calm, fight, crowd, ballgame, wide, wide fight"):
        render_clip("riot", 0.4, seed=3)


def test_generate_dataset_is_idempotent(tmp_path):
    entries = generate_dataset(tmp_path, videos_per_class=2, seconds=0.4, seed=5, width=W, height=H)
    assert [(e["label"], e["label_id"]) for e in entries] == [("calm", 0), ("calm", 0), ("fight", 1), ("fight", 1)]
    assert [e["path"] for e in entries] == [str(tmp_path / l / f"{l}_{i:03d}.mp4") for l in LABELS for i in range(2)]
    assert len({e["seed"] for e in entries}) == 4
    assert all(len(read_video(e["path"])[2]) == 10 for e in entries)
    mtimes = {e["path"]: (tmp_path / e["path"]).stat().st_mtime_ns for e in entries}

    assert generate_dataset(tmp_path, videos_per_class=2, seconds=0.4, seed=5, width=W, height=H) == entries
    assert {e["path"]: (tmp_path / e["path"]).stat().st_mtime_ns for e in entries} == mtimes


def test_held_out_scene_clips_are_kept_and_never_a_training_clip(tmp_path):
    paths = write_scene_clips(tmp_path / "crowd", "crowd", 2, seed=5, seconds=0.4, width=W, height=H)
    assert [p.name for p in paths] == ["crowd_000.mp4", "crowd_001.mp4"]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert write_scene_clips(tmp_path / "crowd", "crowd", 2, seed=5, seconds=0.4, width=W, height=H) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # kept, not written again
    training = generate_dataset(tmp_path / "train", 2, 0.4, seed=5, width=W, height=H, crowd_share=1.0)
    held_out = {read_video(p)[2].tobytes() for p in paths}
    assert not held_out & {read_video(e["path"])[2].tobytes() for e in training if e["scene"] == "crowd"}


def test_shares_of_the_calm_videos_are_crowds_and_wide_views_in_their_own_folders(tmp_path):
    generate_dataset(tmp_path, videos_per_class=4, seconds=0.4, seed=5, width=W, height=H)
    entries = generate_dataset(tmp_path, videos_per_class=4, seconds=0.4, seed=5, width=W, height=H, crowd_share=0.25,
                               wide_share=0.25)
    assert [(e["label"], e["scene"]) for e in entries] == [
        ("calm", "calm"), ("calm", "calm"), ("calm", "wide"), ("calm", "crowd"), *[("fight", "fight")] * 3,
        ("fight", "wide fight")]
    assert entries[2]["path"] == str(tmp_path / "calm" / "wide" / "wide_002.mp4")
    assert entries[3]["path"] == str(tmp_path / "calm" / "crowd" / "crowd_003.mp4")
    assert entries[7]["path"] == str(tmp_path / "fight" / "wide_fight" / "wide_fight_003.mp4")
    assert read_video(entries[7]["path"])[2].shape[1:3] == (H, H)  # a region's square view
    # calm_002 and calm_003 of the first plan are gone: a folder listing gives exactly this set
    assert sorted(map(str, tmp_path.rglob("*.mp4"))) == sorted(e["path"] for e in entries)
    assert {r["kind"] for r in folder_manifest(tmp_path, 0.0, 0)} == {"nonfight", "crowd", "wide", "fight",
                                                                    "wide_fight"}
    with pytest.raises(InputError, match="together at most 1"):
        generate_dataset(tmp_path, videos_per_class=4, seconds=0.4, seed=5, crowd_share=0.6, wide_share=0.5)


WIDE = dict(width=320, height=180, calm_before=1.0, fight=2.0, calm_after=0.6)  # 16:9; the fight is frames 25-74


def test_wide_truth_has_a_box_for_each_fight_frame(tmp_path):
    truth = write_wide(tmp_path / "wide.mp4", seed=4, **WIDE)
    assert json.loads((tmp_path / "wide.json").read_text()) == truth
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.json", "wide.mp4"]  # no temp files left behind
    assert {k: v for k, v in truth.items() if k != "boxes"} == {
        "fps": 25, "frames": 90, "seconds": 3.6, "width": 320, "height": 180, "fight_intervals": [[1.0, 3.0]],
        "fight_width": 0.125, "seed": 4, "kind": "wide"}
    assert len(read_video(tmp_path / "wide.mp4")[2]) == 90
    assert [b["frame"] for b in truth["boxes"]] == list(range(25, 75))
    for b in truth["boxes"]:
        x1, y1, x2, y2 = b["box"]
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, b

    frames, same_truth = render_wide(4, **WIDE)
    assert same_truth == truth and frames.shape == (90, 180, 320, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, render_wide(4, **WIDE)[0])
    assert not np.array_equal(frames, render_wide(5, **WIDE)[0])


@pytest.mark.parametrize("fight_width", [1 / 8, 1 / 3], ids=["1/8", "1/3"])
def test_wide_fight_is_about_fight_width_wide(fight_width):
    for seed in range(3):
        truth = render_wide(seed, fight_width=fight_width, **WIDE)[1]
        widths = [b["box"][2] - b["box"][0] for b in truth["boxes"]]
        assert 0.5 * fight_width < np.mean(widths) < 1.6 * fight_width, (seed, np.mean(widths))


def box_motion(frames: np.ndarray, boxes: list[dict]) -> tuple[float, float]:
    """Mean absolute change from each boxed frame to the next, inside its box and outside it."""
    inside, outside = [], []
    for b in boxes[:-1]:
        x1, y1, x2, y2 = np.round(np.array(b["box"]) * [320, 180, 320, 180]).astype(int)
        change = np.abs(frames[b["frame"] + 1].astype(np.float32) - frames[b["frame"]]).mean(axis=2)
        mask = np.zeros(change.shape, bool)
        mask[y1:y2, x1:x2] = True
        inside.append(change[mask].mean())
        outside.append(change[~mask].mean())
    return float(np.mean(inside)), float(np.mean(outside))


def test_wide_fighters_are_in_their_box():
    """During the fight, pixels inside the box change far more between frames than the rest of the frame (9-20x)."""
    for seed in range(3):
        frames, truth = render_wide(seed, **WIDE)
        inside, outside = box_motion(frames, truth["boxes"])
        assert inside > 2 * outside, (seed, inside, outside)


def test_wide_fights_happen_anywhere():
    """Not only in the middle, where render_timeline's people meet (0.3-0.7 of the width)."""
    centres = []
    for seed in range(20):
        boxes = render_wide(seed, width=160, height=90, fight_width=0.2, calm_before=0.2, fight=0.2,
                            calm_after=0.04, bystanders=(0, 0))[1]["boxes"]
        x1, y1, x2, y2 = boxes[0]["box"]
        centres.append(((x1 + x2) / 2, (y1 + y2) / 2))
    xs, ys = np.array(centres).T
    assert xs.min() < 0.25 and xs.max() > 0.75 and ys.min() < 0.3 and ys.max() > 0.7, centres


def test_wide_calm_variant_has_no_fight():
    frames, truth = render_wide(4, calm=True, **WIDE)
    assert truth["fight_intervals"] == [] and truth["boxes"] == [] and truth["frames"] == len(frames) == 90
    # the same scene until the fight would start; then the group just stands together
    fight_frames = render_wide(4, **WIDE)[0]
    assert np.array_equal(frames[:25], fight_frames[:25]) and not np.array_equal(frames[25:], fight_frames[25:])
    fight_boxes = render_wide(4, **WIDE)[1]["boxes"]
    assert box_motion(frames, fight_boxes)[0] < 0.5 * box_motion(fight_frames, fight_boxes)[0]


def test_a_person_is_drawn_inside_its_extent():
    """The boxes come from `_extent`, which must bound what `_Canvas.figure` draws, and tightly."""
    rng = np.random.default_rng(0)
    canvas = synthetic._Canvas(200, 240)  # the scene's 120x160 with a margin, so that no limb is cut off
    for _ in range(30):
        scene = synthetic._Scene(rng, 120, 160, unit=0.6)
        for _ in range(2):
            scene.add(scene.random_pos(), "walk")
        for _ in range(rng.integers(1, 20)):  # flailing limbs, tilted torsos
            scene.step(True)
        for f in scene.figures:
            canvas.img = np.zeros((200, 240, 3), np.float32)
            f.pos += 40 + 40j
            f.body = f.skin = f.trousers = np.full(3, 255.0)
            canvas.figure(f)
            ys, xs = np.nonzero(canvas.img[..., 0])
            x0, y0, x1, y1 = synthetic._extent(f)
            assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
            assert max(xs.min() - x0, x1 - xs.max(), ys.min() - y0, y1 - ys.max()) < 1.5


def test_wide_rejects_impossible_scenes():
    with pytest.raises(InputError, match="fight_width 0"):
        render_wide(1, fight_width=0, **WIDE)
    with pytest.raises(InputError, match="do not fit"):
        render_wide(1, fight_width=1.0, **WIDE)  # a fight as wide as the frame: its people are taller than it
    with pytest.raises(InputError, match="bystanders"):
        render_wide(1, bystanders=(3, 2), **WIDE)
