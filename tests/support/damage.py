"""Damaged video as it comes from the field, made in the tests: noise written into a file, a file cut short, a
keyframe lost; a UDP camera whose network corrupts and drops datagrams (`LossyUdpCamera`); and what ffmpeg's own
decoder gets through the same bytes (`ffmpeg_frames`), which fightwatch's reading is held against."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest

TS_DATAGRAM = 7 * 188  # bytes of MPEG-TS per UDP datagram, as ffmpeg's udp:// output sends them


def ffmpeg_frames(path, timeout: float = 120) -> int | None:
    """Frames Debian's ffmpeg decodes from the first video stream of `path`, each frame as it comes (no rate
    conversion); None without ffmpeg. (scripts/faults/fuzz_videos.py counts with it too.)"""
    if shutil.which("ffmpeg") is None:
        return None
    try:
        done = subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-map", "0:v:0", "-fps_mode",
                               "passthrough", "-f", "framecrc", "-"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 0
    return sum(1 for line in done.stdout.splitlines() if line and not line.startswith("#"))


def ffmpeg_frames_or_skip(path) -> int:
    """ffmpeg_frames, skipping the test without ffmpeg."""
    frames = ffmpeg_frames(path)
    if frames is None:
        pytest.skip("no ffmpeg command line tool on PATH")
    return frames


def noise_into(path, out, nbytes: int = 4096, at: float = 0.5, seed: int = 0) -> Path:
    """A copy of `path` with `nbytes` of noise written at `at` of its length (a bad sector, a broken write)."""
    data, rng = bytearray(Path(path).read_bytes()), random.Random(seed)
    start = int(len(data) * at)
    data[start:start + nbytes] = bytes(rng.randrange(256) for _ in range(len(data[start:start + nbytes])))
    Path(out).write_bytes(bytes(data))
    return Path(out)


def cut_short(path, out, fraction: float) -> Path:
    """A copy of the first `fraction` of `path`'s bytes (a recording cut off, a download that stopped)."""
    data = Path(path).read_bytes()
    Path(out).write_bytes(data[:int(len(data) * fraction)])
    return Path(out)


def lose_keyframe(path, out, which: int = 1) -> Path:
    """A copy of `path` with the payload of its `which`-th keyframe (from 0) zeroed: the frames that refer to it
    have nothing to start from until the next keyframe."""
    with av.open(str(path)) as container:
        keyframes = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.is_keyframe]
    pos, size = keyframes[which]
    data = bytearray(Path(path).read_bytes())
    data[pos:pos + size] = bytes(size)
    Path(out).write_bytes(bytes(data))
    return Path(out)


class LossyUdpCamera:
    """An MPEG-TS camera over UDP on 127.0.0.1, through a network that corrupts `corrupt` of its datagrams (a few
    bytes of each changed) and drops `drop` of them, at the video's own pace. `url` is where a watcher listens:
    the camera starts sending once that port is bound (`start()`), and `sent` keeps the bytes that arrived, for
    ffmpeg to decode the same damaged stream."""

    def __init__(self, video: Path, fps: float, frames: int, corrupt: float = 0.01, drop: float = 0.005,
                 seed: int = 0):
        data = Path(video).read_bytes()
        self.datagrams = [data[i:i + TS_DATAGRAM] for i in range(0, len(data), TS_DATAGRAM)]
        self.seconds, self.corrupt, self.drop, self.rng = frames / fps, corrupt, drop, random.Random(seed)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"udp://127.0.0.1:{self.port}"
        self.sent = bytearray()
        self.corrupted = self.dropped = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._send, name="lossy-udp-camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _bound(self) -> bool:
        """Whether a socket listens on our port (/proc/net/udp lists local ports in hex)."""
        with open("/proc/net/udp") as table:
            return any(line.split()[1].endswith(f":{self.port:04X}") for line in list(table)[1:])

    def _send(self) -> None:
        deadline = time.monotonic() + 60
        while not self._bound() and time.monotonic() < deadline:
            time.sleep(0.05)
        pace = self.seconds / len(self.datagrams)
        started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i, datagram in enumerate(self.datagrams):
                roll = self.rng.random()
                if roll < self.drop:
                    self.dropped += 1
                    continue
                if roll < self.drop + self.corrupt:
                    damaged = bytearray(datagram)
                    for _ in range(8):
                        damaged[self.rng.randrange(len(damaged))] = self.rng.randrange(256)
                    datagram = bytes(damaged)
                    self.corrupted += 1
                sock.sendto(datagram, ("127.0.0.1", self.port))
                self.sent += datagram
                delay = started + (i + 1) * pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self.done.set()
