"""Benchmark reading many runs for Compare: the runs table and every run's curves, time and memory.

Run: ``python -m benchmarks.compare_runs [--runs 300] [--epochs 20] [--steps-per-epoch 250] [--rounds 3]``.
It writes a runs folder of synthetic but realistic run folders (config.json, status.json and a metrics.jsonl with a
``started`` event, a ``step`` event every 25 steps, ``layer_stats`` every 100 steps, ``epoch``, ``confusion`` and
``checkpoint_saved`` events, and a final event), then measures:

* ``load_runs``: every run's record (status.json, config.json, the head and tail of metrics.jsonl);
* the first poll of a :class:`~tuinet.training.curves.CurveReader` on every run (the whole file, downsampled);
* a second poll with nothing new, then one after a few lines were appended to a tenth of the runs;
* memory: peak RSS growth (``resource``), the resident size the readers keep, and tracemalloc's peak and retained
  Python allocations in a separate pass (tracemalloc slows the code it watches, so it is not timed).

Timings are medians over the rounds; it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from tuinet.protocol import PROTOCOL_VERSION, to_json

LAYERS = [("flatten_0", "Flatten", [784], 0), ("dense_1", "Dense", [128], 100480), ("relu_2", "ReLU", [128], 0),
          ("dense_3", "Dense", [64], 8256), ("relu_4", "ReLU", [64], 0), ("dense_5", "Dense", [10], 650)]


def _event(_kind: str, t: float, **fields) -> str:
    return to_json({"event": _kind, "v": PROTOCOL_VERSION, "time": round(t, 3), **fields}) + "\n"


def make_run(folder: Path, i: int, epochs: int = 20, steps_per_epoch: int = 250, log_every: int = 25,
             stats_every: int = 100, status: str = "finished", t0: float = 1.7e9) -> None:
    """Write one synthetic run folder: config.json, status.json, metrics.jsonl (events as a trainer writes them)."""
    rng = random.Random(i)
    folder.mkdir(parents=True)
    lr = rng.choice([0.1, 0.03, 0.01, 0.003, 0.001])
    dropout = rng.choice([0.0, 0.1, 0.2, 0.3])
    optimizer = rng.choice(["adam", "sgd", "momentum", "adamw"])
    batch_size = rng.choice([32, 64, 128])
    config = {"dataset": "mnist", "model": rng.choice(["mlp", "128-64", "cnn"]), "activation": None,
              "optimizer": optimizer, "lr": lr, "batch_size": batch_size, "epochs": epochs, "seed": i,
              "val_split": 0.1, "test_split": 0.1, "normalize": "auto", "limit": None, "l1": 0.0,
              "l2": rng.choice([0.0, 1e-4]), "dropout": dropout, "schedule": "constant", "clip_grad": None,
              "log_every": log_every, "stats_every": stats_every, "runs_dir": str(folder.parent),
              "name": folder.name}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    t = t0 + i * 60.0
    speed = 1.0 / (lr ** 0.3)  # how fast the loss falls
    done = epochs if status == "finished" else rng.randint(1, epochs - 1)
    best_loss, best_acc = float("inf"), None
    with open(folder / "metrics.jsonl", "w") as f:
        f.write(_event("started", t, name=folder.name, run_dir=str(folder), config=config,
                       dataset={"name": "mnist", "task": "classification", "input_shape": [28, 28, 1],
                                "num_outputs": 10, "class_names": [str(k) for k in range(10)],
                                "sizes": {"train": 54000, "val": 6000, "test": 10000}, "normalizer": "scale"},
                       model="(model summary)", layers=[{"name": n, "kind": k, "describe": k, "output_shape": s,
                                                         "params": p} for n, k, s, p in LAYERS],
                       num_params=sum(p for *_, p in LAYERS), steps_per_epoch=steps_per_epoch,
                       total_steps=steps_per_epoch * epochs, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, hyperparams={"lr": lr}, lr=lr, resumed=False, epoch=0, step=0,
                       thread_mode="blas", pid=100000 + i))
        f.write(_event("compiling", t + 0.1, message="compiling kernels"))
        f.write(_event("compiled", t + 1.0, seconds=0.9))
        t += 1.0
        for e in range(1, done + 1):
            for s in range((e - 1) * steps_per_epoch + 1, e * steps_per_epoch + 1):
                if s % log_every and s != e * steps_per_epoch:
                    continue
                t += 0.02 * log_every
                loss = 2.3 / (1 + speed * s / 500) + rng.random() * 0.05
                f.write(_event("step", t, step=s, epoch=round(s / steps_per_epoch, 4), loss=loss, penalty=0.0,
                               accuracy=min(1.0, 1 - loss / 2.5), lr=lr, samples_per_second=3000 + rng.random() * 100,
                               batches=log_every))
                if s % stats_every == 0:
                    f.write(_event("layer_stats", t, step=s, epoch=e - 1, layers=[
                        {"name": n, "kind": k, "describe": k, "output_shape": sh, "params": p, "weight_mean": 0.001,
                         "weight_std": 0.05, "weight_min": -0.2, "weight_max": 0.2, "grad_norm": 0.1,
                         "weight_norm": 3.2, "update_ratio": 0.001, "flag": ""} for n, k, sh, p in LAYERS if p]))
            val_loss = 2.3 / (1 + speed * e * steps_per_epoch / 450) + dropout * 0.05
            val_acc = min(1.0, 1 - val_loss / 2.6)
            if val_loss < best_loss:
                best_loss, best_acc = val_loss, val_acc
            f.write(_event("epoch", t, epoch=e, step=e * steps_per_epoch, train_loss=loss, train_accuracy=1 - loss / 2.5,
                           val_loss=val_loss, val_accuracy=val_acc, lr=lr, seconds=5.0, samples_per_second=3050.0))
            f.write(_event("confusion", t, epoch=e, split="val", class_names=[str(k) for k in range(10)],
                           matrix=[[540 if r == c else 6 for c in range(10)] for r in range(10)]))
            f.write(_event("checkpoint_saved", t, path=str(folder / "latest.npz"), kind="latest",
                           step=e * steps_per_epoch, epoch=e))
        if status == "finished":
            f.write(_event("finished", t + 2, test_accuracy=best_acc, test_loss=best_loss, epochs=done,
                           steps=done * steps_per_epoch, train_seconds=done * 5.0, samples_per_second=3050.0,
                           best_val_accuracy=best_acc, best_epoch=done, run_dir=str(folder)))
        elif status == "stopped":
            f.write(_event("stopped", t + 1, reason="user", step=done * steps_per_epoch, epoch=done,
                           checkpoint=None, run_dir=str(folder)))
    (folder / "status.json").write_text(json.dumps({
        "name": folder.name, "status": status, "pid": 100000 + i, "dataset": "mnist", "model": config["model"],
        "optimizer": optimizer, "epoch": done, "epochs": epochs, "step": done * steps_per_epoch,
        "best_val_accuracy": best_acc, "best_val_loss": best_loss,
        "test_accuracy": best_acc if status == "finished" else None, "train_seconds": done * 5.0,
        "started": t0 + i * 60.0, "updated": t + 2}, indent=2))


def make_runs(root: str | Path, n: int = 300, epochs: int = 20, steps_per_epoch: int = 250) -> Path:
    """A runs folder of ``n`` synthetic runs: most finished, some stopped, some 'running' with a dead trainer."""
    root = Path(root)
    for i in range(n):
        status = "stopped" if i % 10 == 3 else "running" if i % 25 == 7 else "finished"
        make_run(root / f"run-{i:03d}", i, epochs, steps_per_epoch, status=status)
    return root


def _rss() -> int:
    """Resident set size now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_all(root: Path, max_points: int):
    """load_runs, then a CurveReader per run with its first poll; returns (records, readers, seconds each)."""
    from tuinet.training.compare import load_runs
    from tuinet.training.curves import CurveReader

    t0 = time.perf_counter()
    records = load_runs(root)
    t1 = time.perf_counter()
    readers = [CurveReader(r.metrics_path, max_points=max_points) for r in records]
    for rd in readers:
        rd.poll()
        rd.curves()
    t2 = time.perf_counter()
    return records, readers, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps-per-epoch", type=int, default=250)
    ap.add_argument("--max-points", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import tuinet.training.compare  # noqa: F401  (imports are not what is measured)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_runs(Path(tmp) / "runs", args.runs, args.epochs, args.steps_per_epoch)
        files = list(root.glob("*/metrics.jsonl"))
        size = sum(p.stat().st_size for p in files)
        lines = sum(1 for p in files for _ in open(p, "rb"))
        print(f"{args.runs} runs, {args.epochs} epochs x {args.steps_per_epoch} steps, a step event every 25 steps: "
              f"metrics.jsonl {size / len(files) / 1024:.0f} KiB and {lines // len(files)} lines per run, "
              f"{size / 2**20:.1f} MiB in all (page cache warm)")

        gc.collect()
        rss0, max0 = _rss(), _maxrss()
        loads, curves, polls, appends = [], [], [], []
        kept = None
        for rnd in range(args.rounds):
            kept = None
            gc.collect()
            records, readers, t_load, t_curves = read_all(root, args.max_points)
            loads.append(t_load)
            curves.append(t_curves)
            t0 = time.perf_counter()
            for rd in readers:
                rd.poll()
            polls.append(time.perf_counter() - t0)
            for r in records[::10]:  # a tenth of the runs get two more step events
                with open(r.metrics_path, "a") as f:
                    for k in (1, 2):
                        f.write(_event("step", time.time(), step=10**6 + rnd * 10 + k, epoch=99.0, loss=0.1,
                                       accuracy=0.9, lr=0.01, batches=25))
            t0 = time.perf_counter()
            changed = sum(rd.poll() for rd in readers)
            appends.append(time.perf_counter() - t0)
            kept = (records, readers)
        rss_kept = _rss() - rss0
        peak_growth = _maxrss() - max0
        points = sum(len(c.y) for rd in kept[1] for c in rd.curves().values())
        kept = records = readers = None
        gc.collect()

        tracemalloc.start()
        records, readers, *_ = read_all(root, args.max_points)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms (min {min(xs) * 1000:.0f})"  # noqa: E731
    print(f"load_runs (the table, {args.runs} records):        {ms(loads)}")
    print(f"first poll of every run's curves:             {ms(curves)}")
    print(f"  table + curves together:                    {statistics.median(a + b for a, b in zip(loads, curves)) * 1000:.0f} ms")
    print(f"second poll, nothing new:                     {ms(polls)}")
    print(f"poll after appends to {changed} runs:              {ms(appends)}")
    print(f"points kept: {points} in all ({points / args.runs:.0f} per run, at most {args.max_points} per series)")
    print(f"memory: peak RSS growth {peak_growth / 2**20:.1f} MiB; resident growth with the readers kept "
          f"{rss_kept / 2**20:.1f} MiB")
    print(f"tracemalloc: peak {peak / 2**20:.1f} MiB, retained by {args.runs} records + readers "
          f"{current / 2**20:.1f} MiB ({current / args.runs / 1024:.0f} KiB per run)")


if __name__ == "__main__":
    main()
