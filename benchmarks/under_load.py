"""Training throughput when another CPU-bound process starts on the same cores mid-run.

Run ``python -m benchmarks.under_load [--model mlp] [--batch-size 64] [--seconds 12] [--rounds 2]``. Each run trains
on random MNIST-shaped batches in its own process, with the trainer's step loop (forward, backward, optimizer
step, each step timed and handed to the thread tuner). After ``--quiet`` seconds a competing process (a Python
busy loop, one core) starts and runs to the end. Three settings are alternated run by run (A B C A B C):

* ``tuned``: the thread tuner as the trainer uses it (probes, and falls back to one thread on a collapse);
* ``previous``: the tuner as it was before collapse detection (no collapse watch, and after choosing one thread
  it probes again only after 30 s of training);
* ``single``: one thread for BLAS and Numba, never switched.

Printed per setting (medians over rounds): samples/s before the competitor, after it, the worst one-second window
after it, and how long after the competitor started the tuner switched to one thread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

SETTINGS = ("tuned", "previous", "single")


def _train(conn, setting: str, model_spec: str, batch_size: int, seconds: float) -> None:
    """Train for ``seconds`` after warm-up; send back (time, samples) of every step and the tuner's switches."""
    os.environ.pop("TUINET_THREAD_MODE", None)
    os.environ["TUINET_THREAD_TUNING"] = "1"
    if setting == "single":
        os.environ["TUINET_THREAD_MODE"] = "single"
    from tuinet.bench.throughput import _batches
    from tuinet.engine import build_model, make_optimizer
    from tuinet.engine.threads import ThreadTuner

    model = build_model(model_spec, (28, 28, 1), 10)
    opt = make_optimizer("adam", model.params)
    xs, ys = _batches(model.input_shape, 10, batch_size)
    for i in range(3):  # compile (or load from the cache) before the clock starts
        model.train_step(xs[i], ys[i], opt)
    previous = dict(collapse_factor=None, recheck_seconds=30.0) if setting == "previous" else {}
    tuner = ThreadTuner(model, **previous)
    conn.send("ready")
    conn.recv()  # go
    steps, switches = [], []
    t_end = time.perf_counter() + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= t_end:
            break
        model.compute_gradients(xs[i % len(xs)], ys[i % len(ys)])
        opt.step(model.grads)
        t1 = time.perf_counter()
        steps.append((t1, batch_size))
        chosen = tuner.record(t1 - t0, batch_size)
        if chosen is not None:
            switches.append((t1, chosen, tuner.last_reason))
        i += 1
    conn.send({"steps": steps, "switches": switches})


def _rate(steps, start: float, end: float) -> float:
    n = sum(s for t, s in steps if start <= t < end)
    return n / max(end - start, 1e-9)


def one_run(setting: str, args) -> dict:
    """One training run of ``setting`` with a competitor started after ``args.quiet`` seconds."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_train, args=(child, setting, args.model, args.batch_size, args.seconds), daemon=True)
    proc.start()
    assert parent.recv() == "ready"
    time.sleep(0.3)  # let the parent's own start-up settle
    parent.send("go")
    t_go = time.perf_counter()
    time.sleep(args.quiet)
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    t_load = time.perf_counter()
    try:
        result = parent.recv()
    finally:
        competitor.kill()
        competitor.wait()
        proc.join(10)
    steps = result["steps"]
    t_end = steps[-1][0] if steps else t_load
    windows = [_rate(steps, t, t + 1.0) for t in frange(t_load, t_end - 1.0, 0.25)]
    fallback = [t - t_load for t, mode, _ in result["switches"] if t >= t_load and mode == "single"]
    return {"setting": setting, "before": _rate(steps, t_go + min(1.0, args.quiet / 2), t_load), "after": _rate(steps, t_load, t_end),
            "worst_second": min(windows) if windows else float("nan"),
            "fallback_after": fallback[0] if fallback else None,
            "switches": [(round(t - t_load, 2), m, why) for t, m, why in result["switches"]]}


def frange(a: float, b: float, step: float):
    """a, a + step, ... below b."""
    while a < b:
        yield a
        a += step


def main(argv=None) -> dict:
    """Run the rounds, print the medians (and every run with ``--verbose``), return them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=12.0, help="training time of each run")
    p.add_argument("--quiet", type=float, default=4.0, help="seconds before the competitor starts")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    settings = args.settings.split(",")
    runs: dict[str, list[dict]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            r = one_run(s, args)
            runs[s].append(r)
            if args.verbose:
                print(json.dumps(r))
    out = {"model": args.model, "batch_size": args.batch_size, "cores": len(os.sched_getaffinity(0)),
           "load_average": round(os.getloadavg()[0], 2), "settings": {}}
    for s, rs in runs.items():
        falls = [r["fallback_after"] for r in rs if r["fallback_after"] is not None]
        out["settings"][s] = {k: statistics.median(r[k] for r in rs) for k in ("before", "after", "worst_second")}
        out["settings"][s]["fallback_after"] = statistics.median(falls) if falls else None
        out["settings"][s]["fell_back"] = f"{len(falls)}/{len(rs)}"
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.model}, batch {args.batch_size}, {out['cores']} cores, {args.rounds} rounds x "
              f"{args.seconds:g} s, competitor from {args.quiet:g} s (load average {out['load_average']})")
        print(f"  {'setting':12s} {'before':>10s} {'after':>10s} {'worst 1 s':>10s}  fallback (s after load)")
        for s, r in out["settings"].items():
            fb = f"{r['fallback_after']:.2f} ({r['fell_back']})" if r["fallback_after"] is not None else \
                f"- ({r['fell_back']})"
            print(f"  {s:12s} {r['before']:>10,.0f} {r['after']:>10,.0f} {r['worst_second']:>10,.0f}  {fb}")
    return out


if __name__ == "__main__":
    main()
