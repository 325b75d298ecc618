import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data.errors import InputError
from trainer.serve.alerting.sinks.jsonl import JsonLinesSink
from trainer.serve.alerting.sinks.multi import MultiSink
from trainer.serve.alerting.sinks.webhook import WebhookSink

SECRET_ENV, SECRET = "FIGHTWATCH_TEST_SECRET", "s3cret-Value-917"
ALERT = {"camera": "gate-3", "start_s": 12.5, "peak_prob": 0.93, "snapshot": "snaps/gate-3_12.5.jpg"}
FAST = dict(timeout_s=2.0, backoff_s=0.01)  # a timeout a loaded CI box meets; tiny backoff keeps retries fast


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on an ephemeral port that records (headers, payload) and answers `statuses` in
    turn (then 200); with hold_s it holds each request until `release` is set or hold_s has passed."""

    daemon_threads = True  # held handlers must not block shutdown

    def __init__(self, statuses=(), hold_s=0.0):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.statuses, self.hold_s = list(statuses), hold_s
        self.requests, self.arrived, self.release = [], threading.Event(), threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}/alerts?token=not-for-logs"

    def handle_error(self, request, client_address):
        pass  # clients that timed out have hung up before the answer; expected here


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.headers, json.loads(body)))
        self.server.arrived.set()
        if self.server.hold_s:
            self.server.release.wait(self.server.hold_s)
        self.send_response(self.server.statuses.pop(0) if self.server.statuses else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


@pytest.fixture
def receiver():
    servers = []

    def start(**kwargs):
        server = Receiver(**kwargs)
        threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_webhook_posts_the_alert_as_json_with_the_secret_header_without_waiting_for_it(receiver, secret):
    server = receiver(hold_s=60)  # holds the POST until released
    sink = WebhookSink(server.url, secret_env=SECRET_ENV, **FAST)
    sink.send({**ALERT, "box": [0.25, 0.1, 0.5, 0.6]})
    assert server.arrived.wait(30)
    # send() returned while the receiver still holds the request: nothing is decided yet
    assert sink.counts == dict(sent=0, retried=0, undelivered=0, dropped=0)
    server.release.set()
    sink.close(timeout_s=5)
    ((headers, payload),) = server.requests
    assert payload == {**ALERT, "box": [0.25, 0.1, 0.5, 0.6]}  # the payload as is: where in the frame too
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Fightwatch-Secret"] == secret
    assert sink.counts == dict(sent=1, retried=0, undelivered=0, dropped=0)


def test_unreachable_receiver_is_retried_and_the_alert_recorded_undelivered(tmp_path):
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(f"http://127.0.0.1:{unused_port()}/", retries=2, undelivered_path=undelivered, **FAST)
    sink.send(ALERT)
    sink.close(timeout_s=5)
    assert sink.counts == dict(sent=0, retried=2, undelivered=1, dropped=0)
    (record,) = records(undelivered)
    assert record["alert"] == ALERT and record["attempts"] == 3
    assert "refused" in record["reason"].lower()


def test_server_errors_are_retried_until_delivered(receiver):
    server = receiver(statuses=[500, 500])
    sink = WebhookSink(server.url, retries=3, **FAST)
    sink.send(ALERT)
    sink.close(timeout_s=5)
    assert [payload for _, payload in server.requests] == [ALERT] * 3
    assert sink.counts == dict(sent=1, retried=2, undelivered=0, dropped=0)


def test_a_receiver_slower_than_the_timeout_is_retried_then_undelivered(receiver, tmp_path):
    server = receiver(hold_s=5)
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(server.url, timeout_s=0.3, retries=1, backoff_s=0.01, undelivered_path=undelivered)
    sink.send(ALERT)
    sink.close(timeout_s=5)
    assert len(server.requests) == 2
    assert sink.counts == dict(sent=0, retried=1, undelivered=1, dropped=0)
    assert records(undelivered)[0]["reason"] == "timed out after 0.3 s"


def test_the_secret_is_never_logged_or_written(receiver, secret, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server = receiver(statuses=[500, 503])
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(server.url, secret_env=SECRET_ENV, retries=1, undelivered_path=undelivered, **FAST)
    sink.send(ALERT)
    sink.close(timeout_s=5)
    assert [headers["X-Fightwatch-Secret"] for headers, _ in server.requests] == [secret] * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "attempt 2 of 2" in warnings[1] and f":{server.server_port}/alerts" in warnings[1]
    assert records(undelivered)[0]["reason"] == "HTTP 503 Service Unavailable"
    for text in (caplog.text, undelivered.read_text(), repr(sink)):
        assert secret not in text and "not-for-logs" not in text  # nor the URL's query token


def test_a_full_queue_drops_the_oldest_alert(receiver):
    server = receiver(hold_s=5)
    sink = WebhookSink(server.url, max_queued=2, **FAST)
    sink.send({"n": 1})
    assert server.arrived.wait(5)  # 1 is in flight, so the queue holds what follows
    for n in (2, 3, 4):
        sink.send({"n": n})
    server.release.set()
    sink.close(timeout_s=5)
    assert [payload["n"] for _, payload in server.requests] == [1, 3, 4]
    assert sink.counts == dict(sent=3, retried=0, undelivered=0, dropped=1)


def test_close_records_what_it_could_not_deliver_in_time(receiver, tmp_path):
    server = receiver(hold_s=5)
    undelivered = tmp_path / "undelivered.jsonl"
    sink = WebhookSink(server.url, undelivered_path=undelivered, **FAST)
    sink.send({"n": 1})
    assert server.arrived.wait(5)
    sink.send({"n": 2})
    sink.close(timeout_s=0.1)  # and cuts the delivery of 1 short
    assert sorted((r["alert"]["n"], r["reason"]) for r in records(undelivered)) == [
        (1, "sink closed during delivery"), (2, "sink closed before delivery")]
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(ALERT)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "http://", "http://host:port/"])
def test_a_bad_url_is_an_input_error_naming_it(url):
    with pytest.raises(InputError, match="webhook URL") as error:
        WebhookSink(url)
    assert url in str(error.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(InputError, match="secret_env") as error:
        WebhookSink("https://guard:hunter2@example.com/hook")
    assert "hunter2" not in str(error.value)


def test_a_missing_secret_variable_is_an_input_error_naming_it(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(InputError, match=SECRET_ENV):
        WebhookSink("http://127.0.0.1:9/hook", secret_env=SECRET_ENV)


def test_json_lines_sink_appends_one_line_per_alert_to_a_file(tmp_path):
    path = tmp_path / "alerts" / "alerts.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": true}\n')
    with JsonLinesSink(path) as sink:
        sink.send(ALERT)
        sink.send({"clip": Path("clips/gate-3.mp4"), "box": (0.25, 0.1, 0.5, 0.6)})
    assert records(path) == [{"earlier": True}, ALERT, {"clip": "clips/gate-3.mp4", "box": [0.25, 0.1, 0.5, 0.6]}]


def test_json_lines_sink_writes_to_stdout(capsys):
    with JsonLinesSink("-") as sink:
        sink.send(ALERT)
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [ALERT]


def test_multi_sink_sends_to_every_sink_even_when_one_fails(receiver, tmp_path, caplog):
    server = receiver()
    broken = JsonLinesSink(tmp_path / "broken.jsonl")
    broken.close()  # writing to it now raises
    jsonl = JsonLinesSink(tmp_path / "alerts.jsonl")
    sinks = MultiSink([broken, jsonl, WebhookSink(server.url, **FAST)])
    sinks.send(ALERT)
    sinks.close(timeout_s=5)
    assert records(tmp_path / "alerts.jsonl") == [ALERT]
    assert [payload for _, payload in server.requests] == [ALERT]
    assert "broken.jsonl" in caplog.text
