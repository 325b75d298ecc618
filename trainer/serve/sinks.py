"""Where alerts go: a JSON-lines file or stdout, a webhook, an MQTT broker (mqtt_sink.py), the alert store, or
several at once.

An alert payload is a JSON-able dict built by the caller (path-like values are written as strings). A sink also
hears of the cameras' status changes (`camera_status`, from the cameras' decode threads); most ignore them.
Sinks are called from the decode/inference loop, so `send` must not wait on the network: the webhook
queues the alert and a daemon thread delivers it, retrying with backoff, and appends what it could not
deliver to an undelivered file. Call `close` before exit, or alerts still queued are lost.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from data.errors import InputError
from trainer.serve.alert_store import AlertStore, Retention

log = logging.getLogger(__name__)


def _json_default(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"alert field of type {type(value).__name__} is not JSON-serializable")


def _to_json(payload: dict) -> str:
    # allow_nan=False: NaN is not JSON and would break the receiver's parser, so fail in the caller.
    return json.dumps(payload, default=_json_default, allow_nan=False)


def _open_append(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot append to {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class MqttConfig:
    """`sinks.mqtt`: the broker that gets alert events and camera status (trainer/serve/mqtt_sink.py)."""

    host: str
    port: int
    topic_prefix: str  # topics <prefix>/events, <prefix>/<camera>/status, <prefix>/available
    client_id: str
    username_env: str | None  # the user name and password are read from these environment variables
    password_env: str | None
    tls: bool  # TLS with the system's CA certificates

    def __post_init__(self):
        if not self.host or not 0 < self.port < 65536 or not self.client_id:
            raise ValueError("host and client_id must not be empty, port in 1..65535")
        if not self.topic_prefix or self.topic_prefix.endswith("/") or any(c in self.topic_prefix for c in "+#"):
            raise ValueError("topic_prefix must be non-empty, without + or # and not end with /")
        if self.password_env and not self.username_env:
            raise ValueError("password_env needs username_env")


@dataclass(frozen=True)
class SinksConfig:
    """The `sinks:` section of a config: where `fightwatch watch` sends alerts."""

    alerts: str | None = field(metadata={"path": True})  # append JSON lines to this file; null: stdout
    webhook: str | None  # also POST each alert as JSON to this http(s) URL
    webhook_secret_env: str | None  # send this environment variable's value in X-Fightwatch-Secret
    mqtt: MqttConfig | None  # also publish alert events and camera status to this MQTT broker

    def __post_init__(self):
        if self.webhook_secret_env and not self.webhook:
            raise ValueError("webhook_secret_env needs a webhook")


def build_sink(cfg: SinksConfig, undelivered_path: Path, also: Iterable["Sink"] = ()) -> "Sink":
    """The sink the config asks for: JSON lines, plus the webhook (its undelivered alerts to `undelivered_path`),
    the MQTT broker and the sinks in `also`."""
    sinks = [JsonLinesSink(cfg.alerts if cfg.alerts is not None else "-")]
    if cfg.webhook:
        sinks.append(WebhookSink(cfg.webhook, cfg.webhook_secret_env, undelivered_path=undelivered_path))
    if cfg.mqtt is not None:
        from trainer.serve.mqtt_sink import MqttSink  # paho only where MQTT is configured

        sinks.append(MqttSink(cfg.mqtt))
    sinks += also
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


@dataclass(frozen=True)
class CameraPresence:
    """A camera's status change, as sinks hear of it."""

    camera: str
    presence: str  # online | reconnecting | offline
    detail: str | None  # why: the error, or how the camera ended (finished, failed, gave_up, stopped)
    wall: float  # time.time() of the change


class Sink:
    """Where alerts go. `send` returns quickly; `close` delivers what is pending, waiting up to timeout_s."""

    def send(self, alert: dict) -> None:
        raise NotImplementedError

    def camera_status(self, change: CameraPresence) -> None:
        """A camera went online, reconnecting or offline (called from the thread that changed it, mostly its
        decode thread). Ignored by default."""

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        """Scored windows (start_s, end_s, fight probability) around an alert: those before its raise, then each
        one while it lasts (called from the inference thread). Ignored by default."""

    def close(self, timeout_s: float = 10.0) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class JsonLinesSink(Sink):
    """One JSON line per alert, appended to `path` or written to stdout for "-", flushed per line for `tail -f`."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._file = None if str(path) == "-" else _open_append(Path(path))
        self._lock = threading.Lock()  # several cameras' loops may share one sink; keep lines whole

    def send(self, alert: dict) -> None:
        line = _to_json(alert) + "\n"
        with self._lock:
            out = sys.stdout if self._file is None else self._file  # looked up per write: honours a redirect
            out.write(line)
            out.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        if self._file is not None:
            self._file.close()

    def __repr__(self):
        return f"JsonLinesSink({str(self.path)!r})"


_CUT_BY_CLOSE = "sink closed during delivery"


class _Deadline:
    """Cuts the connection of the webhook's delivery attempt in flight when its time is up or close() stops
    waiting: a socket timeout bounds each read, not an answer that trickles in a byte at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.why: str | None = None  # why the attempt in flight was cut; None: it was not

    def start(self) -> None:
        """A new attempt: nothing cut yet."""
        with self._lock:
            self._sock, self.why = None, None

    def cut(self, why: str) -> None:
        with self._lock:
            self.why = self.why or why
            sock = self._sock
        _shut(sock)

    def connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            cut = self.why is not None
        if cut:  # the time was up while it was still connecting
            _shut(sock)


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the worker's blocked read returns at once
        except OSError:
            pass


class _Cuttable:
    """A connection that hands its socket to the attempt's deadline once connected."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self):
        super().connect()
        self._deadline.connected(self.sock)


class _CuttableHTTPConnection(_Cuttable, http.client.HTTPConnection):
    pass


class _CuttableHTTPSConnection(_Cuttable, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(_CuttableHTTPConnection, req, deadline=self._deadline)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(_CuttableHTTPSConnection, req, deadline=self._deadline)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a bodiless GET and forward the secret header to another host;
    # refusing it makes a 3xx an HTTPError, i.e. a failed delivery.
    def redirect_request(self, *args, **kwargs):
        return None


class WebhookSink(Sink):
    """POSTs each alert as JSON from a daemon thread; `send` only queues, dropping the oldest when full.

    A delivery that fails (connection error, timeout, non-2xx) is retried `retries` times with backoff
    backoff_s, 2 * backoff_s, ...; then it is counted undelivered and, with `undelivered_path`, appended
    there as a JSON line with the reason. An attempt gets timeout_s in all, from connecting to the answer's
    status and headers (a receiver that accepts and never answers, or answers a byte at a time, is cut off
    then), so an alert costs at most (retries + 1) * timeout_s plus the backoffs, and the alerts queued behind it
    wait that long at most. The secret (the value of the environment variable `secret_env`, sent in `header`)
    is never logged or written.
    """

    def __init__(self, url: str, secret_env: str | None = None, header: str = "X-Fightwatch-Secret",
                 timeout_s: float = 5.0, retries: int = 4, backoff_s: float = 0.5,
                 undelivered_path: Path | None = None, max_queued: int = 1000):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_queued < 1:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0, max_queued >= 1")
        self.url, self.secret_env, self.timeout_s = url, secret_env, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._log_url = _checked_url(url)
        self._headers = {"Content-Type": "application/json"}
        if secret_env is not None:
            if not re.fullmatch(r"[A-Za-z0-9-]+", header):
                raise InputError(f"webhook header name {header!r} must be letters, digits and '-'")
            self._headers[header] = _secret_from(secret_env)
        self.undelivered_path = None if undelivered_path is None else Path(undelivered_path)
        if self.undelivered_path is not None:
            _open_append(self.undelivered_path).close()  # fail now, not when an alert is already lost
        self._deadline = _Deadline()
        self._opener = urllib.request.build_opener(_NoRedirect, _HTTPHandler(self._deadline),
                                                   _HTTPSHandler(self._deadline))
        self._queue: collections.deque[bytes] = collections.deque()  # JSON bodies, frozen at send()
        self._max_queued = max_queued
        self._counts = dict(sent=0, retried=0, undelivered=0, dropped=0)
        self._wake = threading.Condition()  # guards the queue, the counts and the flags below
        self._busy = self._closed = self._stopping = False
        self._in_flight: bytes | None = None  # the body the worker is delivering; close() may take it over
        self._undelivered_lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="webhook-sink", daemon=True)
        self._worker.start()

    @property
    def counts(self) -> dict[str, int]:
        """A snapshot of sent, retried (attempts after the first), undelivered and dropped (queue full)."""
        with self._wake:
            return dict(self._counts)

    def send(self, alert: dict) -> None:
        body = _to_json(alert).encode()  # here, so a payload that is not JSON fails in the caller
        with self._wake:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if len(self._queue) >= self._max_queued:
                self._queue.popleft()
                self._counts["dropped"] += 1
                log.warning("webhook %s: %d alerts queued, dropped the oldest", self._log_url, self._max_queued)
            self._queue.append(body)
            self._wake.notify_all()

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait up to timeout_s for the queue to drain, then cut the delivery in flight, record what is left as
        undelivered and stop the thread (in a second or so more at most)."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.wait_for(lambda: not self._queue and not self._busy, timeout_s)
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        self._deadline.cut(_CUT_BY_CLOSE)  # the worker records it as undelivered
        for body in leftover:
            self._give_up(body, "sink closed before delivery", attempts=0)
        self._worker.join(1.0)
        with self._wake:  # still connecting (a connection cannot be cut before it exists): record it here
            abandoned, self._in_flight = self._in_flight, None
        if abandoned is not None:
            self._give_up(abandoned, _CUT_BY_CLOSE, attempts=1)

    def __repr__(self):
        return f"WebhookSink({self._log_url!r}, secret_env={self.secret_env!r}, counts={self.counts})"

    def _serve(self):
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                body = self._in_flight = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(body)
            except Exception:  # a bug here must not kill the thread and with it every later alert
                log.exception("webhook %s: delivering an alert failed", self._log_url)
            finally:
                with self._wake:
                    self._busy, self._in_flight = False, None
                    self._wake.notify_all()

    def _deliver(self, body: bytes):
        attempts, reason = self.retries + 1, None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                with self._wake:  # back off, but stop retrying once close() has given up waiting
                    closing = self._wake.wait_for(lambda: self._stopping, self.backoff_s * 2 ** (attempt - 2))
                    self._counts["retried"] += not closing
                if closing:
                    if self._claim(body):
                        why = reason if reason == _CUT_BY_CLOSE else f"sink closed while retrying; last: {reason}"
                        self._give_up(body, why, attempt - 1)
                    return
            reason = self._post(body)
            if reason is None:
                if self._claim(body):
                    with self._wake:
                        self._counts["sent"] += 1
                return
            log.warning("webhook %s: attempt %d of %d failed: %s", self._log_url, attempt, attempts, reason)
        if self._claim(body):
            self._give_up(body, reason, attempts)

    def _claim(self, body: bytes) -> bool:
        """Whether the worker still owns `body`'s outcome: close() takes over the one it stopped waiting for."""
        with self._wake:
            mine, self._in_flight = self._in_flight is body, None
        return mine

    def _post(self, body: bytes) -> str | None:
        """One delivery attempt: None when delivered, else why not."""
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        self._deadline.start()
        with self._wake:
            if self._stopping:
                return _CUT_BY_CLOSE
        timer = threading.Timer(self.timeout_s, self._deadline.cut, args=(f"timed out after {self.timeout_s:g} s",))
        timer.start()
        try:
            with self._opener.open(request, timeout=self.timeout_s):  # urllib raises HTTPError but for 2xx
                # a cut ends the headers like their blank line does: a 2xx status line, then nothing, is no answer
                return self._deadline.why
        except urllib.error.HTTPError as error:
            error.close()
            return f"HTTP {error.code} {error.reason}"
        except (OSError, http.client.HTTPException) as error:
            cause = error.reason if isinstance(error, urllib.error.URLError) else error
            if self._deadline.why is not None:  # cut: the error is the cut's (reset, no status line, ...)
                return self._deadline.why
            if isinstance(cause, TimeoutError):
                return f"timed out after {self.timeout_s:g} s"
            return str(cause) or type(cause).__name__
        finally:
            timer.cancel()
            timer.join()

    def _give_up(self, body: bytes, reason: str, attempts: int):
        with self._wake:
            self._counts["undelivered"] += 1
        log.error("webhook %s: alert undelivered after %d attempts: %s", self._log_url, attempts, reason)
        if self.undelivered_path is None:
            return
        record = dict(alert=json.loads(body), reason=reason, attempts=attempts, url=self._log_url,
                      at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        with self._undelivered_lock, open(self.undelivered_path, "a", encoding="utf-8") as file:
            file.write(_to_json(record) + "\n")


def _checked_url(url: str) -> str:
    """Validate a webhook URL; return it without query or fragment (they may hold tokens) for logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises on a non-numeric port
    except ValueError as error:
        raise InputError(f"webhook URL {url!r} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"webhook URL {url!r} must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise InputError("webhook URL must not hold user:password@; pass a secret through secret_env")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _secret_from(env_var: str) -> str:
    secret = os.environ.get(env_var)
    if secret is None:
        raise InputError(f"environment variable {env_var} (the webhook secret) is not set")
    # Checked here: http.client's own error for a bad header value would quote the secret.
    if not secret or not secret.isascii() or not secret.isprintable():
        raise InputError(f"environment variable {env_var} (the webhook secret) must be non-empty printable ASCII")
    return secret


class MultiSink(Sink):
    """Sends each alert to every sink; one that fails is logged and does not keep it from the others."""

    def __init__(self, sinks: Iterable[Sink]):
        self.sinks = list(sinks)

    def send(self, alert: dict) -> None:
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception:  # e.g. a full disk under a JSON-lines file must not silence the webhook
                log.exception("alert sink %r failed", sink)

    def camera_status(self, change: CameraPresence) -> None:
        for sink in self.sinks:
            try:
                sink.camera_status(change)
            except Exception:
                log.exception("alert sink %r failed on camera %s's status", sink, change.camera)

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        for sink in self.sinks:
            try:
                sink.windows(alert_id, scored)
            except Exception:
                log.exception("alert sink %r failed on alert %s's windows", sink, alert_id)

    def close(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for sink in self.sinks:
            sink.close(max(0.0, deadline - time.monotonic()))

    def __repr__(self):
        return f"MultiSink({self.sinks!r})"


class StoreSink(Sink):
    """Records alert starts and ends and camera status changes in an AlertStore (short local writes), and applies
    the store's retention at once and then every `retention_every_s` on a daemon thread."""

    def __init__(self, store: AlertStore, retention: Retention, retention_every_s: float = 600.0):
        self.store, self.retention, self.retention_every_s = store, retention, retention_every_s
        self._stop = threading.Event()
        self._retainer = threading.Thread(target=self._retain, name="store-retention", daemon=True)
        self._retainer.start()

    def send(self, alert: dict) -> None:
        if alert["event"] == "start":
            self.store.record_start(alert)
        elif alert["event"] == "end":
            self.store.record_end(alert)

    def camera_status(self, change: CameraPresence) -> None:
        self.store.record_camera_event(change.camera, change.presence, change.detail, change.wall)

    def windows(self, alert_id: str, scored: list[tuple[float, float, float]]) -> None:
        self.store.record_windows(alert_id, scored)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._retainer.join(timeout_s)
        self.store.close()

    def _retain(self):
        while True:
            try:
                self.store.apply_retention(self.retention)
            except Exception:  # a locked or full disk now must not end retention for the rest of the run
                log.exception("%r: retention failed", self.store)
            if self._stop.wait(self.retention_every_s):
                return

    def __repr__(self):
        return f"StoreSink({self.store!r})"
