"""The command-line options that several commands share: which config and its overrides, training's
determinism, the alert policy's overrides, the precision and kernels a model runs in, the review app's token.

Kept free of heavy imports: a command's parser is built on every call of it, `--help` too.
"""

from __future__ import annotations

import argparse

UI_TOKEN_ENV = "FIGHTWATCH_UI_TOKEN"  # the review app's default token variable (watch --ui, review --ui)

# The alert policy's flags, the same for score and watch: argparse dest -> alerts.<field>
POLICY_FLAGS = {"threshold": "threshold", "consecutive": "consecutive", "calm_to_end": "calm_to_end",
                "cooldown": "cooldown_s"}


def add_config_args(parser: argparse.ArgumentParser, default: str = "configs/ava_fight.yaml",
                    what: str = "experiment YAML", bare_overrides: bool = True) -> None:
    """--config, --set KEY=VALUE and (unless the command's positionals are something else) bare KEY=VALUE
    arguments; `overrides(args)` gives them in order."""
    parser.add_argument("--config", default=default, help=f"{what} (default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    if bare_overrides:
        parser.add_argument("more_overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as with --set")


def overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of a command line: --set's, then the bare KEY=VALUE ones."""
    return [*args.overrides, *getattr(args, "more_overrides", [])]


def add_deterministic_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deterministic", dest="overrides", action="append_const", const="train.deterministic=true",
                        help="train with torch's deterministic algorithms (train.deterministic=true; recorded in "
                             "MLflow with the other params)")


def add_policy_args(parser: argparse.ArgumentParser) -> None:
    """The alert policy's flags (score, watch); each defaults to the config's value (one default per setting: the
    YAML)."""
    parser.add_argument("--threshold", type=float, help="fight probability that counts as hot (alerts.threshold)")
    parser.add_argument("--consecutive", type=int, help="hot windows in a row that raise an alert "
                                                        "(alerts.consecutive)")
    parser.add_argument("--calm-to-end", type=int, help="calm windows that end an alert (alerts.calm_to_end)")
    parser.add_argument("--cooldown", type=float, help="seconds a camera stays quiet after an alert ends "
                                                       "(alerts.cooldown_s)")


def add_token_env_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-env", default=UI_TOKEN_ENV, metavar="NAME",
                        help=f"environment variable holding the review app's token (default: {UI_TOKEN_ENV})")


def add_accel_args(parser: argparse.ArgumentParser) -> None:
    """--precision and --kernels, the AccelConfig of score, evaluate and watch (training reads accel.* from its
    config), and --runtime, how their model runs (trainer/compiled.py)."""
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 where the CPU has avx512_bf16 or amx_bf16, else fp32 (default: auto)")
    parser.add_argument("--kernels", choices=["auto", "ipex", "torch"], default="auto",
                        help="auto: Intel Extension for PyTorch where it imports and has kernels of its own for this "
                             "CPU, else stock PyTorch (default: auto)")
    parser.add_argument("--runtime", choices=["auto", "eager", "compile", "int8", "openvino"], default="auto",
                        help="compile: the model compiled ahead of time (AOTInductor, freezing), cached across runs "
                             "under FIGHTWATCH_COMPILE_CACHE or ~/.cache/fightwatch/compiled; auto: compile models of "
                             "10M parameters or more (the real ResNet-18/34), run smaller ones eager; int8: the int8 "
                             "model `fightwatch quantize` made beside --model, compiled the same way; openvino: "
                             "OpenVINO's CPU plugin, where it is installed (pip install openvino), its converted "
                             "model cached alike; auto never chooses int8 or openvino (default: auto)")
