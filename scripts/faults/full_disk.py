"""Full disks (issue 17): a small real tmpfs fills while `fightwatch prepare` extracts clips into the store, while
`fightwatch train` writes a checkpoint and while `fightwatch watch` writes an alert's snapshot and clips; each
case runs at every size given, then the disk is enlarged and the same command runs again.

A case passes when
  prepare / train: the process exits 2 with exactly one `fightwatch: error:` line, naming a file on the full disk
      and "No space left on device", no traceback; no temp file is left; every shard with an index reads whole
      (prepare), every checkpoint verifies against its sidecar (train); and the re-run completes: all 20 clips in
      the manifest and readable, or training resumed and model.pth verifies at the last epoch.
  watch: the process exits 0 and every alert went out (start and end in --alerts, the alert in the store); each
      snapshot or clip not written is one log line naming it and the full disk, no traceback, no temp file; the
      re-run writes them all, decodable.
The last line is the headline:
  full-disk cases 3/3: one-line error, no partial file, re-run completes (prepare 1/1, train 1/1, watch 1/1)

  .venv/bin/python scripts/faults/full_disk.py [--prepare-sizes 96k] [--train-sizes 1200k] [--watch-sizes 4k]
      [--dir DIR] [--keep]
Needs root (mount -t tmpfs). Run it under `flock /tmp/fw-cpu.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.support: the tiny config and the clean environment

import av  # noqa: E402

from data.store import ClipStore  # noqa: E402
from scripts.bench.common import describe_cpu  # noqa: E402
from tests.support.commands import FIGHTWATCH, clean_env  # noqa: E402
from tests.support.models import fixed_output_model  # noqa: E402
from tests.support.training import TINY  # noqa: E402
from tests.support.videos import write_video  # noqa: E402
from trainer.checkpoint import latest_checkpoint, read_checkpoint  # noqa: E402
from trainer.serve.alerting.store import AlertStore  # noqa: E402

EPOCHS = 3
ROOMY = "16m"  # the size a disk is enlarged to before the re-run


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (made if missing) for the block; OSError where mounting fails."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        raise OSError(f"cannot mount a tmpfs at {path} (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def temp_files(folder: Path) -> list[Path]:
    """Temp files (data.store.atomic_path's `.<name>.<id>.tmp`) left behind."""
    return sorted(folder.rglob("*.tmp"))


def no_space_error(result: subprocess.CompletedProcess, folder: Path) -> str | None:
    """Why `result` is not the one-line full-disk error naming a file under `folder`; None when it is."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("fightwatch: error:")]
    if result.returncode != 2 or len(errors) != 1 or "Traceback" in result.stderr:
        return f"exit {result.returncode}, {len(errors)} error line(s): {result.stderr[-2000:]}"
    if str(folder) not in errors[0] or "no space left on device" not in errors[0].lower():
        return f"the error line names neither {folder} nor the full disk: {errors[0]}"
    return None


def fightwatch(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FIGHTWATCH), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def prepare_case(work: Path, size: str) -> str | None:
    """None when the case passes, else what went wrong."""
    run_dir = work / "run"
    prepare = ["prepare", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY]
    with tmpfs(run_dir / "clips", size) as clips:
        why = no_space_error(fightwatch(*prepare), clips)
        if why:
            return why
        if temp_files(clips) or (run_dir / "manifest.jsonl").exists():
            return f"left behind: {temp_files(clips)} or a manifest"
        store = ClipStore(clips)
        for clip_id in store.index:  # an index on disk vouches for its whole shard
            if len(store.read(clip_id)) != store.shape(clip_id)[0]:
                return f"clip {clip_id} indexed but not whole"
        resize(clips, ROOMY)
        again = fightwatch(*prepare)
        if again.returncode:
            return f"the re-run failed: {again.stderr[-2000:]}"
        rows = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
        store = ClipStore(clips)
        if len(rows) != 20 or any(len(store.read(r["clip_id"])) != store.shape(r["clip_id"])[0] for r in rows):
            return f"the re-run's store is not whole: {len(rows)} clips"
        return None


def train_case(work: Path, size: str, prepared: Path) -> str | None:
    run_dir = work / "run"
    shutil.copytree(prepared, run_dir)
    train = ["train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY, f"train.epochs={EPOCHS}"]
    with tmpfs(run_dir / "checkpoints", size) as checkpoints:
        why = no_space_error(fightwatch(*train), checkpoints)
        if why:
            return why
        if temp_files(checkpoints):
            return f"left behind: {temp_files(checkpoints)}"
        for path in checkpoints.glob("*.pth"):
            read_checkpoint(path, require_checksum=True)  # InputError: a checkpoint a resume would distrust
        found = latest_checkpoint(checkpoints)
        resize(checkpoints, ROOMY)
        again = fightwatch(*train)
        if again.returncode:
            return f"the re-run failed: {again.stderr[-2000:]}"
        start = found[1]["epoch"] + 1 if found else 1
        if start > 1 and f"resumed at epoch {start} of {EPOCHS}" not in again.stderr:
            return f"the re-run did not resume at epoch {start}: {again.stderr[-2000:]}"
        if read_checkpoint(run_dir / "model.pth", require_checksum=True)["epoch"] != EPOCHS or temp_files(checkpoints):
            return "the re-run's model or checkpoints are not whole"
        return None


def watch_case(work: Path, size: str, model: Path, video: Path) -> str | None:
    alerts, store = work / "alerts.jsonl", work / "alerts.db"

    def watch(out_dir: Path) -> subprocess.CompletedProcess:
        alerts.unlink(missing_ok=True)
        return fightwatch("watch", "--model", model, "--no-realtime", "--alerts", alerts, "--store", store,
                          "--out-dir", out_dir, "--stats-every", 0, f"gate={video}")

    with tmpfs(work / "out", size) as out_dir:
        result = watch(out_dir)
        if result.returncode or "Traceback" in result.stderr:
            return f"exit {result.returncode}: {result.stderr[-2000:]}"
        events = [json.loads(line) for line in alerts.read_text().splitlines()]
        if [e["event"] for e in events] != ["start", "end"]:
            return f"alerts lost: {events}"
        files = {Path(e[key]) for e in events for key in ("snapshot", "clip") if e[key]}
        missing = [p for p in files if not p.is_file()]
        if not missing:
            return f"{size} held every file: not a full disk for this case"
        lines = [line for line in result.stderr.splitlines() if "No space left on device" in line]
        if len(lines) != len(missing) or any(not any(str(p) in line for line in lines) for p in missing):
            return f"{len(missing)} file(s) missing, {len(lines)} line(s) saying so: {result.stderr[-2000:]}"
        if temp_files(out_dir):
            return f"left behind: {temp_files(out_dir)}"
        with AlertStore(store) as db:
            if events[0]["alert_id"] not in {a.id for a in db.alerts()}:
                return "the alert is not in the store"
        resize(out_dir, ROOMY)
        again = watch(out_dir)
        events = [json.loads(line) for line in alerts.read_text().splitlines()]
        if again.returncode or "No space" in again.stderr or len(events) != 2:
            return f"the re-run failed: {again.stderr[-2000:]}"
        if decoded_frames(Path(events[1]["clip"])) != 50 or temp_files(out_dir):
            return "the re-run's clip is not whole"
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare-sizes", nargs="+", default=["96k"],
                        help="tmpfs sizes under the clip store (the 20 tiny shards take ~1 MB)")
    parser.add_argument("--train-sizes", nargs="+", default=["1200k"],
                        help="tmpfs sizes under checkpoints/ (a tiny checkpoint is ~0.5 MB, last.pth's temp "
                             "beside the old one)")
    parser.add_argument("--watch-sizes", nargs="+", default=["4k"], help="tmpfs sizes under watch's --out-dir")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="full_disk_", dir=args.dir))
    started = time.monotonic()
    print(describe_cpu(), flush=True)
    passed: dict[str, list[bool]] = {"prepare": [], "train": [], "watch": []}
    try:
        prepared = base / "prepared"
        if args.train_sizes:
            result = fightwatch("prepare", "--config", "configs/demo.yaml", f"run_dir={prepared}", *TINY)
            if result.returncode:
                sys.exit(f"preparing the training data failed: {result.stderr[-2000:]}")
        model = fixed_output_model(base / "fight.pth", "fight")
        video = write_video(base / "gate.mp4", 50, fps=25)
        runs = ([("prepare", s, lambda w, s=s: prepare_case(w, s)) for s in args.prepare_sizes]
                + [("train", s, lambda w, s=s: train_case(w, s, prepared)) for s in args.train_sizes]
                + [("watch", s, lambda w, s=s: watch_case(w, s, model, video)) for s in args.watch_sizes])
        for n, (case, size, run) in enumerate(runs):
            work = base / f"{n:02d}_{case}_{size}"
            work.mkdir()
            t0 = time.monotonic()
            try:
                why = run(work)
            except Exception as e:  # e.g. a checkpoint that does not verify: that case failed, the rest go on
                why = f"{type(e).__name__}: {e}"
            passed[case].append(why is None)
            print(f"{case} on {size}: {'ok' if why is None else 'FAILED: ' + why} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    total = sum(len(v) for v in passed.values())
    ok = sum(sum(v) for v in passed.values())
    cases = ", ".join(f"{case} {sum(v)}/{len(v)}" for case, v in passed.items() if v)
    print(f"full-disk cases {ok}/{total}: one-line error, no partial file, re-run completes ({cases}); "
          f"{time.monotonic() - started:.0f} s")
    sys.exit(0 if ok == total else 1)


if __name__ == "__main__":
    main()
