"""What flushing subnormal floats saves: the same L2-penalized MNIST run with and without it, side by side.

Run ``python -m benchmarks.denormals`` (``--help`` for options). Each run is its own process (the setting is each
thread's, and a process's Numba threads keep the one they started with), flush on and off alternated (A B A B).
A run: the ``mlp`` preset with Adam (lr 0.001, constant) on the first 3,000 MNIST training digits (2,700 after the
validation split), batch 64, no dropout, L2 0.001, 60 epochs of 43 steps. Weights that only the penalty moves (pixels MNIST never lights) shrink towards zero and the
optimizer's products with them fall below float32's normal range; the report prints the median samples/s of the
first and the last 20 epochs of each run, and how many of the first layer's weights ended below 1e-30.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def child(epochs: int, l2: float) -> None:
    import numpy as np

    from tuinet.engine.fpmode import denormals_flushed
    from tuinet.training.config import TrainConfig
    from tuinet.training.trainer import Trainer

    rates: list[float] = []
    cfg = TrainConfig(dataset="mnist", limit=3000, epochs=epochs, dropout=0.0, l2=l2, keep_epochs=0)
    t = Trainer(cfg, run_dir=False, emit=lambda e: rates.append(e["samples_per_second"]) if e["event"] == "epoch"
                else None)
    t.run()
    w = t.model.params[0]
    print(json.dumps({"rates": rates, "flushed": denormals_flushed(), "tiny": int((np.abs(w) < 1e-30).sum()),
                      "weights": int(w.size)}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2, help="runs of each setting, alternated")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--l2", type=float, default=0.001)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.epochs, args.l2)
        return
    from tuinet.bench.peak import cores, cpu_model, vector_width

    v = vector_width()
    print(f"CPU: {cpu_model()}, {cores()} cores; LLVM target {v['llvm_cpu']}, {v['vector_bits']}-bit vectors")
    k = max(1, args.epochs // 3)
    print(f"mlp on 3,000 MNIST digits, L2 {args.l2:g}, Adam, batch 64, {args.epochs} epochs; samples/s (median "
          f"of epochs 1-{k} -> the last {k})")
    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for i in range(args.pairs):
        for setting in ("on", "off"):
            env = {**os.environ, "TUINET_FLUSH_DENORMALS": "1" if setting == "on" else "0"}
            out = subprocess.run([sys.executable, "-m", "benchmarks.denormals", "--child", "--epochs",
                                  str(args.epochs), "--l2", str(args.l2)], capture_output=True, text=True, env=env,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first, last = statistics.median(r["rates"][:k]), statistics.median(r["rates"][-k:])
            results[setting].append((first, last))
            print(f"  flush {setting:<3}  (thread flushes: {r['flushed']})  {first:>9,.0f} -> {last:>9,.0f}  "
                  f"({last / first:.0%}); first layer's weights below 1e-30: {r['tiny']:,} of {r['weights']:,}",
                  flush=True)
    on = statistics.median(last for _, last in results["on"])
    off = statistics.median(last for _, last in results["off"])
    print(f"last epochs, flush on / off: {on:,.0f} / {off:,.0f} samples/s = {on / off:.2f}x")


if __name__ == "__main__":
    main()
