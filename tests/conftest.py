"""Fixtures shared by the modules that train: one tiny prepared run dir per session (Ray extraction is slow), and
one demo run (`fightwatch demo`, minutes) for the tests of what the demo makes and what is built on it."""

import logging
import subprocess

import pytest

from tests.support.commands import FIGHTWATCH, ROOT


def pytest_collection_modifyitems(items):
    """A test that needs `prepared` or `demo_run` (directly or through another fixture) waits for a `fightwatch
    prepare` or the demo: slow."""
    for item in items:
        if {"prepared", "demo_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def root_logging_restored():
    """A test that runs the command line in-process (cluster.cli.main) sets the root logger up for a console that
    is pytest's capture of that test; later tests would log into the closed capture, a "Logging error" traceback
    per record (tens of seconds for a 100,000-entry list)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The tests talk only to servers on this machine: a CI proxy (urllib and FFmpeg's http honour *_proxy) must
    not sit between them; the commands the tests start inherit this environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A run dir with tests.support.training.TINY's clips extracted by the real `fightwatch prepare`; copy before
    use (tests.support.training.copy_of)."""
    from tests.support.training import TINY

    run_dir = tmp_path_factory.mktemp("prepared") / "run"
    result = subprocess.run([str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(run dir, CompletedProcess) of the real `fightwatch demo`: the demo's config, videos, model and timeline."""
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    result = subprocess.run([str(FIGHTWATCH), "demo", f"run_dir={run_dir}", "tracking.run_name=test-demo"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result
