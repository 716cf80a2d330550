"""What evaluation and the app's pictures cost, as a share of the training time around them.

Run ``python -m benchmarks.eval_cost [--model mlp] [--epochs 2] [--limit N]``. It trains headless through the real
Trainer (as ``tuinet train --headless``) and times, inside the same run: the training steps, the validation
passes (every epoch's, and the final test evaluation), the picture events (sample predictions, the first
layer's weights, the decision boundary of 2-D data), the per-step layer statistics, checkpoints, loading and the
first step (which compiles or loads the kernels). Printed: seconds and share of the run's wall time for each,
with the CPU and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict

from tuinet.bench.peak import cpu_model
from tuinet.engine.model import Sequential
from tuinet.training import stats
from tuinet.training import trainer as trainer_module
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

SPENT: dict[str, float] = defaultdict(float)


def _timed(owner, name: str, label: str):
    """Replace ``owner.name`` with a wrapper that adds its time to ``SPENT[label]``; returns the undo."""
    fn = owner.__dict__[name]

    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            SPENT[label] += time.perf_counter() - t

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, fn)


def run(model: str, dataset: str, epochs: int, limit: int | None, batch_size: int) -> dict:
    """One headless run with the timers in place; returns seconds and shares."""
    SPENT.clear()
    undo = [_timed(Sequential, "evaluate", "evaluation"), _timed(Trainer, "_emit_pictures", "pictures"),
            _timed(stats, "layer_stats", "layer statistics"), _timed(stats, "snapshot_params", "layer statistics"),
            _timed(Trainer, "prepare", "loading data, model"), _timed(trainer_module, "save_checkpoint", "checkpoints")]
    try:
        return _run(model, dataset, epochs, limit, batch_size)
    finally:
        for u in undo:
            u()


def _run(model: str, dataset: str, epochs: int, limit: int | None, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        compiled = []
        trainer = Trainer(TrainConfig(dataset=dataset, model=model, epochs=epochs, limit=limit,
                                      batch_size=batch_size, runs_dir=tmp),
                          emit=lambda e: compiled.append(e["seconds"]) if e["event"] == "compiled" else None)
        t = time.perf_counter()
        fin = trainer.run()
        wall = time.perf_counter() - t
    if fin.get("event") != "finished":
        raise SystemExit(f"the run did not finish: {fin.get('error') or fin}")
    out = {"model": model, "dataset": dataset, "epochs": epochs, "limit": limit, "wall": wall,
           "training steps": fin["train_seconds"], "first step (compile)": sum(compiled), **SPENT}
    out["loop, logging, other"] = wall - sum(v for k, v in out.items() if isinstance(v, float) and k != "wall")
    out["shares"] = {k: v / wall for k, v in out.items() if k not in ("model", "dataset", "epochs", "limit", "wall")}
    return out


def main(argv=None) -> dict:
    """Run and print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(args.model, args.dataset, args.epochs, args.limit, args.batch_size)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.model} on {args.dataset}, {args.epochs} epochs, batch {args.batch_size}"
              f"{f', {args.limit:,} samples' if args.limit else ''}: {r['wall']:.2f} s wall "
              f"({cpu_model()}, load average {os.getloadavg()[0]:.2f})")
        for k, share in r["shares"].items():
            print(f"  {k:18s} {r[k]:7.2f} s  {share:6.1%}")
    return r


if __name__ == "__main__":
    main()
