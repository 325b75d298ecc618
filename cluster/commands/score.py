"""`fightwatch score`: videos in, output.json, alerts and (optionally) annotated videos out.

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

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from cluster.commands.args import POLICY_FLAGS, add_accel_args, add_config_args, add_policy_args, overrides
from cluster.config import load_config, with_flags
from data.errors import InputError
from data.files import NAME_MAX, atomic_write
from trainer.accel import AccelConfig, AccelPlan, plan_for
from trainer.model import ModelConfig, ResNet3D
from trainer.releases import ReleaseOptions, load_any_model
from trainer.serve.alerting.policy import AlertPolicy, detect_alerts
from trainer.serve.runtime.annotate import annotate_video, fight_gif, plot_probabilities
from trainer.serve.runtime.class_names import FIGHT_CLASSES, class_names
from trainer.serve.runtime.scoring import (ScoreConfig, frame_boxes, frame_probabilities, prepare_model, score_video,
                                           windows)

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
        """A fightwatch checkpoint, or a 3D-ResNets-PyTorch file as it is (trainer.releases.load_any_model),
        with the names of its classes (trainer.serve.runtime.class_names) in score mode; none in feature mode, where
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
    `model` must be prepared for `plan` (trainer.serve.runtime.scoring.prepare_model).
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
            annotate_video(path, stem.with_name(f"{stem.name}_annotated.mp4"), probs, policy.threshold,
                           frame_boxes=frame_boxes(entry, entry["frames"]))
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
              mode: str = "score", gif: bool = False, names: tuple[str, ...] = FIGHT_CLASSES,
              runtime: str = "eager", model_path: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Score every video in this process; one that cannot be read gets an `error` entry and the rest go on.

    The model is prepared for `plan` here (None: plain fp32) and runs as `runtime` says (trainer/compiled.py; int8:
    the program quantized from the checkpoint at `model_path`).
    Writes `output` (JSON list, in the order of `videos`) atomically and returns (entries, alerts).
    """
    # features are read off the eager model; compiled, the model gives logits only
    model = (prepare_model(model, plan, model_cfg, runtime if mode == "score" else "eager", model_path)
             if plan is not None else model.eval())
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
                 threads: int, runtime: str):
        import torch

        from trainer.accel import plan_for

        logging.basicConfig(level=logging.INFO)
        torch.set_num_threads(threads)
        model, self.model_cfg, self.names = ScoringModel.load(Path(model_path), release,
                                                              Path(names_file) if names_file else None, mode)
        self.plan = plan_for(accel)
        self.model = prepare_model(model, self.plan, self.model_cfg, runtime if mode == "score" else "eager",
                                   Path(model_path))
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
                  names_file: Path | None = None, runtime: str = "eager") -> tuple[list[dict], list[dict]]:
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
                "accel": accel, "mode": mode, "gif": gif, "threads": pool.threads, "runtime": runtime,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score each listed video in consecutive 16-frame segments and write output.json in the layout of "
        "video-classification-3d-cnn-pytorch (--mode score: label and logits per segment, plus start/end seconds "
        "and, for fightwatch's models, the fight probability; --mode feature: the pooled features per segment), "
        "plus alerts. A video that cannot be read gets an entry with 'error' and the rest go on; the command then "
        "exits 2. With --ray the videos are spread over a Ray cluster, one model per NUMA node; output.json is the "
        "same, in the order of --input.")
    parser.add_argument("--input", required=True, type=Path, help="text file, one video name per line")
    parser.add_argument("--video_root", "--video-root", dest="video_root", required=True, type=Path,
                        help="directory the names in --input are relative to")
    parser.add_argument("--output", required=True, type=Path, help="output.json to write")
    parser.add_argument("--model", required=True, type=Path,
                        help="a checkpoint written by fightwatch, or a 3D-ResNets-PyTorch file as released (e.g. "
                             "resnet-34-kinetics.pth, r3d18_K_200ep.pth)")
    parser.add_argument("--mode", choices=["score", "feature"], default="score",
                        help="score: label and logits per segment, and for fightwatch's models the fight probability "
                             "and alerts; feature: the model's pooled features (512-d for ResNet-18/34) per segment "
                             "(default: score)")
    add_accel_args(parser)
    add_config_args(parser, what="experiment YAML whose score and alerts sections give the defaults")
    add_policy_args(parser)
    parser.add_argument("--stride", type=int, help="frames between segment starts (score.stride)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                        help="segments per forward pass (score.batch_size)")
    parser.add_argument("--annotated-dir", type=Path,
                        help="also write annotated mp4s (<name>_annotated.mp4) and probability plots here")
    parser.add_argument("--gif", action="store_true",
                        help="with --annotated-dir: also a GIF of each video's most violent 3 seconds "
                             "(<name>_fight.gif)")
    parser.add_argument("--alerts", type=Path, help="also write alerts as JSON lines to this file")
    parser.add_argument("--ray", action="store_true",
                        help="score with Ray Data, one actor (model) per NUMA node of each Ray node")
    release = parser.add_argument_group(
        "3D-ResNets-PyTorch files", "For a --model without fightwatch's model_config, as the original tools' flags. "
        "Depth, shortcut, width, classes and conv1's kernel are read from the weights (a flag that contradicts "
        "them is an error); the family (which code saved the file) from its layout where it tells, and it sets the "
        "input normalisation: hara2018 (CVPR2018 branch: 0-255 pixels minus the ActivityNet mean) or hara2020 "
        "(master: 0-1 pixels, Kinetics mean and std). What the weights cannot show (conv1's temporal stride, max "
        "pooling, the segment size) comes from these flags, else from the opts.json the original's training wrote "
        "beside the file (a flag that contradicts it is an error), else the original's defaults.")
    release.add_argument("--model_name", choices=["resnet"], default="resnet", help="only resnet")
    release.add_argument("--model_depth", type=int, help="check: the depth the file must hold")
    release.add_argument("--resnet_shortcut", choices=["A", "B"], help="check: the shortcut the file must use")
    release.add_argument("--family", choices=["hara2018", "hara2020"],
                         help="the code that trained it (default: from the file's layout, else from its shortcut)")
    release.add_argument("--conv1_t_stride", type=int,
                         help="conv1's temporal stride (default: the opts.json beside the file, else 1)")
    release.add_argument("--no_max_pool", action="store_true", default=None,
                         help="the model has no max pooling after conv1 (default: the opts.json beside the file, "
                              "else it has)")
    release.add_argument("--sample_size", type=int,
                         help="frame size of a segment (default: the opts.json beside the file, else 112)")
    release.add_argument("--sample_duration", type=int,
                         help="frames per segment (default: the opts.json beside the file, else 16)")
    release.add_argument("--class-names", "--class_names", dest="class_names", type=Path, metavar="FILE",
                         help="the model's class names, one per line in output order, for --mode score (default: "
                              "Kinetics-400's for a 400-class file; feature mode needs none)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="Ray cluster to join (implies --ray; default: RAY_ADDRESS, else an embedded local Ray)")


def _check_outputs(args: argparse.Namespace) -> list[str]:
    """The flags that need a fight model, given; InputError for outputs that cannot be written as asked."""
    fight_only = [flag for flag, value in (("--annotated-dir", args.annotated_dir), ("--gif", args.gif),
                                           ("--alerts", args.alerts)) if value]
    if args.mode == "feature" and fight_only:
        raise InputError(f"{', '.join(fight_only)}: need --mode score (feature mode has no fight probability)")
    if args.gif and args.annotated_dir is None:
        raise InputError("--gif writes into --annotated-dir; name that directory too")
    for flag, path in (("--output", args.output), ("--alerts", args.alerts)):
        if path is not None and path.is_dir():
            raise InputError(f"{path}: {flag} is a directory; name the file to write")
        if path is not None and path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: {flag}'s parent {path.parent} is not a directory")
    if args.annotated_dir is not None and args.annotated_dir.exists() and not args.annotated_dir.is_dir():
        raise InputError(f"{args.annotated_dir}: --annotated-dir is not a directory")
    return fight_only


def run(args: argparse.Namespace) -> None:
    config = load_config(args.config, overrides(args))
    score_cfg = with_flags(config.score, args, {"stride": "stride", "batch_size": "batch_size"})
    policy = with_flags(config.alerts, args, POLICY_FLAGS)
    fight_only = _check_outputs(args)
    videos = read_video_list(args.input, args.video_root)
    release = ReleaseOptions(args.model_depth, args.resnet_shortcut, args.family, args.conv1_t_stride,
                             args.no_max_pool, args.sample_size, args.sample_duration)
    model, model_cfg, names = ScoringModel.load(args.model, release, args.class_names, args.mode)
    if names != FIGHT_CLASSES and fight_only:
        raise InputError(f"{', '.join(fight_only)}: {args.model} is not a fight model ({len(names)} classes: "
                         f"{', '.join(names[:3])}, ...); only fightwatch's models raise alerts")
    accel = AccelConfig(args.precision, args.kernels)
    if args.ray or args.ray_address:
        del model  # each Ray actor loads its own
        entries, alerts = score_job_ray(args.model, videos, args.output, score_cfg, policy, args.annotated_dir,
                                        accel=accel, mode=args.mode, gif=args.gif, ray_address=args.ray_address,
                                        release=release, names_file=args.class_names, runtime=args.runtime)
    else:
        entries, alerts = score_job(model, model_cfg, videos, args.output, score_cfg, policy, args.annotated_dir,
                                    plan=plan_for(accel), mode=args.mode, gif=args.gif, names=names,
                                    runtime=args.runtime, model_path=args.model)
    for alert in alerts:
        print(json.dumps(alert))
    if args.alerts:
        write_alerts(args.alerts, alerts)
    failed = [e for e in entries if "error" in e]
    what = "feature-extracted" if args.mode == "feature" else "scored"
    print(f"{what} {len(entries) - len(failed)} of {len(entries)} video(s), {len(alerts)} alert(s) -> {args.output}",
          file=sys.stderr)
    if failed:
        raise InputError(f"{len(failed)} video(s) not scored (refused or unreadable), first: {failed[0]['error']}")
