import os
import tarfile

import numpy as np
import pytest
import torch

from data.dataset import ClipDataset, Normalization, center_view, random_view
from data.clips import ClipConfig
from data.pipeline import extract_shard
from data.store import ClipStore
from tests.support.videos import decode_index, write_video

NORM = Normalization((114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0), 255.0)


def clip(n=20, h=32, w=40, seed=0):
    # big flat blocks survive JPEG: frame i is grey level 10*i in its top-left quarter
    frames = np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8) // 4 + 96
    for i in range(n):
        frames[i, : h // 2, : w // 2] = 10 * i
    return frames


def test_shard_round_trip_reads_only_the_asked_frames(tmp_path):
    store = ClipStore(tmp_path)
    store.write_shard("videoA", {"a1": clip(seed=1), "a2": clip(n=12, seed=2)})
    reopened = ClipStore(tmp_path)
    assert reopened.has("a1") and reopened.has("a2") and not reopened.has("b1")
    assert reopened.shape("a2") == (12, 32, 40)
    frames = reopened.read("a1", [3, 7])
    assert frames.shape == (2, 32, 40, 3)
    assert abs(int(frames[0, 2, 2, 0]) - 30) <= 3 and abs(int(frames[1, 2, 2, 0]) - 70) <= 3
    assert np.allclose(reopened.read("a2")[:, 2, 2, 0], 10 * np.arange(12), atol=3)  # every frame, in order
    # two files per video, a plain tar, whose members are where the index says
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videoA.index.json", "videoA.tar"]
    with tarfile.open(tmp_path / "videoA.tar") as tar:
        members = tar.getmembers()
    assert [[m.offset_data, m.size] for m in members] == [
        offset for clip_id in ("a1", "a2") for offset in reopened.index[clip_id]["offsets"]]
    assert [m.name for m in members[:2]] == ["a1/00000.jpg", "a1/00001.jpg"]


def open_descriptors() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def test_the_store_closes_the_shards_it_opened(tmp_path):
    ClipStore(tmp_path).write_shard("videoA", {"a1": clip()})
    ClipStore(tmp_path).write_shard("videoB", {"b1": clip()})
    shards = {str(tmp_path / "videoA.tar"), str(tmp_path / "videoB.tar")}
    with ClipStore(tmp_path) as store:
        store.read("a1", [0])
        store.read("b1", [0])
        store.read("a1", [1])  # the shard's descriptor is reused, not opened again
        assert shards <= open_descriptors()
        assert len(store._files) == 2
    assert not shards & open_descriptors()
    assert store.read("b1", [0]).shape == (1, 32, 40, 3)  # a closed store reopens what it reads next
    store.close()
    assert not shards & open_descriptors()


def test_a_crash_mid_shard_leaves_no_shard(tmp_path):
    store = ClipStore(tmp_path)
    with pytest.raises(ValueError):  # 7 channels: not an image, fails after "ok" was written to the temp tar
        store.write_shard("v", {"ok": clip(), "bad": np.zeros((2, 8, 8, 7), np.uint8)})
    assert not store.shard_done("v") and list(tmp_path.iterdir()) == []


def test_views_follow_3d_resnets_sampling():
    t, y, x, size = center_view(20, 64, 85, 16)
    assert list(t) == list(range(2, 18)) and (y, x, size) == (0, 10, 64)
    t, *_ = center_view(10, 64, 85, 16)  # loop-padded
    assert list(t) == list(range(10)) + list(range(6))
    rng = np.random.default_rng(0)
    views = [random_view(rng, 40, 64, 85, 16) for _ in range(200)]
    assert {v[3] for v in views} == {int(64 * 2 ** (-i / 4)) for i in range(5)}
    assert {v[4] for v in views} == {True, False}
    for t, y, x, size, _ in views:
        assert len(t) == 16 and 0 <= y and y + size <= 64 and 0 <= x and x + size <= 85


def test_dataset_is_reproducible_per_epoch_and_normalised(tmp_path):
    store = ClipStore(tmp_path)
    store.write_shard("v", {"c0": clip(seed=0), "c1": clip(seed=1)})
    rows = [{"clip_id": "c0", "label_id": 0}, {"clip_id": "c1", "label_id": 1}]
    train = ClipDataset(store, rows, 24, 16, NORM, train=True, seed=3)
    x, y = train[1]
    assert x.shape == (3, 16, 24, 24) and x.dtype == torch.float32 and y == 1
    assert torch.equal(x, train[1][0])
    train.set_epoch(1)
    assert not torch.equal(x, train[1][0])
    val = ClipDataset(store, rows, 24, 16, NORM, train=False)
    assert torch.equal(val[0][0], val[0][0])
    assert abs(float(val[0][0].mean()) - (float(store.read("c0", range(2, 18))[:, :, 4:36].mean()) - np.mean(NORM.mean))) < 3


def test_value_scale_matches_the_0_to_1_convention():
    from data.dataset import to_input
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    in_0_255 = to_input(frames, 8, NORM)
    in_0_1 = to_input(frames, 8, Normalization(tuple(m / 255 for m in NORM.mean), (1 / 255,) * 3, 1.0))
    assert torch.allclose(in_0_255, in_0_1, atol=1e-3)


def test_a_shard_encodes_each_clip_as_it_comes(tmp_path):
    """A generator's clips are written one by one (the pipeline holds one clip's frames, not a movie's)."""
    def clips():
        yield "c0", clip(seed=0)
        temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # c0 is in the temp tar before c1 is cut
        yield "c1", clip(seed=1)

    store = ClipStore(tmp_path)
    assert store.write_shard("v", clips()) == ["c0", "c1"]
    assert np.allclose(store.read("c1")[:, 2, 2, 0], 10 * np.arange(20), atol=3)
    assert store.write_shard("none", iter(())) == [] and not store.shard_done("none")  # no clips, no shard


def test_a_videos_whole_windows_are_stored_and_the_rest_reported(tmp_path):
    video = write_video(tmp_path / "v.mp4", 25, size=(64, 48), fps=25)  # 1 s
    item = {"video_id": "v", "path": str(video), "clips": [
        {"clip_id": "late", "start_s": 0.8, "end_s": 1.44}, {"clip_id": "whole", "start_s": 0.2, "end_s": 0.84}]}
    stored, failures, _ = extract_shard(item, ClipStore(tmp_path / "clips"), ClipConfig(25.0, 32))
    assert stored == ["whole"]
    assert [(f["clip_id"], f["reason"]) for f in failures] == [("late", "too_short")]
    assert [decode_index(f) for f in ClipStore(tmp_path / "clips").read("whole")] == list(range(5, 21))
