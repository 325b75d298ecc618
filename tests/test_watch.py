"""`fightwatch watch`: real videos, real PyAV streams over local HTTP, real tiny models, no mocks."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest
import torch

from data.errors import InputError
from data.synthetic import write_wide
from tests.support.models import MODEL_CFG
from tests.support.mosquitto import needs_mosquitto
from tests.support.videos import decoded_frames, write_video
from tests.support.watch import FPS, models, watch  # noqa: F401  (models is a fixture)
from trainer.checkpoint import save_checkpoint
from trainer.model import ResNet3D
from trainer.serve.alerting.store import AlertStore
from trainer.serve.runtime.regions import RegionConfig
from trainer.serve.runtime.scoring import ScoreConfig, hottest_box, score_video
from trainer.serve.runtime.sources import parse_sources
from trainer.serve.runtime.window_queue import WindowQueue

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV, SECRET = "FIGHTWATCH_WATCH_TEST_SECRET", "w4tch-Secret-Value-31"


def n_windows(frames: int, stride: int, duration: int = 16) -> int:
    """Windows every `stride` frames, plus one on the last frames when some are left (as `score` does)."""
    regular = (frames - duration) // stride + 1
    return regular + ((frames - duration) % stride != 0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    frames = {"a.mp4": 50, "b.mp4": 40, "four.mp4": 100, "long.mp4": 250, "cam.ts": 100}  # at 25 fps
    return {("ts" if name.endswith(".ts") else name.split(".")[0]): write_video(folder / name, n, fps=FPS)
            for name, n in frames.items()}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_file_cameras_raise_one_alert_each_with_snapshot_and_clip(models, videos, tmp_path, capsys):
    alerts, out_dir = tmp_path / "alerts.jsonl", tmp_path / "out"
    rc, stats, stdout = watch(capsys, "--model", models["fight"], "--no-realtime", "--alerts", alerts,
                              "--out-dir", out_dir, "--consecutive", 2, "--stride", 8, "--stats-every", 0,
                              f"gate={videos['a']}", videos["b"])
    assert rc == 0 and stdout == []  # --alerts replaces stdout
    events = read_jsonl(alerts)
    assert {e["camera"] for e in events} == {"gate", "b"}
    for camera, frames in (("gate", 50), ("b", 40)):
        mine = [e for e in events if e["camera"] == camera]
        assert [e["event"] for e in mine] == ["start", "end"], mine
        start, end = mine
        assert start["alert_id"] == end["alert_id"]
        # raised when the K-th (2nd) hot window ends: frames 8..23, i.e. at 24 / fps; it began with the 1st
        assert start["raised_s"] == pytest.approx((8 + 16) / FPS, abs=1 / FPS)
        assert start["start_s"] == pytest.approx(0.0, abs=1 / FPS)
        assert start["peak_prob"] > 0.99 and start["threshold"] == 0.5
        started, raised = datetime.fromisoformat(start["start_time"]), datetime.fromisoformat(start["raised_time"])
        assert (raised - started).total_seconds() == pytest.approx(start["raised_s"] - start["start_s"], abs=0.01)
        assert end["reason"] == "source ended" and end["end_s"] == pytest.approx(frames / FPS, abs=1 / FPS)
        assert end["peak_prob"] >= start["peak_prob"]
        snapshot, clip = Path(start["snapshot"]), Path(start["clip"])
        assert snapshot.parent == clip.parent == out_dir / camera
        assert decoded_frames(snapshot) == 1
        with av.open(str(clip)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            clip_frames = list(container.decode(video=0))
        assert len(clip_frames) == 24  # the frames before the raise (clip_seconds 5 > 0.96 s)
        assert clip_frames[-1].time == pytest.approx(23 / FPS, abs=0.002)
        full = Path(end["clip"])  # the review clip: the whole alert, the video's end included
        assert full.name == f"{end['alert_id']}-full.mp4" and decoded_frames(full) == frames
        assert not list(out_dir.rglob(".*"))  # no temp files left behind

    cams = stats["cameras"]
    for camera, frames in (("gate", 50), ("b", 40)):
        assert cams[camera]["status"] == "finished"
        assert cams[camera]["frames_in"] == frames
        assert cams[camera]["windows"] == n_windows(frames, 8)
        assert cams[camera]["alerts"] == 1 and cams[camera]["windows_dropped"] == 0
    total = stats["total"]
    assert total["frames_in"] == 90 and total["alerts"] == 2
    assert total["windows"] == cams["gate"]["windows"] + cams["b"]["windows"] == 10


@pytest.mark.parametrize("video, budget", [("a", 0), ("b", 0), ("wide", 2)])  # a: 50 frames, a tail window; b: 40,
def test_watch_scores_the_windows_score_scores(models, videos, tmp_path, capsys, video, budget):  # a tail overlapping
    """`watch --no-realtime --stride 16` and `score` cut the same windows (trainer/serve/runtime/windows.py) from the same
    decoded, resized frames, and the same regions of them, so a model gives both the same probabilities and boxes."""
    torch.manual_seed(1)
    model = ResNet3D(MODEL_CFG).eval()
    with torch.no_grad():  # logits of a random model differ by ~30: scaled so the probabilities are not all 0
        model.fc.weight.mul_(0.05)
    save_checkpoint(tmp_path / "random.pth", model, MODEL_CFG, epoch=1)
    if video == "wide":  # a small fight among bystanders in a 16:9 view: motion regions beside the centre square
        videos = {video: tmp_path / "wide.mp4"}
        write_wide(videos[video], 3, width=320, height=180, fight_width=0.2, calm_before=0.6, fight=1.0,
                   calm_after=0.4)
    scored = score_video(model, MODEL_CFG, videos[video], ScoreConfig(16, 8, RegionConfig(budget=budget)))
    rc, stats, _ = watch(capsys, "--model", tmp_path / "random.pth", "--no-realtime", "--stride", 16, "--precision",
                         "fp32", "--scores", tmp_path / "scores.jsonl", "--out-dir", tmp_path / "out",
                         "--set", f"watch.regions.budget={budget}", "--set", "watch.calm_recheck_s=0", videos[video])
    watched = sorted(read_jsonl(tmp_path / "scores.jsonl"), key=lambda w: w["start_s"])
    assert rc == 0 and stats["total"]["windows"] == len(scored["clips"]) == len(watched)
    for clip, window in zip(scored["clips"], watched):
        assert window["start_s"] == pytest.approx(clip["start_s"], abs=1e-3)
        assert window["end_s"] == pytest.approx(clip["end_s"], abs=1e-3)
        assert window["fight_prob"] == pytest.approx(clip["fight_prob"], abs=1e-5)
        assert window.get("box") == (list(hottest_box(clip)) if budget else None)
    assert len({round(w["fight_prob"], 4) for w in watched}) > 1  # the windows differ: a real comparison
    if budget:  # the comparison covers motion regions, not the centre square alone
        assert any(len(clip["regions"]) > 1 for clip in scored["clips"])


def test_calm_views_keep_their_scores_a_while_and_hot_ones_are_scored_every_window(models, tmp_path, capsys):
    """region_memory.py in the watch loop: on a wide calm scene (bystanders who walk, a group that stands), a calm
    model's scores are kept for most views; a model that calls everything a fight has every view scored."""
    wide = tmp_path / "wide.mp4"
    write_wide(wide, 3, width=320, height=180, fight_width=0.2, calm_before=1.0, fight=1.0, calm_after=1.0, calm=True)
    counts = {}
    for says in ("calm", "fight"):
        rc, stats, _ = watch(capsys, "--model", models[says], "--no-realtime", "--stride", 8, "--out-dir",
                             tmp_path / says, "--alerts", tmp_path / f"{says}.jsonl", "--stats-every", 0,
                             "--set", "watch.regions.budget=2", wide)
        assert rc == 0
        counts[says] = stats["cameras"]["wide"]
    calm, fight = counts["calm"], counts["fight"]
    assert calm["windows"] == fight["windows"] == n_windows(75, 8)
    assert calm["views_scored"] + calm["views_kept"] > calm["windows"]  # the scene moves: regions besides the square
    assert calm["views_kept"] > calm["views_scored"]  # 1 s of stream time at stride 8: about 3 of 4 windows kept
    assert fight["views_kept"] == 0 and fight["alerts"] == 1


def test_calm_model_raises_nothing(models, videos, tmp_path, capsys):
    rc, stats, stdout = watch(capsys, "--model", models["calm"], "--no-realtime", "--out-dir", tmp_path / "out",
                              videos["a"], videos["b"])
    assert rc == 0 and stdout == []
    assert stats["total"]["alerts"] == 0 and stats["total"]["windows"] == 10 and stats["total"]["frames_in"] == 90
    assert not any((tmp_path / "out").rglob("*.jpg")) and not any((tmp_path / "out").rglob("*.mp4"))


@pytest.mark.parametrize("bad", ["missing file", "refused url"])
def test_a_bad_camera_is_reported_and_the_good_one_goes_on(models, videos, tmp_path, capsys, caplog, bad):
    url = str(tmp_path / "nope.mp4") if bad == "missing file" else f"http://127.0.0.1:{closed_port()}/x.mp4"
    rc, stats, events = watch(capsys, "--model", models["fight"], "--no-realtime", "--out-dir", tmp_path / "out",
                              "--max-reconnects", 1, "--reconnect-delay", 0.05, f"bad={url}", f"good={videos['a']}")
    assert rc == 1  # a camera failed
    good, broken = stats["cameras"]["good"], stats["cameras"]["bad"]
    assert good["status"] == "finished" and good["frames_in"] == 50 and good["alerts"] == 1
    assert [e["event"] for e in events] == ["start", "end"] and {e["camera"] for e in events} == {"good"}
    assert broken["status"] == "failed" and broken["frames_in"] == 0
    if bad == "missing file":
        assert broken["open_failures"] == 1 and broken["reconnects"] == 0  # files are not retried
        assert broken["error"] == "no such video file"
    else:
        assert broken["open_failures"] == 2 and broken["reconnects"] == 1 and broken["kind"] == "stream"
        assert "cannot open" in broken["error"] and "refused" in broken["error"].lower()
    assert "camera bad" in caplog.text


def test_no_usable_source_or_no_model_is_an_input_error(models, tmp_path, capsys):
    with pytest.raises(InputError, match="no camera source could be opened: a .*no such video file; b .*cannot open"):
        watch(capsys, "--model", models["fight"], "--out-dir", tmp_path / "out",
              tmp_path / "a.mp4", f"b=http://127.0.0.1:{closed_port()}/x.ts")
    with pytest.raises(InputError, match="model file not found"):
        watch(capsys, "--model", tmp_path / "absent.pth", tmp_path / "a.mp4")
    with pytest.raises(InputError, match="given more than once"):
        watch(capsys, "--model", models["fight"], "x=a.mp4", "x=b.mp4")


class FlakyStream(ThreadingHTTPServer):
    """Serves an MPEG-TS file as a live stream (no Content-Length); the first response stops after `cut` bytes."""

    daemon_threads = True

    def __init__(self, data: bytes, cut: int):
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.data, self.cut, self.requests = data, cut, 0

    def handle_error(self, request, client_address):
        pass


class FlakyHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        body = self.server.data[:self.server.cut] if self.server.requests == 1 else self.server.data
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_stream(videos):
    data = Path(videos["ts"]).read_bytes()
    server = FlakyStream(data, len(data) // 2)
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_stream_reconnects_after_a_drop_and_goes_on(models, flaky_stream, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="trainer.serve")
    url = f"http://127.0.0.1:{flaky_stream.server_port}/live/cam.ts"
    rc, stats, events = watch(capsys, "--model", models["fight"], "--out-dir", tmp_path / "out",
                              "--store", tmp_path / "alerts.db", "--max-reconnects", 1, "--reconnect-delay", 0.05, url)
    cam = stats["cameras"]["127.0.0.1-live-cam"]
    assert flaky_stream.requests == 2
    assert cam["kind"] == "stream" and cam["reconnects"] == 1 and cam["drops"] == 2
    assert cam["status"] == "gave_up" and rc == 1  # the second connection ended too, and one reconnect was all
    assert 100 + 16 < cam["frames_in"] < 200  # part of the first connection, then the whole video
    assert "reconnecting" in caplog.text and "connected again" in caplog.text
    # one alert that lasted across the drop, on a clock that kept running
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[1]["reason"] == "source lost" and events[1]["end_s"] > 100 / FPS + 0.5
    assert decoded_frames(events[0]["clip"]) > 0
    with AlertStore(tmp_path / "alerts.db") as store:  # the camera's ups and downs, oldest first
        changes = list(reversed(store.camera_events()))
        assert [e.kind for e in changes] == ["online", "reconnecting", "online", "offline"]
        assert changes[1].detail.startswith("stream lost: ") and changes[2].detail == "after 1 reconnect(s)"
        assert changes[3].detail.startswith("gave_up: stream lost: ")
        assert store.alert(events[0]["alert_id"]).alert.end_reason == "source lost"


def test_a_camera_over_the_picture_size_cap_is_refused_as_score_refuses_the_file(models, videos, flaky_stream,
                                                                                  tmp_path, capsys, caplog,
                                                                                  monkeypatch):
    """data.clips.MAX_PIXELS (8K) caps the cameras as it caps `score` and `prepare`: here lowered below the test
    videos' 64x48, so a file camera and a stream of them are refused when they open (the file failed, the stream
    retried), the status and log say why, and a smaller camera goes on."""
    monkeypatch.setattr("data.clips.MAX_PIXELS", 64 * 48 - 1)
    with pytest.raises(InputError, match="video too large: 64x48 is over"):
        score_video(ResNet3D(MODEL_CFG), MODEL_CFG, videos["a"], ScoreConfig(stride=16, batch_size=8))
    small = write_video(tmp_path / "small.mp4", 40, size=(48, 32), fps=FPS)
    url = f"http://127.0.0.1:{flaky_stream.server_port}/live/cam.ts"
    rc, stats, _ = watch(capsys, "--model", models["calm"], "--no-realtime", "--out-dir", tmp_path / "out",
                         "--max-reconnects", 1, "--reconnect-delay", 0.05, f"big={videos['a']}", f"live={url}",
                         f"small={small}")
    cams = stats["cameras"]
    assert rc == 1 and cams["small"]["status"] == "finished" and cams["small"]["frames_in"] == 40
    for camera, attempts in (("big", 1), ("live", 2)):
        assert cams[camera]["status"] == "failed" and cams[camera]["frames_in"] == 0
        assert cams[camera]["open_failures"] == attempts and cams[camera]["error"].startswith(
            "video too large: 64x48 is over "), cams[camera]
        logged = [r.getMessage() for r in caplog.records if r.name == "trainer.serve.runtime.cameras"
                  and r.getMessage().startswith(f"camera {camera} (") and "video too large: 64x48" in r.getMessage()]
        assert len(logged) == attempts, caplog.text


@pytest.fixture
def receiver():
    got, arrived = [], threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((dict(self.headers), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            arrived.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.got = got
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_receives_the_alerts_and_the_secret_stays_out_of_logs(models, videos, receiver, tmp_path, capsys,
                                                                       caplog, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    rc, stats, stdout = watch(capsys, "--model", models["fight"], "--no-realtime", "--out-dir", tmp_path / "out",
                              "--webhook", url, "--webhook-secret-env", SECRET_ENV, f"door={videos['b']}")
    assert rc == 0
    assert [payload for _, payload in receiver.got] == stdout  # the webhook gets what stdout shows, in order
    assert [p["event"] for _, p in receiver.got] == ["start", "end"]
    headers, start = receiver.got[0]
    assert headers["X-Fightwatch-Secret"] == SECRET
    assert start["camera"] == "door" and Path(start["snapshot"]).is_file() and Path(start["clip"]).is_file()
    assert SECRET not in caplog.text and SECRET not in json.dumps(stats)


@pytest.mark.slow  # replays 4 s of video in real time
def test_realtime_replay_takes_the_video_length(models, videos, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="trainer.serve")
    common = ("--model", models["calm"], "--out-dir", tmp_path / "out", videos["four"])  # 100 frames: 4 s
    _, fast, _ = watch(capsys, "--no-realtime", *common)
    caplog.clear()
    _, paced, _ = watch(capsys, "--stats-every", 0.5, *common)
    # paced replay cannot end before the video's 4 s, however fast the machine (a lower bound: load only adds)
    assert paced["elapsed_s"] >= 3.9 and paced["total"]["frames_in"] == fast["total"]["frames_in"] == 100
    assert fast["total"]["windows_dropped"] == 0  # a file replayed as fast as possible waits for scoring
    assert caplog.text.count("watch stats: ") >= 4  # logged periodically


def test_max_seconds_stops_a_replay_and_ends_its_alert(models, videos, tmp_path, capsys):
    rc, stats, events = watch(capsys, "--model", models["fight"], "--out-dir", tmp_path / "out", "--stride", 4,
                              "--consecutive", 1, "--max-seconds", 1.5, videos["long"])  # 10 s, in real time
    assert rc == 0 and stats["elapsed_s"] >= 1.5  # stopped by --max-seconds, not by the 10 s video's end
    assert stats["cameras"]["long"]["status"] == "stopped" and 0 < stats["cameras"]["long"]["frames_in"] < 250
    assert [e["event"] for e in events] == ["start", "end"] and events[1]["reason"] == "max-seconds"
    assert decoded_frames(events[0]["clip"]) == 16  # the one window before the raise


@pytest.mark.slow  # a subprocess
def test_ctrl_c_stops_cleanly(models, videos, tmp_path):
    code = ("import logging, sys; from cluster.cli import build_parser; from cluster.commands.watch import run; "
            "logging.basicConfig(level=logging.INFO); sys.exit(run(build_parser('watch').parse_args(sys.argv[1:])))")
    argv = ["watch", "--model", models["fight"], "--out-dir", tmp_path / "out", "--store", tmp_path / "alerts.db",
            "--stride", 4, "--consecutive", 1, videos["long"]]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, proc.kill)  # a hang fails the test instead of blocking the suite
    watchdog.start()
    try:
        start = json.loads(proc.stdout.readline())  # blocks until the first alert
        assert start["event"] == "start"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    end = json.loads(out.splitlines()[-1])
    assert end["event"] == "end" and end["alert_id"] == start["alert_id"] and end["reason"] == "stopped"
    stats = json.loads(err.splitlines()[-1])
    assert stats["event"] == "stats" and stats["cameras"]["long"]["status"] == "stopped"
    assert stats["cameras"]["long"]["frames_in"] < 250
    assert decoded_frames(start["clip"]) > 0 and decoded_frames(start["snapshot"]) == 1
    with AlertStore(tmp_path / "alerts.db") as store:
        assert store.alert(start["alert_id"]).alert.end_reason == "stopped"
        assert store.cameras()[0].detail == "stopped"


def test_sources_get_ids_and_credentials_stay_out_of_display():
    sources = parse_sources(["/v/gate.mp4", "/w/gate.mp4", "lobby=rtsp://user:pw@10.0.0.5:554/live/ch1?token=t0k",
                             "rtsp://10.0.0.6/stream?channel=1", "/dev/video0", "file:///v/yard.mkv"])
    assert [(s.camera, s.kind) for s in sources] == [
        ("gate", "file"), ("gate-2", "file"), ("lobby", "stream"), ("10.0.0.6-stream", "stream"),
        ("video0", "device"), ("yard", "file")]
    assert sources[2].url == "rtsp://user:pw@10.0.0.5:554/live/ch1?token=t0k"
    assert sources[2].display == "rtsp://***@10.0.0.5:554/live/ch1?..."
    assert sources[5].url == "/v/yard.mkv"


def test_window_queue_is_round_robin_and_drops_the_oldest_of_a_live_camera():
    queue, stop = WindowQueue(max_per_camera=3), threading.Event()
    for i in range(5):
        queue.put("a", ("a", i), block=False, stop=stop)
    queue.put("b", ("b", 0), block=False, stop=stop)
    assert queue.depth("a") == 3  # a2, a3, a4: the two oldest were dropped
    assert queue.take(3, timeout=0) in ([("a", 2), ("b", 0), ("a", 3)], [("b", 0), ("a", 2), ("a", 3)])
    assert queue.take(10, timeout=0) == [("a", 4)]
    t0 = time.monotonic()
    assert queue.take(10, timeout=0.05) == [] and time.monotonic() - t0 >= 0.04


@pytest.mark.slow  # a subprocess
def test_watch_through_the_installed_command(tmp_path):
    from tests.support.commands import assert_one_line_error, fightwatch

    assert "watch" in fightwatch("--help").stdout
    assert_one_line_error(fightwatch("watch", "--model", str(tmp_path / "missing.pth"), str(tmp_path / "a.mp4")),
                          "missing.pth")


@pytest.mark.slow  # two `fightwatch watch` processes and a broker
@needs_mosquitto
def test_watch_records_alerts_and_camera_events_in_the_store_and_on_mqtt(models, videos, tmp_path):
    from tests.support.commands import fightwatch
    from tests.support.mosquitto import Mosquitto, Subscriber

    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port, "fw/#")
    mqtt = json.dumps(dict(host="127.0.0.1", port=broker.port, topic_prefix="fw", client_id="watch-test",
                           username_env=None, password_env=None, tls=False))
    store_path = tmp_path / "alerts.db"
    common = ["watch", "--model", str(models["fight"]), "--no-realtime", "--out-dir", str(tmp_path / "out"),
              "--store", str(store_path), "--alerts", str(tmp_path / "alerts.jsonl"), "--set", f"sinks.mqtt={mqtt}"]
    try:
        first = fightwatch(*common, f"gate={videos['a']}")
        assert first.returncode == 0, first.stderr[-3000:]
        with AlertStore(store_path) as store:
            (alert,) = store.alerts()
            assert alert.camera == "gate" and alert.state == "ended" and alert.end_reason == "source ended"
            assert alert.threshold == 0.5 and alert.end_s == pytest.approx(50 / FPS, abs=1 / FPS)
            assert Path(alert.clip).is_file() and Path(alert.snapshot).is_file() and alert.review == "unreviewed"
            assert [(e.kind, e.detail) for e in store.camera_events("gate")] == [("offline", "finished"),
                                                                                 ("online", None)]
        (start, end) = read_jsonl(tmp_path / "alerts.jsonl")
        assert start["alert_id"] == end["alert_id"] == alert.id

        # a cap of 1 kB: retention at the start of the second run deletes the first run's files, keeping its row
        second = fightwatch(*common, "--set", "watch.retention.media_cap_mb=0.001", f"gate={videos['b']}")
        assert second.returncode == 0, second.stderr[-3000:]
        with AlertStore(store_path) as store:
            first_again = store.alerts()[1]  # newest first
            assert first_again.id == alert.id and first_again.clip_gone and not Path(alert.clip).exists()
            assert store.count_alerts(camera="gate") == 2 and len(store.camera_events()) == 4
            assert store.cameras()[0].status == "offline"

        messages = subscriber.wait_for(lambda m: sum(t == "fw/events" for t, _, _ in m) == 4)
        events = subscriber.events("fw/events")
        assert [e["type"] for e in events] == ["new", "end", "new", "end"]
        assert events[1]["after"]["id"] == alert.id and events[1]["after"]["end_reason"] == "source ended"
        statuses = [payload for topic, payload, _ in messages if topic == "fw/gate/status"]
        changes = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]  # a reconnect repeats one
        assert changes == ["online", "offline", "online", "offline"]
        assert subscriber.on("fw/available")[-1][0] == "offline"
    finally:
        subscriber.close()
        broker.stop()
