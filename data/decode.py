"""The one decode loop: a video stream's frames through the packets its decoder rejects, as ffmpeg does, with
what was lost counted.

`score`, `evaluate`, `prepare` and `watch` all read video through `decoded_frames`. ffmpeg's command line goes on
past a packet its decoder refuses (damaged data, a packet lost on the network): the packet is skipped, decoding
resumes on the next ones (from the next keyframe where the references are gone), and frames whose damage the
decoder concealed are kept. So here: a rejected packet is counted and skipped, and concealed frames are output
(FFmpeg's `output_corrupt` flag: PyAV's FFmpeg drops them otherwise; an HEVC file with 4 KB of noise gave 123
frames without it, 145 with it, as ffmpeg's), except after a seek, before the first clean frame: a seek that
lands between keyframes (MPEG-TS has no index) gives the decoder's guesses with no picture to start from.
A demuxer error (a container that cannot be read further) ends the read, as in ffmpeg, and is recorded; PyAV's
read timeouts are not caught (watch's reconnects need them).

What was lost is found from the timestamps. Every packet read should come out as the frame of its timestamp, and
frames come out in presentation order: when a frame comes out, the packets of earlier timestamps still waiting
never will, and packets still waiting at the end never did. Data a demuxer skipped (Matroska resyncs past a
damaged cluster) leaves no packet: a step between two frames of 3 frame times or more is counted as the frames it
misses, a frame time being the median of the last 15 steps (a variable rate moves it; damaged headers that scale
every timestamp do not make a loss), up to MAX_UNREAD_S. Each frame is yielded with the count lost just before
it, so windows can tell a gap; what a header declares beyond the frames read is lost at the end (a file that
ends early). Frames are numbered by time (1 + seconds x fps, as a player numbers them) for the warnings.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import av

from data.errors import InputError

MAX_SPANS = 1000  # lost spans kept for the warnings (a live stream runs forever); the counts stay exact
MAX_UNREAD_S = 10.0  # a longer step between frames is a timestamp discontinuity (a splice, a wrap), not a loss


@dataclass(frozen=True)
class DecodeConfig:
    max_loss_share: float = 0.5  # a video whose decoder failed on more of the frames read is an error
    max_gap_frames: int = 8  # a window across at most this many lost frames is scored on the frames around them

    def __post_init__(self):
        if not 0 < self.max_loss_share <= 1 or self.max_gap_frames < 0:
            raise ValueError("need 0 < max_loss_share <= 1 and max_gap_frames >= 0")


@dataclass
class DecodeLog:
    """What one read of a stream decoded and lost. `declared`: the frames its header declares (None: it does not
    say, or the read is not of the whole stream)."""

    fps: float
    declared: int | None = None
    decoded: int = 0
    concealed: int = 0  # frames output with damage the decoder concealed
    rejected: int = 0  # packets the decoder refused
    lost: int = 0  # frames that never came out: read and not decoded, or missing from the data
    undecoded: int = 0  # of those, read and not decoded (the rest left no packet: a gap in the timestamps)
    spans: list[tuple[int, int]] = field(default_factory=list)  # lost frame numbers, first and last, merged
    last_number: int = 0  # the number of the latest frame decoded
    stopped: str | None = None  # the demuxer's error that ended the read early

    @property
    def missing_at_end(self) -> int:
        """Frames the header declares beyond those read: the file ends early (one frame is rounding, where the
        count comes from a duration)."""
        missing = (self.declared or 0) - self.decoded - self.lost
        return missing if missing > 1 else 0

    @property
    def damage_share(self) -> float:
        """Of the frames read, the share the decoder could not decode (a file cut short, a gap in the timestamps
        are missing data, not damage that defeats the decoder: what there is, is scored)."""
        return self.undecoded / (self.decoded + self.undecoded) if self.undecoded else 0.0

    def mark_lost(self, number: int, read: bool = True) -> None:
        self.lost += 1
        self.undecoded += read
        if self.spans and self.spans[-1][0] <= number <= self.spans[-1][1] + 1:
            self.spans[-1] = (self.spans[-1][0], max(number, self.spans[-1][1]))
        elif len(self.spans) < MAX_SPANS:
            self.spans.append((number, number))

    def warnings(self) -> list[str]:
        """One line per kind of loss: empty for a clean read."""
        out = []
        if self.lost or self.rejected:
            shown = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in self.spans[:5])
            more = f" and {len(self.spans) - 5} more spans" if len(self.spans) > 5 else ""
            of = f" of {self.decoded + self.lost}" if self.lost else ""
            out.append(f"decoded {self.decoded}{of} frames: {self.lost} lost"
                       + (f" (frames {shown}{more})" if shown else "")
                       + (f", {self.rejected} packet{'s' * (self.rejected != 1)} rejected by the decoder"
                          if self.rejected else ""))
        if self.concealed:
            out.append(f"{self.concealed} frame{'s' * (self.concealed != 1)} decoded with concealed damage")
        if self.missing_at_end:
            out.append(f"decoded {self.decoded} frame{'s' * (self.decoded != 1)} of a declared {self.declared}: the "
                       f"file ends early ({self.missing_at_end} frames missing)")
        if self.stopped:
            out.append(f"reading stopped at damaged data: {self.stopped}")
        return out

    def check(self, name: str, cfg: DecodeConfig) -> None:
        """InputError, naming the video, when nothing decoded or damage took more than cfg.max_loss_share."""
        if self.decoded == 0:
            why = f"; {self.warnings()[0]}" if self.warnings() else ""
            raise InputError(f"{name}: no frame of the video decodes{why}")
        if self.damage_share > cfg.max_loss_share:
            raise InputError(f"{name}: the decoder failed on {self.damage_share:.0%} of its frames, over "
                             f"decode.max_loss_share {cfg.max_loss_share:g}; {self.warnings()[0]}")


def declared_frames(container, stream) -> int | None:
    """The frames a header declares: its count (mp4, avi), else its duration at its rate (mkv, webm)."""
    if stream.frames:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and rate:
        return round(float(stream.duration * stream.time_base * rate))
    if container.duration and rate:
        return round(container.duration / 1e6 * float(rate))
    return None


def decoded_frames(container, stream, log: DecodeLog, relay: tuple[object, Callable[[av.Packet], None]] | None = None,
                   after_seek: bool = False, give_up_after: int | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
    """(frames lost just before it, frame) for each frame of `stream` in presentation order, through the packets
    the decoder rejects; `log` counts as it goes. `relay`: (another stream, a callable), called with each of that
    stream's packets as they are demuxed with the video's (an audio track copied beside it). `after_seek`: the
    container was just seeked (concealed frames before the first clean one are dropped, as lost). `give_up_after`:
    the read ends (`log.stopped` says why) after this many packets rejected in a row (a live stream that keeps
    failing is reconnected; a file is read to its end)."""
    context = stream.codec_context
    if not context.is_open:
        context.options = {**context.options, "flags": "+output_corrupt"}
    time_base = float(stream.time_base) if stream.time_base else None
    origin = stream.start_time
    waiting: list[int] = []  # timestamps of packets read, not yet out as frames (a heap)
    waiting_count: Counter = Counter()
    unshown = 0  # frames lost since the last one yielded: guesses before the first clean frame after a seek
    last_pts: int | None = None
    steps: deque[int] = deque(maxlen=15)  # the last steps between frames (pts)
    rejected_in_a_row = 0

    def number(pts: int) -> int:
        return round((pts - (origin or 0)) * time_base * log.fps) + 1

    def came_out(pts: int | None) -> int:
        """The frames lost before the frame of `pts` (None: it cannot be placed, nothing learnt)."""
        nonlocal last_pts
        if pts is None or not time_base:
            return 0
        lost = 0
        if waiting_count[pts]:
            while waiting[0] < pts:
                gone = heapq.heappop(waiting)
                waiting_count[gone] -= 1
                log.mark_lost(number(gone))
                lost += 1
            heapq.heappop(waiting)
            waiting_count[pts] -= 1
        unread = 0
        if last_pts is not None and pts > last_pts:
            step = pts - last_pts
            if steps and step * time_base <= MAX_UNREAD_S:
                unread = round(step / statistics.median(steps)) - 1 - lost
            steps.append(step)
        last_pts, log.last_number = pts, number(pts)
        if unread < 2:
            return lost
        for missing in range(log.last_number - unread, log.last_number):
            log.mark_lost(missing, read=False)
        return lost + unread

    try:
        for packet in container.demux(*(stream, *relay[:1])) if relay else container.demux(stream):
            if packet.stream is not stream:
                relay[1](packet)
                continue
            if packet.pts is not None and time_base and packet.size and not packet.is_discard:
                origin = packet.pts if origin is None else origin
                heapq.heappush(waiting, packet.pts)
                waiting_count[packet.pts] += 1
            try:
                frames = packet.decode()
            except (av.error.ExitError, av.error.TimeoutError):
                raise
            except av.error.FFmpegError:
                log.rejected += 1
                rejected_in_a_row += 1
                if give_up_after is not None and rejected_in_a_row >= give_up_after:
                    log.stopped = f"the decoder rejected {rejected_in_a_row} packets in a row"
                    break
                continue
            rejected_in_a_row = 0
            for frame in frames:
                lost = unshown + came_out(frame.pts)
                if after_seek and frame.is_corrupt and not log.decoded:
                    unshown = lost + 1
                    log.mark_lost(log.last_number)
                    continue
                unshown = 0
                log.decoded += 1
                log.concealed += frame.is_corrupt
                yield lost, frame
    except (av.error.ExitError, av.error.TimeoutError):
        raise
    except av.error.FFmpegError as e:
        log.stopped = e.strerror or type(e).__name__
    for pts in sorted(waiting):  # read, never decoded
        log.mark_lost(number(pts))


def frames_by_number(container, stream, relay=None) -> Iterator[av.VideoFrame]:
    """One frame per frame number, as a player shows a damaged video: a frame lost is the one before it (the
    first, before the first decoded). So frame i is frame i of the video's own numbering, as `score` numbers
    its segments; `relay` as decoded_frames'."""
    log = DecodeLog(float(stream.average_rate or stream.guessed_rate or 25))
    previous = None
    for lost, frame in decoded_frames(container, stream, log, relay):
        for _ in range(lost):
            yield frame if previous is None else previous
        yield frame
        previous = frame
