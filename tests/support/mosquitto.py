"""A throwaway mosquitto broker on loopback and a paho subscriber that records what it receives."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.commands import free_port

# Debian puts the broker in /usr/sbin, off a normal user's PATH
MOSQUITTO = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (.ci/run installs Debian's)")


class Mosquitto:
    """A real mosquitto broker on 127.0.0.1 and a free port; config, persistence and log in `folder`.
    With `users` ({name: password}) it refuses anonymous clients."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None):
        self.folder, self.port, self.process = folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 "persistence true", f"persistence_location {folder}/", f"log_dest file {folder}/mosquitto.log"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to user mosquitto, who cannot write to `folder`
        if users:
            passwords = folder / "passwords"
            passwords.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)  # hashes
            lines.append(f"password_file {passwords}")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.process.stderr.read()} {self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text() if path.exists() else ""


class Subscriber:
    """A paho client that records (topic, payload text, retained) of everything under `topic` (QoS 1). With a
    `session` name its session persists on the broker (clean_session off), so it misses nothing while away."""

    def __init__(self, port: int, topic: str, session: str | None = None, auth: tuple[str, str] | None = None):
        import paho.mqtt.client as mqtt

        self.messages, self._changed = [], threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        self.client.reconnect_delay_set(0.1, 0.5)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self._changed:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=15.0):
        """Wait until predicate(messages) holds; the messages."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.messages), timeout), self.messages
            return list(self.messages)

    def on(self, topic: str) -> list:
        with self._changed:
            return [(payload, retained) for t, payload, retained in self.messages if t == topic]

    def events(self, topic: str) -> list[dict]:
        return [json.loads(payload) for payload, _ in self.on(topic)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
