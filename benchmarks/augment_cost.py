"""Benchmark what data augmentation costs training: throughput with each ``--augment`` setting against none.

Run: ``python -m benchmarks.augment_cost [--models mlp,cnn] [--rounds 3] [--batch-size 64] [--limit N]``. Each round
trains one epoch of MNIST headless (no run folder) with every setting in turn, so the settings alternate (A B C A B C
…) on this noisy machine; the figures are medians over rounds of the trainer's own samples/s (the time inside
training steps, augmentation included) and their ratio to no augmentation. It also times the augmentation alone on
one batch (median of 200 calls).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from tuinet.bench.peak import cpu_model
from tuinet.data.augment import background, parse_augment
from tuinet.engine.augment import Augmenter
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

SETTINGS = ("none", "shift=2", "flip", "shift=2,rotate=15,scale=0.1", "erase=0.5", "noise=0.1")


def train_once(model: str, augment: str, batch_size: int, limit: int | None) -> float:
    """One epoch of MNIST with ``augment``: the trainer's samples/s."""
    cfg = TrainConfig(dataset="mnist", model=model, epochs=1, batch_size=batch_size, limit=limit,
                      augment=augment, runs_dir="/nonexistent")
    final = Trainer(cfg, run_dir=False).run()
    return float(final["samples_per_second"])


def augment_alone(x: np.ndarray, augment: str, calls: int = 200) -> float:
    """Milliseconds one call of the augmentation takes on the batch ``x`` (median)."""
    aug = Augmenter(parse_augment(augment), x.shape[1:], background(x), seed=0)
    aug(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        aug(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="training samples (default: all 54,000)")
    ap.add_argument("--settings", default=";".join(SETTINGS), help="augment settings, separated by ;")
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(";") if s.strip()]
    print(f"augmentation cost, batch {args.batch_size}, {args.rounds} rounds ({cpu_model()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})")
    x = np.random.default_rng(0).random((args.batch_size, 28, 28, 1), dtype=np.float32)
    out: dict = {}
    for model in args.models.split(","):
        for s in settings:  # compile and warm every kernel first
            train_once(model, s, args.batch_size, 2 * args.batch_size)
        rates: dict[str, list[float]] = {s: [] for s in settings}
        for _ in range(args.rounds):
            for s in settings:
                rates[s].append(train_once(model, s, args.batch_size, args.limit))
        base = statistics.median(rates[settings[0]])
        print(f"\n{model}: samples/s (median of {args.rounds}), ratio to '{settings[0]}', the augmentation alone per "
              "batch, the rounds' range")
        out[model] = {}
        for s in settings:
            med = statistics.median(rates[s])
            alone = augment_alone(x, s) if parse_augment(s).active else 0.0
            out[model][s] = {"samples_per_second": med, "ratio": med / base, "ms_per_batch": alone}
            spread = f"rounds {min(rates[s]):,.0f}..{max(rates[s]):,.0f}"
            print(f"  {s:<30} {med:>10,.0f}  {100 * med / base:6.1f}%  {alone:6.3f} ms   {spread}")
    return out


if __name__ == "__main__":
    main()
