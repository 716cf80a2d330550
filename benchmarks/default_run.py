"""The default run (``tuinet`` with no options: the mlp on MNIST with MNIST's defaults), for several seeds.

Run ``python -m benchmarks.default_run`` (``--help`` for options). Each seed runs ``tuinet train --headless --json
--seed S`` in its own process, exactly the default run but for the seed, keeping every epoch's checkpoint; each
checkpoint is then evaluated on the test set (as ``tuinet eval`` does). Printed per seed: the first epoch whose
weights reach the target test accuracy (98.0% by default), the wall time from launching the process to the end of
that epoch and the training time up to it, and the test accuracy the run ends with (its best validation epoch's
weights, and its last). Timings are figures to read, not to pass or fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_seed(seed: int, target: float, extra: list[str], runs_dir: Path) -> dict[str, Any]:
    """Train one seed of the default run in a process of its own and find when it reached ``target``."""
    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.training.evaluation import evaluate_checkpoint

    name = f"default-seed{seed}"
    cmd = [sys.executable, "-m", "tuinet", "train", "--headless", "--json", "--seed", str(seed), "--keep-epochs",
           "1000", "--runs-dir", str(runs_dir), "--name", name, *extra]
    launched = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    final = next((e for e in events if e["event"] == "finished"), None)
    if final is None:
        raise SystemExit(f"seed {seed}: the run did not finish:\n{out.stderr[-2000:]}")
    epochs = {e["epoch"]: e for e in events if e["event"] == "epoch"}
    reached = None
    train_seconds = 0.0
    per_epoch = []
    for ep in sorted(epochs):
        train_seconds += epochs[ep]["seconds"]
        acc = evaluate_checkpoint(load_checkpoint(runs_dir / name / f"epoch-{ep:04d}.npz"))["test_accuracy"]
        per_epoch.append(acc)
        if reached is None and acc >= target:
            reached = {"epoch": ep, "wall_seconds": epochs[ep]["time"] - launched, "train_seconds": train_seconds}
    return {"seed": seed, "reached": reached, "test_accuracy_per_epoch": per_epoch,
            "final_test_accuracy": final["test_accuracy"], "final": final.get("final"),
            "last_test_accuracy": (final.get("test_last") or {}).get("accuracy"), "epochs": final["epochs"],
            "wall_seconds": time.time() - launched}


def main(argv: list[str] | None = None) -> None:
    """Print the default run's figures for each seed, then their medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--target", type=float, default=0.98, help="test accuracy to reach (default 0.98)")
    p.add_argument("--extra", default="", help="more `tuinet train` options, e.g. \"--dataset digits\" (default: "
                                               "none: the default run)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="tuinet-default-run-") as tmp:
        results = [run_seed(s, args.target, shlex.split(args.extra), Path(tmp)) for s in seeds]
    if args.json:
        print(json.dumps({"target": args.target, "runs": results}))
        return
    load = os.getloadavg()[0]
    print(f"default run{' ' + args.extra if args.extra else ''}: first epoch at >= {args.target:.1%} test accuracy, "
          f"load average {load:.1f}")
    print(f"{'seed':>4}  {'epoch':>5}  {'wall s':>7}  {'train s':>7}  {'final test acc':>14}  {'last weights':>12}  "
          f"per-epoch test accuracy")
    for r in results:
        hit = r["reached"] or {}
        per = " ".join(f"{a:.2%}" for a in r["test_accuracy_per_epoch"])
        print(f"{r['seed']:>4}  {hit.get('epoch', '-')!s:>5}  {hit.get('wall_seconds', float('nan')):>7.1f}  "
              f"{hit.get('train_seconds', float('nan')):>7.1f}  {r['final_test_accuracy']:>14.2%}  "
              f"{r['last_test_accuracy'] or float('nan'):>12.2%}  {per}")
    reached = [r["reached"] for r in results if r["reached"]]
    print(f"reached by {len(reached)} of {len(results)} seeds", end="")
    if reached:
        print(f"; median epoch {statistics.median(h['epoch'] for h in reached):g}, wall "
              f"{statistics.median(h['wall_seconds'] for h in reached):.1f} s, final test accuracy "
              f"{statistics.median(r['final_test_accuracy'] for r in results):.2%}")
    else:
        print()


if __name__ == "__main__":
    main()
