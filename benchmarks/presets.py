"""Every preset against its PyTorch twin, at batch 64 and 256, beside the machine's measured peak.

Run ``python -m benchmarks.presets`` (``--help`` for options). It measures the machine once (CPU, vector width,
BLAS kernel, FMA-loop and sgemm GFLOP/s), then runs ``tuinet bench`` for each preset and batch size (tuinet and
PyTorch in their own processes, rounds alternated A B A B, medians), and ends with one table: samples/s of both,
the ratio, GFLOP/s and the share of the measured peaks, then the GEMM-only ceiling (the preset's matrix products
alone, back to back through BLAS, timed in the same rounds) and tuinet's share of it. When ``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` is set,
the dense rows are measured a second time in a child process with both unset (OpenBLAS then picks its kernel
for the CPU itself), so the report shows both settings; this script changes them for that child only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date

from tuinet.bench.peak import OPENBLAS_VARS, describe_machine, measure_machine
from tuinet.bench.throughput import run_bench

#: timed steps per round for each preset (about a second a round on a 2-core machine)
STEPS = {"mlp": 300, "cnn": 40, "lenet": 150, "resnet": 12}


def run_all(models: list[str], batches: list[int], rounds: int, machine: dict) -> list[dict]:
    """``tuinet bench`` for each model and batch size; the results, each with its report printed."""
    rows = []
    for model in models:
        for b in batches:
            steps = max(5, STEPS.get(model, 50) * 64 // b)
            rows.append(run_bench(model=model, batch_size=b, steps=steps, rounds=rounds, machine=machine))
            print(flush=True)
    return rows


def table(rows: list[dict], label: str = "") -> list[str]:
    """The summary lines: one per model and batch size."""
    nan = float("nan")
    out = [f"{'preset':8s} {'batch':>5s} {'tuinet/s':>10s} {'PyTorch/s':>10s} {'ratio':>6s} {'GFLOP/s':>8s} "
           f"{'of sgemm':>8s} {'of FMA peak':>11s} {'GEMMs GFLOP/s':>13s} {'of sgemm':>8s} {'tuinet of GEMMs':>15s}"
           f"  {label}"]
    for r in rows:
        torch = r.get("pytorch_samples_per_second")
        out.append(f"{r['model']:8s} {r['batch_size']:>5d} {r['tuinet_samples_per_second']:>10,.0f} "
                   f"{torch or nan:>10,.0f} {r.get('ratio_vs_pytorch', nan):>5.2f}x "
                   f"{r['tuinet_gflops']:>8.1f} {r.get('tuinet_share_of_sgemm', nan):>8.0%} "
                   f"{r.get('tuinet_share_of_peak', nan):>11.0%} {r.get('gemm_ceiling_gflops', nan):>13.1f} "
                   f"{r.get('gemm_ceiling_share_of_sgemm', nan):>8.0%} "
                   f"{r.get('tuinet_share_of_gemm_ceiling', nan):>15.0%}")
    return out


def main(argv=None) -> list[dict]:
    """Measure, run, print the table (and, with OPENBLAS settings found, the dense rows without them)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,cnn,lenet,resnet")
    p.add_argument("--batches", default="64,256")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dense-models", default="mlp", help="models measured again with OPENBLAS_* unset")
    p.add_argument("--json", action="store_true", help="end with one JSON line of every result")
    args = p.parse_args(argv)
    models, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    machine = measure_machine()
    head = describe_machine(machine)
    print("\n".join(head) + "\n", flush=True)
    rows = run_all(models, batches, args.rounds, machine)
    found = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    unset_rows: list[dict] = []
    dense = [m for m in args.dense_models.split(",") if m]
    if found and dense:
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        cmd = [sys.executable, "-m", "benchmarks.presets", "--models", ",".join(dense), "--batches", args.batches,
               "--rounds", str(args.rounds), "--dense-models", "", "--json"]
        print(f"again with {', '.join(found)} unset: {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:next(i for i, line in enumerate(lines) if line.startswith("Summary"))]))
        unset_rows = json.loads(lines[-1])["rows"]
    print(f"\nSummary ({date.today().isoformat()}, load average {os.getloadavg()[0]:.2f})")
    print("\n".join(head))
    print("\n".join(table(rows, "settings as found: " + (", ".join(f"{k}={v}" for k, v in found.items())
                                                         or "OPENBLAS_* unset"))))
    if unset_rows:
        print("\n".join(table(unset_rows, "OPENBLAS_* unset")[1:]))
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows, "unset_rows": unset_rows}))
    return rows


if __name__ == "__main__":
    main()
