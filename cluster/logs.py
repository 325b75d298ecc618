"""Where the command line's logs go.

The console shows fightwatch's own lines (and its progress bars, which tqdm writes to stderr) plus any
library's errors. Everything else, the libraries' warnings and chatter (Ray's start-up and Dataset lines,
MLflow's requirement and database messages, Python warnings such as torch's export notes), goes to
`<run_dir>/fightwatch.log` beside fightwatch's lines, for the commands that have a run dir; the others
(score, watch, plan) show library warnings on the console. `--debug` shows everything on the console.
"""

from __future__ import annotations

import logging
from pathlib import Path

OWN_PACKAGES = ("cluster", "data", "trainer", "scripts", "__main__")
# Libraries that give their loggers handlers of their own (and propagate=False) when imported.
SELF_HANDLED = ("ray", "mlflow", "torch")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_NAME = "fightwatch.log"


class OwnOrSevere(logging.Filter):
    """Passes fightwatch's records from `own_level` up, but not those logged with extra={"file_only": True}
    (lines for the run log alone, e.g. the per-epoch metrics the epoch progress bar already shows), and other
    loggers' records from `library_level` up."""

    own_level = logging.DEBUG  # WARNING on DDP ranks other than 0, which would repeat rank 0's lines
    library_level = logging.WARNING  # ERROR once a run log keeps the warnings

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in OWN_PACKAGES:
            return record.levelno >= self.own_level and not getattr(record, "file_only", False)
        return record.levelno >= self.library_level




def setup_console(debug: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # e.g. the default one a library's import-time logging.warning() adds
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    if not debug:
        console.addFilter(OwnOrSevere())
    root.addHandler(console)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger, so they follow the same rules


def console_for_rank(rank: int) -> None:
    """On DDP ranks other than 0 the console shows fightwatch's warnings and errors only (all go to the run log)."""
    OwnOrSevere.own_level = logging.DEBUG if rank == 0 else logging.WARNING


def adopt_library_loggers() -> None:
    """Route the self-handled libraries' records through the root handlers (console filter, run log).

    Call it after importing them: Ray, MLflow and torch set their handlers up at import. torch's artifact
    loggers (names with "__", off unless TORCH_LOGS asks) are left as they are.
    """
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in SELF_HANDLED and "__" not in name:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def log_to_run_dir(run_dir: str | Path) -> Path:
    """Append every record (from INFO, or DEBUG with --debug) to <run_dir>/fightwatch.log; returns its path."""
    import mlflow  # noqa: F401  (imported here so that adopt_library_loggers finds their handlers set up)
    import ray.data  # noqa: F401
    import torch  # noqa: F401

    from data.files import make_run_dir

    path = make_run_dir(run_dir) / LOG_NAME
    handler = logging.FileHandler(path)
    handler.setLevel(logging.getLogger().level)  # libraries set DEBUG on their own loggers
    handler.setFormatter(logging.Formatter(f"%(process)d {FORMAT}"))
    logging.getLogger().addHandler(handler)
    adopt_library_loggers()
    OwnOrSevere.library_level = logging.ERROR
    return path
