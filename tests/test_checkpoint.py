"""Checkpoints: 3D-ResNets-PyTorch pretrained loading, checksums, atomic saves, choosing where to resume."""

import collections
import hashlib
import logging
import os
import pickle
import random

import numpy as np
import pytest
import torch

from data.errors import InputError
from tests.support.models import release_like, save_hara
from trainer.checkpoint import checksum_path, latest_checkpoint, load_model, read_checkpoint, save_checkpoint
from trainer.model import ModelConfig, ResNet3D
from trainer.releases import load_pretrained

MEAN, STD = (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)


def config(**kw) -> ModelConfig:
    base = dict(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=8,
                pretrained=None, ft_begin="layer4", mean=MEAN, std=STD, value_scale=255.0)
    return ModelConfig(**{**base, **kw})


def pretrained_error(tmp_path, source: ResNet3D, target_cfg: ModelConfig, **kw) -> str:
    path = save_hara(tmp_path / "hara.pth", source, **kw)
    with pytest.raises(InputError) as info:
        load_pretrained(ResNet3D(target_cfg), path, target_cfg)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# --- pretrained weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, legacy", [("module.", False), ("", False), ("module.", True)])
def test_pretrained_trunk_loads_exactly_and_fc_stays_fresh(tmp_path, prefix, legacy):
    source = release_like().eval()
    path = save_hara(tmp_path / "resnet-10-kinetics.pth", source, prefix=prefix,
                     _use_new_zipfile_serialization=not legacy)
    cfg = config()
    torch.manual_seed(1)
    model = ResNet3D(cfg)
    fresh_fc = {k: v.clone() for k, v in model.fc.state_dict().items()}
    load_pretrained(model, path, cfg)

    src = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert torch.equal(value, fresh_fc[key.removeprefix("fc.")])
        else:
            assert torch.equal(value, src[key]), key
    assert model.fc.out_features == 2
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval().features(x), source.features(x))
    assert not checksum_path(path).exists()  # no sidecar: released files have none, and load anyway


def test_pretrained_bare_state_dict_and_files_without_num_batches_tracked(tmp_path):
    """Old PyTorch (the released models' era) saved BatchNorm without num_batches_tracked."""
    source = release_like().eval()
    bare = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(bare, tmp_path / "bare.pth")
    model = ResNet3D(config())
    load_pretrained(model, tmp_path / "bare.pth", config())
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval().features(x), source.features(x))


def test_shortcut_b_file_into_shortcut_a_model(tmp_path):
    message = pretrained_error(tmp_path, release_like(shortcut="B"), config(shortcut="A"))
    assert "model.shortcut" in message and "shortcut B" in message and "unexpected" in message
    assert "layer2.0.downsample.0.weight" in message and "model.depth" not in message


def test_shortcut_a_file_into_shortcut_b_model(tmp_path):
    message = pretrained_error(tmp_path, release_like(shortcut="A"), config(shortcut="B"))
    assert "model.shortcut" in message and "shortcut A" in message and "missing" in message


def test_depth_18_file_into_depth_10_model(tmp_path):
    # With its arch string the file says so at once ...
    message = pretrained_error(tmp_path, release_like(depth=18), config(depth=10), arch="resnet-18")
    assert "model.depth" in message and "resnet-18" in message
    # ... and without one (a bare state_dict) the extra layerN.1 blocks say it.
    torch.save(release_like(depth=18).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(InputError) as info:
        load_pretrained(ResNet3D(config()), tmp_path / "bare.pth", config())
    message = str(info.value)
    assert "\n" not in message and "model.depth=18" in message and "unexpected" in message
    assert "layer1.1.conv1.weight" in message and "model.shortcut" not in message


def test_bottleneck_file_into_basic_model(tmp_path):
    torch.save(release_like(depth=50).state_dict(), tmp_path / "r50.pth")
    cfg = config(depth=34)
    with pytest.raises(InputError) as info:
        load_pretrained(ResNet3D(cfg), tmp_path / "r50.pth", cfg)
    message = str(info.value)
    assert "model.depth=50" in message and "conv3/bn3" in message


def test_width_8_file_into_width_4_model(tmp_path):
    message = pretrained_error(tmp_path, release_like(width=8), config(width=4))
    assert "model.width=8" in message and "shape mismatch" in message
    assert "conv1.weight file (8, 3, 7, 7, 7) vs model (4, 3, 7, 7, 7)" in message
    assert "model.depth" not in message and "model.shortcut" not in message


def test_arch_string_mismatch(tmp_path):
    message = pretrained_error(tmp_path, release_like(), config(), arch="resnet-34")
    assert "resnet-34" in message and "model.depth" in message
    message = pretrained_error(tmp_path, release_like(), config(), arch="resnext-101")
    assert "'resnext-101'" in message and "resnet-N" in message


@pytest.mark.parametrize("how", ["text", "pickle", "torch-saved object", "list of tensors", "truncated"])
def test_file_that_is_not_a_checkpoint(tmp_path, how):
    path = tmp_path / "weights.pth"
    if how == "text":
        path.write_text("<html>404 Not Found</html>\n")
    elif how == "pickle":
        path.write_bytes(pickle.dumps(random.Random(0)))  # weights_only must refuse to run its constructor
    elif how == "torch-saved object":
        torch.save({"state_dict": random.Random(0)}, path)
    elif how == "list of tensors":
        torch.save([torch.ones(2)], path)
    else:
        save_hara(path, release_like())
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError) as info:
        load_pretrained(ResNet3D(config()), path, config())
    message = str(info.value)
    assert message.startswith(f"{path}: not a") and "\n" not in message
    if how in ("pickle", "torch-saved object"):
        assert "could run code" in message
    if how == "torch-saved object":
        assert "random.Random" in message


# --- checksums, extra, atomic saves ---------------------------------------------------------------------------

def test_save_read_round_trip_with_checksum_and_extra(tmp_path):
    torch.manual_seed(0)
    model = ResNet3D(config())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    scheduler.step()
    np_state = np.random.RandomState(3).get_state()
    extra = {"scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": [np_state[0], np_state[1].tolist(), np_state[2], np_state[3], np_state[4]],
             "python_rng": random.Random(5).getstate(), "mlflow_run_id": "0123abcd",
             "metrics": {"val_f1": np.float64(0.75), "n": np.int64(7), "ok": np.bool_(True)}}
    path = tmp_path / "checkpoints" / "epoch_0003.pth"
    save_checkpoint(path, model, config(), 3, optimizer, extra=extra)

    sidecar = checksum_path(path)
    assert sidecar.name == "epoch_0003.pth.sha256"
    assert sidecar.read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  epoch_0003.pth\n"
    state = read_checkpoint(path, require_checksum=True)
    assert state["epoch"] == 3 and state["arch"] == "resnet-10"
    assert torch.equal(state["torch_rng"], extra["torch_rng"])
    assert state["numpy_rng"] == extra["numpy_rng"] and all(type(v) is int for v in state["numpy_rng"][1])
    restored = np.random.RandomState()
    restored.set_state((state["numpy_rng"][0], np.array(state["numpy_rng"][1], dtype=np.uint32),
                        *state["numpy_rng"][2:]))
    assert restored.randint(1 << 30) == np.random.RandomState(3).randint(1 << 30)
    assert random.Random().setstate(state["python_rng"]) is None
    assert state["scheduler"] == scheduler.state_dict() and state["mlflow_run_id"] == "0123abcd"
    assert state["metrics"] == {"val_f1": 0.75, "n": 7, "ok": True}  # sklearn's numpy scalars, as Python ones
    assert [type(v) for v in state["metrics"].values()] == [float, int, bool]
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == model.conv1.weight.shape
    loaded, cfg = load_model(path, require_checksum=True)
    assert cfg == config()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_extra_must_survive_weights_only_loading(tmp_path):
    model = ResNet3D(config())
    with pytest.raises(TypeError, match=r"extra\['rng'\]\[1\].*numpy.*tolist"):
        save_checkpoint(tmp_path / "x.pth", model, config(), 1, extra={"rng": ["MT19937", np.zeros(3, np.uint32)]})
    with pytest.raises(TypeError, match=r"extra\['t'\] is a .*Pair"):
        save_checkpoint(tmp_path / "x.pth", model, config(), 1, extra={"t": collections.namedtuple("Pair", "a")(1)})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pth", model, config(), 1, extra={"epoch": 2})
    assert not any(tmp_path.iterdir())


def flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_is_a_checksum_mismatch(tmp_path):
    path = tmp_path / "epoch_0001.pth"
    save_checkpoint(path, ResNet3D(config()), config(), 1)
    flip_middle_byte(path)
    for read in (read_checkpoint, load_model):
        with pytest.raises(InputError, match="epoch_0001.pth: checksum mismatch: corrupt or half-written"):
            read(path)
    read_checkpoint(path, verify=False)  # the damage is inside tensor data: only the checksum sees it


def test_missing_sidecar_is_corrupt_only_when_required(tmp_path):
    path = tmp_path / "epoch_0001.pth"
    save_checkpoint(path, ResNet3D(config()), config(), 1)
    checksum_path(path).unlink()
    assert read_checkpoint(path)["epoch"] == 1
    with pytest.raises(InputError, match="epoch_0001.pth: no checksum file epoch_0001.pth.sha256"):
        read_checkpoint(path, require_checksum=True)
    checksum_path(path).write_text("not a digest\n")
    with pytest.raises(InputError, match="sha256: not a sha256 checksum file"):
        read_checkpoint(path)


def test_crash_during_save_keeps_the_previous_checkpoint_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    model = ResNet3D(config())
    save_checkpoint(path, model, config(), 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, config(), 2)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .tmp files, sidecar untouched
    assert read_checkpoint(path, require_checksum=True)["epoch"] == 1


# --- resuming -------------------------------------------------------------------------------------------------

def test_latest_checkpoint_falls_back_past_a_corrupt_one(tmp_path, caplog):
    model = ResNet3D(config())
    for epoch in (10, 20):
        save_checkpoint(tmp_path / f"epoch_{epoch:04d}.pth", model, config(), epoch)
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "epoch_0020.pth" and state["epoch"] == 20

    flip_middle_byte(tmp_path / "epoch_0020.pth")
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "epoch_0010.pth" and state["epoch"] == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "epoch_0020.pth" in warnings[0] and "epoch_0010.pth" in warnings[0] and "checksum mismatch" in warnings[0]


def test_latest_checkpoint_reads_last_pth_epoch_and_skips_half_written_files(tmp_path, caplog):
    model = ResNet3D(config())
    save_checkpoint(tmp_path / "epoch_0010.pth", model, config(), 10)
    save_checkpoint(tmp_path / "last.pth", model, config(), 12)
    assert latest_checkpoint(tmp_path)[0].name == "last.pth"
    # epoch 15: checkpoint renamed into place, crash before its sidecar
    save_checkpoint(tmp_path / "epoch_0015.pth", model, config(), 15)
    checksum_path(tmp_path / "epoch_0015.pth").unlink()
    # epoch 20: truncated
    save_checkpoint(tmp_path / "epoch_0020.pth", model, config(), 20)
    (tmp_path / "epoch_0020.pth").write_bytes((tmp_path / "epoch_0020.pth").read_bytes()[:500])
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "last.pth" and state["epoch"] == 12
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "epoch_0015.pth" in warnings and "epoch_0020.pth" in warnings and "last.pth (epoch 12)" in warnings


def test_latest_checkpoint_none(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "epoch_0001.pth").write_text("junk")
    assert latest_checkpoint(tmp_path) is None
    os.remove(tmp_path / "epoch_0001.pth")
