"""The `fightwatch` command line.

Bad input (a missing file, an unknown config key, an unreadable video) ends
with one line naming the thing and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from cluster.serve_args import POLICY_FLAGS, add_accel_args, add_serving_config_args, add_token_env_arg
from cluster.logs import log_to_run_dir, setup_console
from cluster.watch import add_watch_parser, run_watch
from data.errors import InputError

EXAMPLES = """\
examples:
  fightwatch demo                                  # the whole product on generated videos
  fightwatch demo --set train.epochs=2 run_dir=runs/quick
  fightwatch prepare --config configs/ava_fight.yaml data.video_root=/data/ava/videos
  fightwatch train --config configs/ava_fight.yaml --set accel.precision=fp32
  fightwatch score --input ./input --video_root ./videos --output ./output.json --model ./model.pth --mode score
  fightwatch score --input ./input --video_root ./videos --output ./output.json --model ./resnet-34-kinetics.pth --mode score
  fightwatch evaluate --model model.pth --data RWF-2000 --subset validation --clips 10 --crops 3 --out metrics.json
  fightwatch summarise --config configs/ava_fight.yaml --out kfold.json   # mean ± std of the folds' evaluations
  fightwatch plan --topology node.lscpu --nnodes 4 --ccl-workers 1   # ranks and CPU pinning per node
  fightwatch watch --model runs/demo/model.pth lobby=rtsp://cam1/stream door=/dev/video0 --webhook https://hooks/x
  fightwatch review --ui 127.0.0.1:8080 --store runs/watch/alerts.db   # review alerts in a browser
  fightwatch review --export runs/reviewed --store runs/watch/alerts.db  # reviewed clips, a folder per class
"""


def _add_config_args(parser: argparse.ArgumentParser, default: str, what: str = "experiment YAML") -> None:
    parser.add_argument("--config", default=default, help=f"{what} (default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("more_overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as with --set")


def _add_deterministic_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deterministic", dest="overrides", action="append_const", const="train.deterministic=true",
                        help="train with torch's deterministic algorithms (train.deterministic=true; recorded in "
                             "MLflow with the other params)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fightwatch",
        description="Detect violence in video with a 3D ResNet; train it on CPU clusters; alert on fights.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks, debug logs and the libraries' own logs on the console (without it, "
                             "demo, prepare and train keep those in <run_dir>/fightwatch.log)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on generated videos",
        description="Generate synthetic fight/calm videos, extract clips with Ray Data, train with MLflow "
                    "tracking, score a held-out timeline video, write output.json, an annotated mp4 and alerts.")
    _add_config_args(demo, "configs/demo.yaml")
    _add_deterministic_arg(demo)

    prepare = commands.add_parser(
        "prepare", help="select clips and extract them into the clip store",
        description="Build the clip manifest (AVA annotations, a folder per class, or generated videos, per "
                    "data.source), find or download the videos, and extract the clips with Ray Data into "
                    "<run_dir>/clips. Re-running skips videos already extracted.")
    _add_config_args(prepare, "configs/ava_fight.yaml")
    prepare.add_argument("--ray-address", help="join this Ray cluster (same as data.ray_address; default: "
                                               "RAY_ADDRESS, else an embedded local Ray)")

    train = commands.add_parser(
        "train", help="fine-tune on the prepared clips, with MLflow tracking",
        description="Fine-tune the configured 3D ResNet on <run_dir>'s prepared clips (fightwatch prepare), "
                    "validating every train.val_every epochs, checkpointing every epoch (last.pth), every "
                    "train.checkpoint_every epochs and at the best validation loss, logging to MLflow. An "
                    "interrupted run resumes from its newest valid checkpoint and continues the same MLflow run. "
                    "Started as several ranks (torchrun, srun, Ray Train, or --launch local) it trains with DDP: "
                    "one rank per NUMA node, each pinned to its node's cores (see `fightwatch plan`).")
    _add_config_args(train, "configs/ava_fight.yaml")
    _add_deterministic_arg(train)
    train.add_argument("--launch", choices=["local"],
                       help="local: start the ranks of this node with torchrun (one per NUMA node, or "
                            "--nproc-per-node) instead of training in this process")
    train.add_argument("--nproc-per-node", type=int, metavar="N",
                       help="ranks for --launch local (default: dist.local_ranks, else one per dist.per "
                            "domain; at most the cores)")
    train.add_argument("--max-restarts", type=int, default=0, metavar="N",
                       help="with --launch local: restart the ranks up to N times after a failure; each "
                            "restart resumes from the last checkpoint (default: 0)")

    score = commands.add_parser(
        "score", help="score videos in 16-frame segments",
        description="Score each listed video in consecutive 16-frame segments and write output.json in the layout "
                    "of video-classification-3d-cnn-pytorch (--mode score: label and logits per segment, plus "
                    "start/end seconds and, for fightwatch's models, the fight probability; --mode feature: the "
                    "pooled features per segment), "
                    "plus alerts. A video that cannot be read gets an entry with 'error' and the rest go on; the "
                    "command then exits 2. With --ray the videos are spread over a Ray cluster, one model per "
                    "NUMA node; output.json is the same, in the order of --input.")
    score.add_argument("--input", required=True, type=Path, help="text file, one video name per line")
    score.add_argument("--video_root", "--video-root", dest="video_root", required=True, type=Path,
                       help="directory the names in --input are relative to")
    score.add_argument("--output", required=True, type=Path, help="output.json to write")
    score.add_argument("--model", required=True, type=Path,
                       help="a checkpoint written by fightwatch, or a 3D-ResNets-PyTorch file as released (e.g. "
                            "resnet-34-kinetics.pth, r3d18_K_200ep.pth)")
    score.add_argument("--mode", choices=["score", "feature"], default="score",
                       help="score: label and logits per segment, and for fightwatch's models the fight probability "
                            "and alerts; feature: the model's pooled features (512-d for ResNet-18/34) per segment "
                            "(default: score)")
    add_accel_args(score)
    add_serving_config_args(score)
    score.add_argument("--stride", type=int, help="frames between segment starts (score.stride)")
    score.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                       help="segments per forward pass (score.batch_size)")
    score.add_argument("--annotated-dir", type=Path,
                       help="also write annotated mp4s (<name>_annotated.mp4) and probability plots here")
    score.add_argument("--gif", action="store_true",
                       help="with --annotated-dir: also a GIF of each video's most violent 3 seconds "
                            "(<name>_fight.gif)")
    score.add_argument("--alerts", type=Path, help="also write alerts as JSON lines to this file")
    score.add_argument("--ray", action="store_true",
                       help="score with Ray Data, one actor (model) per NUMA node of each Ray node")
    release = score.add_argument_group(
        "3D-ResNets-PyTorch files", "For a --model without fightwatch's model_config, as the original tools' flags. "
        "Depth, shortcut, width, classes and conv1's kernel are read from the weights (a flag that contradicts "
        "them is an error); the family (which code saved the file) from its layout where it tells, and it sets the "
        "input normalisation: hara2018 (CVPR2018 branch: 0-255 pixels minus the ActivityNet mean) or hara2020 "
        "(master: 0-1 pixels, Kinetics mean and std). What the weights cannot show (conv1's temporal stride, max "
        "pooling, the segment size) comes from these flags, else from the opts.json the original's training wrote "
        "beside the file (a flag that contradicts it is an error), else the original's defaults.")
    release.add_argument("--model_name", choices=["resnet"], default="resnet", help="only resnet")
    release.add_argument("--model_depth", type=int, help="check: the depth the file must hold")
    release.add_argument("--resnet_shortcut", choices=["A", "B"], help="check: the shortcut the file must use")
    release.add_argument("--family", choices=["hara2018", "hara2020"],
                         help="the code that trained it (default: from the file's layout, else from its shortcut)")
    release.add_argument("--conv1_t_stride", type=int,
                         help="conv1's temporal stride (default: the opts.json beside the file, else 1)")
    release.add_argument("--no_max_pool", action="store_true", default=None,
                         help="the model has no max pooling after conv1 (default: the opts.json beside the file, "
                              "else it has)")
    release.add_argument("--sample_size", type=int,
                         help="frame size of a segment (default: the opts.json beside the file, else 112)")
    release.add_argument("--sample_duration", type=int,
                         help="frames per segment (default: the opts.json beside the file, else 16)")
    release.add_argument("--class-names", "--class_names", dest="class_names", type=Path, metavar="FILE",
                         help="the model's class names, one per line in output order, for --mode score (default: "
                              "Kinetics-400's for a 400-class file; feature mode needs none)")
    score.add_argument("--ray-address", metavar="ADDRESS",
                       help="Ray cluster to join (implies --ray; default: RAY_ADDRESS, else an embedded local Ray)")

    evaluate = commands.add_parser(
        "evaluate", help="measure a model on labelled videos, video-level, as published results are",
        description="Score every labelled video on --clips windows spread over it, one or three crops each, "
                    "average the views into the video's fight probability, and report video-level accuracy (the "
                    "headline of RWF-2000 and Hockey Fights results), mean class accuracy, precision, recall, F1, "
                    "ROC-AUC, PR-AP, the confusion matrix and a threshold sweep, the same per view, and throughput.")
    evaluate.add_argument("--model", required=True, type=Path, help="a checkpoint written by fightwatch train")
    videos = evaluate.add_mutually_exclusive_group(required=True)
    videos.add_argument("--data", type=Path, metavar="DIR",
                        help="a folder per class: fights/ and nonfights/ (Hockey Fights), or RWF-2000's "
                             "train|val/Fight|NonFight")
    videos.add_argument("--list", type=Path, metavar="CSV",
                        help="path,label lines (label fight/nonfight or 1/0), paths relative to the CSV's folder")
    videos.add_argument("--untrimmed", type=Path, metavar="DIR",
                        help="long videos, each <name>.mp4 beside <name>.json with its fight_intervals (seconds): "
                             "scored as `score` does, the config's alert policy replayed; reports fights caught, "
                             "latency and false alerts per hour")
    evaluate.add_argument("--subset", choices=["training", "validation"],
                          help="with --data: only RWF-2000's train/ (training) or val/ (validation); in a folder "
                               "per class, the side of the config's split (data.val_fraction, or the k-fold "
                               "data.split, with seed) that `fightwatch prepare` made")
    evaluate.add_argument("--clips", type=int, default=10, help="windows per video, spread evenly (default: 10)")
    evaluate.add_argument("--crops", type=int, choices=[1, 3], default=1,
                          help="1: the centre square; 3: three squares along the long side (default: 1)")
    evaluate.add_argument("--average", choices=["prob", "logit"], default="prob",
                          help="average the views' probabilities or their logits (default: prob)")
    _add_config_args(evaluate, "configs/ava_fight.yaml",
                     "experiment YAML: its alerts.threshold is the default threshold, --untrimmed follows its score "
                     "and alerts sections, --subset its data split; the run is logged to its MLflow store")
    evaluate.add_argument("--threshold", type=float, help="fight probability that counts as fight "
                                                          "(default: the config's alerts.threshold)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="views per forward pass (default: 8)")
    add_accel_args(evaluate)
    evaluate.add_argument("--out", required=True, type=Path, help="the report to write (JSON)")
    evaluate.add_argument("--dump", type=Path, help="also one CSV row per video: label, probability, views")
    evaluate.add_argument("--no-mlflow", dest="mlflow", action="store_false",
                          help="do not log an MLflow run (by default one is logged to the config's tracking store, "
                               "a child of the model's training run when that store has it)")

    summarise = commands.add_parser(
        "summarise", help="pool the folds of a k-fold: mean ± std of the evaluation runs in MLflow",
        description="Read the evaluation runs (`fightwatch evaluate`) of an MLflow experiment, group them by their "
                    "settings and their training's seed and number of folds (every param but the fold and the "
                    "model and video paths), and print each group's headline metrics as mean ± sample standard "
                    "deviation over the runs, with n and the folds.")
    _add_config_args(summarise, "configs/ava_fight.yaml", "experiment YAML whose MLflow store is read "
                     "(tracking.tracking_uri, else <run_dir>/mlflow.db; MLFLOW_TRACKING_URI wins)")
    summarise.add_argument("--experiment", help="the MLflow experiment (default: the config's tracking.experiment)")
    summarise.add_argument("--filter", metavar="FILTER",
                           help="only runs matching this MLflow filter string, e.g. \"params.`data.split.folds` = "
                                "'5'\" or \"params.clips = '10'\"")
    summarise.add_argument("--out", type=Path, help="also write the groups, with every metric, as JSON")

    plan = commands.add_parser(
        "plan", help="show which CPUs each training rank of a node runs on",
        description="Print, as JSON, the placement of the DDP ranks of one compute node: a rank is one training "
                    "process, by default one per NUMA node, pinned to that node's physical cores so its "
                    "memory stays local. Under torchrun, srun and Ray each rank binds itself from LOCAL_RANK "
                    "at start with this same plan; this command shows it in advance. FILE is the output of "
                    "`lscpu -p=CPU,CORE,SOCKET,NODE` recorded on a compute node; without it, this machine's "
                    "topology is read from /sys.")
    plan.add_argument("--topology", metavar="FILE", type=Path,
                      help="lscpu -p=CPU,CORE,SOCKET,NODE output of a compute node (default: this machine)")
    plan.add_argument("--nnodes", type=int, default=1, metavar="N", help="compute nodes in the job (default: 1)")
    plan.add_argument("--per", choices=["numa", "socket"], default="numa",
                      help="the domain a rank stays in: a NUMA node or a whole socket (default: numa)")
    plan.add_argument("--nproc-per-node", type=int, metavar="N",
                      help="ranks per node (default: one per domain); other counts split the cores evenly")
    plan.add_argument("--use-logical-cores", action="store_true",
                      help="also run compute threads on SMT siblings (default: physical cores only)")
    plan.add_argument("--ccl-workers", type=int, default=0, metavar="K",
                      help="reserve each rank's last K cores for oneCCL communication workers (default: 0)")
    add_watch_parser(commands)

    review = commands.add_parser(
        "review", help="review watch's alerts in a browser, or export the reviewed clips for retraining",
        description="--ui: serve the review web app over an alert store that `fightwatch watch` wrote (or is "
                    "writing): the alert queue, updated live, each alert's clip, snapshot and fight probability, "
                    "and the verdicts (acknowledged, false positive, true positive; in bulk; undo). Without "
                    "cameras: their last known status, no pictures (watch --ui shows those). --export: copy the "
                    "clips of alerts reviewed false positive to DIR/nonfights/ and true positive to DIR/fights/, "
                    "the layout `fightwatch prepare` reads with data.source: folders; DIR/reviewed.jsonl says "
                    "which file came from which alert, and a re-run copies only what is new.",
        epilog="auth: writes (reviews) need the token whose value is in the environment variable --token-env, "
               "sent as 'Authorization: Bearer <token>' (the page asks for it once); reads are open to this "
               "machine. Without a token the app serves 127.0.0.1 only: a HOST other than loopback needs one.")
    review.add_argument("--store", type=Path, default=Path("runs/watch/alerts.db"), metavar="FILE",
                        help="the alert store (default: runs/watch/alerts.db)")
    review_action = review.add_mutually_exclusive_group(required=True)
    review_action.add_argument("--ui", metavar="HOST:PORT",
                               help="serve the review app here, e.g. 127.0.0.1:8080 (0.0.0.0:8080: every "
                                    "interface, needs a token); until Ctrl-C")
    review_action.add_argument("--export", type=Path, metavar="DIR",
                               help="copy the reviewed clips into DIR/fights/ and DIR/nonfights/")
    add_token_env_arg(review)
    return parser


def _demo(args) -> None:
    from cluster.config import load_config
    from cluster.demo import run_demo

    overrides = args.overrides + args.more_overrides
    cfg = load_config(args.config, overrides)
    log_file = log_to_run_dir(cfg.run_dir)
    summary = run_demo(cfg, ["--config", str(args.config), *overrides])
    run_dir = Path(summary["run_dir"])
    for alert in summary["alerts"]:
        print(json.dumps(alert))
    truth = summary["truth"]["fight_intervals"]
    print(f"\nval accuracy {summary['val'].get('accuracy', float('nan')):.3f}, "
          f"{len(summary['alerts'])} alert(s) on the held-out timeline (true fight at {truth})")
    print(f"run dir:      {run_dir}\n"
          f"model:        {summary['model']}\n"
          f"scores:       {run_dir / 'output.json'}\n"
          f"annotated:    {run_dir / 'timeline_annotated.mp4'} (plot: {run_dir / 'timeline_probs.png'})\n"
          f"alerts:       {run_dir / 'alerts.jsonl'}\n"
          f"MLflow:       mlflow ui --backend-store-uri sqlite:///{(run_dir / 'mlflow.db').resolve()}\n"
          f"log:          {log_file}")


def _prepare(args) -> None:
    from cluster.config import load_config
    from cluster.prepare import run_prepare

    ray_override = [f"data.ray_address={args.ray_address}"] if args.ray_address else []
    cfg = load_config(args.config, args.overrides + args.more_overrides + ray_override)
    log_to_run_dir(cfg.run_dir)
    result = run_prepare(cfg)
    print(f"{result.line()}\nmanifest: {cfg.run_dir}/manifest.jsonl ({len(result.rows)} clips), "
          f"store: {result.store_root}")


def _train(args) -> int:
    from cluster.config import load_config
    from cluster.train_job import run_train

    cfg = load_config(args.config, args.overrides + args.more_overrides)
    log_to_run_dir(cfg.run_dir)
    if args.launch == "local":
        from cluster.launch import launch_local

        return launch_local(cfg.dist, args.nproc_per_node, ["--config", str(args.config), *args.overrides,
                                                            *args.more_overrides], args.max_restarts)
    if args.nproc_per_node is not None:
        raise InputError("--nproc-per-node needs --launch local (torchrun takes its own --nproc-per-node)")
    val_metrics, run_id = run_train(cfg)
    if run_id is None:  # not rank 0: rank 0 reports
        return 0
    summary = " ".join(f"{k}={v:.3f}" for k, v in val_metrics.items()) or "nothing left to train"
    print(f"validation: {summary}\nmodel: {cfg.run_dir}/model.pth, MLflow run {run_id}")


def _score(args) -> None:
    from cluster.config import load_config, with_flags
    from cluster.score import ScoringModel, read_video_list, score_job, score_job_ray, write_alerts
    from trainer.accel import AccelConfig, plan_for
    from trainer.checkpoint import ReleaseOptions
    from trainer.serve.class_names import FIGHT_CLASSES

    config = load_config(args.config, args.overrides)
    score_cfg = with_flags(config.score, args, {"stride": "stride", "batch_size": "batch_size"})
    policy = with_flags(config.alerts, args, POLICY_FLAGS)
    fight_only = [flag for flag, value in (("--annotated-dir", args.annotated_dir), ("--gif", args.gif),
                                           ("--alerts", args.alerts)) if value]
    if args.mode == "feature" and fight_only:
        raise InputError(f"{', '.join(fight_only)}: need --mode score (feature mode has no fight probability)")
    if args.gif and args.annotated_dir is None:
        raise InputError("--gif writes into --annotated-dir; name that directory too")
    for flag, path in (("--output", args.output), ("--alerts", args.alerts)):
        if path is not None and path.is_dir():
            raise InputError(f"{path}: {flag} is a directory; name the file to write")
        if path is not None and path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: {flag}'s parent {path.parent} is not a directory")
    if args.annotated_dir is not None and args.annotated_dir.exists() and not args.annotated_dir.is_dir():
        raise InputError(f"{args.annotated_dir}: --annotated-dir is not a directory")
    videos = read_video_list(args.input, args.video_root)
    release = ReleaseOptions(args.model_depth, args.resnet_shortcut, args.family, args.conv1_t_stride,
                             args.no_max_pool, args.sample_size, args.sample_duration)
    model, model_cfg, names = ScoringModel.load(args.model, release, args.class_names, args.mode)
    if names != FIGHT_CLASSES and fight_only:
        raise InputError(f"{', '.join(fight_only)}: {args.model} is not a fight model ({len(names)} classes: "
                         f"{', '.join(names[:3])}, ...); only fightwatch's models raise alerts")
    accel = AccelConfig(args.precision, args.kernels)
    if args.ray or args.ray_address:
        del model  # each Ray actor loads its own
        entries, alerts = score_job_ray(args.model, videos, args.output, score_cfg, policy, args.annotated_dir,
                                        accel=accel, mode=args.mode, gif=args.gif, ray_address=args.ray_address,
                                        release=release, names_file=args.class_names)
    else:
        plan = plan_for(accel)
        entries, alerts = score_job(model, model_cfg, videos, args.output, score_cfg, policy, args.annotated_dir,
                                    plan=plan, mode=args.mode, gif=args.gif, names=names)
    for alert in alerts:
        print(json.dumps(alert))
    if args.alerts:
        write_alerts(args.alerts, alerts)
    failed = [e for e in entries if "error" in e]
    what = "feature-extracted" if args.mode == "feature" else "scored"
    print(f"{what} {len(entries) - len(failed)} of {len(entries)} video(s), {len(alerts)} alert(s) -> {args.output}",
          file=sys.stderr)
    if failed:
        raise InputError(f"{len(failed)} video(s) not scored (refused or unreadable), first: {failed[0]['error']}")


def _evaluate(args) -> None:
    from cluster.config import load_config
    from cluster.evaluate import (evaluate_job, evaluation_metrics, folder_videos, listed_videos, log_evaluation,
                                  untrimmed_job)
    from trainer.accel import AccelConfig, plan_for
    from trainer.checkpoint import load_model
    from trainer.serve.evaluate import EvalConfig
    from trainer.serve.scoring import check_fight_model, prepare_model
    from trainer.tracking import tracking_uri

    try:
        cfg = EvalConfig(args.clips, args.crops, args.average, args.batch_size)
    except ValueError as e:
        raise InputError(str(e)) from None
    config = load_config(args.config, args.overrides + args.more_overrides)
    threshold = args.threshold if args.threshold is not None else config.alerts.threshold
    if not 0 < threshold < 1:
        raise InputError(f"--threshold {threshold}: must be between 0 and 1")
    if args.subset and not args.data:
        raise InputError("--subset goes with --data")
    model, model_cfg = load_model(args.model)
    check_fight_model(model_cfg, args.model)
    plan = plan_for(AccelConfig(args.precision, args.kernels))
    model = prepare_model(model, plan)
    if args.untrimmed:
        policy = dataclasses.replace(config.alerts, threshold=threshold)
        result = untrimmed_job(model, model_cfg, args.untrimmed, config.score, policy, plan, args.out)
        latency = result["latency_s"]
        print(f"caught {result['caught']} of {result['fights']} fights (latency median "
              f"{latency['median'] if latency else float('nan'):.2f} s), {result['false_alerts']} false alert(s), "
              f"{result['false_alerts_per_hour']:.2f} per hour over {result['hours'] * 60:.1f} min -> {args.out}")
        params = {"data_source": "untrimmed", "data": args.untrimmed.resolve(), "stride": config.score.stride,
                  **dataclasses.asdict(policy)}
    else:
        videos = (listed_videos(args.list) if args.list else
                  folder_videos(args.data, args.subset, config.data.val_fraction, config.seed, config.data.split))
        result = evaluate_job(model, model_cfg, videos, cfg, plan, threshold, args.out, args.dump)
        video, view = result["video"], result["view"]
        print(f"video-level accuracy {video['accuracy']:.4f} over {video['count']} videos (mean class accuracy "
              f"{video['mean_class_accuracy']:.4f}, F1 {video['f1']:.4f}, ROC-AUC {video['roc_auc']:.4f}); view-level "
              f"accuracy {view['accuracy']:.4f}; {len(result['errors'])} unreadable -> {args.out}")
        params = {"data_source": "list" if args.list else "folders", "data": (args.list or args.data).resolve(),
                  "subset": args.subset, "clips": cfg.clips, "crops": cfg.crops, "average": cfg.average,
                  "threshold": threshold}
    if args.mlflow:
        run_id, parent_id = log_evaluation(config, args.model, {"model": args.model.resolve(),
                                                                "precision": plan.precision, **params},
                                           evaluation_metrics(result), [p for p in (args.out, args.dump) if p])
        print(f"MLflow run {run_id}" + (f", a child of training run {parent_id}," if parent_id else "")
              + f" in {tracking_uri(config.tracking, Path(config.run_dir))}")


def _summarise(args) -> None:
    from cluster.config import load_config
    from cluster.summarise import run_summarise, summary_lines
    from trainer.tracking import tracking_uri

    config = load_config(args.config, args.overrides + args.more_overrides)
    uri = tracking_uri(config.tracking, Path(config.run_dir))
    experiment = args.experiment or config.tracking.experiment
    groups = run_summarise(uri, experiment, args.filter, args.out)
    print(f"{sum(g['n'] for g in groups)} evaluation run(s) of experiment {experiment} in {uri}, "
          f"{len(groups)} group(s)" + (f" -> {args.out}" if args.out else ""))
    print("\n".join(summary_lines(groups)))


def _plan(args) -> None:
    from cluster.placement import plan_json, plan_ranks
    from cluster.topology import load_topology

    topo = load_topology(args.topology)
    bindings = plan_ranks(topo, args.per, args.nproc_per_node, args.use_logical_cores, args.ccl_workers)
    print(json.dumps(plan_json(topo, bindings, args.nnodes, args.per), indent=2))


def _review(args) -> None:
    import signal
    import threading

    from trainer.serve.alert_store import AlertStore
    from trainer.serve.review_app import parse_address, serve_in_thread
    from trainer.serve.review_export import export_reviewed

    if not args.store.is_file():
        raise InputError(f"{args.store}: no alert store there (fightwatch watch writes it); name it with --store")
    address = parse_address(args.ui) if args.ui else None
    with AlertStore(args.store) as store:
        if args.export:
            print(f"{export_reviewed(store, args.export).line()} -> {args.export}")
            return
        server = serve_in_thread(store, None, *address, token_env=args.token_env)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()  # serve_in_thread logged the URL
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_console(args.debug)
    try:
        return {"demo": _demo, "prepare": _prepare, "train": _train, "score": _score, "evaluate": _evaluate,
                "summarise": _summarise, "plan": _plan, "watch": run_watch, "review": _review}[args.command](args) or 0
    except InputError as e:
        if args.debug:
            raise
        print(f"fightwatch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m cluster.cli, as torchrun runs it
    sys.exit(main())
