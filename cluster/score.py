"""The scoring job: videos in, output.json, alerts and (optionally) annotated videos out.

`score_job` scores the videos one after another in this process; `score_job_ray` spreads them over
a Ray cluster with Ray Data. Both run `score_one` per video, so they write the same output.json (in
the order of the video list) and the same alerts, annotated videos, plots and GIFs.

With Ray, the videos are a `ray.data.from_items` dataset (one video per block) mapped by
`map_batches` onto a pool of actors (`_RayScorer`), each holding one model: one actor per NUMA node
of every node in the cluster, each reserving that NUMA node's CPUs (`num_cpus`) and running that
many torch threads, so a node's NUMA nodes score different videos side by side instead of one model
stretching its threads across the sockets. The NUMA layout is read on the driver's node
(cluster/topology.py) and assumed for every node, as on a homogeneous cluster. Ray does not pin an
actor to its NUMA node's cores; the OS scheduler places its threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from data.errors import InputError
from data.store import NAME_MAX, atomic_write
from trainer.accel import AccelConfig, AccelPlan
from trainer.checkpoint import ReleaseOptions, load_any_model
from trainer.serve.alerts import AlertPolicy, detect_alerts
from trainer.serve.annotate import annotate_video, fight_gif, plot_probabilities
from trainer.serve.class_names import FIGHT_CLASSES, class_names
from trainer.serve.scoring import ScoreConfig, frame_probabilities, prepare_model, score_video, windows
from trainer.model import ModelConfig, ResNet3D

log = logging.getLogger(__name__)


class Video(NamedTuple):
    """A video to score: `name` is how output.json, alerts and annotated files call it (the --input entry as
    written, e.g. `sub/x.mp4`, as video-classification-3d-cnn-pytorch keeps it); `path` is where it is.
    `refused`: why a listed entry is not scored (read_video_list), None for one to score."""

    name: str
    path: Path
    refused: str | None = None

    @classmethod
    def of(cls, path: str | Path) -> "Video":
        return cls(Path(path).name, Path(path))


def _shown(name: str) -> str:
    """An entry as a log line can carry it: quoted (control characters escaped), long ones cut."""
    return repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name.encode())} bytes)"


def _refusal(name: str, video_root: Path) -> str | None:
    """Why an untrusted --input entry is not scored, or None. Lexical, so a symlink the root's owner put under
    the root is followed; an entry cannot climb out with `..` or start at /."""
    if "\0" in name:
        return "has a NUL byte"
    if "\ufffd" in name:
        return "is not UTF-8"
    if Path(name).is_absolute():
        return "is an absolute path; entries name videos under --video_root"
    if os.path.normpath(name).split(os.sep)[0] == "..":
        return "climbs out of --video_root (..)"
    if any(len(part.encode()) > NAME_MAX for part in Path(name).parts):
        return f"has a name longer than {NAME_MAX} bytes"
    try:
        if not (video_root / name).is_file():
            return f"is not a file under {video_root}"
    except OSError as e:  # e.g. the whole path past PATH_MAX
        return f"cannot be looked up: {e.strerror or e}"
    return None


def read_video_list(list_file: Path, video_root: Path) -> list[Video]:
    """The videos named one per line in `list_file` (UTF-8; blank lines skipped), relative to `video_root`.

    The list is untrusted: an entry that is absolute, climbs out of the root, holds a NUL byte or bytes that are
    not UTF-8, has a name longer than NAME_MAX or names no file is kept, in its place, with `refused` set to one
    line naming the list file and line; scoring gives it an error entry and goes on with the rest. The list is
    read a line at a time and no video is opened here.
    """
    if not list_file.is_file():
        raise InputError(f"{list_file}: video list not found")
    if not video_root.is_dir():
        raise InputError(f"{video_root}: video root is not a directory")
    videos = []
    with open(list_file, encoding="utf-8", errors="replace", newline="") as lines:
        for number, line in enumerate(lines, 1):
            name = line.strip()  # the line break, CRLF's too, and padding
            if not name:
                continue
            why = _refusal(name, video_root)
            refused = None if why is None else f"{list_file}:{number}: {_shown(name)} {why}"
            videos.append(Video(name, video_root / name, refused))
    return videos


class ScoringModel(NamedTuple):
    model: ResNet3D
    config: ModelConfig
    class_names: tuple[str, ...]  # FIGHT_CLASSES for fightwatch's models: only those raise alerts; () for features

    @classmethod
    def load(cls, path: Path, release: ReleaseOptions, names_file: Path | None,
             mode: str = "score") -> "ScoringModel":
        """A fightwatch checkpoint, or a 3D-ResNets-PyTorch file as it is (trainer.checkpoint.load_any_model),
        with the names of its classes (trainer.serve.class_names) in score mode; none in feature mode, where
        nothing is labelled (so a release of classes fightwatch cannot name, e.g. Kinetics-700's, needs no file)."""
        loaded = load_any_model(path, release)
        names = class_names(path, loaded.config.n_classes, loaded.release, names_file) if mode == "score" else ()
        return cls(loaded.model, loaded.config, names)


def _refused_entry(video: Video) -> dict:
    log.error("%s", video.refused)
    return {"video": video.name, "error": video.refused, "clips": []}


def score_one(model: ResNet3D, model_cfg: ModelConfig, video: Video, score_cfg: ScoreConfig, policy: AlertPolicy, *,
              plan: AccelPlan | None = None, mode: str = "score", annotated_dir: Path | None = None,
              gif: bool = False, names: tuple[str, ...] = FIGHT_CLASSES) -> tuple[dict, list[dict]]:
    """(output.json entry, alert dicts) of one video; an unreadable video gets an `error` entry.

    In score mode, with `annotated_dir`: `<name>_annotated.mp4`, `<name>_probs.png` and, with `gif`,
    `<name>_fight.gif` there, `<name>` being the video's name without its suffix (its folders too, so `a/x.mp4`
    and `b/x.mp4` keep apart). Feature mode, and a model whose classes `names` are not fightwatch's, have no
    fight probabilities, hence no alerts and nothing to draw.
    `model` must be prepared for `plan` (trainer.serve.scoring.prepare_model).
    """
    path = video.path
    if video.refused:
        return _refused_entry(video), []
    try:
        entry = {**score_video(model, model_cfg, path, score_cfg, plan=plan, mode=mode, class_names=names),
                 "video": video.name}
    except InputError as e:
        log.error("%s", e)
        return {"video": video.name, "error": str(e), "clips": []}, []
    if mode != "score" or names != FIGHT_CLASSES:
        return entry, []
    found = detect_alerts(policy, windows(entry), camera=video.name)
    alerts = [{"event": "alert", **dataclasses.asdict(a)} for a in found]
    if annotated_dir is not None:
        probs = frame_probabilities(entry, entry["frames"])
        # normalised: read_video_list refused entries that climb out, so this stays under annotated_dir
        stem = annotated_dir / Path(os.path.normpath(video.name)).with_suffix("")
        try:
            annotate_video(path, stem.with_name(f"{stem.name}_annotated.mp4"), probs, policy.threshold)
            plot_probabilities([c["start_s"] for c in entry["clips"]],
                               [c["fight_prob"] for c in entry["clips"]], policy.threshold,
                               [(a.start_s, a.end_s) for a in found], stem.with_name(f"{stem.name}_probs.png"),
                               title=video.name)
            if gif:
                fight_gif(path, stem.with_name(f"{stem.name}_fight.gif"), probs, policy.threshold)
        except OSError as e:  # a full disk, a name too long: the scores and alerts stand, the files are missing
            log.error("%s: annotated files not written: %s", video.name, e)
            entry["annotated_error"] = str(e)
    return entry, alerts


def write_output(output: Path, entries: list[dict]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: f.write(json.dumps(entries, indent=1).encode()))


def score_job(model: ResNet3D, model_cfg: ModelConfig, videos: list[Video], output: Path, score_cfg: ScoreConfig,
              policy: AlertPolicy, annotated_dir: Path | None = None, *, plan: AccelPlan | None = None,
              mode: str = "score", gif: bool = False,
              names: tuple[str, ...] = FIGHT_CLASSES) -> tuple[list[dict], list[dict]]:
    """Score every video in this process; one that cannot be read gets an `error` entry and the rest go on.

    The model is prepared for `plan` here (None: plain fp32). Writes `output` (JSON list, in the order
    of `videos`) atomically and returns (entries, alerts).
    """
    model = prepare_model(model, plan) if plan is not None else model.eval()
    entries, alerts = [], []
    for video in tqdm(videos, desc="scoring", unit="video", disable=len(videos) < 2):
        entry, found = score_one(model, model_cfg, video, score_cfg, policy, plan=plan, mode=mode,
                                 annotated_dir=annotated_dir, gif=gif, names=names)
        entries.append(entry)
        alerts += found
    write_output(output, entries)
    return entries, alerts


# ---------------------------------------------------------------------------------------------------------------
# Ray


@dataclasses.dataclass(frozen=True)
class ActorPool:
    actors: int  # concurrency of map_batches
    cpus: int  # num_cpus each actor reserves
    threads: int  # torch threads in each actor


def actor_pool(domain_cpus: list[int], domain_cores: list[int], node_cpus: list[float], n_videos: int) -> ActorPool:
    """One actor per NUMA domain of every Ray node, each reserving its domain's CPUs. Pure.

    domain_cpus / domain_cores: logical CPUs / physical cores of each NUMA domain of one node;
    node_cpus: the CPU resource of each Ray node that has any. An actor never asks for more CPUs than
    the smallest node offers (it could never start), there are never more actors than videos, and
    each runs one torch thread per physical core of its domain (SMT siblings only slow convolutions).
    """
    if not domain_cpus or not node_cpus:
        raise InputError("ray: no CPUs to score on (no NUMA domain, or no Ray node with CPUs)")
    cpus = max(1, min(min(domain_cpus), int(min(node_cpus))))
    threads = max(1, min(min(domain_cores), cpus))
    per_node = sum(max(1, int(n) // cpus) for n in node_cpus)
    actors = max(1, min(n_videos, len(domain_cpus) * len(node_cpus), per_node))
    return ActorPool(actors, cpus, threads)


class _RayScorer:
    """A Ray Data actor holding one prepared model; maps batches of {"index", "name", "path"} to JSON results."""

    def __init__(self, model_path: str, release: ReleaseOptions, names_file: str | None, score_cfg: ScoreConfig,
                 policy: AlertPolicy, accel: AccelConfig, mode: str, annotated_dir: str | None, gif: bool,
                 threads: int):
        import torch

        from trainer.accel import plan_for

        logging.basicConfig(level=logging.INFO)
        torch.set_num_threads(threads)
        model, self.model_cfg, self.names = ScoringModel.load(Path(model_path), release,
                                                              Path(names_file) if names_file else None, mode)
        self.plan = plan_for(accel)
        self.model = prepare_model(model, self.plan)
        self.score_cfg, self.policy, self.mode, self.gif = score_cfg, policy, mode, gif
        self.annotated_dir = Path(annotated_dir) if annotated_dir else None
        self.path_taken = (f"{self.plan.precision}{' channels_last_3d' if self.plan.channels_last else ''} "
                           f"{self.plan.kernels}, {torch.get_num_threads()} threads")

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = []
        for name, path in zip(batch["name"], batch["path"]):
            entry, alerts = score_one(self.model, self.model_cfg, Video(str(name), Path(str(path))), self.score_cfg,
                                      self.policy, plan=self.plan, mode=self.mode,
                                      annotated_dir=self.annotated_dir, gif=self.gif, names=self.names)
            results.append(json.dumps({"entry": entry, "alerts": alerts, "path_taken": self.path_taken}))
        return {"index": np.asarray(batch["index"]), "result": np.array(results, dtype=object)}


def score_job_ray(model_path: Path, videos: list[Video], output: Path, score_cfg: ScoreConfig, policy: AlertPolicy,
                  annotated_dir: Path | None = None, *, accel: AccelConfig = AccelConfig("auto", "auto"),
                  mode: str = "score",
                  gif: bool = False, ray_address: str | None = None, release: ReleaseOptions = ReleaseOptions(),
                  names_file: Path | None = None) -> tuple[list[dict], list[dict]]:
    """`score_job` on Ray Data (see the module doc): the same output.json, alerts and files, in input order.

    Joins `ray_address` (else RAY_ADDRESS, else starts an embedded local Ray, shut down at the end).
    Paths are made absolute: the actors may run elsewhere, and must see the same files (a shared
    file system on a cluster).
    """
    import ray

    from cluster.topology import load_topology
    from data.pipeline import init_ray

    results = {i: {"entry": _refused_entry(v), "alerts": []} for i, v in enumerate(videos) if v.refused}
    items = [{"index": i, "name": v.name, "path": str(v.path.resolve())} for i, v in enumerate(videos) if not v.refused]
    if not items:
        return _ray_output(output, videos, results)
    started = not ray.is_initialized()
    init_ray(ray_address)
    try:
        topo = load_topology()
        domains = list(topo.domains("numa").values())
        node_cpus = [n["Resources"]["CPU"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
        pool = actor_pool([len(d) for d in domains], [len(topo.physical(d)) for d in domains], node_cpus, len(items))
        log.info("ray: %d video(s) on %d actor(s) (%d NUMA domain(s) per node x %d node(s)), %d CPUs and %d torch "
                 "threads each", len(items), pool.actors, len(domains), len(node_cpus), pool.cpus, pool.threads)
        ray.data.DataContext.get_current().enable_progress_bars = False
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayScorer, batch_size=1, num_cpus=pool.cpus,
            # A fixed pool; one video in flight per actor, so a long video never holds others back in its queue.
            compute=ray.data.ActorPoolStrategy(size=pool.actors, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={
                "model_path": str(Path(model_path).resolve()), "release": release,
                "names_file": str(Path(names_file).resolve()) if names_file else None,
                "score_cfg": score_cfg, "policy": policy,
                "accel": accel, "mode": mode, "gif": gif, "threads": pool.threads,
                "annotated_dir": str(Path(annotated_dir).resolve()) if annotated_dir is not None else None})
        for row in dataset.iter_rows():
            result = json.loads(row["result"])
            results[int(row["index"])] = result
            log.info("ray: scored %s (%d/%d) in %s", result["entry"]["video"], len(results), len(videos),
                     result["path_taken"])
    finally:
        if started:
            ray.shutdown()
    return _ray_output(output, videos, results)


def _ray_output(output: Path, videos: list[Video], results: dict[int, dict]) -> tuple[list[dict], list[dict]]:
    entries = [results[i]["entry"] for i in range(len(videos))]
    alerts = [a for i in range(len(videos)) for a in results[i]["alerts"]]
    write_output(output, entries)
    return entries, alerts


def write_alerts(path: Path, alerts: list[dict]) -> None:
    text = "".join(json.dumps(a) + "\n" for a in alerts)
    atomic_write(path, lambda f: f.write(text.encode()))
