"""The `fightwatch` command line: dispatch to the command's module in cluster/commands/.

Each command module owns its parser (`add_arguments`) and its run (`run`); only the module of the command
being run is imported, so `fightwatch --help` and `fightwatch plan` start without torch, Ray or MLflow.
Bad input (a missing file, an unknown config key, an unreadable video) ends with one line naming the thing and
exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cluster.logs import setup_console
from data.errors import InputError

# command -> its one-line help (the module is cluster.commands.<command>)
COMMANDS = {
    "demo": "run the whole pipeline on generated videos",
    "prepare": "select clips and extract them into the clip store",
    "train": "fine-tune on the prepared clips, with MLflow tracking",
    "score": "score videos in 16-frame segments",
    "evaluate": "measure a model on labelled videos, video-level, as published results are",
    "quantize": "make an int8 model for --runtime int8, its accuracy measured before and after",
    "summarise": "pool the folds of a k-fold: mean ± std of the evaluation runs in MLflow",
    "plan": "show which CPUs each training rank of a node runs on",
    "watch": "watch cameras live and raise alerts on fights",
    "review": "review watch's alerts in a browser, or export the reviewed clips for retraining",
}

EXAMPLES = """\
examples:
  fightwatch demo                                  # the whole product on generated videos
  fightwatch demo --set train.epochs=2 run_dir=runs/quick
  fightwatch prepare --config configs/ava_fight.yaml data.video_root=/data/ava/videos
  fightwatch train --config configs/ava_fight.yaml --set accel.precision=fp32
  fightwatch score --input ./input --video_root ./videos --output ./output.json --model ./model.pth --mode score
  fightwatch score --input ./input --video_root ./videos --output ./output.json --model ./resnet-34-kinetics.pth --mode score
  fightwatch evaluate --model model.pth --data RWF-2000 --subset validation --clips 10 --crops 3 --out metrics.json
  fightwatch quantize --config configs/demo.yaml --model runs/demo/model.pth --data runs/demo/videos --subset validation
  fightwatch summarise --config configs/ava_fight.yaml --out kfold.json   # mean ± std of the folds' evaluations
  fightwatch plan --topology node.lscpu --nnodes 4 --ccl-workers 1   # ranks and CPU pinning per node
  fightwatch watch --model runs/demo/model.pth lobby=rtsp://cam1/stream door=/dev/video0 --webhook https://hooks/x
  fightwatch review --ui 127.0.0.1:8080 --store runs/watch/alerts.db   # review alerts in a browser
  fightwatch review --export runs/reviewed --store runs/watch/alerts.db  # reviewed clips, a folder per class

Every command that reads a config takes --config, --set KEY=VALUE and bare KEY=VALUE overrides.
`fightwatch COMMAND --help` explains a command.
"""


def command_module(name: str):
    return importlib.import_module(f"cluster.commands.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed; `command`'s own arguments filled in (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="fightwatch",
        description="Detect violence in video with a 3D ResNet; train it on CPU clusters; alert on fights.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks, debug logs and the libraries' own logs on the console (without it, "
                             "demo, prepare and train keep those in <run_dir>/fightwatch.log)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_line, description=help_line)
        if command in (None, name):
            command_module(name).add_arguments(sub)
    return parser


def _command_in(argv: list[str]) -> str | None:
    # the first argument naming a command (only --debug and --help come before it)
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_in(argv)
    args = build_parser(command or "").parse_args(argv)
    setup_console(args.debug)
    try:
        return command_module(args.command).run(args) or 0
    except InputError as e:
        if args.debug:
            raise
        print(f"fightwatch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m cluster.cli, as torchrun runs it
    sys.exit(main())
