"""`fightwatch review`: the installed command over a real store (the app itself: test_review_app.py)."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.support.commands import FIGHTWATCH, ROOT, assert_one_line_error, fightwatch, free_port
from tests.support.review_fixtures import add_alert
from trainer.serve.alerting.store import AlertStore

pytestmark = pytest.mark.slow  # every test here runs the installed command


def test_help_and_one_line_errors(tmp_path):
    help_text = fightwatch("review", "--help").stdout
    assert "--ui HOST:PORT" in help_text and "--export DIR" in help_text and "FIGHTWATCH_UI_TOKEN" in help_text
    assert_one_line_error(fightwatch("review", "--ui", "127.0.0.1:8080", "--store", str(tmp_path / "none.db")),
                          "none.db: no alert store there")
    AlertStore(tmp_path / "alerts.db").close()
    store = ["--store", str(tmp_path / "alerts.db")]
    assert_one_line_error(fightwatch("review", "--ui", "somewhere", *store), "--ui somewhere: expected HOST:PORT")
    env = {k: v for k, v in os.environ.items() if k != "FIGHTWATCH_UI_TOKEN"}
    result = subprocess.run([str(FIGHTWATCH), "review", "--ui", "0.0.0.0:0", *store], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "would be open to the network: set a token in $FIGHTWATCH_UI_TOKEN")
    (tmp_path / "file").write_text("")
    assert_one_line_error(fightwatch("review", "--export", str(tmp_path / "file"), *store), "is a file")


def test_export_then_again(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        add_alert(store, tmp_path, "a1", clip_frames=10)
        store.review("a1", "true_positive", "ana")
    args = ["review", "--export", str(tmp_path / "out"), "--store", str(tmp_path / "alerts.db")]
    first, second = fightwatch(*args), fightwatch(*args)
    assert first.returncode == 0 and first.stdout.startswith("1 clip(s) copied, 0 moved, 0 removed, 0 already there")
    assert second.stdout.startswith("0 clip(s) copied, 0 moved, 0 removed, 1 already there")
    assert (tmp_path / "out/fights/a1.mp4").is_file()


def test_the_app_serves_a_store_and_stops_on_sigterm(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        add_alert(store, tmp_path, "a1", media=False)
        store.record_camera_event("gate", "offline", "stream lost")
    port = free_port()
    zone = "{camera: gate, name: door, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]], required: true}"
    process = subprocess.Popen([str(FIGHTWATCH), "review", "--ui", f"127.0.0.1:{port}", "--store",
                                str(tmp_path / "alerts.db"), "--set", f"watch.zones=[{zone}]"], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert f"review app at http://127.0.0.1:{port}/ (no token: this machine only)" in process.stderr.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/alerts") as response:
            assert [a["id"] for a in json.load(response)] == ["a1"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cameras") as response:
            assert [(c["id"], c["status"]) for c in json.load(response)] == [("gate", "offline")]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config") as response:  # the config's zones
            assert json.load(response)["zones"] == [{"camera": "gate", "name": "door", "required": True,
                                                     "polygon": [[0, 0], [0.5, 0], [0.5, 0.5]]}]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0 and time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
