"""SIGKILLs at any moment of `fightwatch train` (issue 17): the kill loop's planning and phase telling, what each
kill used to break (a second MLflow run, a checkpoint artifact cut short, temp files left behind), and a few kills
of a real run by scripts/faults/kill_loop.py, the loop that runs the full count."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from data.files import atomic_path, remove_stale_temps
from scripts.faults.kill_loop import (AIMABLE, Observation, Target, bar_state, classify, next_target, plan_kills,
                                      run_loop)
from tests.support.commands import FIGHTWATCH, ROOT, clean_env
from tests.support.training import TRAIN, copy_of
from tests.support.trunk_cache import cache_for, clip_sets, model_parts
from trainer.tracking import Tracker, TrackingConfig
from trainer.train import _record_epoch
from trainer.trunk_cache import _file

CONFIG = TrackingConfig(None, "kill-loop", "kill-loop", False)


def test_the_plan_is_seeded_half_aimed_and_covers_the_phases():
    plan = plan_kills(20, seed=3, span_s=10.0, phases=AIMABLE)
    assert plan == plan_kills(20, seed=3, span_s=10.0, phases=AIMABLE) != plan_kills(20, 4, 10.0, AIMABLE)
    aimed = [t.phase for t in plan if t.phase]
    assert len(aimed) == 10 and set(aimed) == set(AIMABLE)
    assert all(0 <= t.delay_s <= 10.0 for t in plan if t.phase is None)
    assert next_target([Target("tracking store", 0), Target(None, 2.0)], passed={"tracking store"}) == 1
    assert next_target([Target("trunk cache build", 0)], passed={"trunk cache build"}) is None


def observation(lines=(), stderr="", store=True, store_tmp=False, checkpoint_tmp=False, commits=0):
    line = "1 2026-12-02 10:00:00,000 INFO "
    return Observation(tuple(line + text for text in lines), stderr, store, store_tmp, checkpoint_tmp, commits, 8)


def test_phases_are_told_apart_from_what_a_run_shows():
    bar, cleared = "\repoch 3/8:  75%|███▌ | 3/4 [00:00<00:00, 27.3batch/s]\x1b[A", "\n\r          \x1b[A"
    assert bar_state("noise" + bar) == ("epoch 3/8", False) and bar_state(bar + cleared) == ("epoch 3/8", True)
    training = ["trainer.train: training resnet-10 (width 4)", "trainer.train: epoch 1: train_loss=0.6",
                "trainer.train: epoch 2: train_loss=0.6"]
    assert classify(observation()) == "start-up"
    assert classify(observation(["cluster.distributed: backend gloo"], store=False)) == "start-up"
    assert classify(observation(["cluster.distributed: backend gloo"], store=False, store_tmp=True)) == "tracking store"
    assert classify(observation(["cluster.distributed: rank 0 of 2 (local 0 of 2) joining 127.0.0.1:1 over gloo"],
                                store=False)) == "rendezvous"
    assert classify(observation(["cluster.distributed: backend gloo"])) == "run start"
    assert classify(observation(["x"], stderr="\rtrunk cache (train):  50%|█ | 8/16")) == "trunk cache build"
    assert classify(observation(training, stderr=bar, commits=2)) == "step"
    assert classify(observation(training, stderr=bar + cleared, commits=2)) == "validation"
    assert classify(observation(training, stderr=bar + cleared, checkpoint_tmp=True, commits=2)) == "checkpoint write"
    assert classify(observation(training, stderr=bar + cleared, commits=3)) == "MLflow logging"
    assert classify(observation([*training, "trainer.train: epoch 8: x"], commits=3)) == "finishing"
    assert classify(observation(["trainer.train: resumed at epoch 9 of 8"])) == "finishing"


def test_stale_temp_files_go_and_only_those_named(tmp_path):
    for name in ("last.pth", "epoch_0002.pth", "other.npy"):
        with atomic_path(tmp_path / name) as tmp:
            tmp.write_bytes(b"whole")
    stale = [tmp_path / f".{name}.0123456789ab.tmp" for name in ("last.pth", "epoch_0002.pth", "other.npy")]
    for path in stale:
        path.write_bytes(b"half")  # what atomic_path leaves when its process is killed mid-write
    assert remove_stale_temps(tmp_path, {"last.pth", "epoch_0002.pth"}) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npy.0123456789ab.tmp", "epoch_0002.pth",
                                                          "last.pth", "other.npy"]
    assert remove_stale_temps(tmp_path) == 1 and remove_stale_temps(tmp_path / "missing") == 0


def start_and_die(run_dir, log_epoch: bool) -> None:
    """A real process that starts the run's Tracker (and logs epoch 1 when asked), then is SIGKILLed."""
    code = (f"import os, signal; from pathlib import Path; from trainer.tracking import Tracker, TrackingConfig\n"
            f"cfg = TrackingConfig(*{tuple(CONFIG.__dict__.values())!r})\n"
            f"tracker = Tracker(cfg, Path({str(run_dir)!r})).__enter__()\n"
            f"tracker.log_params({{'train.epochs': 8}})\n"
            + ("tracker.log_metrics({'train_loss': 0.7}, step=1)\n" if log_epoch else "")
            + "os.kill(os.getpid(), signal.SIGKILL)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


@pytest.mark.slow  # starts processes
def test_a_start_killed_before_its_first_epoch_is_continued_not_duplicated(tmp_path, monkeypatch):
    """Killed after its MLflow run was made, before any checkpoint: the next start used to make a second run (the
    killed one left RUNNING), so a run dir's training showed as several runs."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # removed again after the test
    start_and_die(tmp_path, log_epoch=False)
    with Tracker(CONFIG, tmp_path) as tracker:
        tracker.log_params({"train.epochs": 9})  # a changed config keeps the params the run started with
        continued = tracker.run_id
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "kill-loop"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == continued and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "8" and "torch_version" in run.data.params

    start_and_die(tmp_path, log_epoch=True)  # a run with an epoch in it is not a start to continue
    with Tracker(CONFIG, tmp_path) as tracker:
        fresh = tracker.run_id
    assert fresh != continued and len(client.search_runs([experiment.experiment_id])) == 3


def test_a_checkpoint_artifact_cut_short_by_a_kill_is_logged_again_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    checkpoint = tmp_path / "checkpoints" / "epoch_0002.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(os.urandom(50_000))
    with Tracker(CONFIG, tmp_path) as tracker:
        _record_epoch(tracker, checkpoint.parent, 2, {"train_loss": 0.5}, checkpoint_every=2)
        (copy,) = (tmp_path / "mlartifacts").rglob("epoch_0002.pth")
        copy.write_bytes(copy.read_bytes()[:1000])  # the copy a kill cut short
        _record_epoch(tracker, checkpoint.parent, 2, {"train_loss": 0.5}, checkpoint_every=2)  # the resume's
        history = mlflow.MlflowClient().get_metric_history(tracker.run_id, "train_loss")
    assert copy.read_bytes() == checkpoint.read_bytes()
    assert [m.step for m in history] == [2]


def test_a_trunk_cache_build_removes_the_temp_files_a_kill_left(prepared, tmp_path):
    sets = clip_sets(prepared)
    cache = cache_for(tmp_path / "trunk_cache", model_parts()[1], sets, views=1)
    train_dir = cache.dir / "train"
    train_dir.mkdir(parents=True)
    first = _file(train_dir, sets[0].rows[0]).name
    stale = [train_dir / f".{first}.0123456789ab.tmp", train_dir / f".{first}.sha256.0123456789ab.tmp"]
    foreign = train_dir / ".not-a-clip.npy.0123456789ab.tmp"  # no clip of this shard: another rank's to clean
    for path in (*stale, foreign):
        path.write_bytes(b"half")
    cache.build()
    assert not any(p.exists() for p in stale) and foreign.exists()


def test_kills_from_start_up_to_the_end_all_resume_to_the_straight_run(prepared, tmp_path):
    """One run killed at five moments, each followed by a resume, then compared with an uninterrupted run
    (scripts/faults/kill_loop.py runs the issue's 20 and more). Killed after its last epoch, before its plots, a
    run used to finish without them."""
    targets = [Target("tracking store", 0.0), Target("trunk cache build", 0.0), Target("MLflow logging", 0.0),
               Target("step", 0.1), Target("finishing", 0.0)]
    lines = []
    result = run_loop(prepared, tmp_path, len(targets), seed=0, trunk_cache=True, say=lines.append, targets=targets)
    assert result.tried == result.survived == len(targets) and not result.problems, "\n".join(lines)
    assert result.rounds == 1, "\n".join(lines)


@pytest.mark.parametrize("victim", ["fightwatch", "torchrun"])
def test_ranks_end_when_what_launched_them_is_killed(prepared, tmp_path, victim):
    """torchrun starts its ranks in sessions of their own: a SIGKILLed `fightwatch train --launch local`, or its
    torchrun agent, used to leave them training on, beside the ranks of the next start."""
    run_dir = copy_of(prepared, tmp_path, "run")
    launcher = subprocess.Popen([str(FIGHTWATCH), *TRAIN[2:], f"run_dir={run_dir}", "train.epochs=30", "--launch",
                                 "local", "--nproc-per-node", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    tree = []
    try:
        marker, deadline = run_dir / "checkpoints" / "last.pth.sha256", time.monotonic() + 300
        while not marker.exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = psutil.Process(launcher.pid).children(recursive=True)
        ranks = [p for p in tree if "LOCAL_RANK" in p.environ()]
        (agent,) = [p for p in tree if "torch.distributed.run" in p.cmdline()]
        assert len(ranks) == 2, "both ranks should be training"
        os.kill(launcher.pid if victim == "fightwatch" else agent.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"still running after the {victim} was killed: {alive}"
        assert "is gone; exiting" in (run_dir / "fightwatch.log").read_text()
    finally:
        launcher.kill()
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        launcher.wait()
