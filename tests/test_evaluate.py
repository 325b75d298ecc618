"""`fightwatch evaluate`: views per video, video-level figures that its own dump reproduces, bad input."""

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from cluster.commands.evaluate import (by_kind, evaluate_job, untrimmed_by_kind, evaluation_metrics, fight_width, folder_videos, listed_videos,
                                       log_evaluation, size_sweep)
from cluster.config import load_config
from data.errors import InputError
from tests.support.videos import write_video
from trainer.accel import AccelConfig, plan_for
from trainer.checkpoint import save_checkpoint
from trainer.eval_views import EvalConfig, clip_starts, crop_offsets, video_fight_prob, view_logits
from trainer.metrics import roc_auc
from trainer.model import ModelConfig, ResNet3D

MODEL_CFG = ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=8,
                        pretrained=None, ft_begin="conv1", mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                        value_scale=255.0)
FP32 = plan_for(AccelConfig("fp32", "torch"))


@pytest.mark.parametrize("n, clips, expected", [
    (100, 4, [10, 31, 53, 74]),  # MMAction2's SampleFrames(test_mode): interval (100-16+1)/4, starts at half of it
    (16, 10, [0]),               # exactly one window
    (10, 10, [0]),               # shorter: one window, loop-padded
    (20, 10, [0, 1, 2, 3, 4]),   # more clips than distinct starts: each start once
])
def test_clip_starts_spread_over_the_video(n, clips, expected):
    assert clip_starts(n, 16, clips) == expected


def test_three_crops_run_along_the_long_side():
    assert crop_offsets(32, 48, 32, 3) == [(0, 0), (0, 8), (0, 16)]
    assert crop_offsets(48, 32, 32, 3) == [(0, 0), (8, 0), (16, 0)]
    assert crop_offsets(32, 48, 32, 1) == [(0, 8)]


def test_averaging_probabilities_or_logits():
    logits = np.array([[0.0, 4.0], [0.0, -4.0]])
    assert video_fight_prob(logits, "prob") == pytest.approx(0.5)
    assert video_fight_prob(logits, "logit") == pytest.approx(0.5)
    logits = np.array([[0.0, 4.0], [0.0, 0.0]])
    assert video_fight_prob(logits, "logit") == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for cls, n in (("fights", 4), ("nonfights", 4), ("nonfights/crowd", 2)):
        (root / cls).mkdir()
        for i in range(n):
            write_video(root / cls / f"{i}.mp4", 20 + 3 * i, size=(48, 32))
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    with torch.no_grad():  # a random model with probabilities away from 0 and 1
        model.fc.weight.mul_(0.05)
    save_checkpoint(root / "model.pth", model, MODEL_CFG, epoch=1)
    return root, model


def test_video_level_figures_equal_a_hand_computation_from_the_dump(dataset, tmp_path):
    root, model = dataset
    videos = folder_videos(root, None)
    cfg = EvalConfig(clips=3, crops=3, average="prob", batch_size=4)
    result = evaluate_job(model, MODEL_CFG, videos, cfg, FP32, 0.5, tmp_path / "m.json", tmp_path / "p.csv")
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(result))
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["video"] for r in rows} == {f"{c}/{i}.mp4" for c in ("fights", "nonfights")
                                                              for i in range(4)} | {"nonfights/crowd/0.mp4",
                                                                                    "nonfights/crowd/1.mp4"}
    assert {r["video"]: r["kind"] for r in rows if r["kind"] == "crowd"}.keys() == {"nonfights/crowd/0.mp4",
                                                                                    "nonfights/crowd/1.mp4"}
    labels = [int(r["label"]) for r in rows]
    probs = [float(r["fight_prob"]) for r in rows]
    views = [[float(p) for p in r["view_probs"].split()] for r in rows]
    assert all(len(v) == 9 for v in views)  # 3 clips x 3 crops
    assert probs == pytest.approx([np.mean(v) for v in views], abs=1e-6)
    hand = np.mean([(p >= 0.5) == y for p, y in zip(probs, labels)])
    assert result["video"]["accuracy"] == pytest.approx(hand)
    assert result["video"]["roc_auc"] == pytest.approx(roc_auc(labels, probs))
    assert result["view"]["count"] == 90 and result["video"]["count"] == 10
    assert sum(map(sum, result["video"]["confusion"]["matrix"])) == 10
    called = {kind: sum(float(r["fight_prob"]) >= 0.5 for r in rows if r["kind"] == kind)
              for kind in ("fight", "nonfight", "crowd")}
    assert result["by_kind"] == {
        "fight": {"label": "fight", "videos": 4, "called_fight": called["fight"], "recall": called["fight"] / 4},
        "crowd": {"label": "nonfight", "videos": 2, "called_fight": called["crowd"],
                  "false_alarm_rate": called["crowd"] / 2},
        "nonfight": {"label": "nonfight", "videos": 4, "called_fight": called["nonfight"],
                     "false_alarm_rate": called["nonfight"] / 4}}
    assert [s["threshold"] for s in result["video"]["threshold_sweep"]][0] == 0.1
    metrics = evaluation_metrics(result)  # what MLflow gets: the scalars, by level
    assert metrics["video_accuracy"] == result["video"]["accuracy"] and metrics["view_count"] == 90
    assert metrics["false_alarm_rate_crowd"] == called["crowd"] / 2 and metrics["recall_fight"] == called["fight"] / 4
    assert metrics["video_roc_auc"] == result["video"]["roc_auc"] and metrics["unreadable_videos"] == 0
    assert metrics["videos_per_s"] == result["throughput"]["videos_per_s"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_one_view_is_the_centre_window_of_the_video(dataset):
    root, model = dataset
    logits, frames, _ = view_logits(model, MODEL_CFG, root / "fights" / "0.mp4", EvalConfig(1, 1, "prob", 8), FP32)
    assert logits.shape == (1, 2) and frames == 20


def test_bad_lists_name_the_file_and_line(tmp_path, dataset):
    root, _ = dataset
    (tmp_path / "a.csv").write_text(f"{root}/fights/0.mp4,fight\n{root}/nonfights/0.mp4,calm\n")
    with pytest.raises(InputError, match=r"a\.csv:2: expected 'path,label\[,kind\]'"):
        listed_videos(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("nope.mp4,1\n")
    with pytest.raises(InputError, match=r"b\.csv:1: .*nope\.mp4: no such video file"):
        listed_videos(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text(f"# path,label\n{root}/fights/1.mp4,1\n{root}/nonfights/1.mp4,0\n"
                                    f"{root}/nonfights/crowd/1.mp4,nonfight, dance floor \n")
    assert [(name.endswith("1.mp4"), label, kind) for name, _, label, kind in listed_videos(tmp_path / "c.csv")] == [
        (True, 1, "fight"), (True, 0, "nonfight"), (True, 0, "dance floor")]
    (tmp_path / "d.csv").write_text(f"{root}/fights/1.mp4,1,\n")
    with pytest.raises(InputError, match=r"d\.csv:1: expected 'path,label\[,kind\]'"):
        listed_videos(tmp_path / "d.csv")


def test_untrimmed_false_alerts_per_hour_by_scene_kind():
    per_video = [{"kind": "wide", "seconds": 1800, "fights": 1, "caught": 1, "false_alerts": 1},
                 {"kind": "crowd", "seconds": 360, "fights": 0, "caught": 0, "false_alerts": 2},
                 {"kind": "wide", "seconds": 1800, "fights": 2, "caught": 1, "false_alerts": 0}]
    assert untrimmed_by_kind(per_video) == {
        "crowd": {"videos": 1, "hours": 0.1, "fights": 0, "caught": 0, "false_alerts": 2, "false_alerts_per_hour": 20.0},
        "wide": {"videos": 2, "hours": 1.0, "fights": 3, "caught": 2, "false_alerts": 1, "false_alerts_per_hour": 1.0}}


def test_a_kind_is_of_one_class():
    rows = [{"kind": "crowd", "label": 0, "fight_prob": 0.7}, {"kind": "crowd", "label": 1, "fight_prob": 0.7}]
    with pytest.raises(InputError, match="kind 'crowd' holds both fights and non-fights"):
        by_kind(rows, 0.5)


def test_an_evaluation_run_is_a_child_of_its_training_run_with_its_fold(dataset, tmp_path, monkeypatch):
    """A real MLflow store holding a training run (as a k-fold `fightwatch train` leaves it): the evaluation of its
    checkpoint nests under it, in its experiment, with its seed and fold; a checkpoint whose training run the store
    does not have gets a plain run in the config's experiment."""
    _, model = dataset
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # wins over the config's store; monkeypatch removes it after
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("folds", artifact_location=(tmp_path / "artifacts").as_uri())
    training = client.create_run(experiment, run_name="train").info.run_id
    for key, value in {"seed": 7, "data.split.folds": 3, "data.split.fold": 1, "train.epochs": 8}.items():
        client.log_param(training, key, value)
    save_checkpoint(tmp_path / "model.pth", model, MODEL_CFG, epoch=1, extra={"mlflow_run_id": training})
    (tmp_path / "m.json").write_text("{}")
    config = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml", [f"run_dir={tmp_path / 'run'}"])

    run_id, parent = log_evaluation(config, tmp_path / "model.pth", {"clips": 3, "subset": None},
                                    {"video_accuracy": 0.75}, [tmp_path / "m.json"])
    run = client.get_run(run_id)
    assert parent == training and run.data.tags["mlflow.parentRunId"] == training
    assert run.info.experiment_id == experiment and run.info.run_name == "evaluate fold 1"
    assert run.data.tags["fightwatch.kind"] == "evaluation"
    assert run.data.params == {"clips": "3", "subset": "null", "seed": "7", "data.split.folds": "3",
                               "data.split.fold": "1"}
    assert run.data.metrics == {"video_accuracy": 0.75}
    assert [a.path for a in client.list_artifacts(run_id)] == ["m.json"]

    save_checkpoint(tmp_path / "other.pth", model, MODEL_CFG, epoch=1, extra={"mlflow_run_id": "0" * 32})
    run_id, parent = log_evaluation(config, tmp_path / "other.pth", {"clips": 3}, {"video_accuracy": 0.5}, [])
    run = client.get_run(run_id)
    assert parent is None and "mlflow.parentRunId" not in run.data.tags
    assert client.get_experiment(run.info.experiment_id).name == config.tracking.experiment
    assert run.data.params == {"clips": "3"}


def test_the_size_sweep_counts_fights_caught_and_located_by_their_width():
    boxes = [{"frame": 0, "box": [0.1, 0.1, 0.3, 0.4]}, {"frame": 1, "box": [0.1, 0.1, 0.2, 0.4]}]
    assert fight_width({"fight_width": 0.25, "boxes": boxes}) == 0.25
    assert fight_width({"boxes": boxes}) == 0.15
    assert fight_width({"fight_intervals": [[1, 2]]}) is None
    per_video = [{"fight_width": 0.125, "fights": 1, "caught": 1, "located": [True]},
                 {"fight_width": 0.5, "fights": 1, "caught": 1, "located": [False]},
                 {"fight_width": 0.125, "fights": 1, "caught": 0, "located": [None]},
                 {"fight_width": None, "fights": 1, "caught": 1},  # a timeline without boxes
                 {"fight_width": 0.25, "fights": 0, "caught": 0, "located": []}]  # a calm wide scene
    assert size_sweep(per_video) == {"0.5": {"fights": 1, "caught": 1, "located": 0},
                                     "0.125": {"fights": 2, "caught": 1, "located": 1}}
