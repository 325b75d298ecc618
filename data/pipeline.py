"""Clip extraction sharded over a Ray cluster with Ray Data.

Each manifest row is decoded by one Ray task (num_cpus=1), which writes its
clip straight into the store, so frames never travel through the driver. Rows
whose clip is already in the store are skipped, so a re-run resumes. Without
RAY_ADDRESS or an explicit address an embedded local Ray is started.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from data.clips import read_frames
from data.errors import InputError
from data.store import ClipStore

log = logging.getLogger(__name__)


def init_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def _extract(row: dict, store_root: str, short_side: int) -> dict:
    store = ClipStore(store_root)
    try:
        store.put(row["clip_id"], read_frames(row["path"], short_side))
        return {**row, "error": ""}
    except InputError as e:
        return {**row, "error": str(e)}


def extract_clips(rows: list[dict], store: ClipStore, short_side: int, ray_address: str | None = None) -> list[dict]:
    """Extract every row's clip into `store`; return the rows that are in the store afterwards."""
    todo = [row for row in rows if not store.has(row["clip_id"])]
    if todo:
        init_ray(ray_address)
        results = (
            ray.data.from_items(todo)
            .map(_extract, fn_kwargs={"store_root": str(store.root.resolve()), "short_side": short_side}, num_cpus=1)
            .take_all()
        )
        for failed in (r for r in results if r["error"]):
            log.warning("clip %s failed: %s", failed["clip_id"], failed["error"])
    return [row for row in rows if store.has(row["clip_id"])]
