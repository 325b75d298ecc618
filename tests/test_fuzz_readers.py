"""Hypothesis over the input readers: the AVA action CSV, the AVA label map (pbtxt) and the config loader (its
YAML and its key=value overrides). For any input each either parses or raises InputError in one line naming the
file (and the line, where it gives one): never another exception type. Derandomized, so CI sees the same
examples on every run."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.config import flatten, load_config
from data.ava import read_annotations, read_excluded, read_label_map
from data.errors import InputError
from tests.support.commands import ROOT

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=120,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WORK = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))  # one file per reader, rewritten per example


def write(name: str, data: str | bytes) -> Path:
    path = WORK / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def assert_one_line_naming(error: InputError, path: Path, lines: int | None) -> None:
    """One line, starting with the file (`path:` or `path:N:` with N a line of the file)."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}:"), message
    line = re.match(rf"{re.escape(str(path))}:(\d+):", message)
    if line and lines is not None:
        assert 1 <= int(line[1]) <= max(lines, 1), message


def parse_or_input_error(reader, path: Path, data: str | bytes):
    lines = len(data.splitlines()) if isinstance(data, str) else None
    try:
        return reader(path)
    except InputError as e:
        assert_one_line_naming(e, path, lines)
        return None


# --------------------------------------------------------------------------- AVA CSV

NUMBERS = st.one_of(st.integers(-10, 2000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["0902", "1798", "0.5", "1e-3", "", " ", "nan", "-0", "1_0", "٣", "9" * 5000]))
CELL = st.one_of(NUMBERS, st.text(max_size=8), st.from_regex(r"[A-Za-z0-9_-]{1,11}", fullmatch=True))
ROW = st.lists(CELL, min_size=0, max_size=10).map(",".join)
VALID_ROW = st.builds(lambda v, t, a, p: f"{v},{t:04d},0.1,0.2,0.5,0.9,{a},{p}",
                      st.from_regex(r"[A-Za-z0-9_-]{11}", fullmatch=True), st.integers(902, 1798),
                      st.integers(1, 80), st.integers(0, 20))
# a valid row with one cell replaced: reaches the checks behind the earlier cells'
MUTATED_ROW = st.tuples(VALID_ROW, st.integers(0, 7), CELL).map(
    lambda r: ",".join(c if i != r[1] else r[2] for i, c in enumerate(r[0].split(","))))
CSV_TEXT = st.lists(st.one_of(VALID_ROW, MUTATED_ROW, ROW), max_size=12).flatmap(
    lambda rows: st.sampled_from(["\n", "\r\n", "\r", "\x0c", "\u2028"]).map(lambda end: end.join(rows)))


@FUZZ
@given(CSV_TEXT)
def test_ava_csv_parses_or_names_file_and_line(text):
    result = parse_or_input_error(read_annotations, write("ava.csv", text), text)
    if result is not None:
        rows, stats = result
        assert stats.rows == len(rows)
        assert all(902 <= r.timestamp <= 1798 and r.action_id >= 1 for r in rows)


@FUZZ
@given(st.binary(max_size=200))
def test_ava_csv_bytes_parse_or_name_the_file(data):
    parse_or_input_error(read_annotations, write("ava.csv", data), None)


@FUZZ
@given(st.lists(st.one_of(ROW, st.builds(lambda v, t: f"{v},{t}", CELL, NUMBERS)), max_size=8).map("\n".join))
def test_excluded_csv_parses_or_names_file_and_line(text):
    parse_or_input_error(read_excluded, write("excluded.csv", text), text)


# --------------------------------------------------------------------------- label map (pbtxt)

PBTXT_TOKENS = st.sampled_from(['label {', 'item {', '}', '{', 'name: "eat"', "name: 'x\\'y'", 'name: "a\\"b"',
                                'name:', 'label_id: 29', 'id: 8', 'label_id: -1', 'label_id: x', 'label_id: "7"',
                                'label_type: PERSON_MOVEMENT', '# comment', '"', "'", ':', 'name: "open',
                                'id: ' + '9' * 5000, 'label_id: 1e3', 'other { }', '\n', ' ', '\t'])
PBTXT = st.lists(st.one_of(PBTXT_TOKENS, st.text(max_size=6)), max_size=30).map(" ".join)


@FUZZ
@given(PBTXT)
def test_label_map_parses_or_names_file_and_line(text):
    result = parse_or_input_error(read_label_map, write("labels.pbtxt", text), text)
    if result is not None:
        assert result and all(isinstance(k, int) and isinstance(v, str) for k, v in result.items())


@FUZZ
@given(st.binary(max_size=200))
def test_label_map_bytes_parse_or_name_the_file(data):
    parse_or_input_error(read_label_map, write("labels.pbtxt", data), None)


# --------------------------------------------------------------------------- config loader

DEMO = (ROOT / "configs" / "demo.yaml").read_text()
DEMO_LINES = DEMO.splitlines()
KEYS = sorted(flatten(load_config(ROOT / "configs" / "demo.yaml")))
YAML_SCALARS = st.one_of(
    st.sampled_from(["null", "~", "true", "off", "0", "-1", "1e400", ".nan", "-.inf", "0x10", "2001-12-14",
                     "[]", "{}", "[1, [2]]", "{a: 1}", "'quoted'", '"unterminated', "[", "{", "&a x", "*a", "*missing",
                     "!!python/object:os.system x", "!!binary 'aGk='", "!!set {a}", "? [a]\n: 1", "9" * 5000,
                     "{folds: 5, fold: 1}", "{views: 2}", "- a", "a: b: c", "|\n  x", "%TAG ! x", "\t", ""]),
    st.integers().map(str), st.floats().map(repr), st.text(max_size=10))


def mutated_demo(draw_ops) -> str:
    lines = list(DEMO_LINES)
    for op, index, text in draw_ops:
        index %= len(lines) or 1
        if not lines:
            lines.append(text)
        elif op == "value":  # keep the key and the indent, replace the value
            key, sep, _ = lines[index].partition(":")
            lines[index] = f"{key}{sep} {text}" if sep else text
        elif op == "delete":
            del lines[index]
        elif op == "duplicate":
            lines.insert(index, lines[index])
        elif op == "insert":
            lines.insert(index, text)
        elif op == "indent":
            lines[index] = " " + lines[index]
    return "\n".join(lines)


OPS = st.lists(st.tuples(st.sampled_from(["value", "delete", "duplicate", "insert", "indent"]),
                         st.integers(0, 10_000), YAML_SCALARS), min_size=1, max_size=4)


@FUZZ
@given(OPS)
def test_mutated_config_loads_or_names_file_and_line(ops):
    text = mutated_demo(ops)
    parse_or_input_error(load_config, write("config.yaml", text), text)


@FUZZ
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60),
                 st.sampled_from(["[a]: 1", "{a: 1}: 2", "? [1, 2]\n: x", "a: !!python/name:os.system", "- 1",
                                  "a: &x [*x]", "[" * 5000, "a:\n" + "  " * 2000 + "b", "\ufeffseed: 1",
                                  "a: *undefined", "!!python/object/apply:os.system ['true']"])))
def test_any_config_text_loads_or_names_the_file(data):
    parse_or_input_error(load_config, write("config.yaml", data), data if isinstance(data, str) else None)


OVERRIDE_KEYS = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k.rsplit(".", 1)[0]),
                          st.text(max_size=12), st.sampled_from(["", ".", "a..b", "data.", ".seed", "seed.x"]))


@FUZZ
@given(st.lists(st.one_of(st.tuples(OVERRIDE_KEYS, YAML_SCALARS).map("=".join), st.text(max_size=20)),
                min_size=1, max_size=3))
def test_overrides_apply_or_name_the_override(overrides):
    path = ROOT / "configs" / "demo.yaml"
    try:
        load_config(path, overrides)
    except InputError as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message, message
        assert message.startswith((f"{path}:", "override ")), message
