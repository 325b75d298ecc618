"""What several test modules share: the installed command, the one-line error contract, the tiny training
config and the torchrun command line that trains it, a killed run's resume checks, MLflow look-ups, a free port
on loopback, and a throwaway mosquitto broker with a subscriber."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import mlflow
import pytest
import torch

from trainer.checkpoint import latest_checkpoint, read_checkpoint, save_checkpoint
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

# The watch tests' model: tiny, at the size and rate `watch` windows are cut for
WATCH_MODEL_CFG = ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=16,
                              pretrained=None, ft_begin="conv1", mean=(114.7748, 107.7354, 99.4750),
                              std=(1.0, 1.0, 1.0), value_scale=255.0)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TRAIN = ["-m", "cluster.cli", "train", "--config", "configs/demo.yaml", *TINY]  # what TORCHRUN runs


def clean_env(**extra) -> dict:
    """This process's environment without any launcher's variables, so children start from scratch."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, **extra}


def fixed_output_model(path, says: str) -> Path:
    """A WATCH_MODEL_CFG checkpoint whose output ignores the frames: fc weight 0 and bias [0, 5] (says "fight",
    alerting from a stream's first windows) or [5, 0] (says "calm", never alerting)."""
    torch.manual_seed(0)
    model = ResNet3D(WATCH_MODEL_CFG)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor({"fight": [0.0, 5.0], "calm": [5.0, 0.0]}[says]))
    save_checkpoint(path, model, WATCH_MODEL_CFG, epoch=1)
    return Path(path)


def copy_of(prepared, tmp_path, name):
    shutil.copytree(prepared, tmp_path / name)
    return tmp_path / name


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


# Debian puts the broker in /usr/sbin, off a normal user's PATH
MOSQUITTO = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (.ci/run installs Debian's)")


class Mosquitto:
    """A real mosquitto broker on 127.0.0.1 and a free port; config, persistence and log in `folder`.
    With `users` ({name: password}) it refuses anonymous clients."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None):
        self.folder, self.port, self.process = folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 "persistence true", f"persistence_location {folder}/", f"log_dest file {folder}/mosquitto.log"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to user mosquitto, who cannot write to `folder`
        if users:
            passwords = folder / "passwords"
            passwords.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)  # hashes
            lines.append(f"password_file {passwords}")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.process.stderr.read()} {self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text() if path.exists() else ""


class Subscriber:
    """A paho client that records (topic, payload text, retained) of everything under `topic` (QoS 1). With a
    `session` name its session persists on the broker (clean_session off), so it misses nothing while away."""

    def __init__(self, port: int, topic: str, session: str | None = None, auth: tuple[str, str] | None = None):
        import paho.mqtt.client as mqtt

        self.messages, self._changed = [], threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        self.client.reconnect_delay_set(0.1, 0.5)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self._changed:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=15.0):
        """Wait until predicate(messages) holds; the messages."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.messages), timeout), self.messages
            return list(self.messages)

    def on(self, topic: str) -> list:
        with self._changed:
            return [(payload, retained) for t, payload, retained in self.messages if t == topic]

    def events(self, topic: str) -> list[dict]:
        return [json.loads(payload) for payload, _ in self.on(topic)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
