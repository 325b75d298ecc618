"""`fightwatch score` end to end through the installed console script, and with Ray Data for real."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import av
import pytest
import torch
from PIL import Image

from tests.support.commands import assert_one_line_error, fightwatch
from tests.support.models import MODEL_CFG
from tests.support.videos import write_gray_video, write_noise_video
from trainer.accel import AccelConfig
from trainer.checkpoint import save_checkpoint
from trainer.model import ResNet3D

SEED_SCORE_KEYS = {"segment", "label", "scores"}  # video-classification-3d-cnn-pytorch --mode score
SEED_FEATURE_KEYS = {"segment", "features"}  # and --mode feature
ADDED_KEYS = {"start_s", "end_s"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A model, a video with an AAC audio track, one without, and the list naming them."""
    root = tmp_path_factory.mktemp("score")
    torch.manual_seed(0)
    save_checkpoint(root / "model.pth", ResNet3D(MODEL_CFG), MODEL_CFG, epoch=1)
    videos = root / "videos"
    videos.mkdir()
    write_gray_video(videos / "talk.mp4", 96, 72, frames=40, audio_codec="aac")  # 1.6 s, 1 s of sound
    write_noise_video(videos / "quiet.mp4", 37, size=(64, 48), fps=25)
    (root / "input").write_text("talk.mp4\nquiet.mp4\n")
    return root


def args(root, output, *more):
    return ["score", "--input", str(root / "input"), "--video_root", str(root / "videos"), "--output",
            str(output), "--model", str(root / "model.pth"), *more]


def covered(entry):
    return sorted({f for c in entry["clips"] for f in range(c["segment"][0], c["segment"][1] + 1)})


@pytest.mark.slow  # the installed command
def test_score_writes_the_seed_layout_annotated_video_with_audio_gif_and_plot(job, tmp_path):
    output, review = tmp_path / "output.json", tmp_path / "review"
    result = fightwatch(*args(job, output, "--mode", "score", "--annotated-dir", str(review), "--gif",
                              "--alerts", str(tmp_path / "alerts.jsonl"), "--threshold", "0.3"))
    assert result.returncode == 0, result.stderr
    assert "scoring in " in result.stderr  # the precision path taken is logged
    entries = json.loads(output.read_text())
    assert [e["video"] for e in entries] == ["talk.mp4", "quiet.mp4"]
    for entry, n in zip(entries, (40, 37)):
        assert set(entry) == {"video", "fps", "frames", "clips", "warnings"} and entry["frames"] == n and entry["fps"] == 25
        assert entry["warnings"] == []  # a clean read
        assert covered(entry) == list(range(1, n + 1))  # 1-based, every frame, the tail included
        for clip in entry["clips"]:
            # the config's regions are on: each segment also lists them, the centre square first (docs/scoring.md)
            assert set(clip) == SEED_SCORE_KEYS | ADDED_KEYS | {"fight_prob", "regions"}
            assert clip["fight_prob"] == max(r["fight_prob"] for r in clip["regions"])
            first, last = clip["segment"]
            assert last - first == 15 and len(clip["scores"]) == 2
            assert clip["start_s"] == pytest.approx((first - 1) / 25) and clip["end_s"] == pytest.approx(last / 25)
            assert clip["label"] == ("fight" if clip["scores"][1] > clip["scores"][0] else "no fight")
            assert 0 <= clip["fight_prob"] <= 1
    assert [c["segment"] for c in entries[1]["clips"]] == [[1, 16], [17, 32], [22, 37]]

    for name, size, audio in (("talk", (96, 72), "aac"), ("quiet", (64, 48), None)):
        with av.open(str(review / f"{name}_annotated.mp4")) as video:
            stream = video.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.average_rate, stream.width, stream.height) == (Fraction(25), *size)
            assert sum(1 for _ in video.decode(stream)) == (40 if name == "talk" else 37)
            assert [s.codec_context.name for s in video.streams.audio] == ([audio] if audio else [])
        with Image.open(review / f"{name}_fight.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames > 1
        assert (review / f"{name}_probs.png").read_bytes()[:4] == b"\x89PNG"
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert result.stdout.splitlines() == [json.dumps(a) for a in alerts]


@pytest.mark.slow  # the installed command
def test_feature_mode_writes_features_per_segment(job, tmp_path):
    output = tmp_path / "features.json"
    result = fightwatch(*args(job, output, "--mode", "feature", "--precision", "fp32"))
    assert result.returncode == 0, result.stderr
    entries = json.loads(output.read_text())
    assert [len(e["clips"]) for e in entries] == [3, 3]
    for entry in entries:
        for clip in entry["clips"]:
            assert set(clip) == SEED_FEATURE_KEYS | ADDED_KEYS
            assert len(clip["features"]) == 8 * MODEL_CFG.width  # the last stage's width; 512 for the ResNet-34


@pytest.mark.slow  # an embedded Ray
def test_ray_scores_the_same_as_without(job, tmp_path):
    """Embedded Ray, one actor per NUMA node: the same output.json, in input order, error entry included."""
    from cluster.commands.score import Video, score_job, score_job_ray
    from trainer.checkpoint import load_model
    from trainer.serve.alerting.policy import AlertPolicy
    from trainer.serve.runtime.scoring import ScoreConfig

    videos = [Video.of(job / "videos" / n) for n in ("quiet.mp4", "missing.mp4", "talk.mp4")]
    policy, cfg = AlertPolicy(0.3, 1, 1, 0.0), ScoreConfig(16, 2)
    model, model_cfg = load_model(job / "model.pth")
    local, local_alerts = score_job(model, model_cfg, videos, tmp_path / "local.json", cfg, policy)
    on_ray, ray_alerts = score_job_ray(job / "model.pth", videos, tmp_path / "ray.json", cfg, policy,
                                       tmp_path / "review", accel=AccelConfig("fp32", "torch"))
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "local.json").read_text()
    assert on_ray == local and ray_alerts == local_alerts
    assert [e["video"] for e in on_ray] == ["quiet.mp4", "missing.mp4", "talk.mp4"] and "error" in on_ray[1]
    assert sorted(p.name for p in (tmp_path / "review").iterdir()) == [
        "quiet_annotated.mp4", "quiet_probs.png", "talk_annotated.mp4", "talk_probs.png"]


def test_videos_are_named_as_listed_and_same_named_files_stay_apart(job, tmp_path):
    """output.json's "video" is the --input entry as written (video-classification-3d-cnn-pytorch's result-video
    script finds the file by it); annotated files keep the listed folders."""
    from cluster.commands.score import read_video_list, score_job
    from trainer.checkpoint import load_model
    from trainer.serve.alerting.policy import AlertPolicy
    from trainer.serve.runtime.scoring import ScoreConfig

    root = tmp_path / "videos"
    for name, frames in (("a/x.mp4", 20), ("b/x.mp4", 24)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_noise_video(root / name, frames, size=(64, 48), fps=25)
    (tmp_path / "input").write_text("a/x.mp4\nb/x.mp4\n")
    model, model_cfg = load_model(job / "model.pth")
    entries, _ = score_job(model, model_cfg, read_video_list(tmp_path / "input", root), tmp_path / "output.json",
                           ScoreConfig(16, 8), AlertPolicy(0.5, 2, 2, 0.0), tmp_path / "review")
    assert [(e["video"], e["frames"]) for e in entries] == [("a/x.mp4", 20), ("b/x.mp4", 24)]
    assert sorted(str(p.relative_to(tmp_path / "review")) for p in (tmp_path / "review").rglob("*.*")) == [
        "a/x_annotated.mp4", "a/x_probs.png", "b/x_annotated.mp4", "b/x_probs.png"]


def test_actor_pool_one_actor_per_numa_node_with_its_cpus():
    from cluster.commands.score import ActorPool, actor_pool

    # 2 sockets x 2 NUMA nodes of 8 cores with SMT, 3 Ray nodes, many videos
    assert actor_pool([16] * 4, [8] * 4, [64, 64, 64], 100) == ActorPool(actors=12, cpus=16, threads=8)
    assert actor_pool([16] * 4, [8] * 4, [64], 2) == ActorPool(actors=2, cpus=16, threads=8)  # no idle actors
    assert actor_pool([2], [2], [2], 3) == ActorPool(actors=1, cpus=2, threads=2)  # this test machine
    # Ray offers fewer CPUs than a NUMA node has: ask for what fits
    assert actor_pool([16, 16], [16, 16], [8], 5) == ActorPool(actors=1, cpus=8, threads=8)


@pytest.mark.slow  # the installed command
def test_bad_input_is_one_line(job, tmp_path):
    """Through the console script: a checkpoint of another class count, an --output that is a directory."""
    three_cfg = dataclasses.replace(MODEL_CFG, n_classes=3)
    save_checkpoint(tmp_path / "three.pth", ResNet3D(three_cfg), three_cfg, epoch=1)
    assert_one_line_error(fightwatch(*args(job, tmp_path / "o.json"), "--model", str(tmp_path / "three.pth")),
                          "three.pth", "checkpoint has 3 classes", "fightwatch scores 2 (no fight, fight)")
    assert_one_line_error(fightwatch(*args(job, tmp_path)), str(tmp_path), "--output is a directory")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("more, needles", [
    (["--model", "absent.pth"], ["absent.pth", "not found"]),
    (["--gif"], ["--gif", "--annotated-dir"]),
    (["--mode", "feature", "--alerts", "a.jsonl"], ["--alerts", "need --mode score"]),
    (["--mode", "feature", "--annotated-dir", "review"], ["--annotated-dir", "need --mode score"]),
    (["--stride", "0"], ["stride"]),
])
def test_more_bad_input_is_one_line(job, tmp_path, capsys, more, needles):
    """The same contract in-process (cluster.cli.main), where a console script start is not needed."""
    from cluster.cli import main

    more = [str(tmp_path / m) if m.endswith((".pth", ".jsonl")) or m == "review" else m for m in more]
    assert main(args(job, tmp_path / "o.json", *more)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fightwatch: error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), errors
    assert list(tmp_path.iterdir()) == []
