"""The MQTT sink against a real mosquitto broker the tests start, read by a real paho subscriber."""

import logging
import os
import subprocess
import sys
import time

import pytest

from data.errors import InputError
from tests.support.commands import ROOT
from tests.support.mosquitto import Mosquitto, Subscriber, needs_mosquitto
from trainer.serve.alerting.sinks.base import CameraPresence
from trainer.serve.alerting.sinks.config import MqttConfig

START = {"event": "start", "alert_id": "gate-20240520T120000Z-1", "camera": "gate", "source": "/v/gate.mp4",
         "start_s": 0.0, "raised_s": 0.96, "start_time": "2024-05-20T12:00:00.000Z",
         "raised_time": "2024-05-20T12:00:00.960Z", "peak_prob": 0.91, "threshold": 0.5,
         "snapshot": "/out/gate/a.jpg", "clip": "/out/gate/a.mp4", "box": [0.25, 0.1, 0.5, 0.6]}
END = {**{k: v for k, v in START.items() if k != "threshold"}, "event": "end", "end_s": 2.0,
       "end_time": "2024-05-20T12:00:02.000Z", "peak_prob": 0.98, "snapshot": "/out/gate/a-peak.jpg",
       "reason": "source ended"}
USER_ENV, PASSWORD_ENV, PASSWORD = "FIGHTWATCH_MQTT_TEST_USER", "FIGHTWATCH_MQTT_TEST_PASSWORD", "mqtt-Pw-5531"


def config(port, **kw):
    return MqttConfig(**{**dict(host="127.0.0.1", port=port, topic_prefix="fw", client_id="fightwatch-test",
                                username_env=None, password_env=None, tls=False), **kw})


def presence(camera, status):
    return CameraPresence(camera, status, None, time.time())


@pytest.fixture
def broker(tmp_path):
    started = Mosquitto(tmp_path / "broker").start()
    yield started
    started.stop()


def mqtt_sink(cfg):
    from trainer.serve.alerting.sinks.mqtt import MqttSink

    return MqttSink(cfg, reconnect_delay_s=(1, 2))


def test_a_missing_credential_variable_is_an_input_error(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv(USER_ENV, "watch")
    with pytest.raises(InputError, match=f"{PASSWORD_ENV} \\(sinks.mqtt.password_env\\) is not set"):
        mqtt_sink(config(1883, username_env=USER_ENV, password_env=PASSWORD_ENV))
    with pytest.raises(ValueError, match="topic_prefix"):
        config(1883, topic_prefix="fw/#")


def test_alert_fields_carry_the_start_into_the_end():
    from trainer.serve.alerting.sinks.mqtt import alert_fields

    new = alert_fields(START)
    assert new["id"] == START["alert_id"] and new["end_time"] is None and new["threshold"] == 0.5
    ended = alert_fields(END, new)
    assert ended["end_time"] == END["end_time"] and ended["threshold"] == 0.5 and ended["end_reason"] == "source ended"
    assert ended["snapshot"] == "/out/gate/a-peak.jpg" and ended["peak_prob"] == 0.98
    assert new["box"] == ended["box"] == [0.25, 0.1, 0.5, 0.6]
    assert alert_fields({**END, "box": None}, new)["box"] is None  # the end says it is unknown
    assert alert_fields({k: v for k, v in END.items() if k != "box"}, new)["box"] == new["box"]  # the end says nothing
    unknown = alert_fields({k: v for k, v in START.items() if k != "box"})  # a model run without regions
    assert unknown["box"] is None and alert_fields({**END, "box": None}, unknown)["box"] is None


@pytest.mark.slow  # a broker
@needs_mosquitto
def test_events_status_and_availability_reach_a_subscriber(broker):
    early = Subscriber(broker.port, "fw/#")
    sink = mqtt_sink(config(broker.port))
    sink.camera_status(presence("gate", "online"))
    sink.camera_status(presence("door", "reconnecting"))
    statuses = {"fw/available", "fw/gate/status", "fw/door/status"}
    early.wait_for(lambda m: {t for t, _, _ in m} >= statuses)
    early.close()
    late = Subscriber(broker.port, "fw/#")  # subscribes after the fact: retained messages are what it gets
    try:
        late.wait_for(lambda m: {t for t, _, _ in m} >= statuses)
        assert late.on("fw/available")[-1] == ("online", True)
        assert late.on("fw/gate/status")[-1] == ("online", True)
        assert late.on("fw/door/status")[-1] == ("reconnecting", True)
        sink.send(START)
        sink.send(END)
        late.wait_for(lambda m: sum(t == "fw/events" for t, _, _ in m) == 2)
        new, end = late.events("fw/events")
        assert new["type"] == "new" and new["before"] == new["after"]
        assert new["after"]["id"] == START["alert_id"] and new["after"]["camera"] == "gate"
        assert new["after"]["label"] == "fight" and new["after"]["end_time"] is None
        assert new["after"]["snapshot"] == "/out/gate/a.jpg" and new["after"]["clip"] == "/out/gate/a.mp4"
        assert new["after"]["box"] == end["after"]["box"] == [0.25, 0.1, 0.5, 0.6]  # normalised x1, y1, x2, y2
        assert end["type"] == "end" and end["before"] == new["after"]
        assert end["after"]["end_time"] == END["end_time"] and end["after"]["peak_prob"] == 0.98
        sink.camera_status(presence("gate", "offline"))
        sink.close()
        late.wait_for(lambda m: ("fw/available", "offline", False) in m and ("fw/gate/status", "offline", False) in m)
        assert sink.counts["unacked"] == 0 and sink.counts["dropped"] == 0
    finally:
        late.close()
    again = Subscriber(broker.port, "fw/#")  # the last word is retained
    try:
        retained = again.wait_for(lambda m: {t for t, _, _ in m} >= statuses)
        assert again.on("fw/available") == [("offline", True)] and again.on("fw/gate/status") == [("offline", True)]
        assert {t for t, _, _ in retained} == statuses  # events are not retained
    finally:
        again.close()


@pytest.mark.slow  # a broker restarted
@needs_mosquitto
def test_an_alert_sent_while_the_broker_is_away_arrives_after_it_restarts(broker, caplog):
    caplog.set_level(logging.INFO, logger="trainer.serve")
    # a persistent session: the broker keeps it (and what arrives for it) across its own restart
    watcher = Subscriber(broker.port, "fw/#", session="test-watcher")
    sink = mqtt_sink(config(broker.port))
    try:
        sink.camera_status(presence("gate", "online"))
        watcher.wait_for(lambda m: ("fw/gate/status", "online", False) in m)
        broker.stop()
        t0 = time.monotonic()
        sink.send(START)  # returns at once though nobody is listening: paho queues it
        sink.camera_status(presence("gate", "reconnecting"))
        assert time.monotonic() - t0 < 0.5
        assert sink.counts["unacked"] >= 2
        time.sleep(0.5)
        broker.start()
        watcher.wait_for(lambda m: any(t == "fw/events" for t, _, _ in m), timeout=30)
        (event,) = watcher.events("fw/events")
        assert event["type"] == "new" and event["after"]["id"] == START["alert_id"]
        watcher.wait_for(lambda m: ("fw/gate/status", "reconnecting", False) in m)
        assert "disconnected" in caplog.text and "connected" in caplog.text
        sink.close()
        assert sink.counts["unacked"] == 0
    finally:
        watcher.close()


@pytest.mark.slow  # a broker and a process killed
@needs_mosquitto
def test_the_last_will_says_offline_when_the_watcher_dies(broker):
    code = ("import sys, time; from trainer.serve.alerting.sinks.mqtt import MqttSink; from trainer.serve.alerting.sinks.config import MqttConfig;"
            f"s = MqttSink(MqttConfig('127.0.0.1', {broker.port}, 'fw', 'dying', None, None, False));"
            "time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    watcher = Subscriber(broker.port, "fw/available")
    try:
        watcher.wait_for(lambda m: any(message[:2] == ("fw/available", "online") for message in m))
        process.kill()  # no close(): only the broker's will can tell
        watcher.wait_for(lambda m: m[-1][:2] == ("fw/available", "offline"))
    finally:
        process.kill()
        process.wait()
        watcher.close()


@pytest.mark.slow  # a broker
@needs_mosquitto
def test_credentials_come_from_the_environment_and_stay_out_of_logs(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(USER_ENV, "watch")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    broker = Mosquitto(tmp_path / "auth", users={"watch": PASSWORD, "reader": "r"}).start()
    try:
        reader = Subscriber(broker.port, "fw/#", auth=("reader", "r"))
        sink = mqtt_sink(config(broker.port, username_env=USER_ENV, password_env=PASSWORD_ENV))
        sink.camera_status(presence("gate", "online"))
        reader.wait_for(lambda m: ("fw/gate/status", "online", False) in m)
        sink.close()
        reader.close()
        assert PASSWORD not in caplog.text and PASSWORD not in repr(sink)
    finally:
        broker.stop()
