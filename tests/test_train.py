"""`fightwatch train` for real: resume after SIGKILL, fallback from a corrupt checkpoint, one MLflow run."""

import re
import signal
import subprocess
import time

import mlflow
import pytest
import torch

from tests.support.commands import FIGHTWATCH, ROOT, assert_one_line_error, fightwatch
from tests.support.training import TINY, copy_of, interrupted_epoch, mlflow_runs, run, weights
from trainer.tracking import ensure_local_store

pytestmark = pytest.mark.slow  # every test here starts processes or clusters


def test_sigkill_then_resume_matches_a_straight_run(prepared, tmp_path):
    straight = copy_of(prepared, tmp_path / "straight")
    result = run("train", straight)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = copy_of(prepared, tmp_path / "killed")
    process = subprocess.Popen([str(FIGHTWATCH), "train", "--config", "configs/demo.yaml", f"run_dir={killed}", *TINY],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "epoch_0004.pth.sha256"  # before epoch 4's last.pth: 3's is whole
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = interrupted_epoch(killed, 8)

    resumed = run("train", killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at epoch {interrupted_at + 1} of 8" in resumed.stderr
    for name, tensor in weights(straight).items():
        assert torch.allclose(tensor.float(), weights(killed)[name].float(), atol=1e-5), name

    client, runs = mlflow_runs(killed)
    assert len(runs) == 1
    for key in ("train_loss", "val_loss", "lr"):
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key)) == list(range(1, 9))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(prepared, tmp_path, monkeypatch):
    run_dir = copy_of(prepared, tmp_path)
    assert run("train", run_dir, "train.epochs=4", "tracking.log_model=true").returncode == 0
    last = run_dir / "checkpoints" / "last.pth"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    result = run("train", run_dir, "train.epochs=6", "tracking.log_model=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "last.pth" in result.stderr and "epoch_0004.pth" in result.stderr  # the warning names both
    assert "resumed at epoch 5 of 6" in result.stderr
    client, runs = mlflow_runs(run_dir)
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")) == list(range(1, 7))
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert artifacts == {"plots/curves.png", "plots/confusion.png", "plots/roc.png"}
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which later tests' subprocesses would inherit:
    # monkeypatch owns the variable, so it is removed again after this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run_dir}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{run_dir}/mlflow.db")
    models = mlflow.search_logged_models(experiment_ids=[runs[0].info.experiment_id], output_format="list")
    assert len(models) == 2  # one per finished `train` (to 4 epochs, then to 6), both in the one run
    assert all(m.source_run_id == runs[0].info.run_id and m.name == "model" for m in models)


def test_deterministic_run_is_recorded_and_trains_the_same(prepared, tmp_path):
    """--deterministic turns on torch's deterministic algorithms (every op of the fine-tune has one on CPU, else
    this fails) and is recorded in MLflow; on one CPU at equal threads the numbers do not change."""
    plain, strict = copy_of(prepared, tmp_path / "plain"), copy_of(prepared, tmp_path / "strict")
    assert run("train", plain, "train.epochs=2").returncode == 0
    result = run("train", strict, "train.epochs=2", "--deterministic")
    assert result.returncode == 0, result.stderr[-3000:]
    _, (strict_run,) = mlflow_runs(strict)
    _, (plain_run,) = mlflow_runs(plain)
    assert strict_run.data.params["train.deterministic"] == "True"
    assert plain_run.data.params["train.deterministic"] == "False"
    a, b = weights(plain), weights(strict)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("override, needle", [
    ("train.epochs=0", "epochs must be > 0"),
    ("train.lr=0", "lr must be > 0"),
    ("model.ft_begin=layer7", "'model.ft_begin' is 'layer7'"),
])
def test_bad_training_config_is_one_line(override, needle, tmp_path):
    assert_one_line_error(fightwatch("train", "--config", "configs/demo.yaml", f"run_dir={tmp_path}", override), needle)


def test_train_without_prepared_clips(tmp_path):
    assert_one_line_error(fightwatch("train", "--config", "configs/demo.yaml", f"run_dir={tmp_path}"),
                          "manifest.jsonl", "fightwatch prepare")


def test_each_epoch_logs_its_speed_and_a_cached_run_its_cache_build_once(prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path)
    cached = ["model.ft_begin=layer4", "train.trunk_cache={views: 2}", "train.val_every=2"]
    first = run("train", run_dir, *cached, "train.epochs=3")
    assert first.returncode == 0, first.stderr[-3000:]
    train_clips = int(re.search(r"on (\d+) train / \d+ val clips", first.stderr).group(1))
    resumed = run("train", run_dir, *cached, "train.epochs=4")  # finds the cache on disk: no second build
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, runs = mlflow_runs(run_dir)
    history = lambda key: {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, key)}  # noqa: E731
    train_seconds, train_rate = history("train_seconds"), history("train_clips_per_s")
    assert sorted(train_seconds) == sorted(train_rate) == [1, 2, 3, 4]
    for epoch, seconds in train_seconds.items():
        assert seconds > 0 and train_rate[epoch] == pytest.approx(train_clips / seconds)
    assert sorted(history("val_seconds")) == sorted(history("val_clips_per_s")) == [2, 3, 4]  # every 2nd, and the last
    cache_build = history("trunk_cache_seconds")
    assert list(cache_build) == [0] and cache_build[0] > 0
    assert list(history("trunk_cache_clips_per_s")) == [0]


def test_a_kill_while_mlflow_makes_its_tables_leaves_a_store_the_next_start_uses(prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path)
    process = subprocess.Popen([str(FIGHTWATCH), "train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(run_dir.glob(".mlflow.db.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "mlflow.db").exists(), "the kill should land while the tables are being made"
    result = run("train", run_dir, "train.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(run_dir.glob(".mlflow.db.*.tmp"))
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1 and sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")) == [1, 2]


def test_the_local_store_is_made_whole_and_an_existing_one_is_kept(tmp_path):
    store = tmp_path / "run" / "mlflow.db"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".mlflow.db.1.tmp").write_bytes(b"half a database")  # a start killed mid-way
    ensure_local_store(f"sqlite:///{store}")
    assert [p.name for p in store.parent.iterdir()] == ["mlflow.db"]
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.create_experiment("kept")
    ensure_local_store(f"sqlite:///{store}")
    assert client.get_experiment(experiment).name == "kept"
    ensure_local_store("http://tracking.example:5000")  # a server's store is MLflow's to make
