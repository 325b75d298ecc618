"""Faults of the network around `fightwatch watch`: streams that connect and then stall (HTTP and RTSP), a webhook
that accepts and never answers, an MQTT broker killed and restarted, and stream credentials kept out of every
output. Real servers on 127.0.0.1 (tests/support/fault_servers.py), a real mosquitto; the loops with the issue's
counts are scripts/faults/streams.py."""

import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.commands import FIGHTWATCH, ROOT, free_port
from tests.support.fault_servers import HangingWebhook, StallingServer, durable, kill_and_restart
from tests.support.mosquitto import Mosquitto, Subscriber, needs_mosquitto
from tests.support.review_fixtures import add_alert
from tests.support.videos import write_video
from tests.support.watch import models, watch  # noqa: F401  (models is a fixture)
from trainer.serve.alerting.sinks.config import MqttConfig
from trainer.serve.alerting.sinks.webhook import WebhookSink
from trainer.serve.alerting.store import AlertStore
from trainer.serve.review.app import create_app, serve_in_thread
from trainer.serve.runtime.sources import parse_sources

TIMEOUT_S = 1.0  # watch --timeout: short, so that each stall costs a second
DELAY_S = 0.05  # watch --reconnect-delay and --reconnect-max-delay: every reconnect waits this long
MARGIN_S = 1.0  # what a loaded 2-core CI box may add to a detection


@pytest.fixture(scope="module")
def stream_video(tmp_path_factory):
    """10 s of H.264 in MPEG-TS at 25 fps: what the stream servers serve (HTTP as is, RTSP as RTP)."""
    return write_video(tmp_path_factory.mktemp("streams") / "cam.ts", 250, fps=25)


@pytest.fixture
def servers():
    started = []

    def start(server):
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# (protocol, mode, the bound on noticing a stall): FFmpeg's RTSP client probes the stream after PLAY with its own
# wait, so a stall before the first frame costs it the timeout twice (README: Faults)
STALLS = [("http", "silent", 1), ("http", "headers", 1), ("http", "mid", 1),
          ("rtsp", "silent", 1), ("rtsp", "headers", 2), ("rtsp", "mid", 1)]


@pytest.mark.slow  # eight `watch` cameras on servers that stall
def test_stalled_streams_are_noticed_within_the_timeout_and_reconnected(models, stream_video, servers, tmp_path,
                                                                        capsys):
    stalled = {f"{protocol}-{mode}": (servers(StallingServer(protocol, mode, stream_video)), bound)
               for protocol, mode, bound in STALLS}
    recovering = {f"{protocol}-once": servers(StallingServer(protocol, "once", stream_video))
                  for protocol in ("http", "rtsp")}
    sources = [f"{name}={server.url}" for name, (server, _) in stalled.items()]
    sources += [f"{name}={server.url}" for name, server in recovering.items()]
    rc, stats, _ = watch(capsys, "--model", models["calm"], "--out-dir", tmp_path / "out", "--timeout", TIMEOUT_S,
                         "--max-reconnects", 2, "--reconnect-delay", DELAY_S, "--reconnect-max-delay", DELAY_S,
                         *sources)
    assert rc == 1  # every camera gave up in the end
    for name, (server, bound) in stalled.items():
        cam = stats["cameras"][name]
        assert len(server.connections) == 3 and cam["reconnects"] == 2, (name, cam)
        gaps = server.stall_gaps(DELAY_S)
        assert len(gaps) == 2 and all(0.9 * TIMEOUT_S <= gap <= bound * TIMEOUT_S + MARGIN_S for gap in gaps), (
            name, gaps)
        if name.endswith("mid"):  # opened, 50 frames (HTTP: the last cut off), then nothing: a drop
            assert cam["status"] == "gave_up" and cam["drops"] == 3 and 3 * 49 <= cam["frames_in"] <= 150, (name, cam)
            assert cam["error"] == f"stream lost: no data for {TIMEOUT_S:g} s"
        elif name == "rtsp-headers":  # answered up to PLAY: opened, but no frame came
            assert cam["status"] == "gave_up" and cam["frames_in"] == 0, (name, cam)
        else:  # nothing came: the open timed out
            assert cam["status"] == "failed" and cam["open_failures"] == 3, (name, cam)
            assert cam["error"] == f"cannot open: no answer for {TIMEOUT_S:g} s"
    for name, server in recovering.items():  # a stall, then the whole stream on each reconnect
        cam = stats["cameras"][name]
        assert len(server.connections) == 3 and cam["status"] == "gave_up" and cam["drops"] == 3, (name, cam)
        assert 0.9 * TIMEOUT_S <= server.stall_gaps(DELAY_S)[0] <= TIMEOUT_S + MARGIN_S
        assert 49 + 2 * 250 <= cam["frames_in"] <= 50 + 2 * 250 and cam["windows"] > 0, (name, cam)


# the webhook: (retries + 1) attempts of TIMEOUT each, and the backoff between them
HOOK_TIMEOUT_S, HOOK_RETRIES, HOOK_BACKOFF_S = 0.5, 1, 0.05
HOOK_BOUND_S = (HOOK_RETRIES + 1) * HOOK_TIMEOUT_S + HOOK_BACKOFF_S


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["silent", "status", "trickle"])
@pytest.mark.slow
def test_a_webhook_that_never_answers_costs_a_bounded_time_per_alert(mode, servers, tmp_path):
    hook = servers(HangingWebhook(mode))
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(hook.url, timeout_s=HOOK_TIMEOUT_S, retries=HOOK_RETRIES, backoff_s=HOOK_BACKOFF_S,
                       undelivered_path=undelivered)
    started = time.monotonic()
    for n in range(3):
        sink.send({"n": n})
    sink.close(timeout_s=30)  # returns once all three are settled
    took = time.monotonic() - started
    assert 3 * (HOOK_RETRIES + 1) * HOOK_TIMEOUT_S <= took <= 3 * HOOK_BOUND_S + MARGIN_S
    assert [(r["alert"], r["attempts"], r["reason"]) for r in records(undelivered)] == [
        ({"n": n}, HOOK_RETRIES + 1, f"timed out after {HOOK_TIMEOUT_S:g} s") for n in range(3)]
    assert sink.counts == dict(sent=0, retried=3 * HOOK_RETRIES, undelivered=3, dropped=0)
    assert hook.requests == 3 * (HOOK_RETRIES + 1)


@pytest.mark.slow
def test_an_answer_whose_body_never_comes_is_a_delivery_and_a_hang_only_delays_the_next_alert(servers, tmp_path):
    body = servers(HangingWebhook("body"))  # 200 and its headers: the receiver has the alert
    sink = WebhookSink(body.url, timeout_s=HOOK_TIMEOUT_S, retries=HOOK_RETRIES, backoff_s=HOOK_BACKOFF_S)
    sink.send({"n": 0})
    sink.close(timeout_s=HOOK_BOUND_S + MARGIN_S)
    assert sink.counts == dict(sent=1, retried=0, undelivered=0, dropped=0)

    first = servers(HangingWebhook("first-silent"))  # hangs on the first attempt, answers the retry at once
    sink = WebhookSink(first.url, timeout_s=HOOK_TIMEOUT_S, retries=HOOK_RETRIES, backoff_s=HOOK_BACKOFF_S)
    started = time.monotonic()
    sink.send({"n": 1})
    sink.send({"n": 2})
    sink.close(timeout_s=30)
    assert sink.counts == dict(sent=2, retried=1, undelivered=0, dropped=0) and first.requests == 3
    assert time.monotonic() - started <= HOOK_BOUND_S + MARGIN_S


@pytest.mark.slow
def test_close_cuts_a_delivery_that_hangs_and_records_it_undelivered(servers, tmp_path):
    hook = servers(HangingWebhook("silent"))
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(hook.url, timeout_s=60, undelivered_path=undelivered)  # an attempt would outlast close
    sink.send({"n": 0})
    sink.send({"n": 1})
    deadline = time.monotonic() + 10
    while not hook.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sink.close(timeout_s=0.2)
    assert time.monotonic() - started <= 0.2 + 1.0 + MARGIN_S  # its wait, then a second at most for the worker
    assert sorted((r["alert"]["n"], r["reason"]) for r in records(undelivered)) == [
        (0, "sink closed during delivery"), (1, "sink closed before delivery")]
    assert sink.counts["undelivered"] == 2 and sink.counts["sent"] == 0


def start_event(alert_id: str) -> dict:
    return {"event": "start", "alert_id": alert_id, "camera": "gate", "source": "rtsp://cam/gate", "start_s": 0.0,
            "raised_s": 0.96, "start_time": "2024-05-20T12:00:00.000Z", "raised_time": "2024-05-20T12:00:00.960Z",
            "peak_prob": 0.9, "threshold": 0.5, "snapshot": None, "clip": None}


@pytest.mark.slow
@needs_mosquitto
def test_no_alert_is_lost_when_the_broker_is_killed_and_restarted(tmp_path):
    """Delivery is at least once: every alert arrives, some twice (those in flight at a kill)."""
    from trainer.serve.alerting.sinks.mqtt import MqttSink

    broker = durable(Mosquitto(tmp_path / "broker")).start()
    watcher = Subscriber(broker.port, "fw/events", session="fault-watcher")  # persistent: queued while away
    sink = MqttSink(MqttConfig("127.0.0.1", broker.port, "fw", "fault-test", None, None, False),
                    reconnect_delay_s=(1, 2))
    sent = [f"gate-{n}" for n in range(60)]
    try:
        for n, alert_id in enumerate(sent):
            sink.send(start_event(alert_id))
            if n in (15, 40):
                kill_and_restart(broker, away_s=0.3)
            time.sleep(0.01)
        sink.close(timeout_s=30)
        assert sink.counts["unacked"] == 0 and sink.counts["dropped"] == 0
        watcher.wait_for(lambda m: {json.loads(p)["after"]["id"] for _, p, _ in m} >= set(sent), timeout=30)
    finally:
        watcher.close()
        broker.stop()


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that keeps every request's raw bytes."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.raw: list[bytes] = []


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.raw.append(bytes(self.requestline, "latin-1") + bytes(self.headers) + body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
@needs_mosquitto
def test_stream_credentials_never_reach_logs_alerts_sinks_the_store_or_the_review_app(models, stream_video,
                                                                                      servers, tmp_path):
    secrets = {f"pw-{name}": f"tok-{name}" for name in ("good-http", "good-rtsp", "bad-http", "bad-rtsp")}
    good_http = servers(StallingServer("http", "once", stream_video, credentials=("admin", "pw-good-http"),
                                       query="token=tok-good-http"))
    good_rtsp = servers(StallingServer("rtsp", "once", stream_video, credentials=("admin", "pw-good-rtsp"),
                                       query="token=tok-good-rtsp"))
    closed = free_port()
    sources = [good_http.url,  # its camera id comes from the URL
               f"door={good_rtsp.url}",
               f"yard=http://admin:pw-bad-http@127.0.0.1:{closed}/live.ts?token=tok-bad-http",
               f"lobby=rtsp://admin:pw-bad-rtsp@127.0.0.1:{closed}/live?token=tok-bad-rtsp",
               f"rtsp://127.0.0.1:{closed}/user=admin&password=pw-in-path&channel=1&stream=0.sdp"]  # Xiongmai's
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port, "fw/#")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    mqtt = json.dumps(dict(host="127.0.0.1", port=broker.port, topic_prefix="fw", client_id="redaction-test",
                           username_env=None, password_env=None, tls=False))
    out, store = tmp_path / "out", tmp_path / "alerts.db"
    argv = ["--debug", "watch", "--model", str(models["fight"]), "--out-dir", str(out), "--store", str(store),
            "--alerts", str(tmp_path / "alerts.jsonl"), "--scores", str(tmp_path / "scores.jsonl"),
            "--webhook", f"http://127.0.0.1:{receiver.server_port}/hook", "--set", f"sinks.mqtt={mqtt}",
            "--timeout", str(TIMEOUT_S), "--max-reconnects", "1", "--reconnect-delay", str(DELAY_S),
            "--stride", "8", "--consecutive", "1", "--stats-every", "0.5", *sources]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        run = subprocess.run([str(FIGHTWATCH), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        subscriber.wait_for(lambda m: any(t == "fw/events" for t, _, _ in m))
        time.sleep(0.5)  # the rest of the events
    finally:
        subscriber.close()
        broker.stop()
        receiver.shutdown()
        receiver.server_close()
    assert run.returncode == 1, run.stderr[-3000:]  # every camera failed or gave up in the end
    (stats,) = [json.loads(line) for line in run.stderr.splitlines() if line.startswith('{"event": "stats"')]
    assert set(stats["cameras"]) == {"127.0.0.1-live-cam", "door", "yard", "lobby",
                                     "127.0.0.1-user-password-channel-1-stream-0"}
    assert {a["camera"] for a in records(tmp_path / "alerts.jsonl")} == {"127.0.0.1-live-cam", "door"}
    with AlertStore(store) as opened:
        app = TestClient(create_app(opened), client=("127.0.0.1", 50000))
        api = [app.get(path).text for path in ("/api/alerts", "/api/cameras", "/api/camera-events")]
        api += [app.get(f"/api/alerts/{a.id}").text for a in opened.alerts()]
    outputs = {"stdout": run.stdout, "stderr": run.stderr, "webhook": b"".join(receiver.raw).decode(),
               "mqtt": json.dumps(subscriber.messages), "review app": "".join(api),
               "file names": "\n".join(str(path) for path in tmp_path.rglob("*")),
               **{str(path): path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file()}}
    assert "***@127.0.0.1" in run.stderr  # the logs do name the sources, without what is secret
    assert "no data for 1 s" in run.stderr and "cannot open" in run.stderr  # a stall and a refusal were logged
    assert receiver.raw and any(topic == "fw/events" for topic, _, _ in subscriber.messages)
    for secret in [*secrets, *secrets.values(), "pw-in-path"]:
        leaks = [where for where, text in outputs.items() if secret in text]
        assert not leaks, (secret, leaks)


@pytest.mark.slow
def test_the_review_app_token_is_required_and_never_logged(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    token = "review-Token-8841"
    monkeypatch.setenv("FW_FAULT_TOKEN", token)
    with AlertStore(tmp_path / "alerts.db") as store:
        add_alert(store, tmp_path, "a1")
        server = serve_in_thread(store, None, "127.0.0.1", 0, token_env="FW_FAULT_TOKEN")
        try:
            url = server.url.rstrip("/")
            answers = {}
            for name, headers in {"none": {}, "wrong": {"Authorization": "Bearer review-Token-8842"},
                                  "right": {"Authorization": f"Bearer {token}"}}.items():
                request = urllib.request.Request(f"{url}/api/alerts/a1/review", method="POST", headers={
                    "Content-Type": "application/json", **headers}, data=b'{"verdict": "ack"}')
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        answers[name] = (response.status, response.read().decode())
                except urllib.error.HTTPError as error:
                    answers[name] = (error.code, error.read().decode())
        finally:
            server.stop()
    assert [answers[name][0] for name in ("none", "wrong", "right")] == [401, 401, 200], answers
    assert token not in caplog.text and not any(token in body for _, body in answers.values())


def test_credentials_in_user_info_queries_and_paths_stay_out_of_displays_and_camera_ids():
    sources = parse_sources(["rtsp://192.168.1.10:554/user=admin&password=Xm-pw-1&channel=1&stream=0.sdp",
                             "gate=rtsp://admin:Hk-pw-2@10.0.0.5/Streaming/Channels/101?token=Hk-tok-3",
                             "http://cam.local/video;pwd=Ax-pw-4/stream.mjpg?auth=Ax-tok-5",
                             "rtsp://[fe80::1]:554/keyframe=1/live"])
    assert [(s.camera, s.display) for s in sources] == [
        ("192.168.1.10-user-password-channel-1-stream-0",
         "rtsp://192.168.1.10:554/user=***&password=***&channel=1&stream=0.sdp"),
        ("gate", "rtsp://***@10.0.0.5/Streaming/Channels/101?..."),
        ("cam.local-video-pwd-stream", "http://cam.local/video;pwd=***/stream.mjpg?..."),
        ("fe80-1-keyframe-1-live", "rtsp://[fe80::1]:554/keyframe=1/live")]  # "keyframe=" is not "key="
