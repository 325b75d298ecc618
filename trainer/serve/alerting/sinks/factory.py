"""The sink a config asks for: JSON lines, plus the webhook, the MQTT broker and any others, as one."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from trainer.serve.alerting.sinks.base import Sink
from trainer.serve.alerting.sinks.config import SinksConfig
from trainer.serve.alerting.sinks.jsonl import JsonLinesSink
from trainer.serve.alerting.sinks.multi import MultiSink
from trainer.serve.alerting.sinks.webhook import WebhookSink


def build_sink(cfg: SinksConfig, undelivered_path: Path, also: Iterable["Sink"] = ()) -> "Sink":
    """The sink the config asks for: JSON lines, plus the webhook (its undelivered alerts to `undelivered_path`),
    the MQTT broker and the sinks in `also`."""
    sinks = [JsonLinesSink(cfg.alerts if cfg.alerts is not None else "-")]
    if cfg.webhook:
        sinks.append(WebhookSink(cfg.webhook, cfg.webhook_secret_env, undelivered_path=undelivered_path))
    if cfg.mqtt is not None:
        from trainer.serve.alerting.sinks.mqtt import MqttSink  # paho only where MQTT is configured

        sinks.append(MqttSink(cfg.mqtt))
    sinks += also
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)
