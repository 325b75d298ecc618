"""The review web app: security-desk operators review `fightwatch watch`'s alerts in a browser.

A FastAPI app over an AlertStore and a LiveView (trainer/serve/review/live_view.py). Everything it serves comes from
this package (ui/: two HTML pages, one script, one style sheet): no build step, nothing from a CDN.

Pages
    /                 live tiles (each camera's newest frame, status, fps, lag) and the alert queue (unreviewed
                      first, newest first; filters; camera events; bulk review), updated live over /api/events
    /alerts/{id}      the clip, the snapshot with where the fight is outlined, the fight probability over the alert,
                      the review and its history

API (OpenAPI document at /openapi.json; no /docs page: FastAPI's loads Swagger UI from a CDN)
    GET  /api/alerts?camera=&day=YYYY-MM-DD&review=&limit=&offset=   list, total in X-Total-Count
    GET  /api/alerts/{id}                    the alert, its review history and its scored windows
    POST /api/alerts/{id}/review             {"verdict": "ack" | "false_positive" | "true_positive", "who": ...}
    POST /api/alerts/{id}/undo               {"who": ...}
    POST /api/reviews                        {"alert_ids": [...], "verdict": ..., "who": ...}  all or none
    GET  /api/cameras, /api/cameras/{camera}/frame.jpg, /api/camera-events?camera=&day=&limit=
    GET  /api/events                         server-sent events: `change` (the store changed), `cameras`
    GET  /api/config                         what the page needs to know (whether writes need a token)
    GET  /media/alerts/{id}/clip.mp4, /media/alerts/{id}/snapshot.jpg   by alert id (Range requests: seeks)

Auth: with a token (its value in the environment variable named by token_env), writes need
`Authorization: Bearer <token>` (compared in constant time), and so do reads from other hosts than this one
(header, or the `fightwatch_token` cookie the page sets, since <video> and <img> cannot send headers). Without a
token the app serves loopback clients only, writes included; binding to another address without one is refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from data.errors import InputError
from trainer.serve.alerting.store import AlertRecord, AlertStore, Review, UnknownAlert
from trainer.serve.alerting.zones import Zone
from trainer.serve.review.live_view import LiveView, StoreLiveView

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).with_name("ui")
TOKEN_COOKIE = "fightwatch_token"
POLL_S = 0.25  # how often an event stream looks for store changes
CAMERAS_EVERY_S = 1.0  # ... and for the cameras' status, fps and lag
HEARTBEAT_S = 15.0  # a comment line now and then, so proxies keep an idle stream open

Verdict = Literal["ack", "false_positive", "true_positive"]
ReviewState = Literal["unreviewed", "ack", "false_positive", "true_positive"]
Who = Annotated[str, Field(min_length=1, max_length=100, description="who reviews: recorded with the time")]


class ReviewIn(BaseModel):
    verdict: Verdict
    who: Who = "operator"


class BulkReviewIn(BaseModel):
    alert_ids: list[str] = Field(min_length=1, max_length=1000)
    verdict: Verdict
    who: Who = "operator"


class UndoIn(BaseModel):
    who: Who = "operator"


class ReviewOut(BaseModel):
    id: int
    alert_id: str
    verdict: Verdict
    who: str
    at: str
    undone_at: str | None
    undone_by: str | None


class AlertOut(BaseModel):
    id: str
    camera: str
    source: str | None
    state: Literal["active", "ended"]
    start_s: float
    raised_s: float
    end_s: float | None
    duration_s: float = Field(description="end_s - start_s; while active, raised_s - start_s")
    start_time: str
    raised_time: str
    end_time: str | None
    peak_prob: float
    threshold: float | None
    box: tuple[float, float, float, float] | None = Field(
        description="where in the frame: the hottest region of the window that raised it, [x1, y1, x2, y2] in 0-1; "
                    "None when unknown")
    end_reason: str | None
    review: ReviewState
    reviewed_by: str | None
    reviewed_at: str | None
    page_url: str
    snapshot_url: str | None = Field(description="None when there is no snapshot (not written, or deleted)")
    clip_url: str | None


class WindowOut(BaseModel):
    start_s: float
    end_s: float
    prob: float


class AlertDetailOut(AlertOut):
    reviews: list[ReviewOut] = Field(description="oldest first, undone ones included")
    windows: list[WindowOut] = Field(description="the camera's scored windows around the alert, by start")


class CameraOut(BaseModel):
    id: str
    status: str
    fps: float | None = None
    lag_s: float | None = None
    since: str | None = None
    detail: str | None = None
    frame_url: str


class CameraEventOut(BaseModel):
    id: int
    camera: str
    kind: str
    at: str
    detail: str | None


class ZoneOut(BaseModel):
    camera: str
    name: str
    polygon: list[list[float]] = Field(description="corners [x, y], normalised to the frame")
    required: bool


class ConfigOut(BaseModel):
    writes_need_token: bool
    live_frames: bool = Field(description="whether the cameras' frames are served (watch --ui), or only statuses")
    zones: list[ZoneOut] = Field(default=[], description="watch.zones: drawn over each camera's snapshots")


def _media_url(alert_id: str, name: str) -> str:
    return f"/media/alerts/{quote(alert_id, safe='')}/{name}"


def _file_there(path: str | None, gone: bool) -> bool:
    return path is not None and not gone and os.path.isfile(path)


def _alert_out(a: AlertRecord) -> dict:
    end = a.end_s if a.end_s is not None else a.raised_s
    return {**{k: getattr(a, k) for k in AlertOut.model_fields if hasattr(a, k)},
            "duration_s": round(end - a.start_s, 3), "page_url": f"/alerts/{quote(a.id, safe='')}",
            "snapshot_url": _media_url(a.id, "snapshot.jpg") if _file_there(a.snapshot, a.snapshot_gone) else None,
            "clip_url": _media_url(a.id, "clip.mp4") if _file_there(a.clip, a.clip_gone) else None}


def _review_out(r: Review) -> dict:
    return vars(r).copy()


def is_loopback(host: str) -> bool:
    """Whether a host (a name or an address) is this machine only; names other than localhost count as not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _local(request: Request) -> bool:
    return request.client is not None and is_loopback(request.client.host)


class _Auth:
    """The token checks as FastAPI dependencies; see the module doc."""

    def __init__(self, token: str | None):
        self.token = token

    def _presented(self, request: Request, cookie_too: bool) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
        return request.cookies.get(TOKEN_COOKIE) if cookie_too else None

    def _check(self, request: Request, cookie_too: bool) -> None:
        if self.token is None:
            if not _local(request):
                raise HTTPException(403, "no token is configured: this app serves this machine only")
            return
        presented = self._presented(request, cookie_too)
        if presented is None:
            raise HTTPException(401, "this needs the token: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})

    def read(self, request: Request) -> None:
        if self.token is not None and _local(request):  # loopback reads are open
            return
        self._check(request, cookie_too=True)

    def write(self, request: Request) -> None:
        self._check(request, cookie_too=False)  # a cookie would let any page the browser opens post reviews


def create_app(store: AlertStore, live_view: LiveView | None = None, token: str | None = None,
               zones: tuple[Zone, ...] = ()) -> FastAPI:
    """The app over `store`; `live_view` None: the store's camera statuses (StoreLiveView). `token`: see the
    module doc (None: loopback clients only). `zones`: the cameras' zones (watch.zones), drawn over snapshots."""
    live = live_view if live_view is not None else StoreLiveView(store)
    auth = _Auth(token)
    app = FastAPI(title="fightwatch review", version="1", docs_url=None, redoc_url=None,
                  description="Review fightwatch watch's alerts: the queue, an alert's evidence, verdicts.")
    app.state.stopping = threading.Event()  # set by ReviewServer.stop(): event streams end, so shutdown is quick
    reader, writer = [Depends(auth.read)], [Depends(auth.write)]

    def page(name: str) -> HTMLResponse:
        return HTMLResponse((UI_DIR / name).read_text())

    def detail(alert_id: str) -> dict:
        found = store.alert(alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        return {**_alert_out(found.alert), "reviews": [_review_out(r) for r in found.reviews],
                "windows": [vars(w) for w in store.alert_windows(alert_id)]}

    def camera_list() -> list[dict]:
        return [{**c, "frame_url": f"/api/cameras/{quote(c['id'], safe='')}/frame.jpg"} for c in live.cameras()]

    @app.get("/", include_in_schema=False)
    def queue_page() -> HTMLResponse:
        return page("index.html")

    @app.get("/alerts/{alert_id}", include_in_schema=False)
    def alert_page(alert_id: str) -> HTMLResponse:
        return page("alert.html")  # the script fetches the alert, and says so when there is none

    app.mount("/static", StaticFiles(directory=UI_DIR), name="static")

    @app.get("/api/config", response_model=ConfigOut)
    def config() -> dict:
        return {"writes_need_token": token is not None, "live_frames": live_view is not None,
                "zones": [{"camera": z.camera, "name": z.name, "polygon": [list(p) for p in z.polygon],
                           "required": z.required} for z in zones]}

    @app.get("/api/alerts", response_model=list[AlertOut], dependencies=reader)
    def list_alerts(response: Response, camera: str | None = None, day: date | None = None,
                    review: ReviewState | None = None, limit: int = Query(100, ge=1, le=1000),
                    offset: int = Query(0, ge=0)) -> list[dict]:
        """Alerts, unreviewed first, then newest first; day: the UTC date of the start."""
        response.headers["X-Total-Count"] = str(store.count_alerts(camera, day, review))
        return [_alert_out(a) for a in store.alerts(camera, day, review, limit, offset)]

    @app.get("/api/alerts/{alert_id}", response_model=AlertDetailOut, dependencies=reader)
    def get_alert(alert_id: str) -> dict:
        return detail(alert_id)

    @app.post("/api/alerts/{alert_id}/review", response_model=AlertDetailOut, dependencies=writer)
    def post_review(alert_id: str, body: ReviewIn) -> dict:
        try:
            store.review(alert_id, body.verdict, body.who)
        except UnknownAlert:
            raise HTTPException(404, f"no alert {alert_id!r}") from None
        return detail(alert_id)

    @app.post("/api/alerts/{alert_id}/undo", response_model=AlertDetailOut, dependencies=writer)
    def undo(alert_id: str, body: UndoIn) -> dict:
        """Undo the alert's latest review (the one before it counts again); nothing to undo is no error."""
        try:
            store.undo_review(alert_id, body.who)
        except UnknownAlert:
            raise HTTPException(404, f"no alert {alert_id!r}") from None
        return detail(alert_id)

    @app.post("/api/reviews", response_model=list[ReviewOut], dependencies=writer)
    def review_many(body: BulkReviewIn) -> list[dict]:
        """One verdict for several alerts, all or none: an unknown id reviews none (404)."""
        try:
            return [_review_out(r) for r in store.review_many(body.alert_ids, body.verdict, body.who)]
        except UnknownAlert as e:
            raise HTTPException(404, f"no alert {e.args[0]!r}; none reviewed") from None

    @app.get("/api/cameras", response_model=list[CameraOut], dependencies=reader)
    def cameras() -> list[dict]:
        return camera_list()

    @app.get("/api/cameras/{camera}/frame.jpg", dependencies=reader, response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {}})
    def camera_frame(camera: str) -> Response:
        jpeg = live.latest_jpeg(camera)
        if jpeg is None:
            raise HTTPException(404, f"no frame of camera {camera!r}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/camera-events", response_model=list[CameraEventOut], dependencies=reader)
    def camera_events(camera: str | None = None, day: date | None = None,
                      limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
        """Cameras going online, reconnecting, offline; newest first."""
        return [vars(e) for e in store.camera_events(camera, limit, day)]

    @app.get("/media/alerts/{alert_id}/{name}", dependencies=reader, response_class=FileResponse,
             responses={200: {"content": {"video/mp4": {}, "image/jpeg": {}}}, 404: {}})
    def media(alert_id: str, name: Literal["clip.mp4", "snapshot.jpg"]) -> FileResponse:
        """An alert's clip or snapshot, found by the alert's id (never a path from the request)."""
        found = store.alert(alert_id)
        a = found.alert if found is not None else None
        path, gone = (None, True) if a is None else (a.clip, a.clip_gone) if name == "clip.mp4" \
            else (a.snapshot, a.snapshot_gone)
        if not _file_there(path, gone):
            raise HTTPException(404, f"alert {alert_id!r} has no {name.split('.')[0]}")
        return FileResponse(path, media_type="video/mp4" if name == "clip.mp4" else "image/jpeg")

    @app.get("/api/events", dependencies=reader, response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: `change` whenever the store changes (new or ended alerts, reviews, camera events;
        reload what you show), `cameras` with the camera list whenever it differs. One of each at the start."""

        async def stream():
            version = cams = None
            cams_due = beat_due = 0.0
            yield "retry: 1000\n\n"
            while not app.state.stopping.is_set() and not await request.is_disconnected():
                now = time.monotonic()
                current = await run_in_threadpool(store.data_version)
                if current != version:
                    version = current
                    yield f"event: change\ndata: {json.dumps({'version': current})}\n\n"
                if now >= cams_due:
                    cams_due = now + CAMERAS_EVERY_S
                    current = await run_in_threadpool(camera_list)
                    if current != cams:
                        cams = current
                        yield f"event: cameras\ndata: {json.dumps(current)}\n\n"
                if now >= beat_due:
                    beat_due = now + HEARTBEAT_S
                    yield ": alive\n\n"
                await asyncio.sleep(POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


# -- serving ----------------------------------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:8080 for IPv6; a bare PORT is 127.0.0.1's) -> (host, port); InputError when malformed."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise InputError(f"--ui {text}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, number


def read_token(token_env: str) -> str | None:
    """The token's value from the environment; None when the variable is unset or empty."""
    return os.environ.get(token_env) or None


@dataclass
class ReviewServer:
    """The app served by uvicorn on a daemon thread; `url` is where a browser finds it."""

    url: str
    app: FastAPI
    _server: object
    _thread: threading.Thread

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: open event streams end, requests in flight finish (up to timeout_s)."""
        self.app.state.stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the review app did not stop within %.0f s", timeout_s)


def serve_in_thread(store: AlertStore, live_view: LiveView | None, host: str, port: int,
                    token_env: str, zones: tuple[Zone, ...] = ()) -> ReviewServer:
    """Serve the review app on host:port (0: a free port) from a daemon thread; returns once it listens.
    InputError when the address cannot be bound, or is not loopback and $token_env holds no token."""
    import uvicorn

    token = read_token(token_env)
    if token is None and not is_loopback(host):
        raise InputError(f"the review app on {host}:{port} would be open to the network: set a token in "
                         f"${token_env} (or serve on 127.0.0.1)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as e:
        raise InputError(f"cannot serve the review app on {host}:{port}: {e.strerror or e}") from None
    app = create_app(store, live_view, token, zones)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="review-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        sock.close()
        raise RuntimeError("the review app's server did not start (see the log)")
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    log.info("review app at http://%s:%d/ (%s)", url_host, bound_port,
             f"writes need the token in ${token_env}" if token else "no token: this machine only")
    return ReviewServer(f"http://{url_host}:{bound_port}/", app, server, thread)
