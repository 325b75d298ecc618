"""The tiny training run: the demo config shrunk to seconds per epoch, `fightwatch` and the torchrun command line
that train it in a copy of the prepared run dir, a killed run's resume checks, MLflow look-ups and the weights."""

import shutil
import subprocess
import sys

import mlflow

from tests.support.commands import FIGHTWATCH, ROOT
from trainer.checkpoint import latest_checkpoint, read_checkpoint

# The demo config shrunk to seconds per epoch on 2 cores: 10 one-second videos per class at 96x72, a width-4 model.
TINY = ["data.synthetic.videos_per_class=10", "data.synthetic.seconds=1.0", "data.synthetic.width=96",
        "data.synthetic.height=72", "data.val_fraction=0.2", "clips.short_side=32",
        "model.width=4", "model.sample_size=32", "model.sample_duration=8",
        "accel.precision=fp32", "train.epochs=8", "train.batch_size=4", "train.checkpoint_every=2",
        "train.optimizer=sgd", "train.lr=0.01", "train.dampening=0.9", "train.lr_schedule=plateau",
        "train.plateau_patience=1", "train.warmup_epochs=0", "tracking.run_name=resume-test",
        "tracking.log_model=false"]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TRAIN = ["-m", "cluster.cli", "train", "--config", "configs/demo.yaml", *TINY]  # what TORCHRUN runs


def copy_of(prepared, tmp_path, name="run"):
    """A copy of the session's prepared run dir (conftest.py's `prepared`) at tmp_path / name, to train in."""
    shutil.copytree(prepared, tmp_path / name)
    return tmp_path / name


def run(command, run_dir, *extra, **kwargs):
    """`fightwatch <command>` on the demo config shrunk by TINY, in run_dir; `extra` are more overrides."""
    return subprocess.run([str(FIGHTWATCH), command, "--config", "configs/demo.yaml", f"run_dir={run_dir}",
                           *TINY, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def interrupted_epoch(run_dir, epochs: int) -> int:
    """The epoch a killed run resumes after (its newest whole checkpoint: an epoch's periodic file is written
    before its last.pth, so a kill between them leaves last.pth an epoch behind), after asserting it stopped
    partway: past the first periodic checkpoint, before the end, without a final model."""
    epoch = latest_checkpoint(run_dir / "checkpoints")[1]["epoch"]
    assert 2 <= epoch < epochs and not (run_dir / "model.pth").exists(), epoch
    return epoch


def assert_resumed(run_dir, output: str, interrupted_at: int, epochs: int) -> None:
    """A restart (its log in `output`) went on from the checkpoint, in the same MLflow run, no epoch missing or
    doubled in its train_loss history."""
    assert f"resumed at epoch {interrupted_at + 1} of {epochs}" in output, output[-3000:]
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss"))
    assert steps == list(range(1, epochs + 1)), steps


def weights(run_dir):
    return read_checkpoint(run_dir / "model.pth")["state_dict"]


def mlflow_runs(run_dir, experiment_name="fightwatch-demo"):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == experiment_name]
    return client, client.search_runs([experiment.experiment_id])
