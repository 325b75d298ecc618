"""The command-line flags that the commands serving a model share: which config, the alert policy's overrides,
and the precision and kernels the model runs in.

Kept apart from cluster/config.py so that building the parser (every `fightwatch` call, `--help` too) imports
nothing heavy.
"""

from __future__ import annotations

import argparse

UI_TOKEN_ENV = "FIGHTWATCH_UI_TOKEN"  # the review app's default token variable (watch --ui, review --ui)

# The alert policy's flags, the same for score and watch: argparse dest -> alerts.<field>
POLICY_FLAGS = {"threshold": "threshold", "consecutive": "consecutive", "calm_to_end": "calm_to_end",
                "cooldown": "cooldown_s"}


def add_serving_config_args(parser: argparse.ArgumentParser, default: str = "configs/ava_fight.yaml") -> None:
    """--config and --set, and the alert policy's flags, for the commands that serve a model (score, watch).

    Every flag defaults to the config's value (one default per setting: the YAML)."""
    parser.add_argument("--config", default=default,
                        help=f"experiment YAML whose score/watch/alerts/sinks sections give the defaults "
                             f"(default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set watch.clip_seconds=10 (repeatable)")
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
    """--precision and --kernels: the AccelConfig of score, evaluate and watch (training reads accel.* from its config)."""
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 where the CPU has avx512_bf16 or amx_bf16, else fp32 (default: auto)")
    parser.add_argument("--kernels", choices=["auto", "ipex", "torch"], default="auto",
                        help="auto: Intel Extension for PyTorch where it imports and has kernels of its own for this "
                             "CPU, else stock PyTorch (default: auto)")
