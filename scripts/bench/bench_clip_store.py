"""Clip store formats side by side, and the training loader against one training rank.

    .venv/bin/python scripts/bench/bench_clip_store.py [--clips 48] [--frames 100] [--precision auto|fp32|bf16]

Formats (all holding the same clips, short side 128, as `fightwatch prepare` stores them):
  jpeg-folders  a folder of JPEG frames per clip (the seed's layout: ffmpeg to image_00001.jpg ...)
  npy-per-clip  one raw uint8 .npy per clip, memory-mapped
  mp4-per-clip  one H.264 file per clip, decoded from its start
  tar-shards    fightwatch's store: JPEG frames in one tar per source video, read by offset
Each read is what the Dataset does per sample: a random clip, 16 consecutive frames from a random start.
The JPEG codec per frame: Pillow against simplejpeg, which the store uses.
Then: clips/s the training DataLoader delivers from tar-shards (augmentation to 112, 1 worker) against clips/s
one training rank consumes (ResNet-34 fine-tune step, layer4+fc trained, the trunk under no_grad, in the
trainer's precision plan for this CPU, batch 8, this process's threads).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from data.dataset import ClipDataset, Normalization
from data.store import ClipStore, decode_jpeg, encode_jpeg
from data.synthetic import render_clip
from common import add_precision_arg, bench_plan  # scripts/bench/common.py
from trainer.accel import AccelPlan, apply, finetune_forward
from trainer.model import ModelConfig, ResNet3D, freeze_before, split, train_mode

DURATION, QUALITY, CLIPS_PER_VIDEO = 16, 90, 4


def du(root: Path) -> tuple[float, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20, len(files)


def write_jpeg_folders(root, clips):
    for clip_id, frames in clips.items():
        (root / clip_id).mkdir(parents=True)
        for i, frame in enumerate(frames, 1):
            (root / clip_id / f"image_{i:05d}.jpg").write_bytes(encode_jpeg(frame, QUALITY))


def read_jpeg_folders(root, clip_id, start):
    return np.stack([decode_jpeg((root / clip_id / f"image_{i:05d}.jpg").read_bytes())
                     for i in range(start + 1, start + 1 + DURATION)])


def write_npy(root, clips):
    root.mkdir(parents=True)
    for clip_id, frames in clips.items():
        np.save(root / f"{clip_id}.npy", frames)


def read_npy(root, clip_id, start):
    return np.array(np.load(root / f"{clip_id}.npy", mmap_mode="r")[start : start + DURATION])


def write_mp4(root, clips):
    root.mkdir(parents=True)
    for clip_id, frames in clips.items():
        with av.open(str(root / f"{clip_id}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25, options={"crf": "18"})
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def read_mp4(root, clip_id, start):
    with av.open(str(root / f"{clip_id}.mp4")) as container:
        frames = []
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == DURATION:
                return np.stack(frames)


def write_shards(root, clips):
    store = ClipStore(root, QUALITY)
    ids = list(clips)
    for s in range(0, len(ids), CLIPS_PER_VIDEO):
        store.write_shard(f"video{s:04d}", {c: clips[c] for c in ids[s : s + CLIPS_PER_VIDEO]})
    return store


def reads_per_s(read, clip_ids, n_frames, seconds=3.0) -> float:
    rng = np.random.default_rng(0)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        clip = read(clip_ids[rng.integers(len(clip_ids))], int(rng.integers(0, n_frames - DURATION)))
        assert clip.shape[0] == DURATION
        done += 1
    return done / (time.perf_counter() - t0)


def rank_clips_per_s(plan: AccelPlan, batch=8, steps=3) -> float:
    """A rank's appetite: the trainer's fine-tune step (layer4+fc, the trunk under no_grad) in the plan's precision."""
    cfg = ModelConfig(34, "A", 64, 2, 112, 16, None, "layer4", (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0), 255.0)
    model = ResNet3D(cfg)
    optimizer = torch.optim.SGD(freeze_before(model, "layer4"), lr=0.01, momentum=0.9)
    model, optimizer = apply(plan, model, optimizer)
    train_mode(model)
    trunk, head = split(model, "layer4")
    x, y = plan.input(torch.randn(batch, 3, 16, 112, 112)), torch.randint(0, 2, (batch,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with plan.autocast():
            logits = finetune_forward(trunk, head, x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times[1:]))


def loader_clips_per_s(store, rows, seconds=5.0) -> float:
    dataset = ClipDataset(store, rows, 112, 16, Normalization((114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0), 255.0),
                          train=True)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=1, persistent_workers=False)
    done, t0 = 0, None
    while t0 is None or time.perf_counter() - t0 < seconds:
        for x, _ in loader:
            if t0 is None:  # start the clock after the worker has started
                t0 = time.perf_counter()
                continue
            done += len(x)
            if time.perf_counter() - t0 >= seconds:
                break
    return done / (time.perf_counter() - t0)


def pillow_encode(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def pillow_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def jpeg_codecs(frames: np.ndarray, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """{codec: (encode, decode) ms per frame}: Pillow's image objects against the store's simplejpeg, the same
    frames in turn, best of `rounds`."""
    codecs = {"Pillow": (pillow_encode, pillow_decode),
              "simplejpeg (the store's)": (lambda frame: encode_jpeg(frame, QUALITY), decode_jpeg)}
    best = {name: [float("inf"), float("inf")] for name in codecs}
    for _ in range(rounds):
        for name, (encode, decode) in codecs.items():
            t0 = time.perf_counter()
            encoded = [encode(frame) for frame in frames]
            t1 = time.perf_counter()
            for data in encoded:
                decode(data)
            t2 = time.perf_counter()
            best[name] = [min(best[name][0], (t1 - t0) / len(frames) * 1e3),
                          min(best[name][1], (t2 - t1) / len(frames) * 1e3)]
    return {name: tuple(times) for name, times in best.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=100, help="frames per clip (4 s at 25 fps)")
    add_precision_arg(parser)
    args = parser.parse_args()
    plan = bench_plan(args.precision)  # the rank step that the loader must keep fed runs in the trainer's plan
    seconds = args.frames / 25
    clips = {f"clip{i:04d}": render_clip(("calm", "fight")[i % 2], seconds, seed=i, width=170, height=128)
             for i in range(args.clips)}
    ids = list(clips)
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    print(f"{args.clips} clips x {args.frames} frames at 170x128, torch threads {torch.get_num_threads()}")
    print(f"{'format':<14} {'write s':>8} {'MiB':>8} {'files':>6} {'reads/s':>8}")
    try:
        formats = {
            "jpeg-folders": (write_jpeg_folders, lambda root: lambda c, s: read_jpeg_folders(root, c, s)),
            "npy-per-clip": (write_npy, lambda root: lambda c, s: read_npy(root, c, s)),
            "mp4-per-clip": (write_mp4, lambda root: lambda c, s: read_mp4(root, c, s)),
            "tar-shards": (write_shards, None),
        }
        for name, (write, reader) in formats.items():
            root = tmp / name
            t0 = time.perf_counter()
            store = write(root, clips)
            write_s = time.perf_counter() - t0
            read = reader(root) if reader else (lambda c, s: store.read(c, range(s, s + DURATION)))
            mib, files = du(root)
            print(f"{name:<14} {write_s:8.2f} {mib:8.1f} {files:6d} {reads_per_s(read, ids, args.frames):8.1f}",
                  flush=True)
        print("\nJPEG q90 per 170x128 frame (ms, one thread, best of 3): codec, encode, decode")
        for name, (encode_ms, decode_ms) in jpeg_codecs(clips[ids[1]]).items():
            print(f"  {name:<26} {encode_ms:6.3f} {decode_ms:6.3f}")
        rows = [{"clip_id": c, "label_id": i % 2} for i, c in enumerate(ids)]
        loader = loader_clips_per_s(ClipStore(tmp / "tar-shards"), rows)
        rank = rank_clips_per_s(plan)
        print(f"\ntraining loader (tar-shards, 1 worker, augment to 112): {loader:.1f} clips/s")
        print(f"one training rank (ResNet-34, layer4+fc, {plan.precision}, batch 8, {torch.get_num_threads()} threads): "
              f"{rank:.1f} clips/s")
        print(f"loader / rank: {loader / rank:.1f}x")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
