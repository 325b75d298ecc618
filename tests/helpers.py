"""What several test modules share: the installed command, the one-line error contract, the tiny training
config, MLflow look-ups and a free port on loopback."""

import socket
import subprocess
import sys
from pathlib import Path

import mlflow

from trainer.checkpoint import read_checkpoint

ROOT = Path(__file__).parents[1]
FIGHTWATCH = Path(sys.executable).parent / "fightwatch"  # the installed console script

# The demo config shrunk to seconds per epoch on 2 cores: 10 one-second videos per class at 96x72, a width-4 model.
TINY = ["data.synthetic.videos_per_class=10", "data.synthetic.seconds=1.0", "data.synthetic.width=96",
        "data.synthetic.height=72", "data.val_fraction=0.2", "clips.short_side=32",
        "model.width=4", "model.sample_size=32", "model.sample_duration=8",
        "accel.precision=fp32", "train.epochs=8", "train.batch_size=4", "train.checkpoint_every=2",
        "train.optimizer=sgd", "train.lr=0.01", "train.dampening=0.9", "train.lr_schedule=plateau",
        "train.plateau_patience=1", "train.warmup_epochs=0", "tracking.run_name=resume-test",
        "tracking.log_model=false"]


def fightwatch(*args, cwd=ROOT):
    return subprocess.run([str(FIGHTWATCH), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fightwatch: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0]


def weights(run_dir):
    return read_checkpoint(run_dir / "model.pth")["state_dict"]


def mlflow_runs(run_dir, experiment_name="fightwatch-demo"):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == experiment_name]
    return client, client.search_runs([experiment.experiment_id])


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now: take it before someone else does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
