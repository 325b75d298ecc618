"""`fightwatch review`: the review web app over an alert store, or the export of reviewed clips for retraining
(trainer/serve/review/ does the work)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from cluster.commands.args import add_config_args, add_token_env_arg, overrides
from data.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "--ui: serve the review web app over an alert store that `fightwatch watch` wrote (or is writing): the alert "
        "queue, updated live, each alert's clip, snapshot and fight probability, and the verdicts (acknowledged, "
        "false positive, true positive; in bulk; undo). Without cameras: their last known status, no pictures "
        "(watch --ui shows those). --export: copy the clips of alerts reviewed false positive to DIR/nonfights/ and "
        "true positive to DIR/fights/, the layout `fightwatch prepare` reads with data.source: folders; "
        "DIR/reviewed.jsonl says which file came from which alert, and a re-run copies only what is new. A false "
        "positive also gives the motion regions watch scored in it, each a clip of its own (<alert>.view<k>.mp4): "
        "the retrained model learns them calm at the scale it saw them.")
    parser.epilog = ("auth: writes (reviews) need the token whose value is in the environment variable --token-env, "
                     "sent as 'Authorization: Bearer <token>' (the page asks for it once); reads are open to this "
                     "machine. Without a token the app serves 127.0.0.1 only: a HOST other than loopback needs one.")
    parser.add_argument("--store", type=Path, default=Path("runs/watch/alerts.db"), metavar="FILE",
                        help="the alert store (default: runs/watch/alerts.db)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--ui", metavar="HOST:PORT",
                        help="serve the review app here, e.g. 127.0.0.1:8080 (0.0.0.0:8080: every interface, needs "
                             "a token); until Ctrl-C")
    action.add_argument("--export", type=Path, metavar="DIR",
                        help="copy the reviewed clips into DIR/fights/ and DIR/nonfights/")
    add_config_args(parser, what="experiment YAML: the watch.zones the app draws over each camera's snapshots, the "
                                 "watch.regions --export finds a false alarm's view clips with")
    add_token_env_arg(parser)


def run(args: argparse.Namespace) -> None:
    from cluster.config import load_config
    from trainer.serve.alerting.store import AlertStore
    from trainer.serve.review.app import parse_address, serve_in_thread
    from trainer.serve.review.export import export_reviewed

    if not args.store.is_file():
        raise InputError(f"{args.store}: no alert store there (fightwatch watch writes it); name it with --store")
    address = parse_address(args.ui) if args.ui else None
    watch = load_config(args.config, overrides(args)).watch
    with AlertStore(args.store) as store:
        if args.export:
            print(f"{export_reviewed(store, args.export, watch.regions).line()} -> {args.export}")
            return
        server = serve_in_thread(store, None, *address, token_env=args.token_env, zones=watch.zones)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()  # serve_in_thread logged the URL
        server.stop()
