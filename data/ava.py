"""AVA annotations -> a balanced fight / non-fight clip manifest.

Reads Google's AVA v2.x action CSVs, the label map (``.pbtxt``) and the excluded
timestamps list, picks one sample per (video_id, timestamp) for a positive class
(``fight/hit (a person)``, 64) and a few negative classes (``eat`` 29,
``lie/sleep`` 8, ``drive (e.g., a car, a truck)`` 28), splits them into
training / validation without letting a video straddle both, and writes a JSONL
clip manifest plus a 3D-ResNets-PyTorch annotation JSON. Every function but the
readers and writers is pure; randomness comes only from ``random.Random(seed)``
over inputs sorted first, so equal inputs give equal outputs whatever the row
order. (Longer than most modules: a third of it is the quirk table below, the
contract that the readers, the selection and the splits share.)

Annotation CSV (no header): video_id, middle_frame_timestamp, x1, y1, x2, y2,
action_id, person_id. Timestamps are whole seconds of the original movie; AVA
v2.x annotates its 902..1798 span (15 min from 900 s, 2 s margins).

Quirks of the CSV and their treatment (fatal ones raise ``InputError("path:line: ...")``
naming the value; counted ones appear in ``ParseStats.quirks`` under the key shown):

| quirk                                                  | treatment                                              |
|--------------------------------------------------------|--------------------------------------------------------|
| zero-padded timestamp (``0902``)                       | accept: read as int 902 (it is how AVA publishes them) |
| CRLF line ends, spaces around fields, a UTF-8 BOM      | accept: stripped                                       |
| blank line                                             | skip, counted ``blank_line``                           |
| person_id not a non-negative integer (``3_``, empty)   | keep the row with ``person_id=None``, counted          |
|                                                        | ``bad_person_id``: see below                           |
| exact duplicate row (all 8 fields equal to an earlier) | skip, counted ``duplicate_row`` (the earlier row says  |
|                                                        | the same, so nothing is lost)                          |
| 7 columns (AVA v2.1 before person ids were added)      | accept: ``person_id=None`` (not a quirk: that format)  |
| any other column count, or a row whose count differs   | fatal (a different file, e.g. a detections or          |
| from the file's first row                              | excluded-timestamps CSV, or a truncated line)          |
| video_id empty or not ``[A-Za-z0-9_-]`` (YouTube ids)  | fatal (it becomes part of clip ids and file names)     |
| timestamp not an integer (``09a2``, ``902.5``)         | fatal                                                  |
| timestamp outside 902..1798                            | fatal (frame numbers or a trimmed-video timeline:      |
|                                                        | every clip time would be wrong, not just this row)     |
| box coordinate not a number, NaN, or outside [0, 1]    | fatal (pixel coordinates: the file is not AVA's)       |
| x1 > x2 or y1 > y2                                     | fatal (columns in another order, e.g. x,y,w,h);        |
|                                                        | zero-size boxes (x1 == x2) are accepted                |
| action_id not a positive integer (``-1``, empty)       | fatal (a predicted-boxes file, not ground truth)       |

Why a bad person_id keeps its row: AVA's person ids only link one person's boxes
across neighbouring timestamps; the action label, the box and the timestamp are
complete without it. Dropping the row would lose a label, and losing a *fight*
label could let a fighting timestamp be drawn as a negative. Nothing here uses
person ids, so the row is kept and the count reported.

Why the fatal rules are fatal: each is a sign that the file as a whole is not
an AVA ground-truth CSV (or is damaged), and silently skipping would hide it;
the message names the file, the line and the value so the user can fix it.

Selection (``select_samples``):

* a sample is one (video_id, timestamp) for one class; several person rows of
  that class at that timestamp collapse into its ``boxes`` (distinct, sorted);
* excluded (video_id, timestamp) pairs are left out before anything else;
* a (video_id, timestamp) with the positive action on any row is never a
  negative; one (video_id, timestamp) is used at most once (a timestamp with
  both ``eat`` and ``drive`` rows can be drawn for either, not both);
* positives: ``min(per_class, available)`` drawn at random;
* negatives: as many in total as there are positives, split among the negative
  classes by their shares (equal shares by default; whole samples by the largest
  remainder, ties to the first classes in the order given); a class that runs
  short gives what it has and the others top up,
  one sample at a time round-robin, so the split stays as even as the data
  allow; no class ever gives more than ``per_class``. ``SelectionStats`` says
  what was available, asked and taken per class, and ``short`` which classes
  fell short; ``balanced`` is False only when all negatives together could not
  match the positives.

Split: ``split_by_video`` (seeded, by video, greedily keeping the fight and
non-fight shares of validation near ``val_fraction``) or ``split_official``
(AVA's own train / val CSVs: a sample's subset is that of the file its video
is in).

Outputs: the manifest (JSONL, sorted keys, one row per clip) and the
3D-ResNets-PyTorch annotation JSON ``{"labels", "database": {clip_id: {"subset",
"annotations": {"label", "segment"}}}}``. Its ``labels`` are ordered
``["nonfight", "fight"]`` because that loader numbers classes by their position
in the list: so its class index equals the manifest's ``label_id`` (fight = 1).
``segment`` is ``[start_s, end_s]`` in seconds of the source movie (the layout of
its Kinetics JSON before frames are extracted). Both files are written with
``data.store.atomic_write``.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from data.errors import InputError
from data.files import atomic_write

TIMESTAMP_MIN = 902
TIMESTAMP_MAX = 1798

FIGHT = 64
NEGATIVES = (29, 8, 28)  # eat, lie/sleep, drive (e.g., a car, a truck)
LABELS = ("nonfight", "fight")  # index == label_id
SUBSETS = ("training", "validation")

Box = tuple[float, float, float, float]

_DIGITS = re.compile(r"[0-9]{1,100}")  # bounded: int() refuses over 4300 digits, and no AVA time or id has 100
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class AvaRow:
    video_id: str
    timestamp: int
    box: Box
    action_id: int
    person_id: int | None
    line: int


@dataclass
class ParseStats:
    path: str
    rows: int = 0  # rows returned
    quirks: dict[str, int] = field(default_factory=dict)  # counted quirk -> lines (see the module table)


@dataclass(frozen=True)
class Sample:
    video_id: str
    timestamp: int
    action_id: int  # the AVA action it was drawn for
    label: str  # "fight" | "nonfight"
    boxes: tuple[Box, ...]
    subset: str | None = None  # "training" | "validation" once split

    @property
    def key(self) -> tuple[str, int]:
        return (self.video_id, self.timestamp)


@dataclass
class SelectionStats:
    positive: int
    negatives: list[int]
    available: dict[int, int]  # distinct usable (video, timestamp) per class
    asked: dict[int, int]  # per_class for the positive, each negative its share of the positives taken
    taken: dict[int, int]
    excluded: int = 0  # (video, timestamp) of the chosen classes left out as excluded
    fight_overlap: int = 0  # (video, timestamp) with a negative class never used: a fight is there

    @property
    def short(self) -> dict[int, int]:
        """Classes that gave fewer than asked -> how many fewer."""
        return {c: self.asked[c] - self.taken[c] for c in self.asked if self.taken[c] < self.asked[c]}

    @property
    def balanced(self) -> bool:
        return sum(self.taken[c] for c in self.negatives) == self.taken[self.positive]

    def mix(self, label_map: Mapping[int, str]) -> dict[str, dict[str, int]]:
        """Class name -> {"available", "asked", "taken"}, the positive first: what prepare records and prints."""
        return {label_map.get(c, str(c)): {"available": self.available[c], "asked": self.asked[c],
                                           "taken": self.taken[c]} for c in [self.positive, *self.negatives]}


# --------------------------------------------------------------------------- readers


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text: {e}") from None


def _timestamp(value: str, where: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise InputError(f"{where}: timestamp {value!r} is not a whole number of seconds")
    t = int(value)
    if not TIMESTAMP_MIN <= t <= TIMESTAMP_MAX:
        raise InputError(f"{where}: timestamp {value!r} is outside AVA's {TIMESTAMP_MIN}..{TIMESTAMP_MAX} seconds")
    return t


def _video_id(value: str, where: str) -> str:
    if not _VIDEO_ID.fullmatch(value):
        raise InputError(f"{where}: video_id {value!r} is not a YouTube id (letters, digits, '_' and '-')")
    return value


def read_annotations(path: str | Path) -> tuple[list[AvaRow], ParseStats]:
    """Parse an AVA action CSV by the rules of the module docstring."""
    path = Path(path)
    stats = ParseStats(str(path))
    rows: list[AvaRow] = []
    seen: set[tuple[str, ...]] = set()
    columns = first = None
    for number, text in enumerate(_lines(path), 1):
        where = f"{path}:{number}"
        if not text.strip():
            stats.quirks["blank_line"] = stats.quirks.get("blank_line", 0) + 1
            continue
        cells = [c.strip() for c in text.split(",")]
        if columns is None:
            if len(cells) not in (7, 8):
                raise InputError(f"{where}: {len(cells)} columns, expected 8 (video_id, timestamp, x1, y1, x2, y2, "
                                 f"action_id, person_id) or AVA v2.1's 7 without person_id")
            columns, first = len(cells), number
        elif len(cells) != columns:
            raise InputError(f"{where}: {len(cells)} columns, expected {columns} like line {first}")
        video = _video_id(cells[0], where)
        timestamp = _timestamp(cells[1], where)
        box = []
        for name, value in zip(("x1", "y1", "x2", "y2"), cells[2:6]):
            try:
                v = float(value)
            except ValueError:
                raise InputError(f"{where}: {name} {value!r} is not a number") from None
            if not 0.0 <= v <= 1.0:  # also false for NaN
                raise InputError(f"{where}: {name} {value!r} is outside [0, 1] (AVA boxes are normalized)")
            box.append(v)
        x1, y1, x2, y2 = box
        if x1 > x2 or y1 > y2:
            raise InputError(f"{where}: box ({cells[2]}, {cells[3]}, {cells[4]}, {cells[5]}) has x1 > x2 or y1 > y2 "
                             f"(expected x1, y1, x2, y2)")
        if not _DIGITS.fullmatch(cells[6]) or int(cells[6]) < 1:
            raise InputError(f"{where}: action_id {cells[6]!r} is not a positive integer")
        person = None
        if columns == 8:
            if _DIGITS.fullmatch(cells[7]):
                person = int(cells[7])
            else:
                stats.quirks["bad_person_id"] = stats.quirks.get("bad_person_id", 0) + 1
        identity = (video, str(timestamp), *cells[2:])
        if identity in seen:
            stats.quirks["duplicate_row"] = stats.quirks.get("duplicate_row", 0) + 1
            continue
        seen.add(identity)
        rows.append(AvaRow(video, timestamp, (x1, y1, x2, y2), int(cells[6]), person, number))
    stats.rows = len(rows)
    return rows, stats


_TOKEN = re.compile(
    r'(?P<comment>\#[^\n]*)'
    r'|(?P<open>[A-Za-z_]\w*)\s*:?\s*\{'
    r'|(?P<close>\})'
    r'|(?P<field>[A-Za-z_]\w*)\s*:\s*(?P<value>"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[^\s{}"\']+)'
    r'|(?P<space>\s+)'
)


def read_label_map(path: str | Path) -> dict[int, str]:
    """AVA label map (text protobuf) -> {id: name}.

    Takes ``label { name: "eat" label_id: 29 label_type: OBJECT_MANIPULATION }``
    (v2.x) and ``item { name: "eat" id: 29 }`` (older lists), blocks on one line
    or many, ``#`` comments; other fields are ignored.
    """
    path = Path(path)
    text = "\n".join(_lines(path))
    result: dict[int, str] = {}
    block: dict[str, tuple[str, int]] | None = None
    start = pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        line = text.count("\n", 0, pos) + 1
        if not m:
            raise InputError(f"{path}:{line}: cannot read {text[pos:pos + 30].splitlines()[0]!r}")
        pos = m.end()
        if m["open"]:
            if block is not None:
                raise InputError(f"{path}:{line}: nested block {m['open']!r} inside the block of line {start}")
            if m["open"] not in ("label", "item"):
                raise InputError(f"{path}:{line}: unknown block {m['open']!r} (expected 'label {{' or 'item {{')")
            block, start = {}, line
        elif m["close"]:
            if block is None:
                raise InputError(f"{path}:{line}: '}}' without a block")
            if "name" not in block:
                raise InputError(f"{path}:{start}: block has no name")
            id_field = "label_id" if "label_id" in block else "id"
            if id_field not in block:
                raise InputError(f"{path}:{start}: block {block['name'][0]!r} has no label_id (or id)")
            raw, id_line = block[id_field]
            if not re.fullmatch(r"-?[0-9]{1,100}", raw):
                raise InputError(f"{path}:{id_line}: {id_field} {raw!r} is not an integer")
            class_id = int(raw)
            if class_id in result:
                raise InputError(f"{path}:{id_line}: id {class_id} given twice ({result[class_id]!r} and "
                                 f"{block['name'][0]!r})")
            result[class_id] = block["name"][0]
            block = None
        elif m["field"]:
            if block is None:
                raise InputError(f"{path}:{line}: field {m['field']!r} outside a label block")
            value = m["value"]
            if value[0] in "\"'":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            block[m["field"]] = (value, line)
    if block is not None:
        raise InputError(f"{path}:{start}: block not closed")
    if not result:
        raise InputError(f"{path}: no label blocks (expected 'label {{ name: ... label_id: ... }}')")
    return result


def read_excluded(path: str | Path) -> set[tuple[str, int]]:
    """AVA excluded-timestamps CSV (``video_id,timestamp`` rows) -> {(video_id, timestamp)}.

    Blank lines are skipped; any other malformed row is fatal (file:line).
    """
    path = Path(path)
    result: set[tuple[str, int]] = set()
    for number, text in enumerate(_lines(path), 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        cells = [c.strip() for c in text.split(",")]
        if len(cells) != 2:
            raise InputError(f"{where}: {len(cells)} columns, expected 2 (video_id, timestamp)")
        result.add((_video_id(cells[0], where), _timestamp(cells[1], where)))
    return result


# --------------------------------------------------------------------------- classes


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def suggestions(text: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to n class names for a name not in the map: those with a word starting with it ('fight' ->
    'fight/hit (a person)'), then those containing it, then difflib's close spellings ('lie/slep')."""
    query, names = _norm(text), sorted(names)
    by_word = [name for name in names if query and any(w.startswith(query) for w in re.findall(r"\w+", _norm(name)))]
    containing = [name for name in names if query and query in _norm(name)]
    close = difflib.get_close_matches(text, names, n=n, cutoff=0.5)
    return list(dict.fromkeys(by_word + containing + close))[:n]


def resolve_classes(names_or_ids: Iterable[str | int], label_map: Mapping[int, str],
                    label_map_path: str | Path) -> list[int]:
    """Class names (exact, ignoring case and extra spaces) or ids -> ids, in the order given."""
    by_name = {_norm(name): class_id for class_id, name in label_map.items()}
    result = []
    for item in names_or_ids:
        text = str(item).strip()
        if re.fullmatch(r"[0-9]+", text):
            if int(text) not in label_map:
                raise InputError(f"class id {text} is not in the label map {label_map_path}")
            result.append(int(text))
            continue
        if _norm(text) in by_name:
            result.append(by_name[_norm(text)])
            continue
        close = suggestions(text, label_map.values())
        hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
        raise InputError(f"class {text!r} is not in the label map {label_map_path}{hint}")
    return result


# --------------------------------------------------------------------------- selection


def select_samples(rows: Iterable[AvaRow], positive: int = FIGHT, negatives: Sequence[int] = NEGATIVES,
                   per_class: int = 150, seed: int = 0, excluded: Iterable[tuple[str, int]] = frozenset(),
                   shares: Sequence[float] | None = None) -> tuple[list[Sample], SelectionStats]:
    """Draw the balanced fight / non-fight samples (rules in the module docstring), sorted by (video, timestamp).
    `shares`: each negative class's weight in the negatives (None: equal)."""
    negatives = list(negatives)
    shares = [1.0] * len(negatives) if shares is None else list(shares)
    if len(shares) != len(negatives) or not all(share > 0 for share in shares):
        raise InputError(f"negative shares {shares} must be one positive number per negative class {negatives}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise InputError(f"per_class {per_class!r} must be a positive integer")
    if not negatives:
        raise InputError("no negative classes given")
    if positive in negatives:
        raise InputError(f"class {positive} is both the positive and a negative class")
    if len(set(negatives)) != len(negatives):
        raise InputError(f"negative classes {negatives} name a class twice")
    excluded = set(excluded)
    wanted = {positive, *negatives}
    boxes: dict[int, dict[tuple[str, int], set[Box]]] = {c: {} for c in wanted}
    fight_keys: set[tuple[str, int]] = set()
    dropped: set[tuple[str, int]] = set()
    for row in rows:
        if row.action_id not in wanted:
            continue
        key = (row.video_id, row.timestamp)
        if row.action_id == positive:
            fight_keys.add(key)
        if key in excluded:
            dropped.add(key)
            continue
        boxes[row.action_id].setdefault(key, set()).add(row.box)

    rng = random.Random(seed)
    pos_pool = sorted(boxes[positive])
    chosen: dict[tuple[str, int], int] = {k: positive for k in rng.sample(pos_pool, min(per_class, len(pos_pool)))}
    n_pos = len(chosen)

    pools: dict[int, list[tuple[str, int]]] = {}
    overlap: set[tuple[str, int]] = set()
    for c in negatives:
        keys = sorted(boxes[c])
        overlap.update(k for k in keys if k in fight_keys)
        pools[c] = [k for k in keys if k not in fight_keys]
        rng.shuffle(pools[c])
    asked = {positive: per_class} | {c: min(per_class, n) for c, n in zip(negatives, apportion(n_pos, shares))}
    taken = {c: 0 for c in [positive, *negatives]}
    taken[positive] = n_pos
    cursor = {c: 0 for c in negatives}

    def take(c: int) -> bool:
        pool = pools[c]
        while cursor[c] < len(pool):
            key = pool[cursor[c]]
            cursor[c] += 1
            if key not in chosen:
                chosen[key] = c
                taken[c] += 1
                return True
        return False

    for c in negatives:
        while taken[c] < asked[c] and take(c):
            pass
    need = n_pos - sum(taken[c] for c in negatives)
    while need > 0:
        progress = False
        for c in negatives:
            if need > 0 and taken[c] < per_class and take(c):
                need -= 1
                progress = True
        if not progress:
            break

    samples = [
        Sample(video, t, c, "fight" if c == positive else "nonfight", tuple(sorted(boxes[c][(video, t)])))
        for (video, t), c in sorted(chosen.items())
    ]
    stats = SelectionStats(
        positive=positive, negatives=negatives,
        available={c: (len(pos_pool) if c == positive else len(pools[c])) for c in [positive, *negatives]},
        asked=asked, taken=taken, excluded=len(dropped), fight_overlap=len(overlap),
    )
    return samples, stats


def apportion(total: int, shares: Sequence[float]) -> list[int]:
    """`total` whole samples split by `shares`: each its floor, then one more each by the largest remainder (ties
    to the first). Pure."""
    quotas = [total * share / sum(shares) for share in shares]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


# --------------------------------------------------------------------------- split


def split_by_video(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0) -> list[Sample]:
    """Set each sample's subset, whole videos at a time.

    Videos are visited in a seeded order; each goes to validation when that
    brings validation's fight and non-fight counts closer to ``val_fraction`` of
    their totals, else to training. With two or more videos and a fraction
    above 0 neither side is left empty.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction {val_fraction!r} must be a number in [0, 1)")
    counts: dict[str, list[int]] = {}
    for s in samples:
        counts.setdefault(s.video_id, [0, 0])[s.label == "fight"] += 1
    videos = sorted(counts)
    random.Random(seed).shuffle(videos)
    totals = [sum(c[i] for c in counts.values()) for i in (0, 1)]
    target = [val_fraction * t for t in totals]
    val: list[str] = []
    have = [0, 0]
    if val_fraction > 0:
        for v in videos:
            after = [have[i] + counts[v][i] for i in (0, 1)]
            if sum((target[i] - after[i]) ** 2 for i in (0, 1)) < sum((target[i] - have[i]) ** 2 for i in (0, 1)):
                val.append(v)
                have = after
        if len(videos) >= 2 and not val:
            val.append(min(videos, key=lambda v: (sum(counts[v]), videos.index(v))))
        if len(videos) >= 2 and len(val) == len(videos):
            val.remove(max(val, key=lambda v: (sum(counts[v]), -videos.index(v))))
        if len(videos) == 1:
            val = []
    chosen = set(val)
    return [replace(s, subset="validation" if s.video_id in chosen else "training") for s in samples]


def split_official(samples: Sequence[Sample], subsets: Mapping[str, Iterable[AvaRow]]) -> list[Sample]:
    """Set each sample's subset from AVA's own split files: ``{"training": rows, "validation": rows}``.

    A sample's subset is the file its video appears in; a video in two files
    or in none is an InputError.
    """
    where: dict[str, str] = {}
    for subset, rows in subsets.items():
        if subset not in SUBSETS:
            raise ValueError(f"subset {subset!r}: expected one of {SUBSETS}")
        for row in rows:
            other = where.setdefault(row.video_id, subset)
            if other != subset:
                raise InputError(f"video {row.video_id!r} is in both the {other} and the {subset} annotations")
    result = []
    for s in samples:
        if s.video_id not in where:
            raise InputError(f"video {s.video_id!r} is in none of the split files")
        result.append(replace(s, subset=where[s.video_id]))
    return result


# --------------------------------------------------------------------------- outputs


def clip_id(video_id: str, timestamp: int) -> str:
    return f"{video_id}_{timestamp:04d}"


def manifest_rows(samples: Iterable[Sample], label_map: Mapping[int, str], clip_seconds: float = 4.0) -> list[dict]:
    """One manifest row per sample, sorted by clip_id; samples must be split first."""
    if isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float)) or not clip_seconds > 0:
        raise InputError(f"clip_seconds {clip_seconds!r} must be a positive number")
    half = clip_seconds / 2
    rows = []
    for s in samples:
        if s.subset not in SUBSETS:
            raise ValueError(f"sample {clip_id(s.video_id, s.timestamp)} has subset {s.subset!r}: split first")
        center = float(s.timestamp)
        rows.append({
            "clip_id": clip_id(s.video_id, s.timestamp),
            "video_id": s.video_id,
            "center_s": center,
            "start_s": max(0.0, center - half),
            "end_s": center + half,
            "label": s.label,
            "label_id": LABELS.index(s.label),
            "source_action": label_map.get(s.action_id, str(s.action_id)),
            "boxes": [list(b) for b in s.boxes],
            "subset": s.subset,
        })
    rows.sort(key=lambda r: r["clip_id"])
    ids = [r["clip_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("two samples share a (video_id, timestamp)")
    return rows


def resnets_annotation(rows: Iterable[dict]) -> dict:
    """The 3D-ResNets-PyTorch annotation dict for manifest rows."""
    database = {}
    for r in rows:
        if r["clip_id"] in database:
            raise ValueError(f"clip {r['clip_id']} given twice")
        database[r["clip_id"]] = {"subset": r["subset"],
                                  "annotations": {"label": r["label"], "segment": [r["start_s"], r["end_s"]]}}
    return {"labels": list(LABELS), "database": database}


def write_resnets_annotation(path: str | Path, rows: Iterable[dict]) -> None:
    text = json.dumps(resnets_annotation(rows), sort_keys=True, indent=1) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))
