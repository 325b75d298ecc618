"""Source videos for training: downloaded once with yt-dlp into a cache, or found under a local root.

Each AVA video id names a YouTube video. `download_videos` fetches every id once into
`<cache>/<video_id>.<ext>` through yt-dlp's Python API (never a shell), a few at a time in
threads. A video already in the cache is not fetched again, an interrupted download resumes
from its `.part` file, and transient failures (network, timeouts, HTTP 5xx/429) are retried
with exponential backoff. Every outcome is kept in a ledger (`<cache>/ledger.json`), so a
re-run skips videos that failed permanently (removed, private, geo-blocked, ...) and retries
the rest.

Users with local copies pass a video root instead: `resolve_local` finds
`<video_root>/<video_id>.<ext>` and nothing is downloaded. (One file because the ledger, the retry
policy and yt-dlp's error classes are one piece: what a failure means decides whether it is retried.)
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yt_dlp
from tqdm import tqdm
from yt_dlp.utils import DownloadCancelled, YoutubeDLError

from data.errors import InputError
from data.files import atomic_write

log = logging.getLogger(__name__)

YOUTUBE_URL = "https://www.youtube.com/watch?v={video_id}"
LEDGER_NAME = "ledger.json"

# Only frames are used, so no audio is needed and no two formats have to be merged (which needs
# ffmpeg): the best mp4 that has video, else the best of anything. AVA videos are whole movies,
# so the sort prefers the largest resolution at or below 480p to keep downloads small (clips are
# resized to a far smaller short side anyway), then H.264 over AV1/VP9, cheaper to decode.
DEFAULT_FORMAT = "bv*[ext=mp4]/b[ext=mp4]/bv*/b"
DEFAULT_FORMAT_SORT = ("res:480", "vcodec:h264")

# Extensions a finished video may have, in order of preference when several exist.
VIDEO_EXTS = ("mp4", "mkv", "webm", "mov", "m4v", "avi", "flv", "3gp", "ts", "mpg", "mpeg")

_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_JITTER = 0.5  # each backoff delay is stretched by a random 0-50 %

# What a yt-dlp error message means: (pattern, reason, permanent). The first match wins, so
# specific patterns come before general ones ("Video unavailable" prefixes many messages).
# Permanent failures are recorded and never retried; transient ones are retried with backoff
# and again on the next run. Anything unmatched is "unknown" and treated as transient, so
# nothing is given up on without a recognised reason.
FAILURE_PATTERNS: tuple[tuple[str, str, bool], ...] = (
    # YouTube's anti-bot wall and rate limits hit every video from this IP, not this video.
    (r"not a bot|captcha", "bot_check", False),
    (r"HTTP Error 429|Too Many Requests|rate.?limit|try again later", "rate_limited", False),
    (r"private video|video is private", "private", True),
    (r"available (?:in|from) your (?:country|location)|geo.?restrict", "geo_blocked", True),
    (r"copyright", "copyright", True),
    (r"account .*(?:terminated|closed|suspended)|has been terminated", "account_terminated", True),
    (r"confirm your age|age.?restricted|inappropriate for some users", "age_restricted", True),
    (r"sign in|log in|login required|registered users|members.only|join this channel|premium",
     "sign_in_required", True),
    (r"DRM protected", "drm", True),
    (r"video unavailable|has been removed|no longer available|video is not available|does not exist|"
     r"HTTP Error 404|HTTP Error 410", "unavailable", True),
    # Depends on the format setting; retried anyway when the format changes (see download_videos).
    (r"requested format is not available", "format_unavailable", True),
    (r"HTTP Error 5\d\d", "http_5xx", False),
    # On YouTube a 403 on the media URL is a signature/token hiccup that a later run (or a newer
    # yt-dlp) gets past, not a verdict on the video.
    (r"HTTP Error 403", "http_403", False),
    (r"timed? ?out", "timeout", False),
    (r"connection (?:refused|reset|aborted)|remote end closed|broken pipe|incompleteread|"
     r"network is unreachable|no route to host|name resolution|name or service not known|"
     r"getaddrinfo|urlopen error|transporterror|ssl|eof occurred|bytes read|"
     r"did not get any data|unable to download", "network", False),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), reason, permanent) for p, reason, permanent in FAILURE_PATTERNS)


def validate_video_id(video_id: str) -> str:
    """The id itself if it is a YouTube id (11 of [A-Za-z0-9_-]); InputError naming it otherwise.

    Ids become file names, so nothing else (paths, spaces, shell characters) gets through."""
    if not isinstance(video_id, str) or not _VIDEO_ID.fullmatch(video_id):
        raise InputError(f"{video_id!r}: not a YouTube video id (11 characters of A-Z a-z 0-9 _ -)")
    return video_id


def classify_failure(message: str) -> tuple[str, bool]:
    """(reason, permanent) for a yt-dlp error message, from FAILURE_PATTERNS."""
    for pattern, reason, permanent in _COMPILED:
        if pattern.search(message):
            return reason, permanent
    return "unknown", False


@dataclass
class DownloadResult:
    video_id: str
    path: Path | None
    status: str  # "downloaded" | "cached" | "failed" | "skipped" (failed permanently before)
    reason: str = ""
    permanent: bool = False
    attempts: int = 0  # yt-dlp calls in this run
    error: str = ""  # first line of the last error


@dataclass
class DownloadSummary:
    downloaded: int = 0
    cached: int = 0
    failed_permanent: Counter = field(default_factory=Counter)  # reason -> videos (skipped ones included)
    skipped: int = 0  # permanent failures known from the ledger, not tried again
    failed_transient: Counter = field(default_factory=Counter)  # reason -> videos

    def line(self) -> str:
        permanent = ", ".join(f"{n} {r}" for r, n in sorted(self.failed_permanent.items())) or "none"
        transient = ", ".join(f"{n} {r}" for r, n in sorted(self.failed_transient.items())) or "none"
        skipped = f" ({self.skipped} known from the ledger)" if self.skipped else ""
        return (f"videos: {self.downloaded} downloaded, {self.cached} cached; "
                f"failed permanently: {permanent}{skipped}; failed transiently: {transient}"
                + (" (re-run to retry)" if self.failed_transient else ""))


def summarize(results: Iterable[DownloadResult]) -> DownloadSummary:
    summary = DownloadSummary()
    for r in results:
        if r.status == "downloaded":
            summary.downloaded += 1
        elif r.status == "cached":
            summary.cached += 1
        elif r.permanent:
            summary.failed_permanent[r.reason] += 1
            summary.skipped += r.status == "skipped"
        else:
            summary.failed_transient[r.reason] += 1
    return summary


class Ledger:
    """Per-video outcome, kept as JSON and rewritten atomically after each change.

    {"version": 1, "videos": {id: {"status": "ok"|"failed", "file", "reason", "permanent",
    "attempts" (all runs together), "error", "format", "time"}}}"""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.videos: dict[str, dict] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self.videos = dict(data["videos"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{path}: not a download ledger ({e}); delete it to start over") from None

    def get(self, video_id: str) -> dict | None:
        with self._lock:
            entry = self.videos.get(video_id)
            return dict(entry) if entry else None

    def record(self, video_id: str, **entry: Any) -> None:
        entry["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            previous = self.videos.get(video_id, {})
            entry["attempts"] = previous.get("attempts", 0) + entry.get("attempts", 0)
            self.videos[video_id] = entry
            text = json.dumps({"version": 1, "videos": self.videos}, indent=1, sort_keys=True) + "\n"
            atomic_write(self.path, lambda f: f.write(text.encode()))


def _find_video(directory: Path, video_id: str, hint: str | None = None) -> Path | None:
    """`<directory>/<video_id>.<ext>` if one exists (`hint`, a file name, first).

    yt-dlp writes `<id>.<ext>.part` and renames it when complete, so a final name means a
    complete file; `.part`, `.ytdl` and `<id>.f137.mp4`-style pieces are never matched."""
    if hint and Path(hint).name == hint and hint.startswith(f"{video_id}.") and (directory / hint).is_file():
        return directory / hint
    for ext in VIDEO_EXTS:
        path = directory / f"{video_id}.{ext}"
        if path.is_file():
            return path
    return None


class _Logger:
    """yt-dlp's output, kept off the console: debug log lines, errors remembered."""

    def __init__(self, video_id: str):
        self.video_id = video_id
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        log.debug("%s: %s", self.video_id, msg)

    info = debug
    warning = debug

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log.debug("%s: %s", self.video_id, msg)


class _Stopped(DownloadCancelled):
    msg = "download stopped"


class _Failure(Exception):
    pass


def _error_text(message: str) -> str:
    return re.sub(r"^\s*ERROR:\s*", "", str(message)).strip() or "unknown error"


def _fetch(video_id: str, url: str, cache_dir: Path, options: dict, stop: threading.Event) -> Path:
    """One yt-dlp run for one video; the finished file, or _Failure with yt-dlp's error text."""

    def check_stop(_status: dict) -> None:  # called by yt-dlp for every chunk written
        if stop.is_set():
            raise _Stopped()

    logger = _Logger(video_id)
    template = str(cache_dir / video_id).replace("%", "%%") + ".%(ext)s"
    opts = {**options, "outtmpl": {"default": template}, "logger": logger, "progress_hooks": [check_stop]}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True) or {}
    except _Stopped:
        raise
    except YoutubeDLError as e:
        raise _Failure(_error_text(str(e))) from None
    for download in info.get("requested_downloads") or ():
        path = Path(download.get("filepath") or "")
        if path.name.startswith(f"{video_id}.") and path.is_file():
            return path
    path = _find_video(cache_dir, video_id)
    if path is None:
        raise _Failure(_error_text(logger.errors[-1]) if logger.errors else "yt-dlp finished without a file")
    return path


def download_videos(
    video_ids: Iterable[str],
    cache_dir: str | Path,
    url_template: str = YOUTUBE_URL,
    max_workers: int = 4,
    retries: int = 3,
    backoff_s: float = 2.0,
    sleep: Callable[[float], Any] = time.sleep,
    format: str = DEFAULT_FORMAT,
    format_sort: Sequence[str] = DEFAULT_FORMAT_SORT,
    retry_permanent: bool = False,
    socket_timeout_s: float = 30.0,
    ytdlp_options: dict | None = None,
    progress: bool = True,
) -> list[DownloadResult]:
    """Fetch each video once into `<cache_dir>/<video_id>.<ext>`; one result per id, in order.

    `retries` is how many times a transient failure is retried in this run (so at most
    retries + 1 yt-dlp calls per video), waiting backoff_s * 2**k * (1 + up to 50 % jitter)
    through `sleep` before retry k + 1. Permanent failures from earlier runs are skipped
    unless `retry_permanent`. `ytdlp_options` are extra yt-dlp parameters (cookiefile, proxy,
    ratelimit, ...) laid over the defaults.
    """
    ids = list(dict.fromkeys(validate_video_id(v) for v in video_ids))  # all checked before any request
    try:
        if url_template.format(video_id="") == url_template.format(video_id="x"):
            raise ValueError("it lacks {video_id}")
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"{url_template!r}: not a URL template with {{video_id}}: {e}") from None
    if max_workers < 1:
        raise InputError(f"max_workers must be at least 1, not {max_workers}")
    if "+" in format and not _can_merge():
        raise InputError(f"{format!r}: this format merges streams, which needs ffmpeg, and ffmpeg was not found")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cache_dir / LEDGER_NAME)
    options = {
        "format": format,
        "format_sort": list(format_sort),
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "continuedl": True,  # resume from <file>.part
        "noplaylist": True,
        "retries": 0,  # retries and their backoff happen here, where they can be counted
        "fragment_retries": 0,
        "extractor_retries": 0,
        "socket_timeout": socket_timeout_s,
        **(ytdlp_options or {}),
    }

    results: dict[str, DownloadResult] = {}
    todo: list[str] = []
    for video_id in ids:
        entry = ledger.get(video_id) or {}
        path = _find_video(cache_dir, video_id, entry.get("file") if entry.get("status") == "ok" else None)
        if path is not None:
            results[video_id] = DownloadResult(video_id, path, "cached")
            if entry.get("status") != "ok" or entry.get("file") != path.name:
                ledger.record(video_id, status="ok", file=path.name, reason="", permanent=False,
                              attempts=0, error="", format=entry.get("format"))
        elif (entry.get("status") == "failed" and entry.get("permanent") and not retry_permanent
              and not (entry.get("reason") == "format_unavailable" and entry.get("format") != format)):
            results[video_id] = DownloadResult(video_id, None, "skipped", entry.get("reason", ""), True,
                                               0, entry.get("error", ""))
        else:
            todo.append(video_id)

    stop = threading.Event()

    def work(video_id: str) -> DownloadResult:
        url = url_template.format(video_id=video_id)
        attempt, delay = 0, backoff_s
        while True:
            attempt += 1
            try:
                path = _fetch(video_id, url, cache_dir, options, stop)
            except _Failure as e:
                message = str(e)
                reason, permanent = classify_failure(message)
                if permanent or attempt > retries or stop.is_set():
                    break
                wait_s = delay * (1 + random.uniform(0, _JITTER))
                log.debug("%s: %s (%s); retry %d/%d in %.1f s", video_id, message.splitlines()[0],
                          reason, attempt, retries, wait_s)
                sleep(wait_s)
                delay *= 2
                continue
            ledger.record(video_id, status="ok", file=path.name, reason="", permanent=False,
                          attempts=attempt, error="", format=format)
            return DownloadResult(video_id, path, "downloaded", attempts=attempt)
        first_line = message.splitlines()[0]
        ledger.record(video_id, status="failed", file=None, reason=reason, permanent=permanent,
                      attempts=attempt, error=first_line, format=format)
        return DownloadResult(video_id, None, "failed", reason, permanent, attempt, first_line)

    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc="videos", unit="video",
              disable=not progress or not ids) as bar:
        executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="download")
        try:
            pending = {executor.submit(work, video_id) for video_id in todo}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    results[result.video_id] = result
                    bar.update()
        except BaseException:
            # Ctrl-C or a bug: stop the running downloads at their next chunk (their .part
            # files stay for the next run) and drop the queued ones.
            stop.set()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)

    ordered = [results[video_id] for video_id in ids]
    summary = summarize(ordered)
    log.info("%s", summary.line())
    for r in ordered:
        if r.status in ("failed", "skipped"):
            log.debug("%s: %s (%s)", r.video_id, r.reason, r.error)
    return ordered


def _can_merge() -> bool:
    from yt_dlp.postprocessor import FFmpegMergerPP

    with yt_dlp.YoutubeDL({"quiet": True, "logger": _Logger("ffmpeg")}) as ydl:
        merger = FFmpegMergerPP(ydl)
        return bool(merger.available and merger.can_merge())


def resolve_local(video_ids: Iterable[str], video_root: str | Path) -> tuple[dict[str, Path], list[str]]:
    """({id: <video_root>/<id>.<ext>} for the ids found, [ids not found]); nothing is downloaded."""
    ids = list(dict.fromkeys(validate_video_id(v) for v in video_ids))
    root = Path(video_root)
    if not root.is_dir():
        raise InputError(f"{root}: video root does not exist or is not a directory")
    rank = {ext: i for i, ext in enumerate(VIDEO_EXTS)}
    best: dict[str, Path] = {}
    for path in root.iterdir():
        ext = path.suffix[1:].lower()
        if ext in rank and path.is_file():
            current = best.get(path.stem)
            if current is None or rank[ext] < rank[current.suffix[1:].lower()]:
                best[path.stem] = path
    found = {v: best[v] for v in ids if v in best}
    return found, [v for v in ids if v not in best]


def video_paths(video_ids: Iterable[str], *, video_root: str | Path | None = None,
                cache_dir: str | Path | None = None, **download_kwargs) -> tuple[dict[str, Path], list[str]]:
    """({id: path}, [ids without a video]): local copies under `video_root`, or else downloads into `cache_dir`."""
    if (video_root is None) == (cache_dir is None):
        raise InputError("give either a video root (local copies) or a cache directory (download), not both or neither")
    if video_root is not None:
        return resolve_local(video_ids, video_root)
    results = download_videos(video_ids, cache_dir, **download_kwargs)
    return ({r.video_id: r.path for r in results if r.path is not None},
            [r.video_id for r in results if r.path is None])
