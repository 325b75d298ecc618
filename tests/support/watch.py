"""`fightwatch watch` as the watch tests run it: in-process on parsed arguments (`watch`), the frame rate of their
videos (FPS), and checkpoints whose output is fixed (`models`, a module-scoped fixture: a test module that uses it
imports it)."""

import json

import pytest

from cluster.cli import build_parser
from cluster.commands.watch import run as run_watch
from tests.support.models import fixed_output_model

FPS = 25


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Checkpoints whose output is fixed: always fight, always calm."""
    folder = tmp_path_factory.mktemp("models")
    return {says: fixed_output_model(folder / f"{says}.pth", says) for says in ("fight", "calm")}


def watch(capsys, *argv):
    """run_watch on the parsed argv: (exit code, the stats line, JSON lines it printed on stdout)."""
    parser = build_parser("watch")
    capsys.readouterr()
    # the config's store is under the working directory, the checkout; a test that wants one passes --store
    rc = run_watch(parser.parse_args(["watch", "--set", "watch.store=null", *map(str, argv)]))
    out, err = capsys.readouterr()
    stats = [json.loads(line) for line in err.splitlines() if line.startswith('{"event": "stats"')]
    assert len(stats) == 1, err
    return rc, stats[0], [json.loads(line) for line in out.splitlines()]
