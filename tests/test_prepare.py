"""Clip extraction on real Ray (a 2-node cluster on this machine) and the prepare job end to end."""

import json
import subprocess

import pytest
import ray
from ray.cluster_utils import Cluster

from data.clips import ClipConfig
from data.pipeline import extract_clips
from data.store import ClipStore
from tests.support.commands import FIGHTWATCH, ROOT
from tests.support.videos import decode_index, write_video

pytestmark = pytest.mark.slow  # every test here starts processes or clusters


@pytest.fixture
def two_node_cluster():
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def manifest(tmp_path, n_videos=8, clips_per_video=3):
    rows = []
    (tmp_path / "videos").mkdir()
    for v in range(n_videos):
        path = write_video(tmp_path / "videos" / f"vid{v:02d}.mp4", 100, size=(64, 48), fps=25)
        for c in range(clips_per_video):
            rows.append({"clip_id": f"vid{v:02d}_{c}", "video_id": f"vid{v:02d}", "path": str(path),
                         "start_s": c * 1.0, "end_s": c * 1.0 + 0.64})
    return rows


def test_two_nodes_share_the_extraction_and_lose_nothing(tmp_path, two_node_cluster):
    rows = manifest(tmp_path)
    rows.append({"clip_id": "broken_0", "video_id": "broken", "path": str(tmp_path / "absent.mp4"),
                 "start_s": 0.0, "end_s": 0.64})
    store = ClipStore(tmp_path / "clips")
    summary = extract_clips(rows, store, ClipConfig(25.0, 32), ray_address=two_node_cluster.address)

    assert len(summary.nodes) == 2 and all(n > 0 for n in summary.nodes.values()), summary.nodes
    assert summary.ok == 24 and dict(summary.failed) == {"missing": 1}
    # the union of the shards is exactly the manifest: none lost, none twice
    indexed = [clip for path in (tmp_path / "clips").glob("*.index.json") for clip in json.loads(path.read_text())["clips"]]
    assert sorted(indexed) == sorted(r["clip_id"] for r in rows[:-1])
    clip = store.read("vid03_2")
    assert clip.shape == (16, 32, 43, 3)
    assert [decode_index(f) for f in clip] == list(range(50, 66))  # frames of [2.0 s, 2.64 s)

    again = extract_clips(rows, ClipStore(tmp_path / "clips"), ClipConfig(25.0, 32),
                          ray_address=two_node_cluster.address)
    assert (again.ok, again.skipped) == (0, 24)  # a re-run skips what is stored; the broken video is tried again
    assert dict(again.failed) == {"missing": 1}


def write_ava_inputs(tmp_path, server_ids):
    """AVA-format rows (ids 64, 29, 8, 28) over videos named like YouTube ids."""
    (tmp_path / "ava").mkdir()
    (tmp_path / "ava" / "labels.pbtxt").write_text("".join(
        f'label {{\n  name: "{name}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n'
        for name, i in [("fight/hit (a person)", 64), ("eat", 29), ("lie/sleep", 8),
                        ("drive (e.g., a car, a truck)", 28)]))
    lines = []
    for v, vid in enumerate(server_ids):
        for t, action in [(903, 64), (905, 29), (907, 8), (909, 28)]:
            lines.append(f"{vid},{t:04d},0.1,0.1,0.5,0.9,{action if v % 2 == 0 or action != 64 else 29},1")
    (tmp_path / "ava" / "train.csv").write_text("\n".join(lines) + "\n")


def test_prepare_from_ava_rows_with_local_videos(tmp_path):
    ids = ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC", "DDDDDDDDDDD"]
    write_ava_inputs(tmp_path, ids)
    (tmp_path / "local").mkdir()
    for vid in ids[:3]:  # the fourth is unavailable
        # AVA times are seconds of the whole movie: 912 s at 2 fps reaches the annotated 903..909
        write_video(tmp_path / "local" / f"{vid}.mp4", 912 * 2, size=(64, 48), fps=2, gop=20)
    overrides = [f"run_dir={tmp_path / 'run'}", "data.source=ava", "data.synthetic=null",
                 f"data.video_root={tmp_path / 'local'}", "data.val_fraction=0.34", "clips.short_side=32",
                 f"data.ava={{train_csv: {tmp_path}/ava/train.csv, val_csv: null, label_map: {tmp_path}/ava/labels.pbtxt,"
                 f" excluded: [], positive: 'fight/hit (a person)', negatives: [eat, lie/sleep, 'drive (e.g., a car, a truck)'],"
                 f" per_class: 10}}"]
    result = subprocess.run([str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", *overrides],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "videos unavailable: 1" in result.stdout
    assert json.loads((tmp_path / "run" / "unavailable_videos.json").read_text()) == ["DDDDDDDDDDD"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    assert rows and {r["video_id"] for r in rows} <= set(ids[:3])
    assert {r["label"] for r in rows} == {"fight", "nonfight"}
    annotation = json.loads((tmp_path / "run" / "annotation.json").read_text())
    assert set(annotation["database"]) == {r["clip_id"] for r in rows}
    assert ClipStore(tmp_path / "run" / "clips").shape(rows[0]["clip_id"])[1:] == (32, 43)  # the whole 64x48 frame
    # the mix drawn: 2 videos with fights at 903 -> 2 positives; 2 negatives over three equal shares
    selection = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert selection["positive"] == "fight/hit (a person)" and selection["shares"] == {
        "eat": 1.0, "lie/sleep": 1.0, "drive (e.g., a car, a truck)": 1.0}
    assert [(name, c["asked"], c["taken"]) for name, c in selection["classes"].items()] == [
        ("fight/hit (a person)", 10, 2), ("eat", 1, 1), ("lie/sleep", 1, 1), ("drive (e.g., a car, a truck)", 0, 0)]
    assert "drawn (taken/asked of available): fight/hit (a person) 2/10 of 2" in (tmp_path / "run" / "fightwatch.log").read_text()

    # actor views: a square around each sample's boxes, in a store of their own
    actor = [*overrides, "data.view=actor"]
    mixed = subprocess.run([str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", *actor],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert mixed.returncode != 0 and "cut.json: the clips here were cut with view='frame'" in mixed.stderr
    actor[0] = f"run_dir={tmp_path / 'actor'}"
    result = subprocess.run([str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", *actor],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    store = ClipStore(tmp_path / "actor" / "clips")
    assert {store.shape(r["clip_id"])[1:] for r in rows} == {(32, 32)}


@pytest.mark.parametrize("override, needles", [
    ("data.ava.positive=fight", ["'fight'", "labels.pbtxt", "fight/hit (a person)"]),
    ("data.video_root={tmp}/nowhere", ["nowhere"]),
    ("data.ava.negatives={{eat: 0}}", ["data.ava", "negative shares must be > 0", "'eat'"]),
])
def test_prepare_bad_input_is_one_line(tmp_path, override, needles):
    from tests.support.commands import assert_one_line_error, fightwatch

    write_ava_inputs(tmp_path, ["AAAAAAAAAAA", "BBBBBBBBBBB"])
    result = fightwatch(
        "prepare", "--config", "configs/demo.yaml", f"run_dir={tmp_path / 'run'}", "data.source=ava",
        "data.synthetic=null", f"data.video_root={tmp_path}",
        f"data.ava={{train_csv: {tmp_path}/ava/train.csv, val_csv: null, label_map: {tmp_path}/ava/labels.pbtxt,"
        f" excluded: [], positive: 'fight/hit (a person)', negatives: [eat], per_class: 10}}",
        override.format(tmp=tmp_path))
    assert_one_line_error(result, *needles)
