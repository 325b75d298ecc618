"""`fightwatch watch`: live monitoring of cameras with a trained model (trainer/serve/runtime/monitor.py does the work)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from cluster.commands.args import POLICY_FLAGS, add_accel_args, add_config_args, add_policy_args, add_token_env_arg
from data.errors import InputError

log = logging.getLogger(__name__)

EXAMPLES = """\
sources:
  FILE                 a video file, replayed at its frame rate (--no-realtime: as fast as scoring allows)
  URL                  rtsp://, rtsps://, http(s)://, rtmp://, udp://, srt:// ... streams (RTSP over TCP by default)
  /dev/videoN          a capture device (Video4Linux2)
  NAME=SOURCE          the same with a camera id (letters, digits, _ . -); otherwise the id comes from the
                       file name or the URL's host and path

alerts are JSON lines ({"event": "start"|"end", "alert_id", "camera", "start_s", "start_time", "peak_prob",
"snapshot", "clip", ...}) on stdout, or in --alerts FILE, and recorded in the alert store (watch.store, --store);
counters go to stderr as one JSON line at the end.
exit status: 0 when every camera ended or was stopped, 1 when one could not be opened or gave up reconnecting.

examples:
  fightwatch watch --model runs/demo/model.pth gate=rtsp://cam1.local/stream lobby=/dev/video0
  fightwatch watch --model model.pth --no-realtime --alerts alerts.jsonl recordings/*.mp4
  fightwatch watch --model runs/demo/model.pth --ui 127.0.0.1:8080 lobby=rtsp://cam2.local/stream   # + review app
  FW_SECRET=... fightwatch watch --model model.pth --webhook https://ops.example/hook \\
      --webhook-secret-env FW_SECRET rtsp://user:pass@10.0.0.5/ch1
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _option(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def add_arguments(watch: argparse.ArgumentParser) -> None:
    watch.description = (
        "Score live video from files, RTSP/HTTP streams and capture devices with one model: a sliding window per "
        "camera, windows of all cameras batched through the model; K hot windows in a row raise an alert (JSON line, "
        "webhook) with a JPEG snapshot of the hottest frame and an mp4 of the last seconds. Dropped streams reconnect "
        "with exponential backoff. Stops on Ctrl-C, SIGTERM, --max-seconds, or when every source has ended.")
    watch.epilog, watch.formatter_class = EXAMPLES, argparse.RawDescriptionHelpFormatter
    watch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="[NAME=]FILE, URL or /dev/videoN (see below); a KEY=VALUE whose key is a config key "
                            "(watch.stride=8) is an override, as with --set")
    watch.add_argument("--model", required=True, type=Path, help="a checkpoint written by fightwatch train")
    add_config_args(watch, what="experiment YAML whose watch, alerts and sinks sections give the defaults",
                    bare_overrides=False)
    add_policy_args(watch)
    watch.add_argument("--stride", type=int, help="frames between window starts (watch.stride)")
    watch.add_argument("--batch-size", type=int, help="most windows per forward pass (watch.batch_size)")
    watch.add_argument("--no-realtime", dest="realtime", action="store_false", default=None,
                       help="replay files as fast as scoring allows instead of at their frame rate (watch.realtime)")
    watch.add_argument("--alerts", metavar="FILE",
                       help="append alerts as JSON lines to FILE instead of writing them to stdout (sinks.alerts)")
    watch.add_argument("--scores", type=Path, metavar="FILE",
                       help="append every scored window to FILE as a JSON line (camera, start_s, end_s, "
                            "fight_prob), e.g. to review why an alert fired or to compare with `fightwatch score` "
                            "(watch.scores_path)")
    watch.add_argument("--store", type=Path, metavar="FILE",
                       help="record alerts and camera status changes in this SQLite alert store, for review "
                            "(watch.store)")
    watch.add_argument("--ui", metavar="HOST:PORT",
                       help="also serve the review app here (e.g. 127.0.0.1:8080): live camera tiles, the alert "
                            "queue over the store, reviews (README: Reviewing alerts); needs the store")
    add_token_env_arg(watch)
    watch.add_argument("--webhook", metavar="URL", help="also POST each alert as JSON to this http(s) URL "
                                                        "(sinks.webhook)")
    watch.add_argument("--webhook-secret-env", metavar="NAME",
                       help="send the value of environment variable NAME in the X-Fightwatch-Secret header "
                            "(never logged; sinks.webhook_secret_env)")
    watch.add_argument("--out-dir", type=Path, metavar="DIR",
                       help="where snapshots and clips go, in a folder per camera (watch.out_dir)")
    watch.add_argument("--clip-seconds", type=_positive_float,
                       help="seconds of video in each alert's mp4, up to the moment it was raised (watch.clip_seconds)")
    watch.add_argument("--clip-height", type=int,
                       help="height of snapshots and clips; smaller sources keep theirs (watch.clip_height)")
    watch.add_argument("--max-reconnects", type=int, metavar="N",
                       help="give a stream or device up after N reconnects (watch.max_reconnects)")
    watch.add_argument("--reconnect-delay", type=float, metavar="SECONDS",
                       help="first reconnect delay; doubles per failure in a row (watch.reconnect_delay_s)")
    watch.add_argument("--reconnect-max-delay", type=float, metavar="SECONDS",
                       help="longest reconnect delay (watch.reconnect_max_delay_s)")
    watch.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                       help="open and read timeout of streams and devices (watch.timeout_s)")
    watch.add_argument("--option", dest="options", action="append", type=_option, metavar="KEY=VALUE",
                       help="FFmpeg input option for streams and devices, e.g. rtsp_transport=udp, "
                            "video_size=1280x720, framerate=25 (repeatable; replaces watch.options)")
    watch.add_argument("--stats-every", type=float, metavar="SECONDS",
                       help="log the counters this often; 0: only at the end (watch.stats_every_s)")
    watch.add_argument("--max-seconds", type=_positive_float, metavar="SECONDS",
                       help="stop after this long (watch.max_seconds)")
    add_accel_args(watch)


WATCH_FLAGS = {"stride": "stride", "batch_size": "batch_size", "realtime": "realtime", "out_dir": "out_dir",
               "clip_seconds": "clip_seconds", "clip_height": "clip_height", "max_reconnects": "max_reconnects",
               "reconnect_delay": "reconnect_delay_s", "reconnect_max_delay": "reconnect_max_delay_s",
               "timeout": "timeout_s", "options": "options", "stats_every": "stats_every_s",
               "max_seconds": "max_seconds", "scores": "scores_path", "store": "store"}
SINK_FLAGS = {"alerts": "alerts", "webhook": "webhook", "webhook_secret_env": "webhook_secret_env"}


def run(args: argparse.Namespace) -> int:
    """Run `fightwatch watch`; 0 when every camera ended normally (or was stopped), 1 when one failed."""
    from cluster.config import is_override, load_config, with_flags
    from trainer.accel import AccelConfig, plan_for
    from trainer.checkpoint import load_model
    from trainer.serve.alerting.sinks.factory import build_sink
    from trainer.serve.alerting.sinks.store import StoreSink
    from trainer.serve.alerting.store import AlertStore
    from trainer.serve.review.app import parse_address, serve_in_thread
    from trainer.serve.review.live_view import MonitorLiveView
    from trainer.serve.runtime.monitor import Monitor
    from trainer.serve.runtime.scoring import check_fight_model, prepare_model
    from trainer.serve.runtime.sources import parse_sources

    config = load_config(args.config, [*args.overrides, *filter(is_override, args.sources)])
    policy = with_flags(config.alerts, args, POLICY_FLAGS)
    cfg = with_flags(config.watch, args, WATCH_FLAGS)
    sinks = with_flags(config.sinks, args, SINK_FLAGS)
    sources = parse_sources([s for s in args.sources if not is_override(s)])
    model, model_cfg = load_model(args.model)
    check_fight_model(model_cfg, args.model)
    plan = plan_for(AccelConfig(args.precision, args.kernels))
    model = prepare_model(model, plan, model_cfg, args.runtime, args.model)
    if args.ui and cfg.store is None:
        raise InputError("--ui reviews the alert store: name one with --store (watch.store is null)")
    address = parse_address(args.ui) if args.ui else None  # a bad address fails before anything starts
    stored = [StoreSink(AlertStore(cfg.store), cfg.retention)] if cfg.store is not None else []
    try:
        sink = build_sink(sinks, cfg.out_dir / "undelivered.jsonl", also=stored)
    except BaseException:  # e.g. an MQTT password variable that is not set: the store's thread ends with it
        for store_sink in stored:
            store_sink.close()
        raise
    monitor = Monitor(model, model_cfg, plan, sources, policy, sink, cfg)
    server = None
    if address is not None:
        try:
            server = serve_in_thread(stored[0].store, MonitorLiveView(monitor), *address, token_env=args.token_env,
                                     zones=cfg.zones)
        except BaseException:
            sink.close()
            raise

    restore = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            log.info("%s: stopping (again to abort)", signal.Signals(signum).name)
            monitor.stop()
            signal.signal(signum, restore.get(signum, signal.SIG_DFL))  # a second one is not polite

        for signum in (signal.SIGINT, signal.SIGTERM):
            restore[signum] = signal.signal(signum, on_signal)
    try:
        stats = monitor.run()
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        if server is not None:
            server.stop()
        sink.close()
    print(json.dumps({"event": "stats", **stats}), file=sys.stderr, flush=True)
    bad = {name: cam.get("error") for name, cam in stats["cameras"].items() if cam["status"] in ("failed", "gave_up")}
    for name, error in bad.items():
        log.error("camera %s did not finish: %s", name, error)
    return 1 if bad else 0
