"""int8 (trainer/quantize.py, `fightwatch quantize`, `--runtime int8`): the verdict on the accuracy it costs, and the
real thing on the demo's trained model: calibrated on the run's clips, evaluated before and after, kept or refused,
then scored with `--runtime int8` against the model's own path."""

import json
import subprocess

import pytest

from data.errors import InputError
from data.files import file_sha256
from tests.support.commands import FIGHTWATCH, ROOT, assert_one_line_error, clean_env
from trainer.compiled import choose_runtime
from trainer.quantize import QuantizeConfig, checked_program, quantized_path, report_path, verdict


def test_the_verdict_keeps_int8_within_the_bound_and_refuses_past_it():
    assert verdict(0.95, 0.95, 0.02)[0]
    assert verdict(0.95, 0.93, 0.02)[0]  # exactly the bound: kept
    assert not verdict(0.95, 0.925, 0.02)[0]
    accepted, why = verdict(0.9, 0.8, 0.05)
    assert not accepted and "0.9000 -> 0.8000" in why and "a drop of 0.1000" in why and "refused" in why
    assert verdict(0.8, 0.9, 0.0)[0]  # int8 may also do better


def test_int8_is_only_ever_requested():
    assert choose_runtime("int8", 300_000, "ipex")[0] == "int8"
    assert all(choose_runtime("auto", n, "torch")[0] != "int8" for n in (1, 300_000, 63_000_000))
    with pytest.raises(ValueError, match="calibration_clips"):
        QuantizeConfig(0, 0.02)
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        QuantizeConfig(8, 1.5)


def fightwatch(tmp_path, *args):
    """The command, its compile cache in the test's folder."""
    return subprocess.run([str(FIGHTWATCH), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=clean_env(FIGHTWATCH_COMPILE_CACHE=str(tmp_path / "cache")))


@pytest.mark.slow  # the demo's run, then calibration, two evaluations and an AOTInductor build
def test_quantize_measures_keeps_and_int8_scores_as_the_model_does(demo_run, tmp_path):
    run_dir, _ = demo_run
    model = tmp_path / "model.pth"
    model.write_bytes((run_dir / "model.pth").read_bytes())
    common = ["--config", "configs/demo.yaml", f"run_dir={run_dir}", "--model", model, "--data", run_dir / "videos",
              "--subset", "validation", "--clips", 3]

    result = fightwatch(tmp_path, "quantize", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path(model).read_text())
    assert report["accepted"] and report["program"] == str(quantized_path(model))
    assert report["before"]["video_accuracy"] - report["after"]["video_accuracy"] <= 0.02
    assert report["after"]["precision"] == "int8" and report["calibration_clips"] == 64
    assert "video accuracy" in result.stdout and "accepted" in result.stdout

    timeline = run_dir / "heldout"
    outputs = {}
    for runtime in ("eager", "int8"):
        (tmp_path / "input").write_text("timeline.mp4\n")
        out = tmp_path / f"{runtime}.json"
        result = fightwatch(tmp_path, "score", "--input", tmp_path / "input", "--video_root", timeline, "--output", out,
                            "--model", model, "--runtime", runtime, "--precision", "fp32")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{runtime}" in result.stderr
        outputs[runtime] = json.loads(out.read_text())[0]["clips"]
    assert len(outputs["int8"]) == len(outputs["eager"])
    pairs = [(a["fight_prob"], b["fight_prob"]) for a, b in zip(outputs["eager"], outputs["int8"])]
    agree = sum((a >= 0.5) == (b >= 0.5) for a, b in pairs) / len(pairs)
    assert agree >= 0.9, pairs  # int8's rounding flips only segments near the boundary
    assert sum(abs(a - b) for a, b in pairs) / len(pairs) < 0.1, pairs

    # another version of the checkpoint: its int8 model is stale, said so, not run
    with open(model, "ab") as f:
        f.write(b"\0")
    result = fightwatch(tmp_path, "score", "--input", tmp_path / "input", "--video_root", timeline, "--output",
                        tmp_path / "stale.json", "--model", model, "--runtime", "int8")
    assert_one_line_error(result, "quantized from another version of model.pth")


def test_int8_runs_only_what_quantize_kept_for_this_very_checkpoint(tmp_path):
    model = tmp_path / "model.pth"
    model.write_bytes(b"weights")
    with pytest.raises(InputError, match="no int8 model beside it .model.int8.pt2.; run `fightwatch quantize"):
        checked_program(model)
    quantized_path(model).write_bytes(b"program")
    report = {"checkpoint_sha256": file_sha256(model), "accepted": False,
              "verdict": "video accuracy 0.9500 -> 0.9000 with int8 (a drop of 0.0500; ...): refused"}
    report_path(model).write_text(json.dumps(report))
    with pytest.raises(InputError, match="int8 was refused for this model .video accuracy 0.9500 -> 0.9000"):
        checked_program(model)
    report_path(model).write_text(json.dumps({**report, "accepted": True}))
    assert checked_program(model) == quantized_path(model)
    model.write_bytes(b"weights, trained on")
    with pytest.raises(InputError, match="quantized from another version of model.pth"):
        checked_program(model)
