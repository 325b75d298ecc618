"""The demo end to end through the real command: Ray Data, training, MLflow, scoring, annotation, alerts."""

import json
import subprocess

import av
import mlflow
import pytest

from tests.test_cli import FIGHTWATCH, ROOT


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    result = subprocess.run([str(FIGHTWATCH), "demo", f"run_dir={run_dir}", "tracking.run_name=test-demo"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def frame_count(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_demo_writes_scores_annotated_video_and_alerts(demo_run):
    run_dir, result = demo_run
    truth = json.loads((run_dir / "heldout" / "timeline.json").read_text())
    (fight_start, fight_end), = truth["fight_intervals"]
    (entry,) = json.loads((run_dir / "output.json").read_text())
    assert entry["video"] == "timeline.mp4" and entry["frames"] == truth["frames"]

    # the fight is scored higher than the calm parts around it
    inside = [c["fight_prob"] for c in entry["clips"] if fight_start <= c["start_s"] and c["end_s"] <= fight_end]
    outside = [c["fight_prob"] for c in entry["clips"] if c["end_s"] <= fight_start or c["start_s"] >= fight_end]
    assert sum(inside) / len(inside) > sum(outside) / len(outside) + 0.3

    # an alert inside the fight interval, none in the calm parts
    alerts = [json.loads(line) for line in (run_dir / "alerts.jsonl").read_text().splitlines()]
    assert alerts and [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")] == alerts
    probs = [(c["start_s"], round(c["fight_prob"], 2)) for c in entry["clips"]]
    for alert in alerts:
        # starts in the fight (a segment may straddle its start), may run on while the fighters calm down
        assert fight_start - 1.0 <= alert["start_s"] < fight_end and alert["end_s"] <= fight_end + 2.0, (alert, probs)
        assert alert["start_s"] <= alert["raised_s"] <= alert["end_s"]

    annotated = run_dir / "timeline_annotated.mp4"
    assert frame_count(annotated) == frame_count(run_dir / "heldout" / "timeline.mp4") == truth["frames"]
    assert (run_dir / "timeline_probs.png").read_bytes().startswith(b"\x89PNG")


def test_demo_is_one_mlflow_run_with_epoch_metrics_and_artifacts(demo_run):
    run_dir, _ = demo_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "fightwatch-demo"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "test-demo" and run.info.status == "FINISHED"
    epochs = int(run.data.params["train.epochs"])
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert history[-1].value >= 0.9
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "heldout")}
    assert {"heldout/output.json", "heldout/alerts.jsonl", "heldout/timeline_probs.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/epoch_0010.pth",
                                                                                      "checkpoints/epoch_0020.pth"}
