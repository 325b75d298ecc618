import pytest

from data.errors import InputError
from data.folders import folder_manifest
from tests.videos import write_video


def test_rwf2000_layout_keeps_its_split(tmp_path):
    for split, cls in [("train", "Fight"), ("train", "NonFight"), ("val", "Fight"), ("val", "NonFight")]:
        (tmp_path / split / cls).mkdir(parents=True)
        write_video(tmp_path / split / cls / "a.avi", 30, codec="mpeg4", pix_fmt="yuv420p")
    rows = folder_manifest(tmp_path, val_fraction=0.5, seed=0)
    assert sorted((r["subset"], r["label"], r["label_id"]) for r in rows) == [
        ("training", "fight", 1), ("training", "nonfight", 0), ("validation", "fight", 1), ("validation", "nonfight", 0)]
    row = next(r for r in rows if r["video_id"] == "train%2FFight%2Fa.avi")
    assert (row["start_s"], row["end_s"]) == (0.0, pytest.approx(30 / 25))


def test_ids_of_paths_that_joined_folders_would_merge_stay_apart(tmp_path):
    # 'a/b_c' and 'a_b/c' were both 'a_b_c' (one shard for two videos); 'x.mp4' and 'x.avi' were both 'x'
    for name in ("fights/a/b_c.mp4", "fights/a_b/c.mp4", "nonfights/x.mp4", "nonfights/x.avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(tmp_path / name, 10, **({"codec": "mpeg4", "pix_fmt": "yuv420p"} if name.endswith(".avi") else {}))
    rows = folder_manifest(tmp_path, val_fraction=0.0, seed=0)
    assert sorted(r["video_id"] for r in rows) == ["fights%2Fa%2Fb_c.mp4", "fights%2Fa_b%2Fc.mp4",
                                                   "nonfights%2Fx.avi", "nonfights%2Fx.mp4"]


def test_class_folders_split_by_seed_and_skip_unreadable_files(tmp_path):
    for cls in ("fights", "nonfights"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            write_video(tmp_path / cls / f"{i}.mp4", 10)
    (tmp_path / "fights" / "broken.mp4").write_bytes(b"garbage")
    rows = folder_manifest(tmp_path, val_fraction=0.4, seed=1)
    assert len(rows) == 10 and "fights%2Fbroken.mp4" not in {r["video_id"] for r in rows}
    val = [r for r in rows if r["subset"] == "validation"]
    assert sorted(r["label"] for r in val) == ["fight", "fight", "nonfight", "nonfight"]
    assert folder_manifest(tmp_path, 0.4, seed=1) == rows


def test_missing_class_or_root_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        folder_manifest(tmp_path / "nope", 0.2, 0)
    (tmp_path / "fights").mkdir()
    write_video(tmp_path / "fights" / "0.mp4", 10)
    with pytest.raises(InputError, match="both classes"):
        folder_manifest(tmp_path, 0.2, 0)
