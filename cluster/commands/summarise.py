"""`fightwatch summarise`: the folds of a k-fold, pooled from the evaluation runs MLflow holds.

`fightwatch evaluate` logs each fold's evaluation as a run tagged fightwatch.kind=evaluation with its settings and
its training run's seed and k-fold params (cluster/commands/evaluate.py). `summarise` groups such runs by every param but
those that name the fold (PER_FOLD: the fold, and the model and video paths, which differ from fold to fold) and
gives each group's metrics as mean, sample standard deviation (n - 1) and n.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from cluster.commands.args import add_config_args, overrides
from cluster.commands.evaluate import KIND_TAG
from cluster.config import load_config
from data.errors import InputError
from data.files import atomic_write
from trainer.tracking import tracking_uri

PER_FOLD = ("data.split.fold", "model", "data")
HEADLINE = ("video_accuracy", "video_mean_class_accuracy", "video_f1", "video_roc_auc", "video_pr_ap", "view_accuracy",
            "caught", "fights", "false_alerts_per_hour", "latency_median_s")


def summarise(runs: list[dict]) -> list[dict]:
    """Groups of runs ({"run_id", "params", "metrics"}) alike but for PER_FOLD params, each {"params" (shared),
    "n", "folds", "run_ids", "metrics": {name: {"mean", "std", "n", "values"}}} over the metrics every run of the
    group has, runs in fold order; std is None for one run. Pure."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = tuple(sorted((k, v) for k, v in run["params"].items() if k not in PER_FOLD))
        groups.setdefault(key, []).append(run)
    out = []
    for key, members in sorted(groups.items()):
        members.sort(key=lambda r: (_fold(r), r["run_id"]))
        names = sorted(set.intersection(*(set(r["metrics"]) for r in members)))
        metrics = {}
        for name in names:
            values = [r["metrics"][name] for r in members]
            metrics[name] = {"mean": statistics.fmean(values), "n": len(values), "values": values,
                             "std": statistics.stdev(values) if len(values) > 1 else None}
        out.append({"params": dict(key), "n": len(members), "folds": [r["params"].get("data.split.fold")
                                                                      for r in members],
                    "run_ids": [r["run_id"] for r in members], "metrics": metrics})
    return out


def _fold(run: dict) -> int:
    fold = run["params"].get("data.split.fold")
    return int(fold) if fold is not None else -1


def evaluation_runs(experiment: str, filter_string: str | None) -> list[dict]:
    """The finished evaluation runs of `experiment` in the current tracking store, narrowed by an MLflow filter
    string ("params.`data.split.folds` = '5'", "tags.team = 'a'"), as summarise takes them."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise InputError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}")
    query = f"tags.`{KIND_TAG}` = 'evaluation' and attributes.status = 'FINISHED'"
    try:
        runs = mlflow.search_runs([found.experiment_id], query + (f" and {filter_string}" if filter_string else ""),
                                  output_format="list")
    except MlflowException as e:
        raise InputError(f"--filter {filter_string!r}: {e.message}".replace("\n", " ")) from None
    return [{"run_id": r.info.run_id, "params": r.data.params, "metrics": r.data.metrics} for r in runs]


def summary_lines(groups: list[dict]) -> list[str]:
    """Each group: its shared params and folds, then its headline metrics as mean ± std (n)."""
    lines = []
    for group in groups:
        params = " ".join(f"{k}={v}" for k, v in group["params"].items())
        folds = ", ".join("-" if f is None else f for f in group["folds"])
        lines.append(f"{group['n']} run(s), folds {folds}: {params}")
        repeated = sorted({f for f in group["folds"] if f is not None and group["folds"].count(f) > 1})
        if repeated:
            lines.append(f"  warning: fold(s) {', '.join(repeated)} evaluated more than once; narrow with --filter")
        for name in HEADLINE:
            if name in group["metrics"]:
                m = group["metrics"][name]
                std = f"{m['std']:.4f}" if m["std"] is not None else "-"
                lines.append(f"  {name:<26} {m['mean']:.4f} ± {std} (n={m['n']})")
    return lines


def run_summarise(tracking: str, experiment: str, filter_string: str | None, out: Path | None) -> list[dict]:
    """Summarise the experiment's evaluation runs in the store at `tracking`; write the groups as JSON to `out`."""
    store = Path(tracking.removeprefix("sqlite:///"))
    if tracking.startswith("sqlite:///") and not store.is_file():  # sqlite would make an empty one
        raise InputError(f"{store}: no MLflow store; train and evaluate with this config first, or set "
                         f"MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking)
    runs = evaluation_runs(experiment, filter_string)
    if not runs:
        raise InputError(f"no finished evaluation runs in experiment {experiment!r} of {tracking}"
                         + (f" matching {filter_string!r}" if filter_string else ""))
    groups = summarise(runs)
    if out is not None:
        report = {"tracking_uri": tracking, "experiment": experiment, "filter": filter_string, "groups": groups}
        atomic_write(out, lambda f: f.write((json.dumps(report, indent=1) + "\n").encode()))
    return groups


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read the evaluation runs (`fightwatch evaluate`) of an MLflow experiment, group them by their settings and "
        "their training's seed and number of folds (every param but the fold and the model and video paths), and "
        "print each group's headline metrics as mean ± sample standard deviation over the runs, with n and the "
        "folds.")
    add_config_args(parser, what="experiment YAML whose MLflow store is read (tracking.tracking_uri, else "
                                 "<run_dir>/mlflow.db; MLFLOW_TRACKING_URI wins)")
    parser.add_argument("--experiment", help="the MLflow experiment (default: the config's tracking.experiment)")
    parser.add_argument("--filter", metavar="FILTER",
                        help="only runs matching this MLflow filter string, e.g. \"params.`data.split.folds` = "
                             "'5'\" or \"params.clips = '10'\"")
    parser.add_argument("--out", type=Path, help="also write the groups, with every metric, as JSON")


def run(args: argparse.Namespace) -> None:
    config = load_config(args.config, overrides(args))
    uri = tracking_uri(config.tracking, Path(config.run_dir))
    experiment = args.experiment or config.tracking.experiment
    groups = run_summarise(uri, experiment, args.filter, args.out)
    print(f"{sum(g['n'] for g in groups)} evaluation run(s) of experiment {experiment} in {uri}, "
          f"{len(groups)} group(s)" + (f" -> {args.out}" if args.out else ""))
    print("\n".join(summary_lines(groups)))
