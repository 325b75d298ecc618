"""Servers on 127.0.0.1 that fail the way networks do, for the stream and sink fault tests
(tests/test_stream_faults.py) and their loops (scripts/faults/streams.py): a camera stream that accepts and then
stalls (`StallingServer`), a webhook receiver that accepts and never answers (`HangingWebhook`), and a mosquitto
broker killed and restarted (`durable`, `kill_and_restart`).

`StallingServer` speaks HTTP (an MPEG-TS body without Content-Length, as a live HTTP camera sends it) or RTSP
(RFC 2326 with RTP/H.264 interleaved over the TCP connection, RFC 6184 packetization, what FFmpeg's RTSP client
asks for with rtsp_transport=tcp). Each connection goes as `mode` says, then the server sends nothing more while
keeping the socket open:

    silent   accept, never answer (HTTP: not even the status line; RTSP: not even OPTIONS)
    headers  answer (HTTP: the status line and headers; RTSP: up to PLAY), then no media at all
    mid      answer and send the first `frames` frames, then stall
    once     `mid` on the first connection, then the whole stream on every later one (a recovery)

It records when each connection was accepted and when it stalled (its last byte sent), so a test can tell how
long the client took to notice: the gap to its next connection, less the reconnect delay.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av

from tests.support.mosquitto import Mosquitto

MODES = ("silent", "headers", "mid", "once")
_START_CODE = re.compile(b"\x00\x00\x01")
_RTP_PAYLOAD = 1400  # bytes of H.264 per RTP packet: a NAL unit above it is split into FU-A fragments


@dataclass
class Connection:
    accepted: float  # time.monotonic()
    stalled: float | None = None  # when the server sent its last byte on it; None: it never stalled


def h264_access_units(path: Path) -> list[tuple[int, list[bytes]]]:
    """(pts in 1/90000 s, NAL units) per frame of an H.264 MPEG-TS file (Annex B, as libx264 writes TS)."""
    units = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        scale = stream.time_base * 90000
        for packet in container.demux(stream):
            if packet.size:
                nals = [n.rstrip(b"\x00") for n in _START_CODE.split(bytes(packet)) if n.strip(b"\x00")]
                units.append((int(packet.pts * scale), nals))
    return units


def rtp_packets(units: list[tuple[int, list[bytes]]], ssrc: int = 0x46570001) -> list[list[bytes]]:
    """RTP packets (payload type 96) per frame: single NAL unit packets, FU-A where a NAL is too long."""
    frames, seq = [], 0
    for pts, nals in units:
        payloads = []
        for nal in nals:
            if len(nal) <= _RTP_PAYLOAD:
                payloads.append(nal)
                continue
            indicator, nal_type, body = nal[0] & 0xE0 | 28, nal[0] & 0x1F, nal[1:]
            for start in range(0, len(body), _RTP_PAYLOAD):
                bits = (0x80 if start == 0 else 0) | (0x40 if start + _RTP_PAYLOAD >= len(body) else 0)
                payloads.append(bytes([indicator, bits | nal_type]) + body[start:start + _RTP_PAYLOAD])
        packets = []
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == len(payloads) - 1 else 0  # the last packet of the frame
            header = bytes([0x80, marker | 96]) + seq.to_bytes(2, "big") + (pts & 0xFFFFFFFF).to_bytes(4, "big")
            packets.append(header + ssrc.to_bytes(4, "big") + payload)
            seq = (seq + 1) & 0xFFFF
        frames.append(packets)
    return frames


_SDP = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fightwatch test camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
        "a=control:track1\r\n")


class StallingServer:
    """A stream server on 127.0.0.1 that stalls as `mode` says (module doc); `url` is where a camera finds it.

    `video` is an H.264 MPEG-TS file: served as it is over HTTP, re-packetized as RTP over RTSP. `frames`: how
    many frames `mid` and `once` send before stalling. `credentials` (user, password) are put in `url`, so the
    client has them; the server asks for none."""

    def __init__(self, protocol: str, mode: str, video: Path, frames: int = 50,
                 credentials: tuple[str, str] | None = None, query: str = ""):
        if protocol not in ("http", "rtsp") or mode not in MODES:
            raise ValueError(f"protocol http or rtsp, mode one of {MODES}")
        self.protocol, self.mode = protocol, mode
        data = Path(video).read_bytes()
        if protocol == "http":  # the first `frames` frames: cut at the TS packet where frame `frames` begins
            self._http_cut = self._ts_offset_of_frame(video, frames)
            self._http_body = data
        else:
            self._rtp = rtp_packets(h264_access_units(video))
            self._rtp_frames = frames
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        auth = f"{credentials[0]}:{credentials[1]}@" if credentials else ""
        path = "/live/cam.ts" if protocol == "http" else "/live/cam"
        self.url = f"{protocol}://{auth}127.0.0.1:{self.port}{path}{'?' + query if query else ''}"
        threading.Thread(target=self._accept, name=f"{protocol}-{mode}-server", daemon=True).start()

    @staticmethod
    def _ts_offset_of_frame(video: Path, frame: int) -> int:
        with av.open(str(video)) as container:
            for i, packet in enumerate(container.demux(video=0)):
                if i == frame and packet.pos is not None:
                    return packet.pos
        return Path(video).stat().st_size // 2

    def stall_gaps(self, reconnect_delay_s: float) -> list[float]:
        """For each connection that stalled and was followed by another: seconds from its stall to the next
        connection, less the client's reconnect delay (how long the client took to notice)."""
        with self._lock:
            connections = list(self.connections)
        return [later.accepted - earlier.stalled - reconnect_delay_s
                for earlier, later in zip(connections, connections[1:]) if earlier.stalled is not None]

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                connection = Connection(time.monotonic())
                first = not self.connections
                self.connections.append(connection)
                self._sockets.append(sock)
            serve = self._serve_http if self.protocol == "http" else self._serve_rtsp
            threading.Thread(target=self._serve, args=(serve, sock, connection, first), daemon=True).start()

    def _serve(self, serve, sock: socket.socket, connection: Connection, first: bool) -> None:
        stall = self.mode != "once" or first
        try:
            if self.mode == "silent":
                connection.stalled = connection.accepted
            else:
                serve(sock, connection, stall)
                if not stall:  # a recovered stream: the whole of it, then the connection ends
                    sock.shutdown(socket.SHUT_RDWR)
                    return
            self._closing.wait()  # the stall: the socket stays open, nothing more is sent
        except OSError:  # the client hung up
            pass

    def _serve_http(self, sock: socket.socket, connection: Connection, stall: bool) -> None:
        _read_request(sock)
        sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-cache\r\n\r\n")
        if self.mode != "headers":
            sock.sendall(self._http_body[:self._http_cut] if stall else self._http_body)
        connection.stalled = time.monotonic() if stall else None

    def _serve_rtsp(self, sock: socket.socket, connection: Connection, stall: bool) -> None:
        session = "46570001"
        while True:
            method, uri, headers = _read_request(sock)
            cseq = headers.get("cseq", "0")
            extra, body = "", ""
            if method == "OPTIONS":
                extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
            elif method == "DESCRIBE":
                body = _SDP
                extra = f"Content-Base: {uri.rstrip('/')}/\r\nContent-Type: application/sdp\r\n"
            elif method == "SETUP":
                extra = f"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: {session}\r\n"
            elif method == "PLAY":
                extra = f"Session: {session}\r\nRange: npt=0.000-\r\n"
            sock.sendall((f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
                          f"{body}").encode())
            if method == "PLAY":
                break
        if self.mode != "headers":
            frames = self._rtp[:self._rtp_frames] if stall else self._rtp
            sock.sendall(b"".join(b"$\x00" + len(p).to_bytes(2, "big") + p for packets in frames for p in packets))
        connection.stalled = time.monotonic() if stall else None


def _read_request(sock: socket.socket) -> tuple[str, str, dict[str, str]]:
    """One request's method, URI and headers (lower-case names); its body, if any, is not read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the client hung up")
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, uri, _ = (lines[0].split(" ") + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, uri, headers


HOOK_MODES = ("silent", "status", "trickle", "body", "first-silent")


class HangingWebhook:
    """A webhook receiver on 127.0.0.1 that accepts connections and then hangs, as `mode` says:

        silent        never reads the request, never answers
        status        reads the request, sends the status line, then nothing
        trickle       reads the request, sends the status line, then a header a byte every `trickle_s` forever
                      (each read gets a byte well within a socket timeout: only a deadline on the whole answer
                      ends it)
        body          answers 200 with its headers, then never sends the body they announce
        first-silent  the first connection as `silent`, every later one answered 200 at once

    `requests` counts the connections accepted."""

    def __init__(self, mode: str, trickle_s: float = 0.1):
        if mode not in HOOK_MODES:
            raise ValueError(f"mode one of {HOOK_MODES}")
        self.mode, self.trickle_s, self.requests = mode, trickle_s, 0
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, name=f"webhook-{mode}", daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.requests += 1
                first = self.requests == 1
                self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, first), daemon=True).start()

    def _serve(self, sock: socket.socket, first: bool) -> None:
        mode = self.mode if self.mode != "first-silent" else "silent" if first else "ok"
        try:
            if mode != "silent":
                _read_request(sock)
            if mode == "ok":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if mode in ("status", "trickle"):
                sock.sendall(b"HTTP/1.1 200 OK\r\n")
            if mode == "trickle":
                sock.sendall(b"X-Slow: ")
                while not self._closing.wait(self.trickle_s):
                    sock.sendall(b"a")
            if mode == "body":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            self._closing.wait()
        except OSError:  # the sink hung up
            pass


def durable(broker: Mosquitto) -> Mosquitto:
    """The broker saves its state (sessions, queued messages) at every change rather than every 30 minutes, so a
    kill -9 loses nothing it has acknowledged. Call before `start`."""
    with open(broker.config, "a") as config:
        config.write("autosave_interval 1\nautosave_on_changes true\n")
    return broker


def kill_and_restart(broker: Mosquitto, away_s: float) -> None:
    """SIGKILL (no goodbye to the clients, no save), `away_s` without a broker, then the same one again: the same
    port and persistence file."""
    broker.process.kill()
    broker.process.wait()
    time.sleep(away_s)
    broker.start()
