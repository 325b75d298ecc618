"""The installed command as the tests run it: the checkout, the console script, the one-line error contract, an
environment without any launcher's variables for child processes, a free port on loopback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
FIGHTWATCH = Path(sys.executable).parent / "fightwatch"  # the installed console script


def clean_env(**extra) -> dict:
    """This process's environment without any launcher's variables, so children start from scratch."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, **extra}


def fightwatch(*args, cwd=ROOT):
    return subprocess.run([str(FIGHTWATCH), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fightwatch: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now: take it before someone else does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
