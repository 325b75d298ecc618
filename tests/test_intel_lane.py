"""The Intel lane (bash scripts/test.sh --intel): training, with and without the trunk cache, and scoring with
accel.kernels ipex, for real, in the lane's venv (torch 2.8 + Intel Extension for PyTorch 2.8). Outside that venv
the module skips: stock torch 2.13 has no IPEX."""

import json

import pytest

from tests.support.commands import clean_env, fightwatch
from tests.support.training import copy_of, mlflow_runs, run

pytest.importorskip("intel_extension_for_pytorch", reason="IPEX runs in bash scripts/test.sh --intel")
pytestmark = [pytest.mark.intel, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained_with_ipex(prepared, tmp_path_factory):
    run_dir = copy_of(prepared, tmp_path_factory.mktemp("ipex"))
    result = run("train", run_dir, "accel.kernels=ipex")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_training_on_ipex_is_recorded_in_mlflow(trained_with_ipex):
    _, (mlflow_run,) = mlflow_runs(trained_with_ipex)
    params, metrics = mlflow_run.data.params, mlflow_run.data.metrics
    assert params["accel.kernels"] == "ipex" and params["accel.ipex_version"].startswith("2.8")
    assert "kernels ipex 2.8" in params["accel.reason"] and params["accel.torch_version"].startswith("2.8")
    assert 0 <= metrics["val_loss"] < 10 and metrics["train_skipped_steps"] == 0


# IPEX and oneDNN held to AVX2: IPEX then reports what it reports on an AMD Zen 3 (tier AVX2, no bf16 prepacking)
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.parametrize("isa_cap", [{}, AVX2_ONLY], ids=["this-cpu", "avx2-only"])
def test_training_with_the_trunk_cache_on_ipex_in_bf16(prepared, tmp_path, isa_cap):
    """bf16 on IPEX: prepacked where IPEX says oneDNN can, else weights_prepack=False, where ipex.optimize would
    otherwise refuse bf16 with an AssertionError."""
    run_dir = copy_of(prepared, tmp_path)
    result = run("train", run_dir, "accel.kernels=ipex", "accel.precision=bf16", "model.ft_begin=layer4",
                 "train.trunk_cache={views: 2}", "train.epochs=3", env=clean_env(**isa_cap))
    assert result.returncode == 0, result.stderr[-3000:]
    _, (mlflow_run,) = mlflow_runs(run_dir)
    params = mlflow_run.data.params
    assert (params["accel.kernels"], params["accel.precision"]) == ("ipex", "bf16")
    assert (params["accel.weights_prepack"] == "False") == ("not prepacked" in params["accel.reason"])
    if isa_cap:
        assert params["accel.weights_prepack"] == "False" and "IPEX's tier here: AVX2" in params["accel.reason"]
    assert mlflow_run.data.metrics["trunk_cache_clips_per_s"] > 0


def test_scoring_on_ipex_gives_stock_torch_s_scores(trained_with_ipex, tmp_path):
    videos = trained_with_ipex / "videos"
    names = sorted(str(p.relative_to(videos)) for p in videos.rglob("*.mp4"))[:2]
    (tmp_path / "input").write_text("\n".join(names) + "\n")
    outputs = {}
    for kernels in ("ipex", "torch"):
        outputs[kernels] = tmp_path / f"{kernels}.json"
        result = fightwatch("score", "--input", str(tmp_path / "input"), "--video_root", str(videos), "--model",
                            str(trained_with_ipex / "model.pth"), "--output", str(outputs[kernels]),
                            "--precision", "fp32", "--kernels", kernels)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"kernels {kernels}" in result.stderr
    on_ipex, on_torch = (json.loads(outputs[k].read_text()) for k in ("ipex", "torch"))
    assert [e["video"] for e in on_ipex] == names and len(on_ipex) == len(on_torch)
    for a, b in zip(on_ipex, on_torch):
        assert [c["segment"] for c in a["clips"]] == [c["segment"] for c in b["clips"]]
        for clip_a, clip_b in zip(a["clips"], b["clips"]):
            assert clip_a["fight_prob"] == pytest.approx(clip_b["fight_prob"], abs=1e-4)
