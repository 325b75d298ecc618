"""Camera sources: `NAME=URL` or a bare file path, stream URL or capture device, with unique ids.

A source's kind decides how it is watched (trainer/serve/runtime/cameras.py): a "file" ends, a "stream" (any URL
scheme but file://) or a "device" (/dev/...) is live and reconnects. `redact` is how a URL appears in logs
and alerts: credentials (user:password@, or user=/password= in the path) and query strings (tokens) never do,
nor in the camera ids taken from URLs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from data.errors import InputError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # never "." or "..": it names a folder
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# credentials some cameras take in the path instead (Xiongmai's /user=admin&password=...&channel=1&stream=0.sdp)
_PATH_SECRET = re.compile(r"(?i)((?:^|[/&;])(?:user(?:name)?|pass(?:word|wd)?|pwd|token|key|secret|auth)=)[^/&;]*")


@dataclass(frozen=True)
class Source:
    camera: str  # id: a letter or digit, then letters, digits, '_', '.', '-' (it names a folder and files)
    url: str  # a file path, a stream URL or a device path, as given
    kind: str  # "file" | "stream" | "device"

    @property
    def display(self) -> str:
        """The URL for logs and alerts: without user:password@, credentials in the path or the query (tokens)."""
        return redact(self.url)


def redact(url: str) -> str:
    if not _SCHEME.match(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://<unparsable URL>"
    netloc = ("***@" if parts.username is not None or parts.password is not None else "") + (
        f"[{host}]" if ":" in host else host) + port
    return urllib.parse.urlunsplit((parts.scheme, netloc, _PATH_SECRET.sub(r"\1***", parts.path),
                                    "..." if parts.query else "", ""))


def _kind(url: str) -> str:
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() != "file":
        return "stream"
    if url.startswith("/dev/"):
        return "device"
    return "file"


def _derived_name(url: str, kind: str) -> str:
    if kind == "stream":
        parts = urllib.parse.urlsplit(url)
        path = _PATH_SECRET.sub(r"\1", parts.path)
        path = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
        raw = f"{parts.hostname or 'stream'}{path}"
    else:
        raw = Path(url.removeprefix("file://")).stem or "camera"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")[:64]
    return name or "camera"


def _parse(text: str) -> tuple[Source, bool]:
    text = text.strip()
    if not text:
        raise InputError("empty camera source")
    name, sep, rest = text.partition("=")
    explicit = bool(sep and _NAME.fullmatch(name) and rest and not os.path.exists(text))
    url = rest if explicit else text
    kind = _kind(url)
    if kind == "file":
        url = url.removeprefix("file://")
    return Source(name if explicit else _derived_name(url, kind), url, kind), explicit


def parse_source(text: str) -> Source:
    """`NAME=URL` or a bare URL/path (the id then comes from the file name or the URL's host and path).

    NAME is a letter or digit, then letters, digits, '_', '.', '-' (it names the alert folder and files);
    anything else before '=', or an existing file whose name holds '=', is taken as a path or URL.
    """
    return _parse(text)[0]


def parse_sources(texts) -> list[Source]:
    """Sources with unique ids: a derived id that repeats gets -2, -3, ...; a repeated NAME= is an error."""
    parsed = [_parse(t) for t in texts]
    if not parsed:
        raise InputError("no camera sources given")
    explicit = [s.camera for s, named in parsed if named]
    dupes = sorted({c for c in explicit if explicit.count(c) > 1})
    if dupes:
        raise InputError(f"camera id(s) {', '.join(dupes)} given more than once")
    taken, out = set(explicit), []
    for source, named in parsed:
        camera = source.camera
        if not named:
            base, n = camera, 2
            while camera in taken:
                camera, n = f"{base}-{n}", n + 1
            taken.add(camera)
        out.append(dataclasses.replace(source, camera=camera))
    return out
