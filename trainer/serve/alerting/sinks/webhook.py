"""Alerts POSTed as JSON to a webhook, off the caller's thread: a queue, retries with backoff, a deadline per
attempt that close() can cut short, and a file for what could not be delivered."""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from data.errors import InputError
from trainer.serve.alerting.sinks.base import Sink, open_append, to_json

log = logging.getLogger(__name__)

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
            open_append(self.undelivered_path).close()  # fail now, not when an alert is already lost
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
        body = to_json(alert).encode()  # here, so a payload that is not JSON fails in the caller
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
            file.write(to_json(record) + "\n")


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
