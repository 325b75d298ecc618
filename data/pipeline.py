"""Clip extraction sharded over a Ray cluster with Ray Data.

The manifest is grouped by source video, so each video is opened by one task
(num_cpus=1) that seeks to each of its clips and writes them as one shard
straight into the store: frames never travel through the driver. Videos whose
shard is complete are skipped, so a re-run resumes. Without RAY_ADDRESS or an
explicit address an embedded local Ray is started, and shut down when the clips are in.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import ray
from tqdm import tqdm

from data.clips import ClipConfig
from data.decode import DecodeLog
from data.errors import InputError
from data.extract import ClipError, WindowBuffer, extract_window
from data.files import NoSpaceError, remove_stale_temps
from data.store import ClipStore
from data.views import VIEWS

log = logging.getLogger(__name__)


def init_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


@dataclass
class ExtractionSummary:
    ok: int = 0
    skipped: int = 0  # already in the store
    failed: Counter = field(default_factory=Counter)  # reason -> clips
    failures: list[dict] = field(default_factory=list)  # {"clip_id", "reason", "error"}
    warnings: list[dict] = field(default_factory=list)  # {"clip_id", "warnings"}: extracted through damage
    nodes: Counter = field(default_factory=Counter)  # Ray node id -> clips extracted there

    def line(self) -> str:
        failed = ", ".join(f"{n} {reason}" for reason, n in sorted(self.failed.items())) or "none"
        damaged = f" ({len(self.warnings)} read through damage)" if self.warnings else ""
        return f"clips ok: {self.ok} new{damaged} + {self.skipped} already stored; failed: {failed}"


def group_by_video(rows: list[dict], view: str = "frame") -> list[dict]:
    """One work item per source video: {"video_id", "path", "clips": [{"clip_id", "start_s", "end_s"}]}; with
    view "actor" each clip also has its row's "actors" (its boxes: data/views.py). InputError for an actor view
    of a row without boxes, naming the clip."""
    if view not in VIEWS:
        raise InputError(f"data.view must be one of {', '.join(VIEWS)}, got {view!r}")
    groups: dict[str, dict] = {}
    for row in rows:
        group = groups.setdefault(row["video_id"], {"video_id": row["video_id"], "path": row["path"], "clips": []})
        clip = {"clip_id": row["clip_id"], "start_s": row["start_s"], "end_s": row["end_s"]}
        if view == "actor":
            if not row.get("boxes"):
                raise InputError(f"clip {row['clip_id']} ({row['path']}) has no boxes for data.view actor: only "
                                 "AVA's annotations carry them; use data.view frame")
            clip["actors"] = row["boxes"]
        group["clips"].append(clip)
    return list(groups.values())


def extract_shard(item: dict, store: ClipStore, clips: ClipConfig) -> tuple[list[str], list[dict], list[dict]]:
    """Extract one video's clips (a group_by_video item) into its shard: (clip ids stored, failures, warnings of
    the clips read through damage). Each clip goes into the shard as it is cut, so one clip's frames are held at a
    time, in the same memory (WindowBuffer). NoSpaceError when the disk fills."""
    failures, warnings, buffer = [], [], WindowBuffer()

    def cut():
        for clip in item["clips"]:
            reads: list[DecodeLog] = []
            try:
                frames = extract_window(item["path"], clip["start_s"], clip["end_s"], clips.fps, clips.short_side,
                                        buffer, clip.get("actors"), clips.decode, reads)
            except ClipError as e:
                failures.append({"clip_id": clip["clip_id"], "reason": e.reason, "error": str(e)})
                continue
            if reads[-1].warnings():
                warnings.append({"clip_id": clip["clip_id"], "warnings": reads[-1].warnings()})
            yield clip["clip_id"], frames

    return store.write_shard(item["video_id"], cut()), failures, warnings


def _extract_video(item: dict, store_root: str, clips: ClipConfig) -> dict:
    no_space = None
    try:
        ok, failures, warnings = extract_shard(item, ClipStore(store_root), clips)
    except NoSpaceError as e:  # raised here it would reach the driver as Ray's many-line wrapper
        ok, failures, warnings, no_space = [], [], [], str(e)
    return {"video_id": item["video_id"], "ok": ok, "failures": failures, "warnings": warnings,
            "node": ray.get_runtime_context().get_node_id(), "no_space": no_space}


def _run_extraction(todo: list[dict], store: ClipStore, clips: ClipConfig, summary: ExtractionSummary) -> None:
    kwargs = {"store_root": str(store.root.resolve()), "clips": clips}
    # One video per block, so Ray Data can spread videos over every node's CPUs; our own progress bar instead
    # of Ray Data's (which, off a terminal, logs a status block every 10 s).
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    results = dataset.map(_extract_video, fn_kwargs=kwargs, num_cpus=1).iter_rows()
    for result in tqdm(results, total=len(todo), desc="extracting clips", unit="video"):
        if result["no_space"]:  # the shards written so far stay: a re-run with room skips them
            raise InputError(result["no_space"])
        summary.ok += len(result["ok"])
        summary.nodes[result["node"]] += len(result["ok"])
        for failure in result["failures"]:
            summary.failed[failure["reason"]] += 1
            summary.failures.append(failure)
            log.warning("clip %s failed (%s): %s", failure["clip_id"], failure["reason"], failure["error"])
        for damaged in result["warnings"]:
            summary.warnings.append(damaged)
            log.warning("clip %s read through damage: %s", damaged["clip_id"], "; ".join(damaged["warnings"]))
    # which nodes did the work: on a cluster, a node that extracted nothing is worth knowing about
    addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
    log.info("clips extracted per Ray node: %s", ", ".join(
        f"{addresses.get(node, '?')} ({node[:8]}) {clips}" for node, clips in sorted(summary.nodes.items())))


def extract_clips(rows: list[dict], store: ClipStore, clips: ClipConfig, ray_address: str | None = None,
                  view: str = "frame") -> ExtractionSummary:
    """Extract every manifest row's clip ({"clip_id", "video_id", "path", "start_s", "end_s", "boxes"}) into
    `store`, as the whole frame or, with `view` "actor", around its boxes (data/views.py), cut as `clips` says."""
    summary = ExtractionSummary()
    todo = []
    items = group_by_video(rows, view)
    store.check_cut({"fps": clips.fps, "short_side": clips.short_side, "view": view})
    for item in items:
        if store.shard_done(item["video_id"]):
            summary.skipped += len(item["clips"])
        else:
            todo.append(item)
    if todo:
        started = not ray.is_initialized()
        init_ray(ray_address)
        try:
            _run_extraction(todo, store, clips, summary)
        finally:
            if started:  # an embedded Ray would sit beside the training ranks on the same cores
                ray.shutdown()
                # a full disk stops the run: shutdown killed the other videos' writers mid-shard, leaving their temps
                remove_stale_temps(store.root)
        store.refresh()  # pick up the shards the workers wrote
    return summary

