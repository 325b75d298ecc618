"""The command line's contract across commands: every command that reads a config takes --config, --set and bare
KEY=VALUE overrides alike; watch tells its overrides from its NAME=SOURCE cameras by the config's keys."""

import pytest

from cluster.cli import COMMANDS, build_parser
from cluster.commands.args import overrides
from cluster.config import is_override
from data.errors import InputError

REQUIRED = {"demo": [], "prepare": [], "train": [], "summarise": [],
            "score": ["--input", "in.txt", "--video_root", ".", "--output", "o.json", "--model", "m.pth"],
            "evaluate": ["--model", "m.pth", "--data", "videos", "--out", "r.json"],
            "quantize": ["--model", "m.pth", "--data", "videos"]}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_every_command_that_reads_a_config_takes_set_and_bare_overrides(command):
    args = build_parser(command).parse_args([command, *REQUIRED[command], "--config", "configs/demo.yaml",
                                             "--set", "seed=3", "score.stride=4"])
    assert args.config == "configs/demo.yaml"
    assert overrides(args) == ["seed=3", "score.stride=4"]


def test_each_command_is_one_that_reads_a_config_or_one_readme_says_does_not():
    assert set(COMMANDS) == set(REQUIRED) | {"watch"} | {"plan", "review"}  # watch: the test below


@pytest.mark.parametrize("argument, expected", [
    ("watch.stride=8", True), ("run_dir=runs/x", True), ("seed=1", True), ("alerts.threshold=0.7", True),
    ("lobby=rtsp://cam/stream", False), ("gate=/dev/video0", False), ("data=x.mp4", False), ("cam.1=x.mp4", False),
    ("recording.mp4", False)])
def test_a_bare_argument_is_an_override_when_its_key_is_a_config_key(argument, expected):
    assert is_override(argument) is expected


def test_watch_takes_bare_overrides_among_its_sources(tmp_path):
    from cluster.commands.watch import run

    args = build_parser("watch").parse_args(["watch", "--model", str(tmp_path / "missing.pth"), "lobby=a.mp4",
                                             "watch.stride=not-a-number"])
    with pytest.raises(InputError, match="watch.stride"):  # the override reached the config, before the model
        run(args)
