"""The review app in a real headless Chromium (Debian's, driven by Selenium through Debian's chromedriver), served by
uvicorn over a real store: live updates without reload, the clip plays, reviews survive a reload.

FIGHTWATCH_SCREENSHOTS=docs makes the test write the README's screenshots there (default: the test's tmp dir).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.commands import FIGHTWATCH, free_port
from tests.support.models import fixed_output_model
from tests.support.review_fixtures import FixedLiveView, add_alert, jpeg_bytes
from tests.support.videos import write_video
from trainer.serve.alerting.store import AlertStore
from trainer.serve.alerting.zones import Zone
from trainer.serve.review.app import serve_in_thread

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TOKEN = "desk-token"
BOX = (0.2, 0.25, 0.55, 0.75)  # gate-2's: where it was hottest, normalised x1, y1, x2, y2
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run "
                "installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e .[dev])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,860",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


ZONES = (Zone("gate", "entrance", ((0.1, 0.5), (0.5, 0.5), (0.5, 1.0), (0.1, 1.0)), True),
         Zone("lobby", "desk", ((0.6, 0.1), (0.9, 0.1), (0.9, 0.4)), False))


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("FW_BROWSER_TOKEN", TOKEN)
    now = datetime.now(timezone.utc)
    store = AlertStore(tmp_path / "alerts.db")
    for i, camera in enumerate(["gate", "lobby", "gate"]):
        add_alert(store, tmp_path, f"{camera}-{i}", camera, now - timedelta(minutes=50 - 10 * i), peak=0.8 + 0.05 * i,
                  box=BOX if i == 2 else None)
    store.review("lobby-1", "ack", "desk-bo")
    store.record_camera_event("gate", "online", at=now - timedelta(hours=1))
    store.record_camera_event("lobby", "online", at=now - timedelta(hours=1))
    live = FixedLiveView()
    live.set_camera("gate", fps=25.0, lag_s=0.12, jpeg=jpeg_bytes(tmp_path, 5))
    live.set_camera("lobby", fps=15.0, lag_s=0.3, jpeg=jpeg_bytes(tmp_path, 9))
    server = serve_in_thread(store, live, "127.0.0.1", free_port(), token_env="FW_BROWSER_TOKEN", zones=ZONES)
    yield server, store, live, now
    server.stop()
    store.close()


def screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get("FIGHTWATCH_SCREENSHOTS") or tmp_path)


def wait(browser, condition, timeout_s=5.0, what="condition"):
    return WebDriverWait(browser, timeout_s, poll_frequency=0.05).until(lambda b: condition(b), message=what)


def text(browser, css) -> str:
    """The element's text, read in one step: the page re-renders what it shows on every update, so an element
    found first may be gone by the time it is read."""
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css)


def inner_text(browser, css) -> str:
    """The element's text as rendered (innerText, what is seen and copied), read in one step as `text` is."""
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def queue_ids(browser) -> list[str]:
    """The alerts in the queue, in order, read in one step as `text` is."""
    return browser.execute_script("return [...document.querySelectorAll('tr.alert')].map(r => r.dataset.id)")


def click(browser, css) -> None:
    """Click in one step, for the same reason as `text`."""
    browser.execute_script("document.querySelector(arguments[0]).click()", css)


def review_badge(browser, alert_id):
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.className : ''",
                                  f"tr[data-id='{alert_id}'] .badge")


def test_the_queue_updates_live_and_a_bulk_review_survives_a_reload(browser, served, tmp_path):
    server, store, live, now = served
    browser.get(server.url)
    token = wait(browser, lambda b: b.find_element(By.ID, "token"), what="the token field")
    token.send_keys(TOKEN, "\t")  # typed once; the page keeps it in localStorage and reloads
    wait(browser, lambda b: "live" == text(b, "#live-state"), what="the event stream")
    # the tiles: each camera's newest frame, status, fps, lag
    wait(browser, lambda b: b.execute_script(
        "const img = document.querySelector(\"[data-camera='gate'] img\"); return img && img.naturalWidth > 0"),
        what="gate's frame")
    gate = text(browser, "[data-camera='gate']")
    assert "online" in gate and "25.0 fps" in gate and "lag 0.12 s" in gate
    assert inner_text(browser, "[data-camera='gate'] .meta") == "gate · online · 25.0 fps · lag 0.12 s"
    wait(browser, lambda b: queue_ids(b) == [
        "gate-2", "gate-0", "lobby-1"], what="the queue: unreviewed first, newest first")
    # the thumbnails outline where, when the alert knows
    assert browser.execute_script("return [...document.querySelectorAll('tr.alert')].map(r => !!r.querySelector("
                                  "'.snapshot .box'))") == [True, False, False]

    # watch records a new alert, a camera drops: both show without a reload
    browser.execute_script("window.notReloaded = true")
    started = time.monotonic()
    add_alert(store, tmp_path, "lobby-3", "lobby", now - timedelta(minutes=5), peak=0.97)
    wait(browser, lambda b: "lobby-3" in queue_ids(b), 2.0, "the new alert")
    assert time.monotonic() - started < 2.0
    store.record_camera_event("gate", "offline", "stream lost: connection refused")
    live.set_camera("gate", status="offline", fps=None, lag_s=None)
    wait(browser, lambda b: "camera offline: stream lost" in text(b, "#queue"), 2.0, "the event row")
    wait(browser, lambda b: "offline" in text(b, "[data-camera='gate'] .status"), 3.0,
         "gate's tile offline")
    assert browser.execute_script("return window.notReloaded") is True
    assert queue_ids(browser)[0] == "lobby-3"
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "review-queue.png"))

    # bulk: two alerts false positive at once; the store has it, and a reload shows it
    for alert_id in ("gate-0", "lobby-3"):
        click(browser, f"input[data-id='{alert_id}']")
    assert text(browser, "#selected-count") == "2 selected"
    click(browser, "[data-bulk='false_positive']")
    wait(browser, lambda b: "false_positive" in review_badge(b, "lobby-3"), 2.0, "the verdict shown")
    assert store.alert("gate-0").alert.review == "false_positive" and store.alert("gate-0").alert.reviewed_by == "operator"
    browser.refresh()
    wait(browser, lambda b: "lobby-3" in queue_ids(b), what="the queue after a reload")
    assert "false_positive" in review_badge(browser, "gate-0") and "false positive · operator" in \
        text(browser, "tr[data-id='gate-0']")
    # the review filter
    browser.find_element(By.CSS_SELECTOR, "#f-review option[value='unreviewed']").click()  # not re-rendered
    wait(browser, lambda b: queue_ids(b) == ["gate-2"],
         what="only the unreviewed alert")


def test_a_tile_reads_name_status_and_time_apart(browser, tmp_path, monkeypatch):
    """A camera known from the store only (no live view): its tile reads "hall · offline since <time>", the parts
    apart in the text and on the screen, not run together ("halloffline since ...")."""
    monkeypatch.delenv("FW_BROWSER_TOKEN", raising=False)
    store = AlertStore(tmp_path / "alerts.db")
    store.record_camera_event("hall", "offline", "stream lost", at=datetime.now(timezone.utc) - timedelta(minutes=5))
    server = serve_in_thread(store, None, "127.0.0.1", free_port(), token_env="FW_BROWSER_TOKEN")
    try:
        browser.get(server.url)
        meta = "[data-camera='hall'] .meta"
        line = wait(browser, lambda b: inner_text(b, meta), what="hall's tile")
        assert re.fullmatch(r"hall · offline since \S.*", line), line
        # on the screen: each part ends before the next begins, on one line, or starts a line of its own
        boxes = browser.execute_script("return [...document.querySelectorAll(arguments[0] + ' > *')].map(e => {"
                                       "const r = e.getClientRects()[0]; return [r.left, r.right, r.top]; })", meta)
        assert len(boxes) == 3, boxes
        for (_, right, top), (left, _, next_top) in zip(boxes, boxes[1:]):
            assert next_top > top or left > right + 2, boxes
    finally:
        server.stop()
        store.close()


def test_an_alerts_page_plays_its_clip_draws_why_it_fired_and_keeps_reviews(browser, served, tmp_path):
    server, store, _, _ = served
    browser.get(server.url)
    browser.execute_script(f"localStorage.setItem('fightwatch_token', '{TOKEN}');"
                           "localStorage.setItem('fightwatch_who', 'desk-ana')")
    browser.get(f"{server.url}alerts/gate-2")
    video = wait(browser, lambda b: b.find_element(By.ID, "clip"), what="the video element")
    # H.264 as watch writes it (trainer.serve.runtime.snapshots.write_mp4): Debian's Chromium decodes it
    wait(browser, lambda b: b.execute_script("return arguments[0].readyState >= 2", video), 5.0, "the clip loaded")
    assert browser.execute_script("return arguments[0].duration", video) == pytest.approx(2.0, abs=0.1)
    browser.execute_script("arguments[0].play()", video)
    wait(browser, lambda b: b.execute_script("return arguments[0].currentTime", video) > 0.3, 5.0, "the clip playing")
    browser.execute_script("arguments[0].pause(); arguments[0].currentTime = 1.5", video)  # seeking: Range requests
    wait(browser, lambda b: b.execute_script("return !arguments[0].seeking && arguments[0].currentTime >= 1.4", video),
         5.0, "the seek")
    assert browser.execute_script("return document.getElementById('snapshot').naturalWidth") == 160
    points = browser.execute_script("return document.querySelector('#chart polyline.probability')"
                                    ".getAttribute('points')").split()
    assert len(points) == 7  # one per scored window
    assert "threshold" in text(browser, "#chart")
    # where: the outline over the snapshot, at the box in % of the picture (the picture in its own shape)
    where = wait(browser, lambda b: outline_in_picture(b), 2.0, "the outline over the loaded snapshot")
    assert where == pytest.approx(BOX, abs=0.02), where
    assert text(browser, "#snapshot-frame .box") == "fight 90%"
    # the camera's zones over the same picture: gate's entrance, not lobby's desk
    zone = browser.execute_script("""
        const img = document.getElementById('snapshot'), zones = document.querySelectorAll('.zones polygon');
        const i = img.getBoundingClientRect(), z = zones[0].getBoundingClientRect();
        return [zones.length, zones[0].dataset.zone, (z.left - i.left) / i.width, (z.top - i.top) / i.height,
                (z.right - i.left) / i.width, (z.bottom - i.top) / i.height];""")
    assert zone[:2] == [1, "entrance"] and zone[2:] == pytest.approx([0.1, 0.5, 0.5, 1.0], abs=0.02), zone
    assert "blue: the camera's zones" in text(browser, "#snapshot-caption")

    browser.find_element(By.CSS_SELECTOR, "[data-verdict='true_positive']").click()
    wait(browser, lambda b: "true positive by desk-ana" in text(b, "#history"), 2.0, "the review")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "review-alert.png"))
    browser.refresh()
    wait(browser, lambda b: "true positive · desk-ana" in text(b, "#review-state"), 5.0,
         "the review after a reload")
    browser.find_element(By.ID, "undo").click()
    wait(browser, lambda b: "unreviewed" in text(b, "#review-state"), 2.0, "the undo")
    assert "undone by desk-ana" in text(browser, "#history")
    assert store.alert("gate-2").alert.review == "unreviewed"

    # an alert that does not know where: its snapshot, no outline
    browser.get(f"{server.url}alerts/gate-0")
    wait(browser, lambda b: "gate: alert gate-0" in text(b, "#title") and b.execute_script(
        "return document.getElementById('snapshot').naturalWidth > 0"), 5.0, "gate-0's page and snapshot")
    assert browser.execute_script("return document.querySelectorAll('.box').length") == 0


def outline_in_picture(browser):
    """The outline's edges as fractions of the snapshot picture's rect (x1, y1, x2, y2), once the picture has loaded
    and its frame has the picture's shape; None before."""
    return browser.execute_script("""
        const img = document.getElementById('snapshot'), box = document.querySelector('#snapshot-frame .box');
        if (!box || !img.complete || !img.naturalWidth) return null;
        const i = img.getBoundingClientRect(), b = box.getBoundingClientRect();
        if (Math.abs(i.width / i.height - img.naturalWidth / img.naturalHeight) > 0.02) return null;
        return [(b.left - i.left) / i.width, (b.top - i.top) / i.height, (b.right - i.left) / i.width,
                (b.bottom - i.top) / i.height];""")


class GatedStream(ThreadingHTTPServer):
    """Serves an MPEG-TS file as a live stream once `go` is set: the page can be open before anything happens."""

    daemon_threads = True

    def __init__(self, data: bytes):
        super().__init__(("127.0.0.1", 0), GatedHandler)
        self.data, self.go = data, threading.Event()


class GatedHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.go.wait(120)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        self.wfile.write(self.server.data)

    def log_message(self, *args):
        pass


def test_watch_ui_shows_an_alert_within_2_s_of_its_json_line(browser, tmp_path):
    """The acceptance check of the review app: `fightwatch watch --ui` on a camera, the page open before the fight."""
    fixed_output_model(tmp_path / "fight.pth", "fight")  # the alert comes from the stream's first windows
    stream = GatedStream(write_video(tmp_path / "cam.ts", 150, fps=25).read_bytes())
    threading.Thread(target=stream.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    port, alerts = free_port(), tmp_path / "alerts.jsonl"
    process = subprocess.Popen(
        [str(FIGHTWATCH), "watch", "--model", str(tmp_path / "fight.pth"), "--store", str(tmp_path / "alerts.db"),
         "--ui", f"127.0.0.1:{port}", "--alerts", str(alerts), "--out-dir", str(tmp_path / "out"),
         f"gate=http://127.0.0.1:{stream.server_port}/cam.ts"], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while not _answers(url + "api/cameras"):
            assert process.poll() is None and time.monotonic() < deadline, "watch --ui did not come up"
            time.sleep(0.1)
        browser.get(url)
        wait(browser, lambda b: "live" == text(b, "#live-state"), what="the event stream")
        stream.go.set()
        while not alerts.is_file() or '"start"' not in alerts.read_text():
            assert process.poll() is None and time.monotonic() < deadline + 60, "no alert"
            time.sleep(0.01)
        written = time.monotonic()
        alert_id = json.loads(alerts.read_text().splitlines()[0])["alert_id"]
        wait(browser, lambda b: alert_id in queue_ids(b), 2.0, "the alert in the page")
        assert time.monotonic() - written < 2.0
        wait(browser, lambda b: b.execute_script(
            "const img = document.querySelector(\"[data-camera='gate'] img\"); return img && img.naturalWidth > 0"),
            5.0, "gate's live frame")
        with urllib.request.urlopen(f"{url}api/alerts/{alert_id}") as response:
            detail = json.loads(response.read())
        assert detail["windows"] and all(w["prob"] > 0.99 for w in detail["windows"])  # why it fired
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        stream.shutdown()
        stream.server_close()
    assert process.returncode == 0, err[-3000:]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False
