from pathlib import Path

import pytest

from data.errors import InputError
from data.folders import KFold, extra_manifest, folder_manifest, kfold_split, video_kind
from tests.support.videos import write_video


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


def videos_by_label(fights=7, nonfights=5):
    return {"fight": [f"f{i:02d}" for i in range(fights)], "nonfight": [f"n{i:02d}" for i in range(nonfights)]}


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_kfold_folds_partition_the_videos_by_class(folds):
    by_label = videos_by_label()
    splits = [kfold_split(by_label, KFold(folds, i), seed=3) for i in range(folds)]
    for label, videos in by_label.items():
        held_out = [v for s in splits for v in s["validation"][label]]
        assert sorted(held_out) == videos  # each video in the validation subset of exactly one fold
        for s in splits:
            assert sorted(s["training"][label] + s["validation"][label]) == videos
            assert not set(s["training"][label]) & set(s["validation"][label])
            # stratified: each fold holds out its share of the class, within one video
            assert len(s["validation"][label]) in (len(videos) // folds, -(-len(videos) // folds))
    sizes = [sum(len(v) for v in s["validation"].values()) for s in splits]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_depends_on_the_seed_and_the_videos_only():
    by_label = videos_by_label(10, 10)
    split = KFold(5, 2)
    shuffled = {label: list(reversed(videos)) for label, videos in by_label.items()}
    assert kfold_split(by_label, split, seed=0) == kfold_split(shuffled, split, seed=0)
    assert kfold_split(by_label, split, seed=0) != kfold_split(by_label, split, seed=1)


@pytest.mark.parametrize("folds, fold", [(1, 0), (0, 0), (3, 3), (3, -1)])
def test_kfold_needs_two_folds_and_a_fold_among_them(folds, fold):
    with pytest.raises(ValueError, match="folds >= 2 and 0 <= fold < folds"):
        KFold(folds, fold)


def test_kfold_needs_as_many_videos_per_class_as_folds():
    with pytest.raises(ValueError, match="4 folds need at least 4 videos of each class; nonfight has 3"):
        kfold_split(videos_by_label(5, 3), KFold(4, 0), seed=0)


def test_folder_manifest_holds_out_one_fold_and_not_in_split_folders(tmp_path):
    for cls in ("fights", "nonfights"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(4):
            write_video(tmp_path / "set" / cls / f"{i}.mp4", 10)
    held_out = []
    for fold in range(2):
        rows = folder_manifest(tmp_path / "set", val_fraction=0.5, seed=0, split=KFold(2, fold))
        assert len(rows) == 8
        val = [r for r in rows if r["subset"] == "validation"]
        assert sorted(r["label"] for r in val) == ["fight", "fight", "nonfight", "nonfight"]
        held_out += [r["video_id"] for r in val]
    assert len(set(held_out)) == 8
    with pytest.raises(InputError, match=r"set: data.split: 5 folds need at least 5 videos"):
        folder_manifest(tmp_path / "set", 0.0, 0, KFold(5, 0))
    (tmp_path / "rwf" / "train" / "Fight").mkdir(parents=True)
    write_video(tmp_path / "rwf" / "train" / "Fight" / "a.mp4", 10)
    with pytest.raises(InputError, match=r"rwf: has its own split folders \(train\), so data.split \(k-fold\)"):
        folder_manifest(tmp_path / "rwf", 0.0, 0, KFold(2, 0))


def test_an_extra_folder_may_hold_one_class_and_keeps_its_ids_apart(tmp_path):
    """data.extra_folders: e.g. only false positives, exported as nonfights/, beside a main set with the same names."""
    feedback = tmp_path / "feedback"
    (feedback / "nonfights").mkdir(parents=True)
    for i in range(5):
        write_video(feedback / "nonfights" / f"{i}.mp4", 10)
    rows = extra_manifest(feedback)
    assert sorted(r["video_id"] for r in rows) == [f"feedback%2Fnonfights%2F{i}.mp4" for i in range(5)]
    assert {(r["label"], r["subset"], r["extra"]) for r in rows} == {("nonfight", "training", True)}
    (tmp_path / "empty").mkdir()
    assert extra_manifest(tmp_path / "empty") == []
    with pytest.raises(InputError, match="nope: extra video folder does not exist"):
        extra_manifest(tmp_path / "nope")


def test_a_sub_folder_of_a_class_folder_names_the_kind():
    assert video_kind(Path("nonfights/crowd/a.mp4"), "nonfight") == "crowd"
    assert video_kind(Path("val/NonFight/sport/night/b.avi"), "nonfight") == "sport"
    assert video_kind(Path("fights/c.mp4"), "fight") == "fight"
    assert video_kind(Path("feedback/nonfights/d.mp4"), "nonfight") == "nonfight"
