"""The review app's API over a real SQLite store, through FastAPI's TestClient; the served app (uvicorn) is slow."""

import http.client
import json
import re
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from data.errors import InputError
from tests.support.commands import free_port
from tests.support.review_fixtures import NOW, FixedLiveView, add_alert, jpeg_bytes
from trainer.serve.alerting.retention import Retention, apply_retention
from trainer.serve.alerting.store import AlertStore
from trainer.serve.review.app import create_app, is_loopback, parse_address, serve_in_thread

LOCAL, REMOTE = ("127.0.0.1", 50000), ("10.1.2.3", 50000)
TOKEN = "s3cret-token"


@pytest.fixture
def store(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        yield store


def client(store, token=None, live_view=None, host=LOCAL):
    return TestClient(create_app(store, live_view, token), client=host)


def test_the_queue_is_unreviewed_first_then_newest_and_filters(store, tmp_path):
    for i, (camera, hours) in enumerate([("gate", 0), ("gate", 1), ("door", 2), ("gate", 30)]):
        add_alert(store, tmp_path, f"a{i}", camera, NOW + timedelta(hours=hours), media=False)
    store.review("a3", "ack", "ana")
    api = client(store)
    listed = api.get("/api/alerts")
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "4"
    assert [a["id"] for a in listed.json()] == ["a2", "a1", "a0", "a3"]
    first = listed.json()[0]
    assert (first["camera"], first["start_s"], first["raised_s"], first["peak_prob"], first["review"]) == \
        ("door", 10.0, 11.28, 0.9, "unreviewed")
    assert first["duration_s"] == 2.24 and first["page_url"] == "/alerts/a2" and first["clip_url"] is None
    assert "clip" not in first and "snapshot" not in first  # the server's paths stay on the server
    assert [a["id"] for a in api.get("/api/alerts?camera=gate").json()] == ["a1", "a0", "a3"]
    assert [a["id"] for a in api.get("/api/alerts?day=2024-05-21").json()] == ["a3"]
    assert [a["id"] for a in api.get("/api/alerts?review=ack").json()] == ["a3"]
    page = api.get("/api/alerts?limit=2&offset=1")
    assert [a["id"] for a in page.json()] == ["a1", "a0"] and page.headers["X-Total-Count"] == "4"
    for bad in ("review=fight", "day=yesterday", "limit=0", "offset=-1"):
        assert api.get(f"/api/alerts?{bad}").status_code == 422, bad


def test_review_undo_and_bulk_keep_who_and_when(store, tmp_path):
    for alert_id in ("a1", "a2", "a3"):
        add_alert(store, tmp_path, alert_id, media=False)
    api = client(store)
    reviewed = api.post("/api/alerts/a1/review", json={"verdict": "true_positive", "who": "ana"}).json()
    assert (reviewed["review"], reviewed["reviewed_by"]) == ("true_positive", "ana")
    assert reviewed["reviewed_at"].endswith("Z")
    assert api.post("/api/alerts/a1/review", json={"verdict": "ack"}).json()["reviewed_by"] == "operator"
    undone = api.post("/api/alerts/a1/undo", json={"who": "bo"}).json()
    assert (undone["review"], undone["reviewed_by"]) == ("true_positive", "ana")
    history = api.get("/api/alerts/a1").json()["reviews"]
    assert [(r["verdict"], r["who"], r["undone_by"]) for r in history] == [("true_positive", "ana", None),
                                                                         ("ack", "operator", "bo")]
    # bulk: all or none
    missing = api.post("/api/reviews", json={"alert_ids": ["a2", "nope", "a3"], "verdict": "false_positive"})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert store.count_alerts(review="false_positive") == 0
    done = api.post("/api/reviews", json={"alert_ids": ["a2", "a3"], "verdict": "false_positive", "who": "cy"})
    assert [(r["alert_id"], r["who"]) for r in done.json()] == [("a2", "cy"), ("a3", "cy")]
    assert store.count_alerts(review="false_positive") == 2
    # nothing to undo is no error; an unknown alert is a 404; a bad verdict or an empty name a 422
    api.post("/api/alerts/a2/undo", json={})
    assert api.post("/api/alerts/a2/undo", json={}).json()["review"] == "unreviewed"
    assert api.post("/api/alerts/nope/review", json={"verdict": "ack"}).status_code == 404
    assert api.post("/api/alerts/nope/undo", json={}).status_code == 404
    assert api.post("/api/alerts/a1/review", json={"verdict": "fight"}).status_code == 422
    assert api.post("/api/alerts/a1/review", json={"verdict": "ack", "who": ""}).status_code == 422
    assert api.post("/api/reviews", json={"alert_ids": [], "verdict": "ack"}).status_code == 422
    assert api.get("/api/alerts/nope").status_code == 404


def test_an_alerts_detail_has_its_windows_for_the_chart(store, tmp_path):
    add_alert(store, tmp_path, "a1", peak=0.95, media=False)
    detail = client(store).get("/api/alerts/a1").json()
    assert detail["threshold"] == 0.5 and detail["end_reason"] == "calm"
    assert [w["prob"] for w in detail["windows"]] == [0.2, 0.4, 0.7, 0.8, 0.95, 0.6, 0.3]
    assert detail["windows"][0] == {"start_s": 9.36, "end_s": 10.0, "prob": 0.2}


def test_an_alert_says_where_in_the_frame_or_null(store, tmp_path):
    add_alert(store, tmp_path, "boxed", media=False, box=(0.25, 0.1, 0.5, 0.6))
    add_alert(store, tmp_path, "plain", media=False)
    api = client(store)
    assert api.get("/api/alerts/boxed").json()["box"] == [0.25, 0.1, 0.5, 0.6]
    assert api.get("/api/alerts/plain").json()["box"] is None
    assert {a["id"]: a["box"] for a in api.get("/api/alerts").json()} == {"boxed": [0.25, 0.1, 0.5, 0.6], "plain": None}


def test_writes_need_the_token_and_remote_reads_too(store, tmp_path):
    add_alert(store, tmp_path, "a1")
    review = {"verdict": "ack", "who": "ana"}
    local = client(store, TOKEN)
    assert local.get("/api/alerts").status_code == 200  # loopback reads are open
    assert local.get("/media/alerts/a1/snapshot.jpg").status_code == 200
    assert local.post("/api/alerts/a1/review", json=review).status_code == 401
    assert local.post("/api/alerts/a1/review", json=review,
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert local.post("/api/reviews", json={"alert_ids": ["a1"], **review}).status_code == 401
    assert local.post("/api/alerts/a1/undo", json={}).status_code == 401
    assert store.alert("a1").alert.review == "unreviewed"
    # a cookie is for reads only: a page on another site could make the browser send it with a POST
    local.cookies.set("fightwatch_token", TOKEN)
    assert local.post("/api/alerts/a1/review", json=review).status_code == 401
    assert local.post("/api/alerts/a1/review", json=review,
                      headers={"Authorization": f"Bearer {TOKEN}"}).json()["review"] == "ack"

    remote = client(store, TOKEN, host=REMOTE)
    assert remote.get("/api/alerts").status_code == 401
    assert remote.get("/media/alerts/a1/clip.mp4").status_code == 401
    assert remote.get("/api/alerts", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    remote.cookies.set("fightwatch_token", TOKEN)  # what the page sets, for <img> and <video>
    assert remote.get("/media/alerts/a1/clip.mp4").status_code == 200
    assert remote.get("/").status_code == 200 and remote.get("/api/config").json()["writes_need_token"] is True

    # no token configured: this machine only, writes included
    open_local, open_remote = client(store), client(store, host=REMOTE)
    assert open_local.post("/api/alerts/a1/review", json=review).status_code == 200
    assert open_remote.get("/api/alerts").status_code == 403
    assert open_remote.post("/api/alerts/a1/review", json=review).status_code == 403


def test_media_by_alert_id_with_ranges_and_no_path_traversal(store, tmp_path):
    add_alert(store, tmp_path, "a1")
    add_alert(store, tmp_path, "old", at=NOW - timedelta(days=3))
    (tmp_path / "secret.txt").write_text("not for the browser")
    api = client(store)
    clip = api.get("/media/alerts/a1/clip.mp4")
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    assert clip.headers["accept-ranges"] == "bytes" and clip.content[4:8] == b"ftyp"
    part = api.get("/media/alerts/a1/clip.mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == clip.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(clip.content)}"
    snapshot = api.get("/media/alerts/a1/snapshot.jpg")
    assert snapshot.headers["content-type"] == "image/jpeg" and snapshot.content[:2] == b"\xff\xd8"
    for path in ("/media/alerts/..%2F..%2Fsecret.txt/clip.mp4", "/media/alerts/a1/..%2F..%2Fsecret.txt",
                 "/media/alerts/a1/../../secret.txt", "/media/alerts/a1/secret.txt", "/media/secret.txt",
                 "/static/..%2F..%2F..%2Fsecret.txt", "/media/alerts/nope/clip.mp4"):
        response = api.get(path)
        assert response.status_code in (404, 422), path
        assert b"not for the browser" not in response.content
    # a clip deleted by retention's media cap: no URL, a 404
    apply_retention(store, Retention(alert_days=None, camera_event_days=None, media_cap_mb=0.001), now=NOW)
    old = api.get("/api/alerts/old").json()
    assert old["clip_url"] is None and api.get("/media/alerts/old/clip.mp4").status_code == 404


def test_cameras_from_the_store_or_a_live_view(store, tmp_path):
    store.record_camera_event("gate", "online", at=NOW)
    store.record_camera_event("gate", "offline", "stream lost", at=NOW + timedelta(days=1))
    store.record_camera_event("door", "online", at=NOW + timedelta(days=1))
    api = client(store)
    assert [(c["id"], c["status"], c["detail"]) for c in api.get("/api/cameras").json()] == [
        ("door", "online", None), ("gate", "offline", "stream lost")]
    assert api.get("/api/cameras/gate/frame.jpg").status_code == 404  # the store has no pictures
    assert api.get("/api/config").json() == {"writes_need_token": False, "live_frames": False, "zones": []}
    events = api.get("/api/camera-events?day=2024-05-21").json()
    assert [(e["camera"], e["kind"]) for e in events] == [("door", "online"), ("gate", "offline")]
    assert [e["kind"] for e in api.get("/api/camera-events?camera=gate&limit=1").json()] == ["offline"]

    live = FixedLiveView()
    live.set_camera("lobby", fps=12.5, lag_s=0.25, jpeg=jpeg_bytes(tmp_path))
    api = client(store, live_view=live)
    (camera,) = api.get("/api/cameras").json()
    assert camera == {"id": "lobby", "status": "online", "fps": 12.5, "lag_s": 0.25, "since": None, "detail": None,
                      "frame_url": "/api/cameras/lobby/frame.jpg"}
    frame = api.get(camera["frame_url"])
    assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert api.get("/api/cameras/nope/frame.jpg").status_code == 404


def test_the_openapi_document_lists_the_api_and_no_page_loads_from_a_cdn(store):
    api = client(store)
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/alerts/{alert_id}/review", "/api/alerts/{alert_id}/undo",
            "/api/reviews", "/api/cameras", "/api/camera-events", "/api/events",
            "/media/alerts/{alert_id}/{name}"} <= set(paths)
    assert set(paths["/api/alerts/{alert_id}/review"]) == {"post"}
    assert api.get("/docs").status_code == 404 and api.get("/redoc").status_code == 404
    for page in ("/", "/alerts/a1", "/static/app.js", "/static/style.css"):
        hosts = set(re.findall(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+", api.get(page).text))
        assert hosts <= {"http://www.w3.org"}, page  # the SVG namespace, a name, not a fetch


def test_addresses_and_the_refusal_to_open_an_untokened_app_to_the_network(store, monkeypatch):
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("[::1]:9000") == ("::1", 9000) and parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("host:port", "127.0.0.1:70000", ""):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_address(bad)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("desk.example")
    monkeypatch.delenv("FW_TEST_TOKEN", raising=False)
    with pytest.raises(InputError, match=r"0.0.0.0:0 would be open to the network: set a token in \$FW_TEST_TOKEN"):
        serve_in_thread(store, None, "0.0.0.0", 0, token_env="FW_TEST_TOKEN")


def _read_events(response, wanted: str, timeout_s: float) -> dict:
    """The data of the next server-sent event named `wanted`."""
    deadline, name = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        line = response.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == wanted:
            return json.loads(line[6:])
    raise AssertionError(f"no {wanted} event within {timeout_s} s")


@pytest.mark.slow
def test_served_by_uvicorn_events_arrive_live_and_stop_is_clean(store, tmp_path, monkeypatch):
    monkeypatch.setenv("FW_TEST_TOKEN", TOKEN)
    live = FixedLiveView()
    live.set_camera("gate")
    server = serve_in_thread(store, live, "127.0.0.1", free_port(), token_env="FW_TEST_TOKEN")
    try:
        url = urlsplit(server.url)
        events = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        events.request("GET", "/api/events")
        stream = events.getresponse()
        assert stream.status == 200 and stream.getheader("content-type").startswith("text/event-stream")
        first = _read_events(stream, "change", 5)["version"]  # one of each at the start
        assert [c["id"] for c in _read_events(stream, "cameras", 5)] == ["gate"]
        add_alert(store, tmp_path, "a1", media=False)  # watch's write, from another connection
        assert _read_events(stream, "change", 2)["version"] != first
        live.set_camera("door", status="reconnecting")
        assert {c["id"] for c in _read_events(stream, "cameras", 3)} == {"gate", "door"}
        api = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        api.request("POST", "/api/alerts/a1/review", json.dumps({"verdict": "ack"}),
                    {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        assert api.getresponse().status == 200
        assert _read_events(stream, "change", 2)
        with pytest.raises(InputError, match="cannot serve the review app on 127.0.0.1"):
            serve_in_thread(store, live, "127.0.0.1", url.port, token_env="FW_TEST_TOKEN")  # the port is taken
    finally:
        started = time.monotonic()
        server.stop()  # with the event stream still open
    assert time.monotonic() - started < 3 and not server._thread.is_alive()
