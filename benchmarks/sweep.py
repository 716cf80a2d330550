"""Benchmark sweeps: a 16-trial sweep on digits with 1 worker, with the default workers (one per core) and on a
two-node local Ray cluster; the epochs pruning saved; each trial's training throughput against a single run.

Run: ``python -m benchmarks.sweep [--trials 16] [--epochs 20] [--rounds 1] [--no-ray]``. Each configuration runs
``tuinet sweep SPEC --json`` as a process (fresh sweep folder, same seeds), rounds alternating the configurations
(A B C A B C …) because these machines are noisy; figures are medians. The Ray cluster (``ray.cluster_utils.Cluster``,
one CPU per node, bound to 127.0.0.1 by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) is started once, and its start-up
time is reported apart from the sweep's wall time.

Throughput per trial is the trainer's own ``samples_per_second`` from each complete trial's ``finished`` event (one
thread, pinned to one core, while the other trials run on the other cores); the single run is ``tuinet train`` of
the SPEC's first model alone on the machine with the default thread settings (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: loopback only

SPEC = """
[train]
dataset = "digits"
epochs = {epochs}
keep_epochs = 0
[search]
lr = {{log_uniform = [1e-4, 1e-1]}}
dropout = {{uniform = [0.0, 0.5]}}
optimizer = {{choice = ["adam", "sgd"]}}
model = {{choice = ["mlp", "128,64"]}}
[sweep]
objective = "val_loss"
trials = {trials}
sampler = "tpe"
pruner = "median"
"""


def _tuinet(*args: str) -> tuple[float, list[dict]]:
    """Run ``tuinet ARGS --json``; returns (wall seconds, the JSON events)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tuinet.cli.entry", *args, "--json"], capture_output=True,
                         text=True, check=True).stdout
    wall = time.perf_counter() - t0
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return wall, events


def run_sweep(spec: Path, runs: Path, extra: list[str]) -> dict:
    """One sweep; returns its wall time, epochs run and saved, trial counts and per-trial samples/s."""
    wall, events = _tuinet("sweep", str(spec), "--runs-dir", str(runs), *extra)
    fin = events[-1]
    rates = []
    for d in runs.glob("*-t*"):
        for line in (d / "metrics.jsonl").read_text().splitlines():
            e = json.loads(line)
            if e.get("event") == "finished" and e.get("samples_per_second"):
                rates.append(e["samples_per_second"])
    return {"wall": wall, "epochs_run": fin["epochs_run"], "epochs_saved": fin["epochs_saved"],
            "epochs_full": fin["epochs_full"], "counts": fin["counts"],
            "trial_rate": statistics.median(rates) if rates else float("nan")}


def single_run(epochs: int, runs: Path) -> float:
    """samples/s of one `tuinet train` of the SPEC's mlp on digits, alone, default threads."""
    _wall, events = _tuinet("train", "--dataset", "digits", "--model", "mlp", "--epochs", str(epochs),
                            "--keep-epochs", "0", "--runs-dir", str(runs))
    return next(e["samples_per_second"] for e in events if e.get("event") == "finished")


def main(argv: list[str] | None = None) -> None:
    """Print the table of figures."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true", help="leave out the Ray cluster")
    args = ap.parse_args(argv)
    from tuinet.sweep.local import default_workers

    tmp = Path(tempfile.mkdtemp(prefix="tuinet-sweep-bench-"))
    spec = tmp / "bench.toml"
    spec.write_text(SPEC.format(epochs=args.epochs, trials=args.trials))
    configs: dict[str, list[str]] = {"1 worker": ["--workers", "1"],
                                     f"default ({default_workers()} workers)": []}
    cluster = None
    if not args.no_ray:
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        print(f"Ray cluster (2 nodes, 1 CPU each) started in {time.perf_counter() - t0:.1f} s", flush=True)
        configs["Ray, 2 local nodes"] = ["--ray", cluster.address]
    results: dict[str, list[dict]] = {k: [] for k in configs}
    single: list[float] = []
    try:
        n = 0
        for _ in range(args.rounds):
            for name, extra in configs.items():
                n += 1
                r = run_sweep(spec, tmp / f"runs-{n}", extra)
                results[name].append(r)
                print(f"  {name}: {r['wall']:.1f} s, {r['counts']}", flush=True)
            single.append(single_run(args.epochs, tmp / "single"))
    finally:
        if cluster is not None:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
    print(f"\n{args.trials}-trial sweep on digits, {args.epochs} epochs each, TPE + median pruner "
          f"(median of {args.rounds} round(s))")
    print(f"{'configuration':<24} {'wall s':>8} {'epochs run':>11} {'saved by pruning':>17} {'samples/s per trial':>20}")
    for name, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        saved = f"{med('epochs_saved'):.0f} of {med('epochs_full'):.0f}"
        print(f"{name:<24} {med('wall'):>8.1f} {med('epochs_run'):>11.0f} {saved:>17} {med('trial_rate'):>20,.0f}")
    print(f"single run alone (mlp, all cores): {statistics.median(single):,.0f} samples/s")


if __name__ == "__main__":
    main()
