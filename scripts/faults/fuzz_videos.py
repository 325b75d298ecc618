"""Mutated video files through clip extraction and `score`: 0 crashes, 0 hangs, every failure a one-line reason,
and the frames fightwatch decodes from them against what ffmpeg's own decoder gets through the same bytes.

Seeds are small valid videos (mp4/h264 plain, fragmented and fast-start, webm vp8 and vp9, avi mjpeg, mkv h264
and mpeg4, a rotated mp4, a variable-rate mkv) written with PyAV. File i is seed i mod seeds, mutated by 1-3
operations drawn from Random(f"{seed}:{i}"), so `--seed S --only i` reproduces any file: truncation, bit
flips, zeroed or random byte runs, header chunks (mp4 boxes, EBML elements, RIFF chunks) swapped, duplicated,
dropped or given absurd sizes, absurd header fields (width, height, timescale, frame duration, frame rate, the
display matrix, the VP8 and JPEG frame sizes), the head of one seed spliced to another's tail, a zero-length
file, random bytes behind a valid magic.

Each file goes through what `fightwatch prepare` cuts clips with (data.extract.extract_window, three windows) and
through what `fightwatch score` runs per video (cluster.commands.score.score_one, a tiny random model), in worker
processes that take file after file; the parent sends one file at a time and kills a worker that has not
finished a step within --timeout (a hang), then starts a fresh one for the next file. A crash is a worker that
died (a signal, or an exit), or a step that raised anything but the product's handled error (ClipError from
extraction; score_one turns InputError into an `error` entry itself). A sample of the files (--cli-every) also
goes through the installed `fightwatch score` command, --cli-batch files per run: it must exit 0 or 2 with one
`fightwatch: error:` line and no traceback. Files that crashed or hung are kept under --out/findings/.

The headline is the frames decoded: each file is also read through as `score` reads it (data.clips.VideoFrames,
the frames before an error counted too) and decoded by Debian's ffmpeg (`ffmpeg -i FILE -f framecrc`, each frame
as it comes), and the report gives fightwatch's frames over ffmpeg's, overall and per mutation, and the files
where fightwatch got under 95% of ffmpeg's.

    flock /tmp/fw-cpu.lock .venv/bin/python scripts/faults/fuzz_videos.py --files 10000 --jobs 2 --out /tmp/fuzz
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.damage import ffmpeg_frames  # noqa: E402  (after the checkout is on the path)

FIGHTWATCH = Path(sys.executable).parent / "fightwatch"
# The clips extracted from every file (seconds): from the start, one after a seek (the seeds' key frames are
# 0.4 s apart), and one at an AVA time, far past the seeds' 1.2 s end.
WINDOWS = ((0.2, 1.0), (0.8, 1.2), (902.0, 903.0))
SEED_FRAMES, SEED_SIZE = 30, (64, 48)
STARTUP_TIMEOUT = 180  # a worker imports torch and builds the model before its first file


# --------------------------------------------------------------------------------------------------- seeds


def write_seeds(folder: Path) -> list[Path]:
    """The valid videos every mutation starts from."""
    import av

    from tests.support.videos import write_video

    folder.mkdir(parents=True, exist_ok=True)
    frames, size = SEED_FRAMES, SEED_SIZE
    specs = [
        ("h264.mp4", dict(codec="libx264")),
        ("h264-fragmented.mp4", dict(codec="libx264", container_options={"movflags": "frag_keyframe+empty_moov"})),
        ("h264-faststart.mp4", dict(codec="libx264", container_options={"movflags": "faststart"})),
        ("vp8.webm", dict(codec="libvpx")),
        ("vp9.webm", dict(codec="libvpx-vp9")),
        ("mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p")),
        ("h264.mkv", dict(codec="libx264")),
        ("mpeg4.mkv", dict(codec="mpeg4")),
        ("vfr.mkv", dict(codec="libx264", frame_times=[i * 0.04 + (0.02 if i % 3 else 0) for i in range(frames)])),
    ]
    if hasattr(av.video.stream.VideoStream, "set_display_matrix"):
        specs.append(("rotated.mp4", dict(codec="libx264", rotation=90)))
    paths = []
    for name, kwargs in specs:
        path = folder / name
        if not path.is_file():
            write_video(path, frames, size, 25, **kwargs)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------- mutations

# Header chunk markers per container family; for mp4 the 4cc follows the box's 32-bit size.
MP4_BOXES = [b"ftyp", b"moov", b"mdat", b"free", b"moof", b"mfra", b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd",
             b"minf", b"stbl", b"stsd", b"stts", b"stsz", b"stco", b"stss", b"avc1", b"avcC", b"edts", b"elst"]
# EBML header, Segment, SeekHead, Info, Tracks, Cluster, Cues: the 4-byte ids (shorter ones match too often)
EBML_IDS = [b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67", b"\x11\x4d\x9b\x74", b"\x15\x49\xa9\x66",
            b"\x16\x54\xae\x6b", b"\x1f\x43\xb6\x75", b"\x1c\x53\xbb\x6b"]
RIFF_IDS = [b"RIFF", b"LIST", b"hdrl", b"avih", b"strl", b"strh", b"strf", b"movi", b"idx1", b"00dc", b"JUNK"]

# Absurd-value targets: (marker, offset of the field from the marker's start, bytes, byte order).
FIELDS = [
    (b"tkhd", 80, 4, "big"), (b"tkhd", 84, 4, "big"), (b"tkhd", 44, 36, "big"), (b"tkhd", 28, 4, "big"),
    (b"mvhd", 16, 4, "big"), (b"mvhd", 20, 4, "big"), (b"mdhd", 16, 4, "big"), (b"mdhd", 20, 4, "big"),
    (b"stts", 12, 4, "big"), (b"stts", 16, 4, "big"), (b"stts", 8, 4, "big"), (b"avc1", 28, 2, "big"),
    (b"avc1", 30, 2, "big"), (b"stsz", 8, 4, "big"), (b"stsz", 12, 4, "big"), (b"elst", 16, 4, "big"),
    (b"\x23\xe3\x83", 4, 4, "big"),  # Matroska DefaultDuration (ns per frame: the frame rate)
    (b"\x2a\xd7\xb1", 4, 3, "big"),  # TimecodeScale
    (b"\x44\x89", 3, 4, "big"),  # Duration (a float)
    (b"\x9d\x01\x2a", 3, 2, "little"), (b"\x9d\x01\x2a", 5, 2, "little"),  # VP8 key frame width, height
    (b"avih", 8, 4, "little"), (b"avih", 40, 4, "little"), (b"avih", 44, 4, "little"),  # us/frame, width, height
    (b"strh", 28, 4, "little"), (b"strh", 32, 4, "little"), (b"strh", 40, 4, "little"),  # scale, rate, length
    (b"strf", 12, 4, "little"), (b"strf", 16, 4, "little"),  # biWidth, biHeight
    (b"\xff\xc0\x00\x11", 5, 2, "big"), (b"\xff\xc0\x00\x11", 7, 2, "big"),  # JPEG SOF0 height, width
]


def _find_all(data: bytes, marker: bytes) -> list[int]:
    found, at = [], data.find(marker)
    while at >= 0:
        found.append(at)
        at = data.find(marker, at + 1)
    return found


def _extreme(rng: random.Random, n: int) -> bytes:
    top = (1 << (8 * n)) - 1
    value = rng.choice([0, 1, 2, top, top >> 1, (top >> 1) + 1, 16383, 65535, rng.randrange(top + 1)])
    return (value & top).to_bytes(n, "big")


def _chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the header chunks found: from one marker to the next (mp4 boxes from their size field)."""
    starts = sorted({p - 4 for m in MP4_BOXES for p in _find_all(data, m) if p >= 4}
                    | {p for m in EBML_IDS + RIFF_IDS for p in _find_all(data, m)})
    return [(a, b) for a, b in zip(starts, starts[1:] + [len(data)]) if b > a]


def truncate(data, rng, seeds):
    return data[:rng.randrange(len(data) + 1)] if data else data


def bit_flips(data, rng, seeds):
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 5, 20, 100])):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _run(data, rng, fill):
    if not data:
        return data
    start = rng.randrange(len(data))
    length = min(len(data) - start, rng.choice([1, 4, 16, 256, 4096]))
    return data[:start] + fill(length) + data[start + length:]


def zero_run(data, rng, seeds):
    return _run(data, rng, lambda n: bytes(n))


def random_run(data, rng, seeds):
    return _run(data, rng, rng.randbytes)


def header_chunks(data, rng, seeds):
    """Swap two header chunks, duplicate one elsewhere, drop one, or give one an absurd size field."""
    chunks = _chunks(data)
    if len(chunks) < 2:
        return bit_flips(data, rng, seeds)
    (a0, a1), (b0, b1) = sorted(rng.sample(chunks, 2))
    op = rng.choice(["swap", "duplicate", "drop", "size"])
    if op == "swap":
        return data[:a0] + data[b0:b1] + data[a1:b0] + data[a0:a1] + data[b1:]
    if op == "duplicate":
        return data[:b0] + data[a0:a1] + data[b0:]
    if op == "drop":
        return data[:a0] + data[a1:]
    # the size field: an mp4 box's first 4 bytes, a RIFF chunk's 4 after its id, an EBML element's vint after its id
    if data[a0 + 4:a0 + 8] in MP4_BOXES:
        at, n = a0, 4
    elif data[a0:a0 + 4] in RIFF_IDS:
        at, n = a0 + 4, 4
    else:  # an EBML element: its size vint's first bytes (the length marker too, so it may claim 1 to 8 bytes)
        at, n = a0 + 4, 8
    return data[:at] + _extreme(rng, n)[:max(0, len(data) - at)] + data[at + n:]


def absurd_field(data, rng, seeds):
    """One or two of: a width, height, timescale, frame duration or rate (or the display matrix) set to 0, 1, a
    maximum or noise (two: a width and a height can both be absurd)."""
    present = [(m, off, n, order) for m, off, n, order in FIELDS if m in data]
    if not present:
        return bit_flips(data, rng, seeds)
    out = bytearray(data)
    for marker, offset, n, order in rng.sample(present, min(len(present), rng.choice([1, 2]))):
        spots = _find_all(data, marker)
        for at in (spots if rng.random() < 0.5 else [rng.choice(spots)]):  # every frame's header, or one
            value = _extreme(rng, n)
            value = value if order == "big" else value[::-1]
            out[at + offset:at + offset + n] = value[:max(0, len(out) - at - offset)]
    return bytes(out[:len(data)])


def splice(data, rng, seeds):
    other = Path(rng.choice(seeds)).read_bytes()
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


def empty(data, rng, seeds):
    return b""


def magic_noise(data, rng, seeds):
    return data[:rng.choice([4, 12, 32, 64])] + rng.randbytes(rng.choice([0, 100, 5000, 50_000]))


MUTATIONS = {f.__name__: f for f in (truncate, bit_flips, zero_run, random_run, header_chunks, absurd_field,
                                     splice, empty, magic_noise)}
WEIGHTS = {"truncate": 3, "bit_flips": 4, "zero_run": 2, "random_run": 2, "header_chunks": 4, "absurd_field": 5,
           "splice": 1, "empty": 0.2, "magic_noise": 1}


def mutated(index: int, seed: int, seeds: list[Path]) -> tuple[str, bytes, list[str]]:
    """(file name, bytes, mutations applied) of file `index`: deterministic in (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    source = seeds[index % len(seeds)]
    data = source.read_bytes()
    names = rng.choices(list(WEIGHTS), list(WEIGHTS.values()), k=rng.choice([1, 1, 1, 2, 3]))
    for name in names:
        data = MUTATIONS[name](data, rng, seeds)
    return f"{index:06d}-{source.stem}{source.suffix}", data, names


# --------------------------------------------------------------------------------------------------- worker

def _message_class(message: str, path: Path) -> str:
    """The reason of an error message without its file and variable details: 'cannot open video'."""
    text = message.replace(str(path), "").lstrip(": ")
    text = re.sub(r"^window \[[^)]*\): ", "", text)
    text = re.split(r": | \(|\[|; ", text, maxsplit=1)[0].strip() or "?"
    return re.sub(r"\d+%", "N%", text)  # "the decoder failed on N% of its frames"


def worker() -> None:
    """Reads file paths from stdin; per file writes JSON lines to the parent's pipe: {"begin": step} before each
    step, then {"done": results}. Everything else the product prints goes to stderr (the worker's log)."""
    protocol = os.fdopen(int(os.environ["FUZZ_PROTOCOL_FD"]), "w", buffering=1)
    os.dup2(2, 1)  # a stray print must not be read as protocol
    limit = int(os.environ.get("FUZZ_MEMORY_GB", "4")) << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from cluster.commands.score import Video, score_one
    from data.clips import VideoFrames
    from data.errors import InputError
    from data.extract import ClipError, extract_window
    from trainer.model import ResNet3D
    from trainer.serve.alerting.policy import AlertPolicy
    from trainer.serve.runtime.scoring import ScoreConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model_cfg = tiny_model_config()
    model = ResNet3D(model_cfg).eval()
    score_cfg, policy = ScoreConfig(16, 4), AlertPolicy(0.5, 1, 1, 0.0)

    def extract(path):
        """The first window's failure, else ok (the one past the end fails as too_short in a good file)."""
        for start, end in WINDOWS:
            try:
                extract_window(path, start, end, fps=25, short_side=32)
            except ClipError as e:
                if start < SEED_FRAMES / 25 or e.reason != "too_short":
                    return {"ok": False, "reason": e.reason, "message": str(e)}
        return {"ok": True}

    def score(path):
        entry, _ = score_one(model, model_cfg, Video.of(path), score_cfg, policy)
        if "error" in entry:
            return {"ok": False, "reason": _message_class(entry["error"], path), "message": entry["error"]}
        return {"ok": True}

    def decode(path):
        """The frames fightwatch's reading gets through (data/decode.py), held against ffmpeg's by the parent."""
        frames = 0
        try:
            for _ in VideoFrames(path):
                frames += 1
        except InputError as e:  # nothing decodes, or too much was lost: the frames before still count
            return {"ok": False, "reason": _message_class(str(e), path), "message": str(e), "frames": frames}
        return {"ok": True, "frames": frames}

    protocol.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        path = Path(line.strip())
        results = {}
        for step, run in (("extract", extract), ("score", score), ("decode", decode)):
            protocol.write(json.dumps({"begin": step}) + "\n")
            try:
                results[step] = run(path)
            except Exception as e:  # not the product's handled error: a crash, with where it came from
                where = traceback.extract_tb(e.__traceback__)[-1]
                results[step] = {"crash": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                                 "at": f"{Path(where.filename).name}:{where.lineno}"}
        protocol.write(json.dumps({"done": results}) + "\n")


def tiny_model_config():
    from trainer.model import ModelConfig

    return ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=16,
                       pretrained=None, ft_begin="conv1", mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                       value_scale=255.0)


class Worker:
    """A worker process and the protocol pipe it writes; killed and replaced after a hang or a crash."""

    def __init__(self, log: Path, memory_gb: int):
        read, write = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FUZZ_MEMORY_GB": str(memory_gb), "FUZZ_PROTOCOL_FD": str(write)}
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=self.log, stderr=self.log, pass_fds=(write,), env=env, cwd=ROOT)
        os.close(write)
        self.pipe, self.buffer = read, b""
        ready = self.read(STARTUP_TIMEOUT)
        if not ready or "ready" not in ready:
            self.close()
            raise RuntimeError(f"fuzz worker did not start (log: {log})")

    def read(self, timeout: float) -> dict | None:
        """The next protocol line; None on timeout or when the worker died."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.pipe], [], [], left)[0]:
                return None
            chunk = os.read(self.pipe, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def check(self, path: Path, timeout: float) -> dict:
        """{"extract": result, "score": result}, or {"hang": step} / {"died": how, "step": step}."""
        step = None
        try:
            self.proc.stdin.write(f"{path}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died after the last file
            pass
        while True:
            message = self.read(timeout)
            if message is None:
                if self.proc.poll() is None:
                    return {"hang": step}
                code = self.proc.wait()
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                return {"died": how, "step": step}
            if "begin" in message:
                step = message["begin"]
            else:
                return message["done"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.pipe)
        self.log.close()


# --------------------------------------------------------------------------------------------------- the run


@dataclass
class Tally:
    files: int = 0
    crashes: list = field(default_factory=list)  # (file, step, what)
    hangs: list = field(default_factory=list)  # (file, step)
    failures: int = 0  # steps that failed in the handled way
    one_line: int = 0  # of those, with a one-line message naming the file
    reasons: collections.Counter = field(default_factory=collections.Counter)  # "step: reason" -> steps
    mutations: collections.Counter = field(default_factory=collections.Counter)
    # frames decoded per mutation: mutation -> [fightwatch's, ffmpeg's] over the files it was applied to
    frames: dict = field(default_factory=lambda: collections.defaultdict(lambda: [0, 0]))
    short: list = field(default_factory=list)  # files where fightwatch got under 95% of ffmpeg's frames
    frames_total: list = field(default_factory=lambda: [0, 0])  # [fightwatch's, ffmpeg's] over every file
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_frames(self, path: Path, mutations: list[str], ours: int, ffmpeg: int) -> None:
        with self.lock:
            for mutation in set(mutations):
                self.frames[mutation][0] += ours
                self.frames[mutation][1] += ffmpeg
            self.frames_total[0] += ours
            self.frames_total[1] += ffmpeg
            if ours < 0.95 * ffmpeg:
                self.short.append((path.name, ours, ffmpeg))

    def add(self, path: Path, mutations: list[str], result: dict) -> bool:
        """Count one file; True when it crashed or hung (keep it)."""
        with self.lock:
            self.files += 1
            self.mutations.update(mutations)
            if "hang" in result:
                self.hangs.append((path.name, result["hang"]))
                return True
            if "died" in result:
                self.crashes.append((path.name, result["step"], result["died"]))
                return True
            bad = False
            for step, outcome in result.items():
                if "crash" in outcome:
                    self.crashes.append((path.name, step, f"{outcome['crash']} at {outcome['at']}"))
                    bad = True
                elif outcome["ok"]:
                    self.reasons[f"{step}: ok"] += 1
                else:
                    self.failures += 1
                    self.reasons[f"{step}: {outcome['reason']}"] += 1
                    message = outcome["message"]
                    self.one_line += bool(message) and "\n" not in message and path.name in message
            return bad


def fuzz(files: int, seed: int, timeout: float, jobs: int, out: Path, memory_gb: int = 4,
         only: list[int] | None = None, progress: bool = True) -> Tally:
    """Run `files` mutated files (or just the indexes `only`) through the workers; the counts."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = write_seeds(out / "seeds")
    work, findings = out / "work", out / "findings"
    work.mkdir(exist_ok=True)
    findings.mkdir(exist_ok=True)
    todo = collections.deque(only if only is not None else range(files))
    tally, started = Tally(), time.monotonic()
    results = open(out / "results.jsonl", "w", buffering=1)

    def slot(number: int) -> None:
        log = out / f"worker-{number}.log"
        worker = Worker(log, memory_gb)
        try:
            while True:
                with tally.lock:
                    if not todo:
                        return
                    index = todo.popleft()
                name, data, names = mutated(index, seed, seeds)
                path = work / name
                path.write_bytes(data)
                result = worker.check(path, timeout)
                if "frames" in result.get("decode", {}):
                    result["ffmpeg_frames"] = ffmpeg_frames(path, timeout) or 0
                    tally.add_frames(path, names, result["decode"]["frames"], result["ffmpeg_frames"])
                kept = tally.add(path, names, {k: v for k, v in result.items() if k != "ffmpeg_frames"})
                results.write(json.dumps({"index": index, "file": name, "mutations": names, **result}) + "\n")
                if kept:
                    shutil.move(path, findings / name)
                    worker.close()
                    worker = Worker(log, memory_gb)
                else:
                    path.unlink()
                if progress and tally.files % 500 == 0:
                    rate = tally.files / (time.monotonic() - started)
                    print(f"  {tally.files} files, {len(tally.crashes)} crashes, {len(tally.hangs)} hangs "
                          f"({rate:.1f} files/s)", file=sys.stderr, flush=True)
        finally:
            worker.close()

    threads = [threading.Thread(target=slot, args=(n,)) for n in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.close()
    return tally


# --------------------------------------------------------------------------------------------------- the CLI sample


@dataclass
class CliTally:
    runs: int = 0
    files: int = 0
    crashes: list = field(default_factory=list)  # (run, what)
    hangs: int = 0


def cli_sample(indexes: list[int], seed: int, timeout: float, batch: int, out: Path) -> CliTally:
    """The files `indexes` through the installed `fightwatch score`, `batch` files per run: exit 0 or 2, one
    `fightwatch: error:` line, no traceback, and an output.json whose errors are one line each."""
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.model import ResNet3D

    seeds = write_seeds(out / "seeds")
    model = out / "tiny-model.pth"
    if not model.is_file():
        torch.manual_seed(0)
        save_checkpoint(model, ResNet3D(tiny_model_config()), tiny_model_config(), epoch=1)
    tally = CliTally()
    for start in range(0, len(indexes), batch):
        group = indexes[start:start + batch]
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            folder = Path(tmp)
            names = []
            for index in group:
                name, data, _ = mutated(index, seed, seeds)
                (folder / name).write_bytes(data)
                names.append(name)
            (folder / "input").write_text("".join(f"{n}\n" for n in names))
            output = folder / "output.json"
            tally.runs += 1
            tally.files += len(group)
            try:
                run = subprocess.run([str(FIGHTWATCH), "score", "--input", str(folder / "input"), "--video_root",
                                      str(folder), "--output", str(output), "--model", str(model),
                                      "--precision", "fp32"], cwd=ROOT, capture_output=True, text=True,
                                     timeout=60 + timeout * len(group))
            except subprocess.TimeoutExpired:
                tally.hangs += 1
                shutil.copytree(folder, out / "findings" / f"cli-{group[0]:06d}", dirs_exist_ok=True)
                continue
            errors = [line for line in run.stderr.splitlines() if line.startswith("fightwatch: error:")]
            entries = json.loads(output.read_text()) if output.is_file() else []
            bad_entries = [e for e in entries if "\n" in e.get("error", "")]
            what = None
            if run.returncode not in (0, 2):
                what = f"exit {run.returncode}"
            elif "Traceback" in run.stderr or (run.returncode == 2) != (len(errors) == 1) or bad_entries:
                what = "traceback or not one error line"
            elif len(entries) != len(group):
                what = f"output.json has {len(entries)} entries for {len(group)} files"
            if what:
                tally.crashes.append((f"files {group}", what + ": " + run.stderr[-300:].replace("\n", " | ")))
                shutil.copytree(folder, out / "findings" / f"cli-{group[0]:06d}", dirs_exist_ok=True)
    return tally


def ratio(ours: int, ffmpeg: int) -> str:
    return f"{ours / ffmpeg:.3f}" if ffmpeg else "-"


def report(tally: Tally, cli: CliTally | None, seconds: float, cli_seconds: float) -> list[str]:
    ours, ffmpeg = tally.frames_total
    lines = [f"frames decoded, fightwatch / ffmpeg: {ratio(ours, ffmpeg)} ({ours} / {ffmpeg} frames of the same "
             f"{tally.files} files); files under 0.95 of ffmpeg's frames: {len(tally.short)}",
             "per mutation (fightwatch / ffmpeg frames of the files it was applied to): " + ", ".join(
                 f"{m} {ratio(*counts)}" for m, counts in sorted(tally.frames.items()))]
    lines += [f"short: {name} {got} of ffmpeg's {want} frames" for name, got, want in tally.short[:20]]
    lines += ["mutations applied: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.mutations.items())),
             "outcomes per step (step: reason -> count):"]
    lines += [f"  {reason}: {count}" for reason, count in sorted(tally.reasons.items())]
    lines += [f"crash: {f} [{step}] {what}" for f, step, what in tally.crashes[:50]]
    lines += [f"hang: {f} [{step}]" for f, step in tally.hangs[:50]]
    if cli is not None:
        lines += [f"crash (fightwatch score): {where}: {what}" for where, what in cli.crashes[:20]]
        lines.append(f"fightwatch score sample: {cli.files} files in {cli.runs} runs, crashes {len(cli.crashes)}, "
                     f"hangs {cli.hangs}, {cli_seconds:.0f} s")
    lines.append(f"time {seconds:.0f} s for the files ({tally.files / max(seconds, 1e-9):.1f} files/s)")
    lines.append(f"files fuzzed {tally.files}, crashes {len(tally.crashes) + (len(cli.crashes) if cli else 0)}, "
                 f"hangs {len(tally.hangs) + (cli.hangs if cli else 0)}, "
                 f"one-line reasons {tally.one_line}/{tally.failures} failures")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="mutated files (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per file and step (default 20)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="seeds, results.jsonl, worker logs and findings "
                        "(default: a new temporary folder)")
    parser.add_argument("--memory-gb", type=int, default=4, help="address-space limit of a worker (default 4)")
    parser.add_argument("--cli-every", type=int, default=50,
                        help="every Nth file also through `fightwatch score` (0: none; default 50)")
    parser.add_argument("--cli-batch", type=int, default=10, help="files per `fightwatch score` run (default 10)")
    parser.add_argument("--only", type=int, nargs="+", help="just these file indexes (reproduce a finding)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="fuzz-videos-"))
    started = time.monotonic()
    print(f"fuzzing {len(args.only) if args.only else args.files} files (seed {args.seed}, timeout {args.timeout:g} s, "
          f"{args.jobs} jobs) in {out}", file=sys.stderr)
    tally = fuzz(args.files, args.seed, args.timeout, args.jobs, out, args.memory_gb, args.only)
    seconds, cli = time.monotonic() - started, None
    if args.cli_every:
        indexes = [i for i in (args.only or range(args.files)) if i % args.cli_every == 0]
        cli = cli_sample(indexes, args.seed, args.timeout, args.cli_batch, out)
    lines = report(tally, cli, seconds, time.monotonic() - started - seconds)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = (tally.files == (len(args.only) if args.only else args.files) and not tally.crashes and not tally.hangs
          and tally.one_line == tally.failures and not (cli and (cli.crashes or cli.hangs)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
