"""k-fold cross-validation: one run dir per fold, and the folds' evaluations summarised from MLflow."""

import json
import statistics
import subprocess

import mlflow
import numpy as np
import pytest

from cluster.commands.prepare import SPLIT_FILE, check_split
from cluster.commands.summarise import summarise, summary_lines
from data.errors import InputError
from data.folders import KFold
from tests.support.commands import FIGHTWATCH, ROOT, assert_one_line_error
from tests.support.training import TINY
from trainer.checkpoint import read_checkpoint


def test_a_run_dir_keeps_the_split_its_manifest_was_made_for(tmp_path):
    check_split(tmp_path, KFold(5, 1))  # nothing prepared yet: any split
    (tmp_path / "manifest.jsonl").write_text("")
    check_split(tmp_path, None)  # prepared before split.json: val_fraction's
    with pytest.raises(InputError, match=r"prepared for data.split null, but the config has \{folds: 5, fold: 1\}"):
        check_split(tmp_path, KFold(5, 1))
    (tmp_path / SPLIT_FILE).write_text(json.dumps({"split": {"folds": 5, "fold": 0}}))
    check_split(tmp_path, KFold(5, 0))
    with pytest.raises(InputError, match=r"\{folds: 5, fold: 0\}, but the config has \{folds: 5, fold: 1\}; give each "
                                         r"fold its own run_dir"):
        check_split(tmp_path, KFold(5, 1))


def evaluation(run_id, fold, accuracy, clips="10", folds="3", model=None):
    params = {"clips": clips, "seed": "0", "data.split.folds": folds, "data.split.fold": fold,
              "model": model or f"runs/fold{fold}/model.pth", "data": f"runs/fold{fold}/videos"}
    return {"run_id": run_id, "params": params, "metrics": {"video_accuracy": accuracy, "view_accuracy": 0.5}}


def test_summarise_groups_all_but_the_fold_and_pools_its_metrics():
    runs = [evaluation("c", "2", 0.7), evaluation("a", "0", 0.9), evaluation("b", "1", 0.8),
            evaluation("d", "0", 0.6, clips="1"), evaluation("e", "1", 0.4, clips="1")]
    runs[1]["metrics"]["video_f1"] = 1.0  # a metric only one run of its group has is left out
    three, two = sorted(summarise(runs), key=lambda g: -g["n"])
    assert three["params"] == {"clips": "10", "seed": "0", "data.split.folds": "3"}
    assert (three["folds"], three["run_ids"]) == (["0", "1", "2"], ["a", "b", "c"])
    assert set(three["metrics"]) == {"video_accuracy", "view_accuracy"}
    accuracy = three["metrics"]["video_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.8) and accuracy["std"] == pytest.approx(0.1)  # sample std, n - 1
    assert (accuracy["n"], accuracy["values"]) == (3, [0.9, 0.8, 0.7])
    assert two["params"]["clips"] == "1" and two["metrics"]["video_accuracy"]["mean"] == pytest.approx(0.5)
    lines = summary_lines([three])
    assert lines[0].startswith("3 run(s), folds 0, 1, 2: clips=10 ")
    assert "  video_accuracy             0.8000 ± 0.1000 (n=3)" in lines


def test_summarise_shows_one_run_without_a_spread_and_a_fold_seen_twice():
    (group,) = summarise([evaluation("a", "0", 0.9)])
    assert group["metrics"]["video_accuracy"]["std"] is None
    assert "  video_accuracy             0.9000 ± - (n=1)" in summary_lines([group])
    (group,) = summarise([evaluation("a", "0", 0.9), evaluation("b", "0", 0.7, model="other.pth")])
    assert "fold(s) 0 evaluated more than once" in "\n".join(summary_lines([group]))


@pytest.mark.slow
def test_kfold_loop_trains_evaluates_and_summarises_every_fold(tmp_path, monkeypatch):
    """The README's loop on the demo's synthetic videos, 2 folds: each fold prepared, trained and evaluated in its own
    run dir, all logged to one MLflow store; summarise's mean is the mean of the folds' own reports."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path}/mlflow.db"

    def fightwatch(command, fold, *args, run_dir=None):
        config = ["--config", "configs/demo.yaml", "--set", f"run_dir={run_dir or tmp_path / f'fold{fold}'}",
                  *(f"--set={o}" for o in [*TINY, "train.epochs=2", f"data.split={{folds: 2, fold: {fold}}}",
                                          f"tracking.tracking_uri={store}"])]
        return subprocess.run([str(FIGHTWATCH), command, *config, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)

    for fold in (0, 1):
        run_dir = tmp_path / f"fold{fold}"
        for command, *args in (("prepare",), ("train",),
                               ("evaluate", "--model", str(run_dir / "model.pth"), "--data", str(run_dir / "videos"),
                                "--subset", "validation", "--clips", "2", "--out", str(run_dir / "metrics.json"),
                                "--dump", str(run_dir / "predictions.csv"))):
            result = fightwatch(command, fold, *args)
            assert result.returncode == 0, f"{command} fold {fold}: {result.stderr[-3000:]}"
        assert json.loads((run_dir / SPLIT_FILE).read_text()) == {"split": {"folds": 2, "fold": fold}}
    # one run dir, one split: fold 1 in fold 0's run dir would resume fold 0's checkpoints
    for command in ("prepare", "train"):
        assert_one_line_error(fightwatch(command, 1, run_dir=tmp_path / "fold0"),
                              "prepared for data.split {folds: 2, fold: 0}", "{folds: 2, fold: 1}")

    held_out = [json.loads(line)["video_id"] for fold in (0, 1)
                for line in (tmp_path / f"fold{fold}" / "manifest.jsonl").read_text().splitlines()
                if json.loads(line)["subset"] == "validation"]
    assert len(held_out) == len(set(held_out)) == 20  # the two folds' validation videos partition the 20 videos

    client = mlflow.MlflowClient(store)
    for fold in (0, 1):
        training = read_checkpoint(tmp_path / f"fold{fold}" / "model.pth")["mlflow_run_id"]
        (run,) = client.search_runs(client.get_run(training).info.experiment_id,
                                    f"tags.mlflow.parentRunId = '{training}'")
        assert client.get_run(training).data.params["data.split.fold"] == str(fold)
        assert (run.data.params["data.split.fold"], run.data.params["data.split.folds"]) == (str(fold), "2")
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "predictions.csv"}

    result = subprocess.run([str(FIGHTWATCH), "summarise", "--config", "configs/demo.yaml", "--set",
                             f"tracking.tracking_uri={store}", "--out", str(tmp_path / "kfold.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    (group,) = json.loads((tmp_path / "kfold.json").read_text())["groups"]
    assert (group["n"], group["folds"]) == (2, ["0", "1"])
    reports = [json.loads((tmp_path / f"fold{fold}" / "metrics.json").read_text()) for fold in (0, 1)]
    for name, level, figure in (("video_accuracy", "video", "accuracy"), ("view_f1", "view", "f1")):
        values = [r[level][figure] for r in reports]
        assert group["metrics"][name]["mean"] == pytest.approx(np.mean(values))
        assert group["metrics"][name]["std"] == pytest.approx(statistics.stdev(values))
    assert f"video_accuracy             {np.mean([r['video']['accuracy'] for r in reports]):.4f}" in result.stdout
