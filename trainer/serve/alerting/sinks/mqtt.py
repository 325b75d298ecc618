"""Alerts and camera status on an MQTT broker, in the shape NVR automations expect (Frigate's events topic).

Topics under `topic_prefix`, all QoS 1:

    <prefix>/events           a JSON message per alert change, {"type": "new" | "end", "before": {...}, "after": {...}}:
                              the alert's fields (`alert_fields`: where in the frame as a normalised "box") before
                              and after the change; for "new" both are
                              the new alert. The monitor has no moment between raise and end at which an alert
                              changes, so there is no "update".
    <prefix>/<camera>/status  online | reconnecting | offline, retained
    <prefix>/available        online when connected, offline at close and as the last will (an unclean exit),
                              retained

`send` and `camera_status` never wait on the network: paho's `publish` puts the message in paho's queue and its
network thread (loop_start) sends it. paho keeps a QoS 1 message until the broker acknowledges it and sends it
again after a reconnect, so an alert published while the broker is away arrives once it is back (delivery is at
least once: a message may arrive twice). At most `max_queued` messages wait; beyond that new ones are dropped,
logged and counted. On every (re)connect the availability and each camera's latest status are published again,
since a broker without persistence forgets retained messages when it restarts. The user name and password come
from environment variables and are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import paho.mqtt.client as mqtt

from data.errors import InputError
from trainer.serve.alerting.sinks.base import CameraPresence, Sink
from trainer.serve.alerting.sinks.config import MqttConfig

log = logging.getLogger(__name__)


def alert_fields(alert: dict, before: dict | None = None) -> dict:
    """An alert's state as the events topic shows it, from a monitor `start` or `end` payload; an end's fields
    over the state `before` it (which holds what only the start carries, e.g. the threshold).

    `box` is where in the frame: [x1, y1, x2, y2] normalised to 0-1 (the hottest region of the window that raised
    the alert), None when unknown. Frigate's events carry a `box` too, but in pixels: ours fits any resolution."""
    fields = dict(before or {}, id=alert["alert_id"], camera=alert["camera"], label="fight",
                  start_time=alert["start_time"], raised_time=alert["raised_time"], end_time=alert.get("end_time"),
                  start_s=alert["start_s"], raised_s=alert["raised_s"], end_s=alert.get("end_s"),
                  peak_prob=alert["peak_prob"], snapshot=alert.get("snapshot"), clip=alert.get("clip"),
                  end_reason=alert.get("reason"))
    fields.setdefault("threshold", alert.get("threshold"))
    fields["box"] = alert.get("box", fields.get("box"))  # an end without one keeps the start's
    return fields


def _credential(env_var: str | None, what: str) -> str | None:
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise InputError(f"environment variable {env_var} (sinks.mqtt.{what}) is not set")
    return value


class MqttSink(Sink):
    """Publishes alert events and camera status to `cfg`'s broker; see the module doc."""

    def __init__(self, cfg: MqttConfig, max_queued: int = 1000, keepalive_s: int = 30,
                 reconnect_delay_s: tuple[int, int] = (1, 30)):
        self.cfg = cfg
        self.where = f"mqtt {cfg.host}:{cfg.port}"
        self._prefix = cfg.topic_prefix
        username = _credential(cfg.username_env, "username_env")
        password = _credential(cfg.password_env, "password_env")
        self._lock = threading.Condition()  # guards what follows; never held while calling paho
        self._before: dict[str, dict] = {}  # alert id -> its fields as last published, until it ends
        self._status: dict[str, str] = {}  # camera -> its latest presence, published again on reconnect
        self._unacked: set[int] = set()  # message ids published and not yet acknowledged by the broker
        self._acked_early: set[int] = set()  # acknowledged before publish() returned their id
        self._counts = dict(published=0, dropped=0)
        self._closed = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id)
        client.max_queued_messages_set(max_queued)
        client.reconnect_delay_set(*reconnect_delay_s)
        client.will_set(self._topic("available"), "offline", qos=1, retain=True)
        if username is not None:
            client.username_pw_set(username, password)
        if cfg.tls:
            client.tls_set()
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_publish = self._on_disconnect, self._on_publish
        self._client = client
        try:
            client.connect_async(cfg.host, cfg.port, keepalive=keepalive_s)
        except (OSError, ValueError) as e:
            raise InputError(f"sinks.mqtt: cannot connect to {cfg.host}:{cfg.port}: {e}") from None
        client.loop_start()  # connects, and reconnects with backoff, on paho's thread

    @property
    def counts(self) -> dict[str, int]:
        """published (handed to paho), dropped (paho's queue full), unacked (not yet acknowledged)."""
        with self._lock:
            return dict(self._counts, unacked=len(self._unacked))

    def send(self, alert: dict) -> None:
        kind = {"start": "new", "end": "end"}.get(alert.get("event"))
        if kind is None:
            return
        with self._lock:
            before = self._before.pop(alert["alert_id"], None)
            after = alert_fields(alert, before)
            if kind == "new":
                self._before[alert["alert_id"]] = after
        event = {"type": kind, "before": before or after, "after": after}
        self._publish("events", json.dumps(event, allow_nan=False))  # NaN is not JSON: fail here, in the caller

    def camera_status(self, change: CameraPresence) -> None:
        with self._lock:
            self._status[change.camera] = change.presence
        self._publish(f"{change.camera}/status", change.presence, retain=True)

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish `offline` availability, wait up to timeout_s for the broker to acknowledge what is queued,
        disconnect."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._publish("available", "offline", retain=True)
        with self._lock:
            self._lock.wait_for(lambda: not self._unacked, max(0.0, deadline - time.monotonic()))
            lost = len(self._unacked)
        if lost:
            log.error("%s: closed with %d message(s) the broker has not acknowledged", self.where, lost)
        self._client.disconnect()
        self._client.loop_stop()

    def __repr__(self):
        return f"MqttSink({self.where!r}, prefix={self._prefix!r}, counts={self.counts})"

    def _topic(self, suffix: str) -> str:
        return f"{self._prefix}/{suffix}"

    def _publish(self, suffix: str, payload: str, retain: bool = False) -> None:
        info = self._client.publish(self._topic(suffix), payload, qos=1, retain=retain)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._counts["dropped"] += 1
                log.error("%s: %d messages queued, dropped one on %s", self.where,
                          self._client.max_queued_messages, self._topic(suffix))
                return
            # MQTT_ERR_NO_CONN too: paho keeps a QoS 1 message and sends it once connected
            self._counts["published"] += 1
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._unacked.add(info.mid)

    # paho's callbacks, on its network thread

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("%s: connection refused: %s", self.where, reason_code)
            return
        log.info("%s: connected", self.where)
        if self._closed:  # close() has published offline; do not contradict it
            return
        with self._lock:
            statuses = dict(self._status)
        self._publish("available", "online", retain=True)
        for camera, presence in statuses.items():
            self._publish(f"{camera}/status", presence, retain=True)

    def _on_connect_fail(self, client, userdata):
        log.warning("%s: cannot connect; retrying", self.where)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if not self._closed:
            log.warning("%s: disconnected (%s); reconnecting", self.where, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self._lock.notify_all()
            else:
                self._acked_early.add(mid)
