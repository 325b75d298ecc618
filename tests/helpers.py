"""What several test modules share: the installed command, the one-line error contract, the tiny training
config, MLflow look-ups and a free port on loopback."""

import socket
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import mlflow
import torch

from trainer.checkpoint import read_checkpoint
from trainer.model import ModelConfig, ResNet3D

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


def release_like(seed=0, **kw) -> ResNet3D:
    """A stand-in for a released 3D-ResNets-PyTorch Kinetics model (tiny unless `kw` says otherwise): 400 classes,
    BN statistics away from their defaults. `kw` are ModelConfig fields."""
    base = dict(depth=10, shortcut="A", width=4, n_classes=400, sample_size=32, sample_duration=8, pretrained=None,
                ft_begin="layer4", mean=None, std=None, value_scale=None)
    torch.manual_seed(seed)
    model = ResNet3D(ModelConfig(**{**base, **kw}))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(12345)
    return model.eval()


def save_hara(path, model, arch="resnet-10", prefix="module.", layout="2018", **kw):
    """Write a checkpoint as 3D-ResNets-PyTorch does. 2018 (CVPR2018 branch, train.py): {epoch, arch, state_dict,
    optimizer}, DataParallel's `module.` prefix kept (unless prefix=""). 2020 (master, main.py save_checkpoint):
    {epoch, arch, state_dict (unwrapped: no prefix), optimizer, scheduler}."""
    if layout == "2020":
        prefix = ""
    state_dict = OrderedDict((prefix + k, v) for k, v in model.state_dict().items())
    state = {"epoch": 200, "arch": arch, "state_dict": state_dict, "optimizer": {}}
    if layout == "2020":
        state["scheduler"] = {"milestones": {}, "last_epoch": 200}
    torch.save(state, path, **kw)
    return path


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
