"""A first run: the first training step on an empty Numba cache, with the compile helper and without it.

Run ``python -m benchmarks.first_run [--models cnn,resnet] [--pairs 3]``. Each run is ``tuinet train --headless
--json --model M --epochs 1 --limit 256`` in a fresh process with its own empty ``NUMBA_CACHE_DIR``; runs without
the helper (``TUINET_COMPILE_HELPER=0``) and with it alternate (off, on, off, on, ...). Printed per run: the first
step's ``compiled`` seconds (from the step's start to its end: what the user waits for), the whole process's wall
time, the CPU time of the process and its children (the helper included), and how many kernels the helper put into
the cache. Timings are figures to read, not to pass or fail: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(model: str, helper: bool, limit: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tuinet-first-run-") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "cache"), TUINET_COMPILE_HELPER="1" if helper else "0")
        cmd = [sys.executable, "-m", "tuinet.cli", "train", "--headless", "--json", "--model", model, "--epochs", "1",
               "--limit", str(limit), "--runs-dir", os.path.join(tmp, "runs")]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    compiled = next(json.loads(line) for line in out.splitlines() if '"event":"compiled"' in line.replace(" ", ""))
    return {"model": model, "helper": helper, "first_step": compiled["seconds"], "wall": wall,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "helper_kernels": compiled.get("helper_kernels")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cnn,resnet")
    ap.add_argument("--pairs", type=int, default=3, help="runs without and with the helper, alternated")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    runs = []
    for model in args.models.split(","):
        for _ in range(args.pairs):
            for helper in (False, True):
                r = one_run(model, helper, args.limit)
                runs.append(r)
                print(f"{model:8} helper {'on ' if helper else 'off'}  first step {r['first_step']:6.1f} s  "
                      f"wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s"
                      + (f"  helper kernels {r['helper_kernels']}" if r["helper_kernels"] is not None else ""),
                      flush=True)
    load1 = os.getloadavg()
    print(f"load average before {' '.join(f'{x:.2f}' for x in load0)}, after {' '.join(f'{x:.2f}' for x in load1)}")
    summary = {}
    for model in args.models.split(","):
        for helper in (False, True):
            rs = [r for r in runs if r["model"] == model and r["helper"] == helper]
            summary[f"{model} helper {'on' if helper else 'off'}"] = {
                k: round(statistics.median(r[k] for r in rs), 2) for k in ("first_step", "wall", "cpu")}
        off, on = summary[f"{model} helper off"], summary[f"{model} helper on"]
        print(f"{model}: first step median {off['first_step']:.1f} -> {on['first_step']:.1f} s "
              f"({on['first_step'] / off['first_step']:.2f}x), cpu {off['cpu']:.1f} -> {on['cpu']:.1f} s")
    if args.json:
        print(json.dumps({"runs": runs, "medians": summary, "load_average": [load0, load1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
