"""The trunk cache on real clips: keys and invalidation, resume, corruption, same logits as uncached."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from data.errors import InputError
from tests.support.commands import assert_one_line_error, fightwatch
from tests.support.training import TINY
from tests.support.trunk_cache import MODEL, cache_for, clip_sets, model_parts
from trainer.accel import AccelPlan, finetune_forward
from trainer.model import ResNet3D, split
from trainer.trunk_cache import TrunkCacheConfig


def files(directory: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in directory.rglob("*.npy")}


@pytest.fixture(scope="module")
def sets(prepared):
    return clip_sets(prepared)


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 0.05)])
def test_cached_views_give_the_logits_of_the_uncached_views(sets, tmp_path, precision, tolerance):
    model, trunk, head = model_parts()
    plan = AccelPlan(precision, "torch", False, "test")
    cache = cache_for(tmp_path, trunk, sets, plan=plan)
    assert cache.build() == {"built": len(sets[0]) + len(sets[1]), "reused": 0}
    cached_train, cached_val = cache.datasets()
    model.eval()
    for epoch in (1, 2, 5):
        cached_train.set_epoch(epoch)
        for index in (0, 3):
            activations, label = cached_train[index]
            assert activations.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
            x, same_label = sets[0].view(index, cached_train.view_of(index) + 1)  # view v is draw v + 1
            with torch.no_grad(), plan.autocast():
                expected = finetune_forward(trunk, head, x[None]).float()
                got = head(activations[None]).float()
            assert label == same_label
            torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    activations, _ = cached_val[1]
    with torch.no_grad():
        torch.testing.assert_close(head(activations[None].float()), model(sets[1][1][0][None]), rtol=0.05, atol=0.05)
    draws = {cached_train.view_of(0) for cached_train.epoch in range(1, 40)}
    assert draws == {0, 1, 2}  # epochs draw among all the cached views


@pytest.mark.slow  # an AOTInductor build of the tiny trunk
def test_the_trunk_compiled_caches_the_activations_eager_caches(sets, tmp_path, monkeypatch, caplog):
    """A real ResNet's trunk is compiled for the cache's passes (auto: trainer/compiled.py); forced here on the
    tiny one, its files hold eager's activations (fp32: within 1e-4)."""
    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path / "compiled"))
    _, trunk, _ = model_parts()
    built = {}
    for runtime in ("eager", "compile"):
        with caplog.at_level("INFO", logger="trainer"):
            cache_for(tmp_path / runtime, trunk, sets, runtime=runtime).build()
        built[runtime] = {p.relative_to(tmp_path / runtime): np.load(p)
                          for p in (tmp_path / runtime).rglob("*.npy")}
    assert "trunk cache passes: compile (compile: requested)" in caplog.text
    assert "compiled the model (AOTInductor, freezing, fp32)" in caplog.text
    assert built["compile"].keys() == built["eager"].keys() and len(built["eager"]) == len(sets[0]) + len(sets[1])
    for name, activations in built["eager"].items():
        np.testing.assert_allclose(built["compile"][name], activations, rtol=1e-4, atol=1e-4)


def test_a_changed_trunk_or_ft_begin_rebuilds_and_the_same_one_reuses(sets, tmp_path):
    _, trunk, _ = model_parts(seed=0)
    first = cache_for(tmp_path, trunk, sets)
    first.build()
    again = cache_for(tmp_path, model_parts(seed=0)[1], sets)
    assert again.key == first.key and again.build()["built"] == 0
    other_weights = cache_for(tmp_path, model_parts(seed=1)[1], sets)  # another checkpoint
    other_stage = cache_for(tmp_path, model_parts(seed=0, ft_begin="layer3")[1], sets)
    other_views = cache_for(tmp_path, trunk, sets, views=2)
    reextracted = clip_sets(sets[0].store.root.parent)
    entry = reextracted[0].store.index[reextracted[0].rows[0]["clip_id"]]
    entry["offsets"] = [[start, size + 1] for start, size in entry["offsets"]]  # other JPEG bytes, as re-extracted
    other_clips = cache_for(tmp_path, trunk, reextracted)
    assert len({first.key, other_weights.key, other_stage.key, other_views.key, other_clips.key}) == 5
    assert other_weights.build()["reused"] == 0
    assert [p.name for p in tmp_path.iterdir()] == [other_weights.key]  # the stale cache is removed


def test_a_trunk_with_the_same_weights_and_other_layer_settings_rebuilds(sets, tmp_path):
    """no_max_pool and conv1_t_stride change the trunk's function, not its weights."""
    model, trunk, _ = model_parts()
    keys = {cache_for(tmp_path, trunk, sets).key}
    for change in ({"no_max_pool": True}, {"conv1_t_stride": 2}):
        other = ResNet3D(dataclasses.replace(MODEL, **change))
        other.load_state_dict(model.state_dict())
        keys.add(cache_for(tmp_path, split(other, "layer4")[0], sets).key)
    assert len(keys) == 3


def test_an_interrupted_build_resumes_without_recomputing_finished_clips(sets, tmp_path):
    _, trunk, _ = model_parts()

    class Interrupted(Exception):
        pass

    calls = []
    original = sets[0].view

    def view_that_dies(index, draw):
        calls.append(index)
        if len(set(calls)) > 4:
            raise Interrupted
        return original(index, draw)

    sets[0].view = view_that_dies
    try:
        with pytest.raises(Interrupted):
            cache_for(tmp_path, trunk, sets).build()
    finally:
        del sets[0].view
    cache = cache_for(tmp_path, trunk, sets)
    done = files(cache.dir)
    assert len(done) == 4 and not list(cache.dir.rglob("*.tmp"))
    assert cache.build() == {"built": len(sets[0]) + len(sets[1]) - 4, "reused": 4}
    assert all(files(cache.dir)[name] == mtime for name, mtime in done.items())


def test_a_corrupt_cache_file_is_rebuilt_not_read(sets, tmp_path, caplog):
    _, trunk, _ = model_parts()
    cache = cache_for(tmp_path, trunk, sets)
    cache.build()
    victim = sorted((cache.dir / "train").glob("*.npy"))[2]
    good = victim.read_bytes()
    data = bytearray(good)
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert cache.build()["built"] == 1
    assert victim.name in caplog.text and "checksum" in caplog.text
    assert victim.read_bytes() == good


@pytest.mark.slow  # the installed command
def test_views_zero_and_a_cache_with_nothing_frozen_are_one_line(tmp_path):
    args = ["train", "--config", "configs/demo.yaml", f"run_dir={tmp_path}", *TINY]
    assert_one_line_error(fightwatch(*args, "train.trunk_cache={views: 0}"), "views must be >= 1")
    with pytest.raises(ValueError):
        TrunkCacheConfig(0)


def test_trunk_cache_on_a_model_that_trains_everything(prepared, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)
    result = fightwatch("train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY,
                        "train.trunk_cache={views: 2}")
    assert_one_line_error(result, "ft_begin is conv1")


@pytest.mark.slow  # the installed command
@pytest.mark.parametrize("mount_options, needle", [("size=64k", "No space left"), ("ro", "Read-only")])
def test_a_full_or_read_only_disk_is_a_clear_error_and_leaves_nothing(sets, tmp_path, mount_options, needle):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", mount_options, "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root) to make a full or read-only disk")
    try:
        _, trunk, _ = model_parts()
        with pytest.raises(InputError, match=needle) as error:
            cache_for(mount / "trunk_cache", trunk, sets).build()
        assert "train.trunk_cache=off" in str(error.value)
        assert not list(mount.rglob("*.tmp")) and not list(mount.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)
