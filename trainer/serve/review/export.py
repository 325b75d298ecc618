"""Reviewed alerts as training videos: a folder per class that `fightwatch prepare` reads (data.source: folders).

An alert reviewed false_positive gives its clip to DIR/nonfights/, true_positive to DIR/fights/, as
<alert id>.mp4 (percent-encoded where the id has characters a file name should not); DIR/reviewed.jsonl says which
file came from which alert (camera, verdict, who, when, peak probability, the clip it was copied from). A false
positive's clip also gives the motion regions watch scored in it, each a clip of its own beside it
(`<alert id>.view<k>.mp4`, view_clips.py): what the retrained model must learn is calm at the scale it saw it.

Re-running brings DIR up to date with the store and copies only what is new: an alert whose verdict changed
between the two classes has its file moved; one reviewed otherwise since (acknowledged, or its review undone)
has its file removed; one no longer in the store (retention expired it) keeps its file. `plan_export` decides,
a pure function; `export_reviewed` does it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from data.errors import InputError
from data.files import atomic_path
from trainer.serve.alerting.store import AlertRecord, AlertStore
from trainer.serve.review.view_clips import write_view_clips
from trainer.serve.runtime.regions import RegionConfig

log = logging.getLogger(__name__)

EXPORT_FOLDERS = {"false_positive": "nonfights", "true_positive": "fights"}  # names data/folders.py reads
MANIFEST = "reviewed.jsonl"


@dataclass(frozen=True)
class ExportEntry:
    """One exported clip: a line of the manifest."""

    alert_id: str
    file: str  # relative to the export folder, e.g. fights/gate-20240520T120000Z-1.mp4
    verdict: str
    camera: str
    start_time: str
    peak_prob: float
    reviewed_by: str | None
    reviewed_at: str | None
    clip: str  # where it was copied from
    views: tuple[str, ...] = ()  # a false positive's view clips, relative to the export folder (view_clips.py)


@dataclass
class ExportPlan:
    copy: list[ExportEntry] = field(default_factory=list)  # new
    move: list[tuple[ExportEntry, ExportEntry]] = field(default_factory=list)  # (as exported, as it is to be)
    remove: list[ExportEntry] = field(default_factory=list)  # no longer reviewed as either class
    keep: list[ExportEntry] = field(default_factory=list)  # already there, or their alert left the store
    no_clip: list[str] = field(default_factory=list)  # alert ids reviewed as a class without a clip to copy

    def manifest(self) -> list[ExportEntry]:
        """The manifest after the plan is carried out, by file."""
        return sorted([*self.keep, *self.copy, *(new for _, new in self.move)], key=lambda e: e.file)


def export_file_name(alert_id: str) -> str:
    """The alert id as one safe file name: no folders, no leading dot."""
    name = quote(alert_id, safe="-_.")
    return ("%2E" + name[1:] if name.startswith(".") else name) + ".mp4"


def plan_export(alerts: Iterable[AlertRecord], exported: Iterable[ExportEntry],
                clip_on_disk: Callable[[str], bool]) -> ExportPlan:
    """What to copy, move, remove and keep so that the export matches `alerts` (every alert of the store, in any
    review state), given what was exported before (the manifest)."""
    before = {e.alert_id: e for e in exported}
    plan = ExportPlan()
    for alert in alerts:
        old = before.pop(alert.id, None)
        folder = EXPORT_FOLDERS.get(alert.review)
        if folder is None:
            if old is not None:
                plan.remove.append(old)
            continue
        new = ExportEntry(alert.id, f"{folder}/{export_file_name(alert.id)}", alert.review, alert.camera,
                          alert.start_time, alert.peak_prob, alert.reviewed_by, alert.reviewed_at,
                          old.clip if old is not None else (alert.clip or ""), old.views if old is not None else ())
        if old is None:
            if alert.clip is not None and not alert.clip_gone and clip_on_disk(alert.clip):
                plan.copy.append(new)
            else:
                plan.no_clip.append(alert.id)
        elif old.file != new.file:
            plan.move.append((old, new))  # the exported copy moves: the alert's own clip may be gone by now
        else:
            plan.keep.append(new)  # who and when of the latest review
    plan.keep += before.values()  # alerts retention deleted: what was learnt from them stays
    return plan


@dataclass(frozen=True)
class ExportReport:
    copied: int
    moved: int
    removed: int
    kept: int
    no_clip: int
    views: int = 0  # view clips written (of false positives' clips)

    def line(self) -> str:
        return (f"{self.copied} clip(s) copied, {self.moved} moved, {self.removed} removed, {self.kept} already there"
                + (f", {self.views} view clip(s) of false alarms written" if self.views else "")
                + (f"; {self.no_clip} reviewed alert(s) without a clip" if self.no_clip else ""))


def read_manifest(folder: Path) -> list[ExportEntry]:
    path = folder / MANIFEST
    if not path.exists():
        return []
    try:
        return [ExportEntry(**{**entry, "views": tuple(entry.get("views", ()))})
                for entry in (json.loads(line) for line in path.read_text().splitlines() if line.strip())]
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: not an export manifest ({e}); move it away to export afresh") from None


def export_reviewed(store: AlertStore, folder: str | os.PathLike, regions: RegionConfig = RegionConfig()
                    ) -> ExportReport:
    """Bring `folder` up to date with the store's reviews (see the module doc); `regions` finds a false
    positive's view clips as watch found them (budget 0: none)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: the export folder is a file")
    alerts = store.alerts(limit=max(store.count_alerts(), 1))
    plan = plan_export(alerts, read_manifest(folder), os.path.isfile)
    unmoved = []
    for entry in plan.copy:
        with atomic_path(folder / entry.file) as tmp:  # a crash leaves no half clip for prepare to read
            shutil.copyfile(entry.clip, tmp)
    for old, new in plan.move:
        if (folder / old.file).is_file():
            (folder / new.file).parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / old.file, folder / new.file)
        else:
            unmoved.append(new)
            log.warning("%s: exported before, now missing; not moved to %s", folder / old.file, new.file)
    for entry in plan.remove:
        for file in (entry.file, *entry.views):
            (folder / file).unlink(missing_ok=True)
    manifest, views = [], 0
    for entry in (e for e in plan.manifest() if e not in unmoved):
        entry, written = _follow_views(entry, folder, regions)
        manifest.append(entry)
        views += written
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text("".join(json.dumps(dataclasses.asdict(e)) + "\n" for e in manifest))
    return ExportReport(len(plan.copy), len(plan.move) - len(unmoved), len(plan.remove), len(plan.keep),
                        len(plan.no_clip), views)


def _follow_views(entry: ExportEntry, folder: Path, regions: RegionConfig) -> tuple[ExportEntry, int]:
    """The entry with the view clips its verdict calls for (a false positive's, once; none of a true positive's,
    e.g. one moved out of nonfights/), and how many were written."""
    if entry.verdict != "false_positive":
        for file in entry.views:
            (folder / file).unlink(missing_ok=True)
        return dataclasses.replace(entry, views=()), 0
    clip = folder / entry.file
    if entry.views or regions.budget == 0 or not clip.is_file():
        return entry, 0
    written = write_view_clips(clip, clip.with_suffix(""), regions)
    return dataclasses.replace(entry, views=tuple(p.relative_to(folder).as_posix() for p in written)), len(written)
