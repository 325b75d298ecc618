"""AVA annotations -> balanced fight / non-fight manifest: parsing quirks, label maps, selection, split, outputs."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from data import ava
from data.ava import (AvaRow, apportion, manifest_rows, read_annotations, read_excluded, read_label_map, resolve_classes,
                      select_samples, split_by_video, split_official, suggestions, write_resnets_annotation)
from data.store import write_manifest
from data.errors import InputError

SHARED = Path(__file__).parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "ava"

FIGHT, EAT, LIE, DRIVE = 64, 29, 8, 28
LABEL_MAP = {FIGHT: "fight/hit (a person)", EAT: "eat", LIE: "lie/sleep", DRIVE: "drive (e.g., a car, a truck)",
             12: "stand", 80: "watch (a person)"}


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the real AVA rows live in ../shared, which this checkout does not have")
    return path


def write(tmp_path, text: str, name: str = "ava.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def csv_line(video, t, action, person, box=(0.1, 0.2, 0.5, 0.9)) -> str:
    return f"{video},{t:04d},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},{action},{person}\n"


# Selection data, in AVA's CSV format. Keys (video, timestamp) per class:
#   fight: vidA 902..921 (two persons each), vidB 1000..1009, vidF 1100..1107 (three persons)  -> 38
#   eat:   vidA 910..929 (910..921 also fight), vidC 902..931                                  -> 8 + 30 usable
#   lie:   vidD 902..941, vidC 902..911 (shared with eat)                                       -> 50
#   drive: vidE 902..906                                                                        -> 5 (runs short)
def selection_lines() -> list[str]:
    lines = []
    for t in range(902, 922):
        lines += [csv_line("vidA", t, FIGHT, 0, (0.1, 0.1, 0.4, 0.9)),
                  csv_line("vidA", t, FIGHT, 1, (0.5, 0.1, 0.9, 0.9)),
                  csv_line("vidA", t, 12, 1, (0.5, 0.1, 0.9, 0.9))]
    for t in range(1000, 1010):
        lines.append(csv_line("vidB", t, FIGHT, 3))
    for t in range(1100, 1108):
        lines += [csv_line("vidF", t, FIGHT, p, (0.1 * p, 0.1, 0.1 * p + 0.2, 0.8)) for p in range(3)]
    for t in range(910, 930):
        lines.append(csv_line("vidA", t, EAT, 2, (0.0, 0.3, 0.3, 1.0)))
    for t in range(902, 932):
        lines += [csv_line("vidC", t, EAT, 0), csv_line("vidC", t, 80, 0)]
    for t in range(902, 942):
        lines.append(csv_line("vidD", t, LIE, 4))
    for t in range(902, 912):
        lines.append(csv_line("vidC", t, LIE, 1, (0.6, 0.5, 0.9, 0.9)))
    for t in range(902, 907):
        lines += [csv_line("vidE", t, DRIVE, 0), csv_line("vidE", t, DRIVE, 1, (0.5, 0.5, 0.7, 0.7))]
    return lines


@pytest.fixture
def rows(tmp_path):
    parsed, stats = read_annotations(write(tmp_path, "".join(selection_lines())))
    assert stats.quirks == {}
    return parsed


def fight_keys(rows):
    return {(r.video_id, r.timestamp) for r in rows if r.action_id == FIGHT}


# --------------------------------------------------------------------------- the real rows


def test_real_val_rows_parse():
    rows, stats = read_annotations(fixture("ava_val_v2.2_head.csv"))
    assert len(rows) == 48 and stats.rows == 48
    assert stats.quirks == {"bad_person_id": 1}  # the row `...,80,3_` is kept, its person id dropped
    assert {r.video_id for r in rows} == {"1j20qq1JyX4"}
    stamps = {r.timestamp for r in rows}
    assert len(stamps) == 16
    assert (min(stamps), max(stamps)) == (902, 1004)
    assert {r.action_id for r in rows} == {1, 6, 11, 12, 14, 17, 74, 79, 80}
    first = rows[0]
    assert first == AvaRow("1j20qq1JyX4", 902, (0.002, 0.118, 0.714, 0.977), 12, 1, 1)
    assert isinstance(first.timestamp, int)
    odd = [r for r in rows if r.person_id is None]
    assert [(r.line, r.timestamp, r.action_id) for r in odd] == [(16, 906, 80)]
    assert odd[0].box == (0.175, 0.001, 0.995, 1.0)
    assert {r.line for r in rows} == set(range(1, 49))


def test_real_excluded_sample():
    assert read_excluded(fixture("ava_excluded_timestamps_sample.csv")) == {("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)}


def test_real_rows_have_none_of_the_product_classes():
    rows, _ = read_annotations(fixture("ava_val_v2.2_head.csv"))
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=10, seed=0)
    assert samples == [] and stats.taken == {FIGHT: 0, EAT: 0, LIE: 0, DRIVE: 0}


# --------------------------------------------------------------------------- malformed rows


GOOD = "vid_0001,0902,0.1,0.2,0.3,0.4,64,1\n"


@pytest.mark.parametrize("bad, what", [
    ("vid_0001,0902,0.1,0.2,0.3,0.4\n", "6 columns"),
    ("vid_0001,0902,0.1,0.2,0.3,0.4,64,1,0.9\n", "9 columns"),
    ("vid_0001,0902,0.1,0.2,0.3,0.4,64\n", "7 columns, expected 8 like line 1"),
])
def test_wrong_column_count_is_fatal_with_file_and_line(tmp_path, bad, what):
    path = write(tmp_path, GOOD + GOOD.replace(",1\n", ",2\n") + bad)
    with pytest.raises(InputError, match=what) as e:
        read_annotations(path)
    assert f"{path}:3:" in str(e.value)


def test_wrong_column_count_on_the_first_line(tmp_path):
    path = write(tmp_path, "vid_0001,0902\n")
    with pytest.raises(InputError, match=r"ava\.csv:1: 2 columns"):
        read_annotations(path)


@pytest.mark.parametrize("stamp", ["0901", "1799", "0", "0030"])
def test_timestamp_out_of_range_is_fatal_naming_value(tmp_path, stamp):
    path = write(tmp_path, GOOD + f"vid_0001,{stamp},0.1,0.2,0.3,0.4,64,1\n")
    with pytest.raises(InputError) as e:
        read_annotations(path)
    assert f"{path}:2:" in str(e.value) and repr(stamp) in str(e.value) and "902..1798" in str(e.value)


def test_timestamp_range_bounds_are_inclusive(tmp_path):
    rows, _ = read_annotations(write(tmp_path, GOOD + GOOD.replace("0902", "1798")))
    assert [r.timestamp for r in rows] == [902, 1798]


@pytest.mark.parametrize("line, message", [
    ("vid_0001,09a2,0.1,0.2,0.3,0.4,64,1", "timestamp '09a2' is not a whole number"),
    ("vid_0001,902.5,0.1,0.2,0.3,0.4,64,1", "timestamp '902.5'"),
    ("vid_0001,9_02,0.1,0.2,0.3,0.4,64,1", "timestamp '9_02'"),
    ("vid_0001,0902,0.1,0.2,1.3,0.4,64,1", "x2 '1.3' is outside"),
    ("vid_0001,0902,12,20,300,400,64,1", "x1 '12' is outside"),
    ("vid_0001,0902,nan,0.2,0.3,0.4,64,1", "x1 'nan'"),
    ("vid_0001,0902,0.1,abc,0.3,0.4,64,1", "y1 'abc' is not a number"),
    ("vid_0001,0902,0.5,0.2,0.3,0.4,64,1", "x1 > x2"),
    ("vid_0001,0902,0.1,0.5,0.3,0.4,64,1", "y1 > y2"),
    ("vid_0001,0902,0.1,0.2,0.3,0.4,-1,0.99", "action_id '-1'"),
    ("vid_0001,0902,0.1,0.2,0.3,0.4,,1", "action_id ''"),
    ("vid/0001,0902,0.1,0.2,0.3,0.4,64,1", "video_id 'vid/0001'"),
    (",0902,0.1,0.2,0.3,0.4,64,1", "video_id ''"),
])
def test_fatal_quirks_name_file_line_and_value(tmp_path, line, message):
    path = write(tmp_path, GOOD + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as e:
        read_annotations(path)
    assert str(e.value).startswith(f"{path}:3: ")


def test_counted_quirks(tmp_path):
    text = ("\ufeffvid_0001,0902,0.1,0.2,0.3,0.4,64,1\r\n"  # BOM and CRLF: accepted
            "\n"                                           # blank line: skipped, counted
            "vid_0001,0902,0.1,0.2,0.3,0.4,64,1\n"         # exact duplicate: skipped, counted
            "vid_0001,0903,0.1,0.2,0.3,0.4,64,3_\n"        # bad person id: kept, counted
            "vid_0001,0904,0.1,0.2,0.3,0.4,29,\n"          # empty person id: kept, counted
            "vid_0001, 0905 ,0.1,0.2,0.1,0.4,8,7\n")       # spaces, zero-width box: accepted
    rows, stats = read_annotations(write(tmp_path, text))
    assert stats.quirks == {"blank_line": 1, "duplicate_row": 1, "bad_person_id": 2}
    assert stats.rows == len(rows) == 4
    assert [(r.timestamp, r.action_id, r.person_id, r.line) for r in rows] == [
        (902, 64, 1, 1), (903, 64, None, 4), (904, 29, None, 5), (905, 8, 7, 6)]
    assert rows[0].video_id == "vid_0001"


def test_v21_seven_column_file_has_no_person_ids(tmp_path):
    rows, stats = read_annotations(write(tmp_path, "-5KQ66BBWC4,0902,0.1,0.2,0.3,0.4,64\n-5KQ66BBWC4,0903,0,0,1,1,8\n"))
    assert [(r.video_id, r.timestamp, r.person_id) for r in rows] == [
        ("-5KQ66BBWC4", 902, None), ("-5KQ66BBWC4", 903, None)]
    assert stats.quirks == {}


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.csv: no such file"):
        read_annotations(tmp_path / "nope.csv")


def test_excluded_rows_malformed(tmp_path):
    assert read_excluded(write(tmp_path, "vidA,0903\n\nvidB,1000\n")) == {("vidA", 903), ("vidB", 1000)}
    path = write(tmp_path, "vidA,0903\nvidA,0904,1\n")
    with pytest.raises(InputError, match=f"{path}:2: 3 columns"):
        read_excluded(path)
    path = write(tmp_path, "vidA,0100\n")
    with pytest.raises(InputError, match=f"{path}:1: timestamp '0100'"):
        read_excluded(path)


# --------------------------------------------------------------------------- label map

V2 = """# AVA v2.2 style
label {
  name: "bend/bow (at the waist)"
  label_id: 1
  label_type: PERSON_MOVEMENT
}
label { name: "lie/sleep" label_id: 8 label_type: PERSON_MOVEMENT }
label {
  name: "drive (e.g., a car, a truck)"
  label_id: 28
  label_type: OBJECT_MANIPULATION
}
label { name: "eat" label_id: 29 label_type: OBJECT_MANIPULATION }
label {
  name: "fight/hit (a person)"
  label_id: 64
  label_type: PERSON_INTERACTION
}
"""

OLD = """item {
  name: "lie/sleep"
  id: 8
}
item { name: "drive (e.g., a car, a truck)" id: 28 }
item { name: "eat" id: 29 }
item {
  name: "fight/hit (a person)"
  id: 64
}
"""


@pytest.mark.parametrize("text", [V2, OLD])
def test_label_map_both_forms(tmp_path, text):
    labels = read_label_map(write(tmp_path, text, "labels.pbtxt"))
    assert labels[64] == "fight/hit (a person)" and labels[29] == "eat" and labels[8] == "lie/sleep"
    assert labels[28] == "drive (e.g., a car, a truck)"
    assert len(labels) == (5 if text is V2 else 4)


@pytest.mark.parametrize("text, message", [
    ('label { name: "eat" label_id: 29 }\nlabel { name: "x"\n label_type: POSE }\n',
     r"labels\.pbtxt:2: block 'x' has no label_id"),
    ('label { name: "eat" label_id: 29 }\nlabel { name: "eat2" label_id: 29 }\n',
     r"labels\.pbtxt:2: id 29 given twice"),
    ('label { name: "eat" label_id: twenty }\n', r"labels\.pbtxt:1: label_id 'twenty' is not an integer"),
    ('label { name: "eat" label_id: 29 \n', r"labels\.pbtxt:1: block not closed"),
    ('# nothing here\n', r"labels\.pbtxt: no label blocks"),
    ('labels { name: "eat" label_id: 29 }\n', r"labels\.pbtxt:1: unknown block 'labels'"),
])
def test_label_map_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        read_label_map(write(tmp_path, text, "labels.pbtxt"))


def test_resolve_classes_by_name_or_id(tmp_path):
    labels = read_label_map(write(tmp_path, V2, "labels.pbtxt"))
    assert resolve_classes(["fight/hit (a person)", "Eat", 8, "28", "  lie/sleep "], labels, "labels.pbtxt") == [
        64, 29, 8, 28, 8]


@pytest.mark.parametrize("name, close", [("fight", "fight/hit (a person)"), ("drive (e.g. a car, a truck)",
                                         "drive (e.g., a car, a truck)"), ("lie/slep", "lie/sleep")])
def test_unknown_class_names_close_match_and_file(tmp_path, name, close):
    path = write(tmp_path, V2, "labels.pbtxt")
    with pytest.raises(InputError) as e:
        resolve_classes([name], read_label_map(path), path)
    message = str(e.value)
    assert repr(name) in message and repr(close) in message and str(path) in message


def test_suggestions_put_the_class_a_word_starts_before_near_spellings():
    # the real list has 'sit', 'fishing' and 'dig', which difflib ranks above the fight class for 'fight'
    names = ["sit", "fishing", "dig", "fight/hit (a person)", "eat", "lie/sleep"]
    assert suggestions("fight", names)[0] == "fight/hit (a person)"
    assert suggestions("Sleep", names)[0] == "lie/sleep"
    assert suggestions("lie/slep", names) == ["lie/sleep"]
    assert suggestions("zzz", names) == []


def test_unknown_class_id(tmp_path):
    with pytest.raises(InputError, match="class id 99 is not in the label map labels.pbtxt"):
        resolve_classes([99], LABEL_MAP, "labels.pbtxt")


# --------------------------------------------------------------------------- selection


def test_selection_balance_and_shortage_rule(rows):
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=20, seed=1)
    # 20 positives -> 20 negatives asked as 7 / 7 / 6; drive has 5, so eat (first) tops up the missing one.
    assert stats.asked == {FIGHT: 20, EAT: 7, LIE: 7, DRIVE: 6}
    assert stats.taken == {FIGHT: 20, EAT: 8, LIE: 7, DRIVE: 5}
    assert stats.available == {FIGHT: 38, EAT: 38, LIE: 50, DRIVE: 5}
    assert stats.short == {DRIVE: 1} and stats.balanced
    assert stats.fight_overlap == 12  # vidA 910..921 has eat rows, but a fight is there
    by_label = {lab: [s for s in samples if s.label == lab] for lab in ("fight", "nonfight")}
    assert len(by_label["fight"]) == 20 and len(by_label["nonfight"]) == 20
    assert [s.action_id for s in by_label["fight"]] == [FIGHT] * 20
    counts = {c: sum(s.action_id == c for s in by_label["nonfight"]) for c in (EAT, LIE, DRIVE)}
    assert counts == {EAT: 8, LIE: 7, DRIVE: 5}


def test_one_sample_per_timestamp_with_all_boxes(rows):
    samples, _ = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=100, seed=0)
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    assert all(s.boxes for s in samples)
    fights = {s.key: s for s in samples if s.label == "fight"}
    assert len(fights) == 38  # every fight timestamp, once, though vidA and vidF have several persons
    assert fights[("vidA", 902)].boxes == ((0.1, 0.1, 0.4, 0.9), (0.5, 0.1, 0.9, 0.9))
    assert len(fights[("vidF", 1100)].boxes) == 3
    drives = [s for s in samples if s.action_id == DRIVE]
    assert len(drives) == 5 and all(len(s.boxes) == 2 for s in drives)


def test_fight_timestamp_is_never_a_negative(rows):
    fights = fight_keys(rows)
    for seed in range(5):
        samples, _ = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=100, seed=seed)
        assert not {s.key for s in samples if s.label == "nonfight"} & fights
        assert {s.key for s in samples if s.label == "fight"} == fights
        both = [s for s in samples if s.key == ("vidA", 915)]
        assert [(s.label, s.action_id) for s in both] == [("fight", FIGHT)]


def test_selection_is_deterministic_per_seed(rows):
    a, stats_a = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=10, seed=3)
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)
    b, stats_b = select_samples(shuffled, FIGHT, [EAT, LIE, DRIVE], per_class=10, seed=3)
    assert a == b and stats_a == stats_b
    c, _ = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=10, seed=4)
    assert {s.key for s in a if s.label == "fight"} != {s.key for s in c if s.label == "fight"}
    assert {s.key for s in a if s.label == "nonfight"} != {s.key for s in c if s.label == "nonfight"}


def test_excluded_timestamps_are_left_out(rows):
    excluded = {("vidA", 903), ("vidC", 905), ("vidE", 902), ("vidZ", 1000)}
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=100, seed=0, excluded=excluded)
    assert not {s.key for s in samples} & excluded
    assert stats.excluded == 3  # vidZ has no rows
    assert stats.available[FIGHT] == 37 and stats.available[DRIVE] == 4


def test_per_class_is_respected(rows):
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=5, seed=0)
    assert stats.taken == {FIGHT: 5, EAT: 2, LIE: 2, DRIVE: 1}
    assert sum(s.label == "fight" for s in samples) == 5
    assert len(samples) == 10


def test_negatives_short_of_positives_take_what_there_is(rows):
    samples, stats = select_samples(rows, FIGHT, [DRIVE], per_class=100, seed=0)
    assert stats.taken == {FIGHT: 38, DRIVE: 5}
    assert stats.short == {FIGHT: 62, DRIVE: 33} and not stats.balanced
    assert sum(s.label == "nonfight" for s in samples) == 5


def test_shared_negative_timestamp_is_used_once(rows):
    # vidC 902..911 carry both eat and lie rows: with every negative asked, none may appear twice.
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE], per_class=100, seed=0)
    assert stats.taken[EAT] + stats.taken[LIE] == 38
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys))


def test_shares_split_the_negatives_by_the_largest_remainder_and_short_classes_are_topped_up(rows):
    assert apportion(20, [1, 1, 1]) == [7, 7, 6] and apportion(7, [2, 1, 0.5]) == [4, 2, 1]
    assert apportion(38, [1, 2.5, 0.5]) == [9, 24, 5] and apportion(0, [1, 1]) == [0, 0]  # 9.5, 23.75, 4.75
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=40, seed=1, shares=[1, 2.5, 0.5])
    # 38 positives -> asked 9 / 24 / 5 by the shares; drive has its 5: nothing to top up
    assert stats.asked == {FIGHT: 40, EAT: 9, LIE: 24, DRIVE: 5}
    assert stats.taken == {FIGHT: 38, EAT: 9, LIE: 24, DRIVE: 5} and stats.balanced
    samples, stats = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=40, seed=1, shares=[1, 1, 4])
    # asked 7 / 6 / 25 (6.33 each and 25.33: the odd one to the first), drive gives its 5 and the others top up
    # the 20 missing round-robin
    assert stats.asked == {FIGHT: 40, EAT: 7, LIE: 6, DRIVE: 25} and stats.taken[DRIVE] == 5 and stats.balanced
    assert stats.taken[EAT] + stats.taken[LIE] == 33 and abs(stats.taken[EAT] - stats.taken[LIE]) <= 1
    assert stats.mix(LABEL_MAP)["drive (e.g., a car, a truck)"] == {"available": 5, "asked": 25, "taken": 5}
    assert list(stats.mix(LABEL_MAP)) == ["fight/hit (a person)", "eat", "lie/sleep", "drive (e.g., a car, a truck)"]


def test_real_rows_a_timestamp_of_the_positive_is_never_a_negative_whoever_is_drawn():
    """The co-occurrence rule on AVA's own rows (../shared; no fights there, so "watch (a person)" stands in for
    the positive): at 0907 and 0909 the same person stands, carries and watches, at 0913 one person talks while
    another watches. None of those timestamps may be a negative, for any class."""
    rows, _ = read_annotations(fixture("ava_val_v2.2_head.csv"))
    watch, stand, carry, talk = 80, 12, 17, 79
    positives = {(r.video_id, r.timestamp) for r in rows if r.action_id == watch}
    assert {t for _, t in positives} == {906, 907, 909, 910, 913, 941}
    for seed in range(4):
        samples, stats = select_samples(rows, watch, [stand, carry, talk], per_class=10, seed=seed, shares=[2, 1, 1])
        negatives = {s.key: s for s in samples if s.label == "nonfight"}
        assert not negatives.keys() & positives
        # six positives, 2:1:1 -> 3 / 2 / 1 asked; the six timestamps without a watcher all go, each once
        assert stats.asked == {watch: 10, stand: 3, carry: 2, talk: 1} and stats.taken[watch] == 6
        assert sorted(t for _, t in negatives) == [902, 903, 904, 908, 953, 1003] and stats.balanced
        assert stats.fight_overlap == 5  # 0907, 0909, 0910, 0913, 0941: a stander, carrier or talker beside a watcher
        for sample in negatives.values():  # its boxes are its class's people at that timestamp, from the file
            assert set(sample.boxes) == {r.box for r in rows if (r.video_id, r.timestamp) == sample.key
                                         and r.action_id == sample.action_id}


@pytest.mark.parametrize("kwargs, message", [
    ({"shares": [1, 1]}, "one positive number per negative class"),
    ({"shares": [1, 0, 1]}, "one positive number per negative class"),
    ({"per_class": 0}, "per_class 0"),
    ({"negatives": []}, "no negative classes"),
    ({"negatives": [FIGHT, EAT]}, "both the positive and a negative"),
    ({"negatives": [EAT, EAT]}, "twice"),
])
def test_selection_arguments(rows, kwargs, message):
    args = {"positive": FIGHT, "negatives": [EAT, LIE, DRIVE], "per_class": 10, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=message):
        select_samples(rows, **args)


# --------------------------------------------------------------------------- split


def test_split_by_video_keeps_videos_whole(rows):
    samples, _ = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=100, seed=0)
    split = split_by_video(samples, val_fraction=0.3, seed=0)
    assert [replace_subset(s) for s in split] == samples
    sides = {}
    for s in split:
        sides.setdefault(s.video_id, set()).add(s.subset)
    assert all(len(v) == 1 for v in sides.values())
    subsets = {s.subset for s in split}
    assert subsets == {"training", "validation"}
    assert split == split_by_video(samples, val_fraction=0.3, seed=0)
    assert {s.subset for s in split_by_video(samples, val_fraction=0, seed=0)} == {"training"}
    train_keys = {s.key for s in split if s.subset == "training"}
    assert not train_keys & {s.key for s in split if s.subset == "validation"}


def replace_subset(sample):
    return replace(sample, subset=None)


def test_split_by_video_two_videos_and_bad_fraction(rows):
    samples, _ = select_samples([r for r in rows if r.video_id in ("vidA", "vidC")], FIGHT, [EAT], per_class=100,
                                seed=0)
    split = split_by_video(samples, val_fraction=0.9, seed=0)
    assert {s.subset for s in split} == {"training", "validation"}
    one = [s for s in samples if s.video_id == "vidA"]
    assert {s.subset for s in split_by_video(one, val_fraction=0.5, seed=0)} == {"training"}
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(InputError, match="val_fraction"):
            split_by_video(samples, val_fraction=bad, seed=0)


def test_official_split_uses_the_file_of_each_video(tmp_path):
    train_videos = ("vidA", "vidC", "vidD")
    lines = selection_lines()
    train_path = write(tmp_path, "".join(l for l in lines if l.split(",")[0] in train_videos), "train.csv")
    val_path = write(tmp_path, "".join(l for l in lines if l.split(",")[0] not in train_videos), "val.csv")
    train, _ = read_annotations(train_path)
    val, _ = read_annotations(val_path)
    samples, _ = select_samples(train + val, FIGHT, [EAT, LIE, DRIVE], per_class=100, seed=0)
    split = split_official(samples, {"training": train, "validation": val})
    assert {s.video_id: s.subset for s in split} == {
        "vidA": "training", "vidC": "training", "vidD": "training",
        "vidB": "validation", "vidE": "validation", "vidF": "validation"}
    with pytest.raises(InputError, match="'vidA' is in both"):
        split_official(samples, {"training": train, "validation": val + train[:1]})
    with pytest.raises(InputError, match="'vid.' is in none"):
        split_official(samples, {"training": train})


# --------------------------------------------------------------------------- outputs

FIELDS = {"clip_id", "video_id", "center_s", "start_s", "end_s", "label", "label_id", "source_action", "boxes",
          "subset"}


@pytest.fixture
def manifest(rows):
    samples, _ = select_samples(rows, FIGHT, [EAT, LIE, DRIVE], per_class=20, seed=0)
    return manifest_rows(split_by_video(samples, 0.3, seed=0), LABEL_MAP)


def test_manifest_rows(manifest):
    assert len(manifest) == 40
    assert [r["clip_id"] for r in manifest] == sorted(r["clip_id"] for r in manifest)
    for r in manifest:
        assert set(r) == FIELDS
        assert r["clip_id"] == f"{r['video_id']}_{int(r['center_s']):04d}"
        assert r["start_s"] == r["center_s"] - 2.0 and r["end_s"] == r["center_s"] + 2.0
        assert (r["label"], r["label_id"]) in {("fight", 1), ("nonfight", 0)}
        assert (r["label"] == "fight") == (r["source_action"] == "fight/hit (a person)")
        assert r["source_action"] in LABEL_MAP.values()
        assert r["subset"] in ("training", "validation")
        assert r["boxes"] and all(len(b) == 4 for b in r["boxes"])
    fights_a = [r for r in manifest if r["video_id"] == "vidA" and r["label"] == "fight"]
    assert fights_a and all(r["boxes"] == [[0.1, 0.1, 0.4, 0.9], [0.5, 0.1, 0.9, 0.9]] for r in fights_a)


def test_clip_start_never_below_zero_and_split_required(rows):
    samples, _ = select_samples(rows, FIGHT, [EAT], per_class=2, seed=0)
    wide = manifest_rows(split_by_video(samples, 0, seed=0), LABEL_MAP, clip_seconds=4000)
    assert all(r["start_s"] == 0.0 and r["end_s"] == r["center_s"] + 2000 for r in wide)
    with pytest.raises(ValueError, match="split first"):
        manifest_rows(samples, LABEL_MAP)
    with pytest.raises(InputError, match="clip_seconds 0"):
        manifest_rows(split_by_video(samples, 0, seed=0), LABEL_MAP, clip_seconds=0)


def test_written_files(tmp_path, manifest):
    out = tmp_path / "out"
    write_manifest(out / "manifest.jsonl", manifest)
    write_resnets_annotation(out / "ava_fight.json", manifest)
    assert sorted(p.name for p in out.iterdir()) == ["ava_fight.json", "manifest.jsonl"]  # no temp files left

    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == manifest
    assert all(list(json.loads(line)) == sorted(json.loads(line)) for line in lines)

    data = json.loads((out / "ava_fight.json").read_text())
    assert set(data) == {"labels", "database"}
    assert data["labels"] == ["nonfight", "fight"]  # 3D-ResNets-PyTorch numbers classes by position = label_id
    assert all(data["labels"].index(r["label"]) == r["label_id"] for r in manifest)
    assert set(data["database"]) == {r["clip_id"] for r in manifest}
    for r in manifest:
        assert data["database"][r["clip_id"]] == {
            "subset": r["subset"], "annotations": {"label": r["label"], "segment": [r["start_s"], r["end_s"]]}}


def test_failed_write_leaves_the_old_file(tmp_path, manifest):
    out = tmp_path / "out"
    path = out / "ava_fight.json"
    write_resnets_annotation(path, manifest)
    before = path.read_bytes()
    broken = [dict(manifest[0], start_s=object())]
    with pytest.raises(TypeError):
        write_resnets_annotation(path, broken)
    with pytest.raises(TypeError):
        write_manifest(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["ava_fight.json"]


def test_atomic_write_cleans_up_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    path.write_text("old\n")

    def failing(_path, write):
        from data.files import atomic_write

        def boom(f):
            write(f)
            raise OSError("disk full")
        atomic_write(_path, boom)

    monkeypatch.setattr(ava, "atomic_write", failing)
    with pytest.raises(OSError, match="disk full"):
        ava.write_resnets_annotation(path, [])
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
