"""Video download: real yt-dlp runs against a local HTTP server serving small H.264 mp4 files.

The server (generic extractor: a direct media URL `/{id}.mp4`) can answer 404 for a removed
video, fail the first N requests of a flaky one, fail one forever, serve Range requests, and
counts requests per path, so the tests can tell what yt-dlp actually fetched.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
from collections import Counter

import av
import numpy as np
import pytest

from data import download
from data.download import (
    DownloadResult,
    classify_failure,
    download_videos,
    resolve_local,
    summarize,
    validate_video_id,
    video_paths,
)
from data.errors import InputError

OK = ("okVideo0001", "okVideo0002", "okVideo0003")
REMOVED = "removed0404"
FLAKY = "flaky000500"
DOWN = "down0000503"
RESUME = "resume00001"


def make_mp4(seed: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(seed)
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def reset(self):
        self.files: dict[str, bytes] = {}  # path -> body
        self.fail_first: dict[str, int] = {}  # path -> requests still to answer 500
        self.status: dict[str, int] = {}  # path -> status answered to every request
        self.counts: Counter = Counter()
        self.ranges: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{video_id}}.mp4"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.counts[self.path] += 1
            if self.headers.get("Range"):
                srv.ranges.append((self.path, self.headers["Range"]))
            status = srv.status.get(self.path)
            if status is None and srv.fail_first.get(self.path, 0) > 0:
                srv.fail_first[self.path] -= 1
                status = 500
            body = srv.files.get(self.path)
        if status is None and body is None:
            status = 404
        if status is not None:
            self.send_error(status)
            return
        start, end, code = 0, len(body) - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]), end) if match[2] else end
            if start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        self.end_headers()
        try:
            self.wfile.write(body[start:end + 1])
        except (BrokenPipeError, ConnectionResetError):
            pass  # yt-dlp's generic extractor reads the headers only, then hangs up


@pytest.fixture(scope="module")
def videos():
    return {video_id: make_mp4(i) for i, video_id in enumerate((*OK, FLAKY, DOWN, RESUME))}


@pytest.fixture(scope="module")
def _server():
    server = Server(("127.0.0.1", 0), Handler)
    server.reset()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def server(_server, videos):
    _server.reset()
    _server.files = {f"/{video_id}.mp4": body for video_id, body in videos.items()}
    return _server


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def run(server, cache, ids, **kwargs):
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("progress", False)
    return {r.video_id: r for r in download_videos(ids, cache, url_template=server.template(), **kwargs)}


def ledger(cache):
    return json.loads((cache / "ledger.json").read_text())["videos"]


def frame_count(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_downloads_then_serves_from_cache(server, videos, tmp_path):
    cache = tmp_path / "cache"
    results = run(server, cache, OK, max_workers=2)
    for video_id in OK:
        r = results[video_id]
        assert (r.status, r.path, r.attempts) == ("downloaded", cache / f"{video_id}.mp4", 1)
        assert r.path.read_bytes() == videos[video_id]
        assert frame_count(r.path) == 10
    counts = dict(server.counts)
    assert all(counts[f"/{v}.mp4"] >= 1 for v in OK)

    again = run(server, cache, [*OK, OK[0]])  # a repeated id is fetched once
    assert [r.status for r in again.values()] == ["cached"] * 3
    assert dict(server.counts) == counts  # not one request more
    entries = ledger(cache)
    assert {entries[v]["status"] for v in OK} == {"ok"}
    assert entries[OK[0]]["file"] == f"{OK[0]}.mp4" and entries[OK[0]]["attempts"] == 1


def test_removed_video_fails_permanently_and_is_not_retried(server, tmp_path):
    cache = tmp_path / "cache"
    sleeps = Sleeps()
    r = run(server, cache, [REMOVED], sleep=sleeps)[REMOVED]
    assert (r.status, r.reason, r.permanent, r.attempts, r.path) == ("failed", "unavailable", True, 1, None)
    assert sleeps == [] and server.counts[f"/{REMOVED}.mp4"] == 1
    entry = ledger(cache)[REMOVED]
    assert (entry["status"], entry["reason"], entry["permanent"], entry["attempts"]) == ("failed", "unavailable", True, 1)
    assert "404" in entry["error"] and "\n" not in entry["error"] and entry["time"]

    again = run(server, cache, [REMOVED])[REMOVED]
    assert (again.status, again.reason, again.permanent) == ("skipped", "unavailable", True)
    assert server.counts[f"/{REMOVED}.mp4"] == 1
    forced = run(server, cache, [REMOVED], retry_permanent=True)[REMOVED]
    assert forced.status == "failed" and server.counts[f"/{REMOVED}.mp4"] == 2


def test_flaky_server_is_retried_with_growing_backoff(server, videos, tmp_path):
    server.fail_first[f"/{FLAKY}.mp4"] = 2
    sleeps = Sleeps()
    r = run(server, tmp_path, [FLAKY], retries=3, backoff_s=2.0, sleep=sleeps)[FLAKY]
    assert (r.status, r.attempts) == ("downloaded", 3)
    assert r.path.read_bytes() == videos[FLAKY]
    assert len(sleeps) == 2
    assert 2.0 <= sleeps[0] <= 3.0 and 4.0 <= sleeps[1] <= 6.0  # exponential, plus up to 50 % jitter
    assert ledger(tmp_path)[FLAKY]["attempts"] == 3


def test_exhausted_transient_failure_is_retried_next_run(server, videos, tmp_path):
    path = f"/{DOWN}.mp4"
    server.status[path] = 503
    sleeps = Sleeps()
    r = run(server, tmp_path, [DOWN], retries=2, backoff_s=0.5, sleep=sleeps)[DOWN]
    assert (r.status, r.reason, r.permanent, r.attempts) == ("failed", "http_5xx", False, 3)
    assert server.counts[path] == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0]
    entry = ledger(tmp_path)[DOWN]
    assert (entry["status"], entry["permanent"], entry["reason"]) == ("failed", False, "http_5xx")
    assert "503" in entry["error"]

    del server.status[path]  # the server is back
    again = run(server, tmp_path, [DOWN])[DOWN]
    assert again.status == "downloaded" and again.path.read_bytes() == videos[DOWN]
    assert server.counts[path] > 3
    assert ledger(tmp_path)[DOWN]["status"] == "ok" and ledger(tmp_path)[DOWN]["attempts"] == 4


def test_connection_refused_is_transient(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    r = download_videos([OK[0]], tmp_path, url_template=f"http://127.0.0.1:{port}/{{video_id}}.mp4",
                        retries=1, sleep=sleeps, progress=False)[0]
    assert (r.status, r.reason, r.permanent, r.attempts) == ("failed", "network", False, 2)
    assert len(sleeps) == 1


def test_vanished_file_is_downloaded_again(server, tmp_path):
    run(server, tmp_path, [OK[0]])
    (tmp_path / f"{OK[0]}.mp4").unlink()
    r = run(server, tmp_path, [OK[0]])[OK[0]]
    assert r.status == "downloaded" and r.path.is_file()
    assert ledger(tmp_path)[OK[0]]["attempts"] == 2


def test_partial_download_resumes_with_range(server, videos, tmp_path):
    body = videos[RESUME]
    half = len(body) // 2
    (tmp_path / f"{RESUME}.mp4.part").write_bytes(body[:half])
    r = run(server, tmp_path, [RESUME])[RESUME]
    assert r.status == "downloaded" and r.path.read_bytes() == body
    assert (f"/{RESUME}.mp4", f"bytes={half}-") in server.ranges


def test_ledger_is_valid_json_and_no_temp_files_left(server, tmp_path):
    server.fail_first[f"/{FLAKY}.mp4"] = 1
    run(server, tmp_path, [*OK, REMOVED, FLAKY], max_workers=3)
    videos = ledger(tmp_path)
    assert set(videos) == {*OK, REMOVED, FLAKY}
    for entry in videos.values():
        assert set(entry) >= {"status", "reason", "permanent", "attempts", "error", "time"}
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["ledger.json", *(f"{v}.mp4" for v in (*OK, FLAKY))])


@pytest.mark.parametrize("bad", ["../etc", "a b", "x;rm -rf", "abcdefghijkl", "", "abcdefghij", "abc/defghij",
                                 "abcdefghij\n", "$(reboot)ab", None])
def test_invalid_ids_are_rejected_before_any_request(server, tmp_path, bad):
    with pytest.raises(InputError) as e:
        run(server, tmp_path / "cache", [OK[0], bad])
    assert repr(bad) in str(e.value)
    assert not server.counts
    assert not (tmp_path / "cache").exists()


def test_validate_video_id():
    assert validate_video_id("-_aZ09bcdef") == "-_aZ09bcdef"
    with pytest.raises(InputError, match="not a YouTube video id"):
        validate_video_id("../../etc/p")


def test_bad_url_template_and_workers(tmp_path):
    with pytest.raises(InputError, match="URL template"):
        download_videos([OK[0]], tmp_path, url_template="http://x/fixed.mp4", progress=False)
    with pytest.raises(InputError, match="URL template"):
        download_videos([OK[0]], tmp_path, url_template="http://x/{id}.mp4", progress=False)
    with pytest.raises(InputError, match="max_workers"):
        download_videos([OK[0]], tmp_path, max_workers=0, progress=False)


def test_corrupt_ledger_is_input_error(tmp_path):
    (tmp_path / "ledger.json").write_text("{not json")
    with pytest.raises(InputError, match="ledger.json"):
        download_videos([OK[0]], tmp_path, progress=False)


def test_resolve_local(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    for name in (f"{OK[0]}.mp4", f"{OK[1]}.MKV", f"{OK[1]}.webm", f"{OK[2]}.mp4.part", "notes.txt"):
        (root / name).write_bytes(b"x")
    found, missing = resolve_local([OK[0], OK[1], OK[2], REMOVED], root)
    assert found == {OK[0]: root / f"{OK[0]}.mp4", OK[1]: root / f"{OK[1]}.MKV"}  # mkv ranks above webm
    assert missing == [OK[2], REMOVED]
    with pytest.raises(InputError, match="not a YouTube video id"):
        resolve_local(["../videos"], root)


def test_resolve_local_missing_root(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        resolve_local([OK[0]], tmp_path / "nowhere")


def test_video_paths_local_or_download(server, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / f"{OK[0]}.mp4").write_bytes(b"x")
    assert video_paths([OK[0], OK[1]], video_root=root) == ({OK[0]: root / f"{OK[0]}.mp4"}, [OK[1]])
    assert not server.counts
    paths, missing = video_paths([OK[1], REMOVED], cache_dir=tmp_path / "cache",
                                 url_template=server.template(), progress=False)
    assert paths == {OK[1]: tmp_path / "cache" / f"{OK[1]}.mp4"} and missing == [REMOVED]
    with pytest.raises(InputError):
        video_paths([OK[0]], video_root=root, cache_dir=tmp_path)


def test_summary_counts():
    results = [
        DownloadResult("a" * 11, None, "downloaded"), DownloadResult("b" * 11, None, "cached"),
        DownloadResult("c" * 11, None, "failed", "private", True),
        DownloadResult("d" * 11, None, "skipped", "unavailable", True),
        DownloadResult("e" * 11, None, "failed", "timeout", False),
    ]
    summary = summarize(results)
    assert (summary.downloaded, summary.cached, summary.skipped) == (1, 1, 1)
    assert summary.failed_permanent == {"private": 1, "unavailable": 1}
    assert summary.failed_transient == {"timeout": 1}
    assert summary.line() == ("videos: 1 downloaded, 1 cached; failed permanently: 1 private, 1 unavailable "
                              "(1 known from the ledger); failed transiently: 1 timeout (re-run to retry)")


@pytest.mark.parametrize("message, expected", [
    # permanent
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", ("unavailable", True)),
    ("ERROR: [youtube] abc: Video unavailable", ("unavailable", True)),
    ("This video has been removed for violating YouTube's Terms of Service", ("unavailable", True)),
    ("[generic] x: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: Not Found>)",
     ("unavailable", True)),
    ("Unable to download webpage: HTTP Error 410: Gone", ("unavailable", True)),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", ("private", True)),
    ("The uploader has not made this video available in your country", ("geo_blocked", True)),
    ("This video is not available from your location due to geo restriction\nThis video is available in Japan.",
     ("geo_blocked", True)),
    ("Video unavailable. This video contains content from SME, who has blocked it on copyright grounds",
     ("copyright", True)),
    ("Video unavailable. This video is no longer available due to a copyright claim by Foo", ("copyright", True)),
    ("Video unavailable. This video is no longer available because the YouTube account associated with this "
     "video has been terminated.", ("account_terminated", True)),
    ("Sign in to confirm your age. This video may be inappropriate for some users.", ("age_restricted", True)),
    ("Join this channel to get access to members-only content like this video", ("sign_in_required", True)),
    ("This video is only available for registered users", ("sign_in_required", True)),
    ("This video is DRM protected", ("drm", True)),
    ("Requested format is not available. Use --list-formats for a list of available formats",
     ("format_unavailable", True)),
    # transient
    ("Sign in to confirm you’re not a bot. Use --cookies-from-browser or --cookies", ("bot_check", False)),
    ("Unable to download webpage: HTTP Error 429: Too Many Requests", ("rate_limited", False)),
    ("This content isn't available, try again later.", ("rate_limited", False)),
    ("Unable to download webpage: HTTP Error 500: Internal Server Error", ("http_5xx", False)),
    ("unable to download video data: HTTP Error 503: Service Unavailable", ("http_5xx", False)),
    ("unable to download video data: HTTP Error 403: Forbidden", ("http_403", False)),
    ("Unable to download webpage: The read operation timed out", ("timeout", False)),
    ("Unable to download webpage: <urlopen error timed out>", ("timeout", False)),
    ("Unable to download webpage: [Errno 111] Connection refused (caused by TransportError(...))",
     ("network", False)),
    ("[Errno 104] Connection reset by peer", ("network", False)),
    ("Remote end closed connection without response", ("network", False)),
    ("<urlopen error [Errno -3] Temporary failure in name resolution>", ("network", False)),
    ("Got error: 1024 bytes read, 2048 more expected", ("network", False)),
    # unmatched: kept retryable
    ("something nobody has seen before", ("unknown", False)),
])
def test_classify_failure(message, expected):
    assert classify_failure(message) == expected


def test_failure_table_reasons_are_consistent():
    reasons = {}
    for pattern, reason, permanent in download.FAILURE_PATTERNS:
        assert reasons.setdefault(reason, permanent) == permanent, reason


def test_default_format_picks_480p_h264_mp4_without_merging():
    import yt_dlp

    def fmt(format_id, ext, height, vcodec, acodec="none"):
        return {"format_id": format_id, "ext": ext, "height": height, "vcodec": vcodec, "acodec": acodec,
                "url": f"http://127.0.0.1/{format_id}"}

    formats = [fmt("18", "mp4", 360, "avc1.42001E", "mp4a.40.2"), fmt("134", "mp4", 360, "avc1.4d401e"),
               fmt("135", "mp4", 480, "avc1.4d401f"), fmt("136", "mp4", 720, "avc1.4d401f"),
               fmt("397", "mp4", 480, "av01.0.04M.08"), fmt("244", "webm", 480, "vp9"),
               fmt("140", "m4a", None, "none", "mp4a.40.2")]
    options = {"format": download.DEFAULT_FORMAT, "format_sort": list(download.DEFAULT_FORMAT_SORT),
               "quiet": True, "logger": download._Logger("test")}
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.process_ie_result({"id": OK[0], "title": "t", "formats": formats, "extractor": "test",
                                      "extractor_key": "Test", "webpage_url": "http://127.0.0.1/"}, download=False)
    assert info["format_id"] == "135"
    assert "+" not in download.DEFAULT_FORMAT  # a single file: no ffmpeg merge needed


def test_merging_format_without_ffmpeg_is_input_error(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "_can_merge", lambda: False)
    with pytest.raises(InputError, match="ffmpeg"):
        download_videos([OK[0]], tmp_path, format="bv*+ba/b", progress=False)
