"""Where the command line's logs go (cluster/logs.py), in a fresh interpreter: logging setup is process-wide."""

import subprocess
import sys

import pytest

from tests.support.commands import ROOT

pytestmark = pytest.mark.slow  # a subprocess that imports torch, Ray and MLflow

SCRIPT = """
import logging, sys
logging.warning("a library logged at import")  # adds a default root handler, as some imports do
from cluster.logs import console_for_rank, log_to_run_dir, setup_console
setup_console(debug=False)
print(log_to_run_dir(sys.argv[1]), flush=True)
logging.getLogger("trainer.train").info("own line")
logging.getLogger("trainer.train").info("epoch 1: metrics", extra={"file_only": True})
logging.getLogger("mlflow.utils").warning("library warning")
logging.getLogger("torch._export").warning("torch export note")
logging.getLogger("ray.data").error("library error")
console_for_rank(1)
logging.getLogger("cluster.distributed").info("rank 1 info")
logging.getLogger("cluster.distributed").warning("rank 1 warning")
"""


def test_console_keeps_own_lines_and_errors_the_run_log_keeps_everything(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    run_log = (tmp_path / "run" / "fightwatch.log").read_text()
    console = result.stderr
    for line in ("own line", "library error", "rank 1 warning"):
        assert line in console and line in run_log, line
    for line in ("epoch 1: metrics", "library warning", "torch export note", "rank 1 info"):
        assert line not in console and line in run_log, line
    assert "WARNING:root:" not in console.split("a library logged at import")[-1]  # the default handler is gone
