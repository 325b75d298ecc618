"""Small fights in wide views: what region scoring catches and locates, and what it costs, against whole-frame scoring.

A trained model (the demo's: `bash scripts/demo.sh` leaves runs/demo/model.pth) scores wide synthetic scenes
(data/synthetic.py's render_wide: 2-3 people meet anywhere in the frame and fight among calm bystanders, with the
fighters' true box per frame) for each fight width, plus as many calm wide scenes, through `evaluate --untrimmed`'s
own job (cluster/commands/evaluate.py: untrimmed_job) with score.regions.budget 0 (the whole frame's centre square,
as before issue 25) and with the config's budget, side by side in one run. Per width: fights caught, located (the
alert's box on the true one, IoU >= 0.3); calm scenes: false alerts; and the scoring rate (frames/s) of each.

    python scripts/bench/bench_regions.py --model runs/demo/model.pth
    python scripts/bench/bench_regions.py --model runs/demo/model.pth --widths 0.25 0.125 --seeds 4 --size 1280x720

The last line is the headline: fights caught and located at the narrowest width, and false alerts on calm scenes,
with regions against without.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from cluster.commands.evaluate import untrimmed_job
from cluster.config import load_config
from common import bench_plan  # scripts/bench/common.py
from data.synthetic import write_wide
from trainer.checkpoint import load_model
from trainer.serve.runtime.scoring import prepare_model


def scenes(folder: Path, widths: list[float], seeds: int, width: int, height: int) -> dict[str, Path]:
    """A folder of wide scenes per fight width, and one of calm ones: written once, reused by later runs."""
    out = {}
    for fraction in [*widths, None]:
        sub = folder / (f"fight_{fraction:g}" if fraction else "calm")
        for seed in range(seeds):
            path = sub / f"scene_{seed}.mp4"
            if not path.with_suffix(".json").is_file():
                write_wide(path, 1000 + seed, width=width, height=height, fight_width=fraction or 0.125,
                           calm=fraction is None)
        out[sub.name] = sub
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a fightwatch checkpoint (the demo's model)")
    parser.add_argument("--config", default="configs/demo.yaml", help="its score, regions and alerts settings")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.25, 0.125],
                        help="fight widths as fractions of the frame's (default: 0.5 0.25 0.125)")
    parser.add_argument("--seeds", type=int, default=3, help="scenes per width, and calm scenes (default: 3)")
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default: 1280x720)")
    parser.add_argument("--scenes", type=Path, default=Path("runs/bench_regions"),
                        help="where the scenes are written (and reused)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args()

    plan = bench_plan(args.precision)
    width, height = map(int, args.size.split("x"))
    config = load_config(args.config)
    model, model_cfg = load_model(args.model)
    model = prepare_model(model, plan)
    folders = scenes(args.scenes, args.widths, args.seeds, width, height)
    budgets = (0, config.score.regions.budget or 2)
    rows: dict[tuple[str, int], dict] = {}
    for budget in budgets:
        score_cfg = dataclasses.replace(config.score,
                                        regions=dataclasses.replace(config.score.regions, budget=budget))
        for name, folder in folders.items():
            start = time.perf_counter()
            result = untrimmed_job(model, model_cfg, folder, score_cfg, config.alerts, plan,
                                   args.scenes / f"report_{name}_b{budget}.json")
            seconds = time.perf_counter() - start
            rows[name, budget] = {**result, "fps": result["hours"] * 3600 * 25 / seconds}  # the scenes are 25 fps
    print(f"\n{len(args.widths)} fight widths x {args.seeds} wide {width}x{height} scenes, {args.seeds} calm; "
          f"model {args.model}; alerts {dataclasses.asdict(config.alerts)}")
    print(f"{'scenes':<12} {'budget':>6} {'caught':>7} {'located':>8} {'false alerts':>13} {'frames/s':>9}")
    for (name, budget), r in rows.items():
        print(f"{name:<12} {budget:>6} {r['caught']:>3}/{r['fights']:<3} {r['located']:>8} {r['false_alerts']:>13} "
              f"{r['fps']:>9.1f}")
    narrow = f"fight_{min(args.widths):g}"
    without, with_ = rows[narrow, budgets[0]], rows[narrow, budgets[1]]
    rate = sum(rows[n, budgets[1]]["fps"] for n in folders) / sum(rows[n, budgets[0]]["fps"] for n in folders)
    print(f"fights {min(args.widths):g} of the frame wide: caught {with_['caught']}/{with_['fights']}, located "
          f"{with_['located']} with regions (budget {budgets[1]}) against caught {without['caught']}/"
          f"{without['fights']} without; false alerts on calm scenes {rows['calm', budgets[1]]['false_alerts']} "
          f"against {rows['calm', budgets[0]]['false_alerts']}; scoring rate {rate:.2f}x")


if __name__ == "__main__":
    main()
