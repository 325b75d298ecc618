"""Synthetic video generator: determinism, real H.264 files, timeline ground truth, motion as the only cue."""

import json

import av
import numpy as np
import pytest

from data import synthetic
from data.errors import InputError
from data.synthetic import LABELS, SCENES, generate_dataset, render_clip, render_timeline, write_timeline, write_video

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


def test_a_crowd_is_calm_but_moves_like_a_fight():
    """The hard negative of the feedback loop: motion energy in the fights' range, not the calm scenes'."""
    def small_motion(scene, seed):
        frames = render_clip(scene, 1.0, seed=seed, width=W, height=H)
        return motion_energy(frames.reshape(-1, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))).mean()

    crowd = [small_motion("crowd", seed) for seed in range(6)]
    calm, fight = [small_motion("calm", s) for s in range(6)], [small_motion("fight", s) for s in range(6)]
    assert min(crowd) > 1.2 * max(calm) and np.mean(crowd) > 0.5 * np.mean(fight), (crowd, calm, fight)
    assert SCENES["crowd"] == "calm"
    assert np.array_equal(render_clip("crowd", 0.4, seed=3, width=W, height=H),
                          render_clip("crowd", 0.4, seed=3, width=W, height=H))
    with pytest.raises(InputError, match="scene 'riot': expected one of calm, fight, crowd"):
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
