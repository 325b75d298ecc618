"""The kill loop (issue 17): SIGKILL `fightwatch train` again and again, at random moments and at aimed phases of
a run, resume it with the same command each time, and check that the run it ends with is the uninterrupted one.

Each kill hits the whole process tree at once (the launcher, torchrun and its ranks, which torchrun starts in
sessions of their own): every process is stopped (SIGSTOP) before any is killed, as a power cut would. Kill
moments are planned up front from --seed (plan_kills): half at a random moment of the run's span, half aimed at
a phase (the tracking store's creation, the process group's rendezvous, the trunk cache build, a step,
validation, a checkpoint write, MLflow logging, the end of the run), caught by watching what a run shows from
outside: its run log's lines, the files it writes (temp files, the checkpoint sidecar's inode) and its progress
bars on stderr. The phase recorded for a kill is the one observed just before it (classify), not the one aimed at.

A round trains a fresh copy of the prepared clips until an attempt finishes; rounds repeat until --kills kills
have landed. Each finished round is checked against an uninterrupted run of the same command (verify): the final
weights equal (atol 1e-5, as tests/test_train.py), one MLflow run, FINISHED, every epoch metric logged at steps
1..epochs exactly once, every checkpoint artifact whole, no temp file left. A kill is survived when its round
passes. The last line is the headline:
  kills survived 20/20 (...) over 4 runs; epochs exact, weights equal, no temp files; 412 s

  .venv/bin/python scripts/faults/kill_loop.py --kills 20 --seed 0 --ranks 1 --trunk-cache off
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.support: the tiny config, the clean environment, the MLflow look-up

import psutil  # noqa: E402
import torch  # noqa: E402

from scripts.bench.common import describe_cpu  # noqa: E402
from tests.support.commands import FIGHTWATCH, clean_env  # noqa: E402
from tests.support.training import TINY, mlflow_runs, weights  # noqa: E402

# What a run goes through, in order; each is told apart from outside by classify().
PHASES = ("start-up", "rendezvous", "tracking store", "run start", "trunk cache build", "step", "validation",
          "checkpoint write", "MLflow logging", "finishing")
AIMABLE = PHASES[1:]  # start-up is what random kills mostly hit
WANDER = {"run start": 1.0, "step": 0.3}  # aimed at these long phases, a kill lands up to this many seconds in
TRUNK_CACHE = ["model.ft_begin=layer4", "train.trunk_cache={views: 2}"]
_BAR = re.compile(r"(?P<desc>[^\r\n|]+?): +\d+%\|")  # a tqdm bar with a total: "epoch 3/8:  75%|███ | 3/4"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------------------------
# Planning and telling phases apart: pure


@dataclass(frozen=True)
class Target:
    """A planned kill: at `delay_s` after the start (phase None), or once `phase` is seen (then after `delay_s`
    more: steps are long enough to land anywhere in one; short phases get 0)."""
    phase: str | None
    delay_s: float


def plan_kills(kills: int, seed: int, span_s: float, phases: tuple[str, ...]) -> list[Target]:
    """`kills` targets in a seeded random order: every other one aimed at `phases` in turn, the rest at a
    uniformly random moment of a run `span_s` long."""
    rng = random.Random(seed)
    targets = []
    for i in range(kills):
        if i % 2 and phases:
            phase = phases[(i // 2) % len(phases)]
            targets.append(Target(phase, round(rng.uniform(0, WANDER.get(phase, 0.0)), 3)))
        else:
            targets.append(Target(None, round(rng.uniform(0, span_s), 2)))
    rng.shuffle(targets)
    return targets


def next_target(targets: list[Target], passed: set[str]) -> int | None:
    """The index of the first target this attempt can still reach (phases in `passed` are over for this round:
    the store exists, the trunk cache is built); None when none can, so the round runs to its end."""
    return next((i for i, t in enumerate(targets) if t.phase not in passed), None)


@dataclass(frozen=True)
class Observation:
    """What a running attempt shows from outside."""
    lines: tuple[str, ...]  # its run-log lines
    stderr: str  # its console (progress bars and fightwatch's lines)
    store: bool  # the MLflow store exists
    store_tmp: bool  # the MLflow store is being made (ensure_local_store's temp file)
    checkpoint_tmp: bool  # a checkpoint is being written
    commits: int  # last.pth's sidecar replaced this many times: epochs checkpointed by this attempt
    epochs: int  # the run's epochs


def bar_state(stderr: str) -> tuple[str | None, bool]:
    """(description of the last progress bar drawn, whether it has been closed since): tqdm clears a closed
    bar (leave=False) by writing blanks over it."""
    segments = [s for s in re.split(r"[\r\n]", _ANSI.sub("", stderr)) if s]
    for i in range(len(segments) - 1, -1, -1):
        bar = _BAR.match(segments[i])
        if bar:
            return bar.group("desc").strip(), any(not s.strip() for s in segments[i + 1:])
    return None, False


def classify(o: Observation) -> str:
    """The phase of PHASES an attempt is in, from what it shows."""
    if o.checkpoint_tmp:
        return "checkpoint write"
    if o.store_tmp:
        return "tracking store"
    if not o.lines:
        return "start-up"  # imports
    logged = [int(m.group(1)) for line in o.lines for m in [re.search(r" trainer\.train: epoch (\d+): ", line)] if m]
    if o.commits > len(logged):
        return "MLflow logging"
    resumed = [int(m.group(1)) for line in o.lines for m in [re.search(r"resumed at epoch (\d+) of", line)] if m]
    if (logged and logged[-1] >= o.epochs) or (resumed and resumed[-1] > o.epochs):
        return "finishing"
    desc, closed = bar_state(o.stderr)
    if any(" trainer.train: training " in line for line in o.lines):
        return "validation" if desc and desc.startswith("epoch ") and closed else "step"
    if desc and desc.startswith("trunk cache"):
        return "trunk cache build"
    if any(" joining " in line for line in o.lines) and not any(" trainer.accel: " in line for line in o.lines):
        return "rendezvous"
    return "run start" if o.store else "start-up"  # run start: the MLflow run's, params, the resume's


# ---------------------------------------------------------------------------------------------------------------
# Running, watching and killing


def train_command(run_dir: Path, ranks: int, extra: list[str]) -> list[str]:
    launch = ["--launch", "local", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    return [str(FIGHTWATCH), "train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY, *extra, *launch]


def epochs_of(extra: list[str]) -> int:
    return int([a.split("=")[1] for a in [*TINY, *extra] if a.startswith("train.epochs=")][-1])


class Attempt:
    """One `fightwatch train` in a session of its own, its stderr collected, its run dir watched."""

    def __init__(self, command: list[str], run_dir: Path, epochs: int):
        self.run_dir, self.epochs, self.started, self.killed_at = run_dir, epochs, time.monotonic(), None
        log = run_dir / "fightwatch.log"
        self.log_offset, self.lines = (log.stat().st_size if log.exists() else 0), []
        self.sidecar = run_dir / "checkpoints" / "last.pth.sha256"
        self.inode, self.commits = self._inode(), 0
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env=clean_env(), start_new_session=True)
        self.stderr = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.process.stderr.read1(65536):
            self.stderr += chunk

    def _inode(self) -> int | None:
        try:
            return self.sidecar.stat().st_ino
        except FileNotFoundError:
            return None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def observe(self) -> Observation:
        inode = self._inode()
        if inode != self.inode:  # polled every few ms; an epoch takes far longer
            self.inode, self.commits = inode, self.commits + 1
        log = self.run_dir / "fightwatch.log"
        if log.exists():  # whole lines only: a line being written is read on a later poll
            with open(log, "rb") as f:
                f.seek(self.log_offset)
                text = f.read()
            whole = text[:text.rfind(b"\n") + 1]
            self.log_offset += len(whole)
            self.lines += whole.decode(errors="replace").splitlines()
        return Observation(tuple(self.lines), self.stderr[-8192:].decode(errors="replace"),
                           (self.run_dir / "mlflow.db").exists(), any(self.run_dir.glob(".mlflow.db.*.tmp")),
                           any((self.run_dir / "checkpoints").glob(".*.tmp")), self.commits, self.epochs)

    def kill(self) -> None:
        """SIGKILL the whole tree at one moment: stop every process first (torchrun's ranks have sessions of
        their own, so a process-group kill alone would miss them), then kill them all."""
        stopped: list[psutil.Process] = []
        try:
            root = psutil.Process(self.process.pid)
            root.suspend()
            stopped.append(root)
        except psutil.NoSuchProcess:
            pass
        while True:  # a child started between listing and stopping is caught on the next pass
            new = [c for p in stopped for c in _children(p) if c not in stopped]
            if not new:
                break
            for child in new:
                try:
                    child.suspend()
                    stopped.append(child)
                except psutil.NoSuchProcess:
                    pass
        for p in stopped:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        psutil.wait_procs(stopped, timeout=30)
        self._reader.join(10)

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(10)
        return code


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def attempt_until(attempt: Attempt, target: Target | None, timeout: float) -> tuple[str, str | None]:
    """Run the attempt until its target's moment (then kill it) or its end: ("killed", phase observed just
    before the kill) or ("exited <code>", None) or ("timed out", phase)."""
    aimed_at = None
    while True:
        code = attempt.process.poll()
        if code is not None:
            attempt.wait(10)
            return f"exited {code}", None
        if attempt.elapsed() > timeout:
            phase = classify(attempt.observe())
            attempt.kill()
            return "timed out", phase
        o = attempt.observe()
        if target is not None:
            if target.phase is None:
                due = attempt.elapsed() >= target.delay_s
            else:
                if aimed_at is None and classify(o) == target.phase:
                    aimed_at = time.monotonic()
                due = aimed_at is not None and time.monotonic() - aimed_at >= target.delay_s
            if due:
                phase, attempt.killed_at = classify(attempt.observe()), attempt.elapsed()
                attempt.kill()
                return "killed", phase
        time.sleep(0.001)


# ---------------------------------------------------------------------------------------------------------------
# Checking a finished run


def temp_files(run_dir: Path) -> list[Path]:
    """Files written half (atomic_path's and ensure_local_store's temp names)."""
    return sorted(p for p in run_dir.rglob("*.tmp") if p.is_file())


def verify(run_dir: Path, reference: Path, epochs: int) -> list[str]:
    """What is wrong with a killed-and-resumed run against the uninterrupted `reference`; [] when nothing."""
    problems = []
    if not (run_dir / "model.pth").is_file():
        return ["no model.pth"]
    got, want = weights(run_dir), weights(reference)
    differ = [k for k in want if k not in got or not torch.allclose(want[k].float(), got[k].float(), atol=1e-5)]
    if differ:
        problems.append(f"weights differ from the uninterrupted run's: {', '.join(differ[:4])}")
    client, runs = mlflow_runs(run_dir)
    if len(runs) != 1:
        return problems + [f"{len(runs)} MLflow runs, not 1"]
    run = runs[0]
    if run.info.status != "FINISHED":
        problems.append(f"MLflow run {run.info.status}, not FINISHED")
    ref_client, (ref_run,) = mlflow_runs(reference)
    epoch_keys = {k for k in ref_run.data.metrics if not k.startswith(("system/", "trunk_cache_"))}
    missing = epoch_keys - set(run.data.metrics)
    if missing:
        problems.append(f"metrics never logged: {sorted(missing)}")
    for key in sorted(epoch_keys & set(run.data.metrics)):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        if steps != list(range(1, epochs + 1)):
            problems.append(f"{key} logged at steps {steps}, not 1..{epochs} once each")
    for key in (k for k in run.data.metrics if k.startswith("trunk_cache_")):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        if len(steps) != len(set(steps)):
            problems.append(f"{key} logged twice at one step: {steps}")
    artifacts = {f.path: f.file_size for d in ("checkpoints", "plots")
                 for f in client.list_artifacts(run.info.run_id, d)}
    expected = {f.path for d in ("checkpoints", "plots") for f in ref_client.list_artifacts(ref_run.info.run_id, d)}
    if set(artifacts) != expected:
        problems.append(f"artifacts {sorted(artifacts)}, the uninterrupted run has {sorted(expected)}")
    for path, size in artifacts.items():
        local = run_dir / path
        if path.startswith("checkpoints/") and local.is_file() and local.stat().st_size != size:
            problems.append(f"artifact {path} is {size} bytes, the checkpoint {local.stat().st_size}")
    left = temp_files(run_dir)
    if left:
        problems.append(f"temp files left: {', '.join(str(p.relative_to(run_dir)) for p in left[:4])}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Result:
    tried: int = 0
    survived: int = 0
    rounds: int = 0
    missed: int = 0  # planned kills the run ended before (a phase passed unseen, a moment past its end), redrawn
    phases: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def headline(self) -> str:
        hit = ", ".join(f"{p} {self.phases[p]}" for p in PHASES if self.phases[p])
        checks = "; ".join(self.problems[:3]) if self.problems else "epochs exact, weights equal, no temp files"
        return (f"kills survived {self.survived}/{self.tried} (phases hit: {hit or 'none'}; {self.missed} planned "
                f"kill(s) the run ended before, redrawn) over {self.rounds} run(s); {checks}; {self.seconds:.0f} s")


def prepare(work: Path) -> Path:
    """The tiny config's clips, extracted once into <work>/prepared (reused when there)."""
    prepared = work / "prepared"
    if not (prepared / "manifest.jsonl").is_file():
        subprocess.run([str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", f"run_dir={prepared}", *TINY],
                       cwd=ROOT, check=True, capture_output=True, env=clean_env())
    return prepared


def reference_run(prepared: Path, work: Path, ranks: int, extra: list[str]) -> tuple[Path, float]:
    """An uninterrupted run of the command the loop kills, and its wall time."""
    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.copytree(prepared, reference)
    started = time.monotonic()
    result = subprocess.run(train_command(reference, ranks, extra), cwd=ROOT, capture_output=True, text=True,
                            env=clean_env(), timeout=1200)
    if result.returncode:
        raise SystemExit(f"the uninterrupted run failed:\n{result.stderr[-3000:]}")
    return reference, time.monotonic() - started


def run_loop(prepared: Path, work: Path, kills: int, seed: int, ranks: int = 1, trunk_cache: bool = False,
             extra: tuple[str, ...] = (), say=print, targets: list[Target] | None = None) -> Result:
    """Kill and resume training runs on copies of `prepared` until `kills` kills have landed (planned from `seed`,
    or `targets`, tried in their order); each finished run verified against an uninterrupted one."""
    extra = [*extra, *(TRUNK_CACHE if trunk_cache else [])]
    epochs, started = epochs_of(extra), time.monotonic()
    reference, span = reference_run(prepared, work, ranks, extra)
    say(f"uninterrupted run: {span:.1f} s ({reference})")
    aimable = tuple(p for p in AIMABLE
                    if (p != "rendezvous" or ranks > 1) and (p != "trunk cache build" or trunk_cache))
    targets, rng = list(targets or plan_kills(kills, seed, span, aimable)), random.Random(seed + 1)
    result = Result()
    while targets and result.rounds < kills + 2:
        result.rounds += 1
        run_dir = work / f"run{result.rounds}"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(prepared, run_dir)
        round_kills, passed, attempts, failed = 0, set(), 0, None
        while True:
            index = next_target(targets, passed)
            target = targets[index] if index is not None else None
            attempts += 1
            attempt = Attempt(train_command(run_dir, ranks, extra), run_dir, epochs)
            outcome, phase = attempt_until(attempt, target, timeout=max(120.0, 10 * span))
            if outcome == "killed":
                del targets[index]
                result.tried += 1
                round_kills += 1
                result.phases[phase] += 1
                aim = f"aimed at {target.phase}" if target.phase else f"at {target.delay_s:.2f} s"
                say(f"kill {result.tried}/{kills}: run {result.rounds} attempt {attempts}, {aim}: hit {phase} "
                    f"at {attempt.killed_at:.2f} s")
            elif outcome != "exited 0":
                tail = attempt.stderr.decode(errors="replace")[-2000:]
                failed = f"attempt {attempts} {outcome} ({phase or 'no kill'}): {tail}"
                break
            else:
                if target is not None:  # the run ended first: a moment past its end, or a phase too short to see
                    what = f"aimed at {target.phase}, which passed unseen" if target.phase else \
                        f"at {target.delay_s:.2f} s, after its end"
                    say(f"run {result.rounds} attempt {attempts}: the kill {what}; drawn again at random")
                    targets[index] = Target(None, round(rng.uniform(0, span), 2))
                    result.missed += 1
                break
            if (run_dir / "mlflow.db").exists():
                passed.add("tracking store")
            if any("trunk cache " in line and " built, " in line for line in attempt.observe().lines):
                passed.add("trunk cache build")
            if phase == "finishing":  # every epoch is checkpointed: what is left to kill is the end
                passed.update(("step", "validation", "checkpoint write", "MLflow logging", "trunk cache build"))
        problems = [failed] if failed else verify(run_dir, reference, epochs)
        if problems:
            result.problems += [f"run {result.rounds}: {p}" for p in problems]
            say(f"run {result.rounds}: FAILED after {round_kills} kill(s): {'; '.join(problems)}")
        else:
            result.survived += round_kills
            say(f"run {result.rounds}: {round_kills} kill(s), {attempts} start(s), finished and verified")
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to land (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments and their order")
    parser.add_argument("--ranks", type=int, choices=[1, 2], default=1, help="1: one process; 2: torchrun, 2 ranks")
    parser.add_argument("--trunk-cache", choices=["on", "off"], default="off",
                        help=f"on: {' '.join(TRUNK_CACHE)} (a build to kill)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/kill_loop"),
                        help="work folder: prepared clips (kept), the uninterrupted run, one run dir per round")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides, e.g. --set train.epochs=12")
    args = parser.parse_args(argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    print(describe_cpu())
    print("command:", " ".join(train_command(args.run_dir / "runN", args.ranks,
                                             [*args.extra, *(TRUNK_CACHE if args.trunk_cache == "on" else [])])))
    result = run_loop(prepare(args.run_dir.resolve()), args.run_dir.resolve(), args.kills, args.seed, args.ranks,
                      args.trunk_cache == "on", tuple(args.extra), say=lambda line: print(line, flush=True))
    print(result.headline())
    return 0 if result.survived == result.tried == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
