"""Stream and sink faults in a loop (issue 17): camera streams that stall, webhook receivers that hang, an MQTT
broker killed with SIGKILL and restarted.

Stalls: one real `fightwatch watch` on six cameras, HTTP and RTSP servers (tests/support/fault_servers.py) that each
accept and then stall on every connection: before answering (silent), after answering but before any media
(headers), or after 50 frames (mid). The watch reconnects --stalls times per camera; a stall's detection time is
the gap from the server's last byte to the camera's next connection, less the reconnect delay. A stall counts as
detected when that is at most the bound plus --margin: --timeout, twice that for RTSP before the first frame
(FFmpeg's RTSP client probes the stream with a wait of its own after PLAY).

Webhook: --hook-alerts alerts through the sink to receivers that never answer (silent), send a status line and
then nothing (status), or send a header a byte at a time (trickle); each must be recorded undelivered within
(retries + 1) x timeout + backoffs, and close() must cut a delivery that would outlast it.

MQTT: --mqtt-alerts alert events published while the broker is killed --kills times (away --away seconds each),
read by a subscriber with a persistent session on a broker that saves at every change. Delivery is at least once:
lost counts alerts that never arrived, duplicates those that arrived more than once.

    .venv/bin/python scripts/faults/streams.py                      # 20 stalls, timeout 2 s, 5 kills
    .venv/bin/python scripts/faults/streams.py --stalls 5 --timeout 1 --kills 2 --mqtt-alerts 50

The last line is the headline, e.g.
  stalls detected 120/120 (median 2.0 s, max 2.1 s at timeout 2 s; RTSP before its first frame max 4.0 s),
  webhook 15/15 hung alerts undelivered within 3.3 s each (bound 3.3 s), mqtt alerts lost 0/200 over 5 broker
  kills (3 duplicates)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.support: the fault servers, the broker, the command, the model, the videos

from scripts.bench.common import describe_cpu  # noqa: E402
from tests.support.commands import FIGHTWATCH  # noqa: E402
from tests.support.fault_servers import HangingWebhook, StallingServer, durable, kill_and_restart  # noqa: E402
from tests.support.models import fixed_output_model  # noqa: E402
from tests.support.mosquitto import MOSQUITTO, Mosquitto, Subscriber  # noqa: E402
from tests.support.videos import write_video  # noqa: E402
from trainer.serve.alerting.sinks.config import MqttConfig  # noqa: E402
from trainer.serve.alerting.sinks.webhook import WebhookSink  # noqa: E402

STALLS = [("http", "silent", 1), ("http", "headers", 1), ("http", "mid", 1),
          ("rtsp", "silent", 1), ("rtsp", "headers", 2), ("rtsp", "mid", 1)]  # (protocol, mode, bound in timeouts)
DELAY_S = 0.05  # the watch's reconnect delay, fixed (no doubling)
HOOK_MODES = ("silent", "status", "trickle")


def no_proxy_env() -> dict:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def stall_loop(args, work: Path) -> tuple[int, int, dict[int, list[float]]]:
    """(detected, stalls, detection times by bound in timeouts); prints a row per camera."""
    video = write_video(work / "cam.ts", 250, fps=25)
    servers = {f"{protocol}-{mode}": (StallingServer(protocol, mode, video), bound) for protocol, mode, bound in STALLS}
    command = [str(FIGHTWATCH), "watch", "--model", str(fixed_output_model(work / "calm.pth", "calm")), "--out-dir",
               str(work / "out"), "--set", "watch.store=null", "--timeout", str(args.timeout), "--max-reconnects",
               str(args.stalls), "--reconnect-delay", str(DELAY_S), "--reconnect-max-delay", str(DELAY_S),
               "--stats-every", "0", *[f"{name}={server.url}" for name, (server, _) in servers.items()]]
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=ROOT, env=no_proxy_env(), capture_output=True, text=True)
    finally:
        for server, _ in servers.values():
            server.close()
    if not any(line.startswith('{"event": "stats"') for line in result.stderr.splitlines()):
        sys.exit(f"watch failed:\n{result.stderr[-3000:]}")
    print(f"stalls: {len(servers)} cameras x {args.stalls} stalls, timeout {args.timeout:g} s, "
          f"{time.monotonic() - started:.0f} s")
    detected, total, times = 0, 0, {1: [], 2: []}
    for name, (server, bound) in servers.items():
        gaps = server.stall_gaps(DELAY_S)[:args.stalls]
        limit = bound * args.timeout + args.margin
        ok = sum(gap <= limit for gap in gaps)
        detected, total = detected + ok, total + args.stalls
        times[bound] += gaps
        summary = (f"min {min(gaps):.2f} / median {statistics.median(gaps):.2f} / max {max(gaps):.2f} s"
                   if gaps else "none")
        print(f"  {name:13s} detected {ok:3d}/{args.stalls} within {limit:.1f} s: {summary}")
    return detected, total, times


def hook_loop(args, work: Path) -> tuple[int, int, float, float]:
    """(recorded undelivered in time, alerts, slowest alert's seconds, bound); prints a row per receiver."""
    bound = (args.hook_retries + 1) * args.hook_timeout + sum(args.hook_backoff * 2 ** i
                                                              for i in range(args.hook_retries))
    recorded, total, slowest = 0, 0, 0.0
    for mode in HOOK_MODES:
        hook = HangingWebhook(mode)
        undelivered = work / f"undelivered-{mode}.jsonl"
        sink = WebhookSink(hook.url, timeout_s=args.hook_timeout, retries=args.hook_retries,
                           backoff_s=args.hook_backoff, undelivered_path=undelivered)
        started = time.monotonic()
        for n in range(args.hook_alerts):
            sink.send({"n": n})
        settled, seen = [], 0  # when each alert was given up
        while seen < args.hook_alerts and time.monotonic() - started < args.hook_alerts * bound + 30:
            count = sink.counts["undelivered"]
            settled += [time.monotonic()] * (count - seen)
            seen = count
            time.sleep(0.005)
        sink.close(timeout_s=5)
        hook.close()
        costs = [later - earlier for earlier, later in zip([started, *settled], settled)]
        lines = undelivered.read_text().splitlines() if undelivered.exists() else []
        ok = sum(cost <= bound + args.margin for cost in costs)
        recorded, total = recorded + min(ok, len(lines)), total + args.hook_alerts
        slowest = max([slowest, *costs])
        print(f"  webhook {mode:8s} {len(lines)}/{args.hook_alerts} recorded undelivered, per alert "
              f"{min(costs):.2f}..{max(costs):.2f} s (bound {bound:.2f} s)" if costs else f"  webhook {mode}: none")
    hook = HangingWebhook("silent")
    sink = WebhookSink(hook.url, timeout_s=60, undelivered_path=work / "undelivered-close.jsonl")
    sink.send({"n": 0})
    time.sleep(0.2)
    started = time.monotonic()
    sink.close(timeout_s=0.5)
    took = time.monotonic() - started
    hook.close()
    print(f"  close(0.5 s) with a delivery that would take 60 s: returned in {took:.2f} s, "
          f"{sink.counts['undelivered']} recorded undelivered")
    return recorded, total, slowest, bound


def mqtt_loop(args, work: Path) -> tuple[int, int, int]:
    """(lost, sent, duplicates)."""
    from trainer.serve.alerting.sinks.mqtt import MqttSink

    broker = durable(Mosquitto(work / "broker")).start()
    watcher = Subscriber(broker.port, "fw/events", session="fault-loop")
    sink = MqttSink(MqttConfig("127.0.0.1", broker.port, "fw", "fault-loop-sink", None, None, False),
                    reconnect_delay_s=(1, 2))
    sent = [f"gate-{n}" for n in range(args.mqtt_alerts)]
    kill_at = {round((k + 0.5) * args.mqtt_alerts / args.kills) for k in range(args.kills)}
    started = time.monotonic()
    try:
        for n, alert_id in enumerate(sent):
            sink.send({"event": "start", "alert_id": alert_id, "camera": "gate", "start_s": 0.0, "raised_s": 1.0,
                       "start_time": "2024-05-20T12:00:00.000Z", "raised_time": "2024-05-20T12:00:01.000Z",
                       "peak_prob": 0.9, "threshold": 0.5})
            if n in kill_at:
                kill_and_restart(broker, args.away)
            time.sleep(0.01)
        sink.close(timeout_s=60)
        try:
            watcher.wait_for(lambda m: {json.loads(p)["after"]["id"] for _, p, _ in m} >= set(sent), timeout=30)
        except AssertionError:
            pass  # counted below
        received = [json.loads(payload)["after"]["id"] for _, payload, _ in watcher.messages]
    finally:
        watcher.close()
        broker.stop()
    lost = len(set(sent) - set(received))
    print(f"  mqtt: {len(sent)} alerts, {args.kills} kills of {args.away:g} s, {time.monotonic() - started:.0f} s: "
          f"{len(set(received))} arrived, {lost} lost, {len(received) - len(set(received))} duplicates, "
          f"sink counts {sink.counts}")
    return lost, len(sent), len(received) - len(set(received))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalls", type=int, default=20, help="stalls per camera (default 20)")
    parser.add_argument("--timeout", type=float, default=2.0, help="watch --timeout, seconds (default 2)")
    parser.add_argument("--margin", type=float, default=0.5, help="seconds allowed over a bound (default 0.5)")
    parser.add_argument("--hook-alerts", type=int, default=5, help="alerts per hanging receiver (default 5)")
    parser.add_argument("--hook-timeout", type=float, default=1.0, help="webhook timeout_s (default 1)")
    parser.add_argument("--hook-retries", type=int, default=2, help="webhook retries (default 2)")
    parser.add_argument("--hook-backoff", type=float, default=0.1, help="webhook backoff_s (default 0.1)")
    parser.add_argument("--mqtt-alerts", type=int, default=200, help="alerts sent to the broker (default 200)")
    parser.add_argument("--kills", type=int, default=5, help="broker kills (default 5)")
    parser.add_argument("--away", type=float, default=0.5, help="seconds the killed broker stays away (default 0.5)")
    args = parser.parse_args()
    logging.getLogger("trainer.serve").setLevel(logging.CRITICAL)  # every failed attempt: the rows sum them up
    print(describe_cpu(), flush=True)
    with tempfile.TemporaryDirectory(prefix="fw-stream-faults-") as folder:
        work = Path(folder)
        detected, stalls, times = stall_loop(args, work)
        recorded, alerts, slowest, bound = hook_loop(args, work)
        if MOSQUITTO is None:
            mqtt = "mqtt skipped (no mosquitto)"
        else:
            lost, sent, duplicates = mqtt_loop(args, work)
            mqtt = f"mqtt alerts lost {lost}/{sent} over {args.kills} broker kills ({duplicates} duplicates)"
    print(f"stalls detected {detected}/{stalls} (median {statistics.median(times[1]):.1f} s, max "
          f"{max(times[1]):.1f} s at timeout {args.timeout:g} s; RTSP before its first frame max "
          f"{max(times[2]):.1f} s), webhook {recorded}/{alerts} hung alerts undelivered within "
          f"{slowest:.1f} s each (bound {bound:.1f} s), {mqtt}")


if __name__ == "__main__":
    main()
