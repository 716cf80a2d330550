"""Benchmark the cost of the always-on gradient profile (layer statistics with the gradient-health verdict) on
training throughput.

Run: ``python -m benchmarks.gradient_profile [--rounds 3] [--dataset mnist] [--model mlp] [--limit 20000]``.
Rounds alternate A (no layer statistics: ``stats_every`` beyond the run's last step) and B (the default
``stats_every``, 100: every 100th step copies the weights before its update, then reports per-layer gradient norms,
update ratios and the verdict), A B A B …, because these machines are noisy; the figures are medians.

Throughput is samples over the wall time of the epoch loops (the ``epoch`` events' ``seconds``: everything the loop
does, the statistics and their events included; the first step's compilation and the end-of-epoch validation
excluded), so the profile's cost is in it. On a busy machine whole runs vary by more than the profile costs, so
the benchmark also times the profile's own work against the steps it accompanies, in one process, alternating:
``stats_every`` plain steps (A), then one profile (B: the weight copy, the per-layer statistics, the verdict), A B
A B …; its cost is B's median over A's. Nothing is asserted: this prints numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tuinet.training import stats as S
from tuinet.training import trainer as trainer_module
from tuinet.training.config import TrainConfig
from tuinet.training.health import HealthMonitor
from tuinet.training.trainer import Trainer

OFF = 10**9  # a stats_every no run reaches


def run(args, stats_every: int) -> dict:
    """One headless run without a run folder; samples per second of its epoch loops and the layer_stats count."""
    events: list[dict] = []
    early = trainer_module.EARLY_STATS
    if stats_every == OFF:
        trainer_module.EARLY_STATS = 0  # no early look either: A has no layer statistics at all
    cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, limit=args.limit,
                      batch_size=args.batch_size, stats_every=stats_every, seed=args.seed)
    try:
        final = Trainer(cfg, run_dir=False, emit=events.append).run()
    finally:
        trainer_module.EARLY_STATS = early
    if final["event"] != "finished":
        raise SystemExit(f"run failed: {final}")
    epochs = [e for e in events if e["event"] == "epoch"]
    samples = sum(e["samples_per_second"] * e["seconds"] for e in epochs if e["samples_per_second"])
    seconds = sum(e["seconds"] for e in epochs)
    return {"samples_per_second": samples / seconds, "stats_events": sum(e["event"] == "layer_stats" for e in events),
            "steps": final["steps"]}


def direct(args, blocks: int = 10) -> dict:
    """Seconds of ``args.every`` training steps (A) and of one profile (B), alternating ``blocks`` times."""
    t = Trainer(TrainConfig(dataset=args.dataset, model=args.model, limit=args.limit, batch_size=args.batch_size,
                            seed=args.seed), run_dir=False)
    t.prepare()
    m, opt, d = t.model, t.optimizer, t.data
    x, y = d.x_train[:args.batch_size], d.y_train[:args.batch_size]
    monitor = HealthMonitor()
    m.train_step(x, y, opt)  # compiled or loaded from the cache
    steps, profiles = [], []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(args.every):
            m.train_step(x, y, opt)
        steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        before = S.snapshot_params(m)  # what a stats step adds to the loop
        m.train_step(x, y, opt)
        t1 = time.perf_counter()
        monitor.check(S.layer_stats(m, before))
        profiles.append(time.perf_counter() - t1 + (t1 - t0) - statistics.median(steps) / args.every)
    a, b = statistics.median(steps), statistics.median(profiles)
    return {"steps_seconds": a, "profile_seconds": b, "cost_percent": 100.0 * b / a}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="mlp")
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--every", type=int, default=100, help="stats_every of the B runs (default: the default, 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args(argv)
    run(args, OFF)  # warm-up: kernels compiled or loaded, data cached by the OS
    rates: dict[str, list[float]] = {"off": [], "on": []}
    stats = 0
    for _ in range(args.rounds):
        rates["off"].append(run(args, OFF)["samples_per_second"])
        r = run(args, args.every)
        rates["on"].append(r["samples_per_second"])
        stats = r["stats_events"]
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    own = direct(args)
    result = {"direct": own, "dataset": args.dataset, "model": args.model, "batch_size": args.batch_size, "every": args.every,
              "stats_events_per_run": stats, "off": rates["off"], "on": rates["on"], "median_off": off,
              "median_on": on, "cost_percent": 100.0 * (off - on) / off}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.dataset} (limit {args.limit}), batch {args.batch_size}, {args.rounds} rounds A B")
        print(f"  A  no layer statistics:            {', '.join(f'{v:,.0f}' for v in rates['off'])} samples/s "
              f"(median {off:,.0f})")
        print(f"  B  gradient profile every {args.every:<5}: {', '.join(f'{v:,.0f}' for v in rates['on'])} samples/s "
              f"(median {on:,.0f}; {stats} profiles a run)")
        print(f"  cost of the profile: {result['cost_percent']:+.1f}% of throughput (whole runs)")
        print(f"  its own work, timed alone: {own['profile_seconds'] * 1e3:.2f} ms per profile against "
              f"{own['steps_seconds'] * 1e3:.0f} ms for the {args.every} steps between two: "
              f"{own['cost_percent']:.2f}%")
    return result


if __name__ == "__main__":
    main()
