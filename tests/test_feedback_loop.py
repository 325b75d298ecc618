"""The operator's loop end to end on the demo's model: harmless crowds (runners and dancers, a scene the demo never
trains on) alarm, an operator marks them false in the review app, a model retrained from the flagged clips and their
view clips stops alarming on them and still catches the held-out fight.

It runs scripts/bench/bench_feedback_loop.py (real `fightwatch watch`, the review app's REST API, `review
--export`, `prepare`, `train` with the trunk cache) on a few cameras; the bench states the timings."""

import json
import subprocess
import sys

from tests.support.commands import ROOT


def test_flagged_false_alarms_retrain_the_model(demo_run, tmp_path):
    run_dir, _ = demo_run
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_feedback_loop.py"),
                             "--base", str(run_dir), "--cameras", "6", "--work", str(tmp_path),
                             "--out", str(tmp_path / "loop.json")], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    loop = json.loads((tmp_path / "loop.json").read_text())
    assert loop["cameras_alarming_before"] >= 4  # fast motion looks like a fight to the demo's model
    assert loop["flagged"] == loop["flagged_clips"] >= 4  # each marked alert's review clip exported
    assert loop["view_clips"] >= loop["flagged"]  # and where watch scored regions in them
    assert loop["cameras_alarming_after"] == 0
    assert loop["fight_caught_after"]
