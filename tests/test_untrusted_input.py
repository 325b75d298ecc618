"""Untrusted input: `fightwatch score --input` lists whose entries climb out of --video_root, are absolute, have
names past NAME_MAX, NUL bytes or broken UTF-8, a 100,000-line list, folder-per-class names that percent-encode
past NAME_MAX, and a 4K video. The policy (cluster/commands/score.py read_video_list): such an entry is refused with one
line naming the list file and line, the rest are scored, and no file is read or written outside the roots given."""

import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.commands.score import read_video_list, score_job
from data.files import NAME_MAX
from data.folders import video_id_of
from data.store import ClipStore
from tests.support.models import MODEL_CFG
from tests.support.videos import write_noise_video
from trainer.model import ResNet3D
from trainer.serve.alerting.policy import AlertPolicy
from trainer.serve.runtime.scoring import ScoreConfig

ROOT = Path(__file__).resolve().parents[1]
LONG = "v" * (NAME_MAX + 1) + ".mp4"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet3D(MODEL_CFG).eval()


@pytest.fixture
def layout(tmp_path):
    """videos/ (the root, returned: ok.mp4, sub/ok.mp4) and a secret.mp4 beside it."""
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    write_noise_video(root / "ok.mp4", 20)
    write_noise_video(root / "sub" / "ok.mp4", 20)
    write_noise_video(tmp_path / "secret.mp4", 20)
    return root


def score(model, videos, output, annotated=None):
    return score_job(model, MODEL_CFG, videos, output, ScoreConfig(16, 8), AlertPolicy(0.5, 2, 2, 0.0), annotated)


@pytest.mark.parametrize("entry, why", [
    ("../secret.mp4", "climbs out of --video_root"),
    ("sub/../../secret.mp4", "climbs out of --video_root"),
    ("..", "climbs out of --video_root"),
    ("{secret}", "is an absolute path"),
    ("/etc/passwd", "is an absolute path"),
    (LONG, f"longer than {NAME_MAX} bytes"),
    ("sub/" * 1100 + "x.mp4", "File name too long"),  # each part short, the whole past PATH_MAX
    ("ok\0.mp4", "has a NUL byte"),
    ("missing.mp4", "is not a file under"),
    ("sub", "is not a file under"),
])
def test_an_entry_outside_the_root_or_unusable_is_refused_in_one_line_with_file_and_line(layout, entry, why):
    entry = entry.format(secret=layout.parent / "secret.mp4")
    listed = layout.parent / "input"
    listed.write_text(f"ok.mp4\n\n{entry}\nsub/ok.mp4\n")
    videos = read_video_list(listed, layout)
    assert [v.refused is None for v in videos] == [True, False, True]
    refused = videos[1].refused
    assert refused.startswith(f"{listed}:3: ") and why in refused and "\n" not in refused and len(refused) < 400
    assert [v.path for v in videos if not v.refused] == [layout / "ok.mp4", layout / "sub" / "ok.mp4"]


def test_line_ends_padding_and_bytes_that_are_not_utf8(layout):
    listed = layout.parent / "input"
    listed.write_bytes(b"  ok.mp4 \r\nsub/ok.mp4\r\nbad\xff.mp4\n")
    videos = read_video_list(listed, layout)
    assert [v.name for v in videos if not v.refused] == ["ok.mp4", "sub/ok.mp4"]
    assert videos[2].refused.startswith(f"{listed}:3: ") and "not UTF-8" in videos[2].refused


def test_refused_entries_get_error_entries_and_the_rest_are_scored(model, layout, caplog):
    listed = layout.parent / "input"
    listed.write_text("../secret.mp4\nok.mp4\n/etc/passwd\n")
    entries, _ = score(model, read_video_list(listed, layout), layout.parent / "output.json")
    assert [("error" in e, e["video"]) for e in entries] == [(True, "../secret.mp4"), (False, "ok.mp4"),
                                                              (True, "/etc/passwd")]
    assert entries[1]["frames"] == 20
    assert json.loads((layout.parent / "output.json").read_text()) == entries
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [entries[0]["error"],
                                                                                   entries[2]["error"]]


def test_a_100000_line_list_of_mostly_missing_entries_reads_in_one_pass_and_opens_no_video(model, layout):
    listed = layout.parent / "input"
    with open(listed, "w") as f:
        for i in range(100_000):
            f.write("ok.mp4\n" if i in (0, 99_999) else f"cam{i % 97}/missing_{i}.mp4\n")
    # an earlier test's leftovers, closed by their finalizers when the garbage collector runs, must not change
    # the count while the list is read (the full suite saw 127 -> 125)
    gc.collect()
    gc.disable()
    try:
        fds = len(os.listdir("/proc/self/fd"))
        videos = read_video_list(listed, layout)
        assert len(os.listdir("/proc/self/fd")) == fds  # nothing left open
    finally:
        gc.enable()
    assert len(videos) == 100_000 and sum(v.refused is None for v in videos) == 2
    assert videos[5].refused == f"{listed}:6: 'cam5/missing_5.mp4' is not a file under {layout}"
    entries, _ = score(model, videos, layout.parent / "output.json")
    assert [i for i, e in enumerate(entries) if "error" not in e] == [0, 99_999]


def test_annotated_files_stay_in_their_folder_and_a_name_too_long_for_them_costs_only_them(model, layout, caplog):
    long_ok = "n" * (NAME_MAX - 4) + ".mp4"  # a file name that fits; "_annotated.mp4" on its stem would not
    write_noise_video(layout / long_ok, 20)
    listed = layout.parent / "input"
    listed.write_text(f"sub/./../ok.mp4\n{long_ok}\n../secret.mp4\n")
    review = layout.parent / "review"
    before = set(layout.parent.rglob("*"))
    entries, _ = score(model, read_video_list(listed, layout), layout.parent / "output.json", review)
    assert entries[0]["frames"] == entries[1]["frames"] == 20 and "error" in entries[2]
    assert "File name too long" in entries[1]["annotated_error"]
    assert any("annotated files not written" in r.getMessage() and not r.exc_info for r in caplog.records)
    made = set(layout.parent.rglob("*")) - before
    assert {p.relative_to(layout.parent).as_posix() for p in made} == {
        "output.json", "review", "review/ok_annotated.mp4", "review/ok_probs.png"}


def test_folder_set_names_that_encode_past_name_max_still_make_shards(tmp_path):
    root = tmp_path / "set"
    # 244 bytes; 118 characters in 214 bytes, ~600 percent-encoded
    names = ["f" * 240 + ".mp4", "Драка_на_остановке_" * 6 + ".mp4"]
    store = ClipStore(tmp_path / "clips")
    for name in names:
        video_id = video_id_of(root / "fights" / name, root)
        assert len(f"{video_id}.index.json".encode()) > NAME_MAX  # as the shard file name it would not fit
        store.write_shard(video_id, {video_id: np.full((2, 8, 8, 3), 7, np.uint8)})
        assert store.shard_done(video_id)
        assert ClipStore(tmp_path / "clips").read(video_id).shape == (2, 8, 8, 3)
    assert all(len(p.name.encode()) <= NAME_MAX for p in (tmp_path / "clips").iterdir())
    assert len(list((tmp_path / "clips").iterdir())) == 4


RSS_CHILD = """
import resource, sys
from pathlib import Path
from cluster.commands.score import Video, score_job
from tests.support.models import MODEL_CFG
from trainer.model import ResNet3D
from trainer.serve.alerting.policy import AlertPolicy
from trainer.serve.runtime.scoring import ScoreConfig
model = ResNet3D(MODEL_CFG).eval()
for name in sys.argv[1:]:
    entries, _ = score_job(model, MODEL_CFG, [Video.of(name)], Path(name + ".json"), ScoreConfig(16, 8),
                           AlertPolicy(0.5, 2, 2, 0.0))
    print(entries[0]["frames"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow  # a 4K encode and a child process
def test_a_4k_video_is_scored_with_frames_resized_at_decode(tmp_path):
    from tests.support.videos import write_video as write_pattern  # flat cells: a 4K encode in seconds

    small = write_pattern(tmp_path / "small.mp4", 24, size=(64, 48))
    uhd = write_pattern(tmp_path / "uhd.mp4", 24, size=(3840, 2160))
    result = subprocess.run([sys.executable, "-c", RSS_CHILD, str(small), str(uhd)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    (frames_small, peak_small), (frames_uhd, peak_uhd) = [map(int, line.split()) for line in result.stdout.split("\n")
                                                          if line]
    assert frames_small == frames_uhd == 24
    # one 4K frame is 25 MB as RGB: 16 of them (a window kept at full size) would add ~400 MB; resized at decode,
    # only the decoder's own frames are added
    assert peak_uhd - peak_small < 200, (peak_small, peak_uhd)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024 >= peak_uhd


def test_the_command_scores_the_rest_and_fails_in_one_line_naming_the_refused_line(layout, tmp_path, capsys):
    from cluster.cli import main
    from trainer.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "model.pth", ResNet3D(MODEL_CFG), MODEL_CFG, epoch=1)
    (tmp_path / "input").write_text("ok.mp4\n../secret.mp4\n")
    assert main(["score", "--input", str(tmp_path / "input"), "--video_root", str(layout), "--output",
                 str(tmp_path / "output.json"), "--model", str(tmp_path / "model.pth")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fightwatch: error:")]
    assert len(errors) == 1 and f"{tmp_path / 'input'}:2: '../secret.mp4' climbs out" in errors[0], errors
    entries = json.loads((tmp_path / "output.json").read_text())
    assert entries[0]["frames"] == 20 and "error" in entries[1]
