"""The `sinks:` section of a config: the JSON-lines file, the webhook and the MQTT broker."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MqttConfig:
    """`sinks.mqtt`: the broker that gets alert events and camera status (trainer/serve/alerting/sinks/mqtt.py)."""

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
