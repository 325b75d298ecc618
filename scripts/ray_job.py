#!/usr/bin/env python
"""The `ray job submit` entrypoint: fightwatch's prepare (Ray Data) and training (Ray Train) on one Ray cluster.

Submit it from the repository root (Ray uploads the directory, without what .gitignore lists, as the job's
working directory; the driver and every worker run in a copy of it):

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python scripts/ray_job.py --config configs/ava_fight.yaml --base-dir /shared/fightwatch [KEY=VALUE ...]

What the job does, where workers go and how paths resolve: cluster/ray_train.py and cluster/ray_workers.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# `python scripts/ray_job.py` puts scripts/ first on sys.path; the packages are one level up, in the job's
# working directory (Ray also puts that on the workers' PYTHONPATH).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.commands.args import add_config_args  # noqa: E402
from cluster.ray_train import run_job  # noqa: E402
from data.errors import InputError  # noqa: E402

EXAMPLES = """\
examples:
  # on a cluster (run_dir and the data on storage all nodes share):
  ray job submit --address http://head:8265 --working-dir . -- \\
      python scripts/ray_job.py --config configs/ava_fight.yaml --base-dir /nfs/fightwatch
  # the demo config on a 2-CPU machine, 2 workers of 1 CPU, a quick run:
  ray job submit --working-dir . -- python scripts/ray_job.py --config configs/demo.yaml \\
      run_dir=/tmp/fw-demo train.epochs=2 --workers 2 --cpus-per-worker 1

The job's driver prints the absolute run dir, the model, the MLflow tracking URI and run id at the end.
Bad input (a missing file, an unknown config key) ends the job with one line and exit code 2.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/ray_job.py",
        description="Prepare the clips with Ray Data and train the 3D ResNet with Ray Train (torch DDP on CPUs), "
                    "as the entrypoint of `ray job submit`. Relative paths in the config resolve against "
                    "--base-dir; on more than one node run_dir must be on storage every node shares (NFS).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, what="experiment YAML, relative to the job's working directory (Ray's copy of "
                                 "--working-dir); an absolute path must exist on every node")
    parser.add_argument("--base-dir", type=Path,
                        help="directory that relative config paths (run_dir, data and model paths) resolve "
                             "against; give a shared directory, e.g. --base-dir \"$PWD\" when the submitting "
                             "directory is on NFS (default: the driver's working directory, which in a Ray job "
                             "is Ray's temporary copy of --working-dir on the head node)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="training workers (DDP ranks); default: one per dist.per domain (NUMA node or "
                             "socket) of every alive node with CPUs, each pinned to its node")
    parser.add_argument("--cpus-per-worker", type=int, metavar="C",
                        help="CPUs Ray reserves per worker; default: the physical cores of one domain (all its "
                             "logical CPUs with dist.use_logical_cores), the smallest over the cluster")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_job(args)
    except InputError as e:
        if args.debug:
            raise
        print(f"ray_job: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
