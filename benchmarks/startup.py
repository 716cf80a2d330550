"""Warm start: from process start to the end of the first training step, phase by phase.

Run ``python -m benchmarks.startup`` (``--help`` for options). Each run is ``tuinet train --headless --json
--epochs 1`` (the whole dataset unless ``--limit N``) in a fresh process, with the kernels already in Numba's cache
(one warm-up run per model first; ``--warmup 0`` to skip), ended right after the first step's ``compiled`` event.
The child process starts through a small bootstrap that records, without changing what tuinet does:

- ``interpreter``: from spawning the process to the bootstrap's first line (Python's own start, ``site``, .pth files);
- ``imports``: from there to the trainer's ``prepare()`` (the command line's imports, parsing, the config; the
  training commands load the data in a background thread meanwhile);
- ``data`` and ``model``: ``prepare()``'s data load (or its wait for the background load) and model build
  (``_load_data``, ``_build``);
- ``to step``: from the end of ``prepare()`` to the ``compiling`` event (run folder, session thread, thread tuner,
  the ``started`` event);
- ``first step``: the ``compiled`` event's ``seconds`` (the first step, its kernels loaded from the cache);
- ``cache loads``: kernels Numba loaded from its cache before the first step ended, their count and total time
  (top-level ``Dispatcher`` compiles that compiled nothing; they fall inside the phases above);
- ``app start`` (``--app`` only): from the end of ``prepare()`` to the app's first frame (Textual's import, the
  app's widgets, styles and first render; the app starts training once that frame is on the screen);
- ``total``: from spawning the process to the ``compiled`` event;
- ``cpu``: the CPU time (user + system, all threads) the process used by then: the work, whatever the overlap.
  On a loaded machine (no idle core) the total follows it; on an idle one, the longest chain of work.

With ``--app`` each run is ``tuinet train --epochs 1`` in the live app instead, on a 120x40 pseudo-terminal that
the benchmark reads and discards (what a user starts; ``to step`` then counts from the first frame).

Runs alternate between the models (and, with ``--base TREE``, between that source tree and this one: base, this,
base, this, ...) and every figure is a median. ``--importtime`` adds as many runs under ``python -X importtime`` and
prints the median import time per module group (self times summed, imports until the first step's end; the tracing
itself slows imports a little, so these runs are not in the phase figures). Timings are figures to read, not to pass
or fail: this machine is shared and noisy, so the load average is printed with them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

#: the child's bootstrap: marks times, wraps a few trainer methods and Numba's dispatcher once they are imported
#: (an import hook, so the import order is tuinet's own), then runs the ``tuinet`` console script
BOOTSTRAP = r'''
import time as _t
T_BOOT = _t.time()
import importlib.abc, json, os, sys
MARKS = {"boot": T_BOOT}
LOADS = []  # (name, seconds, compiled) of top-level dispatcher compiles before the first step's end
STATE = {"depth": 0, "stepped": False}

def _patch_numba(mod):
    import numba.core.event as ev
    from numba.core.dispatcher import Dispatcher
    orig = Dispatcher._compile_for_args
    compiled = []
    class _L(ev.Listener):
        def on_start(self, event): compiled.append(1)
        def on_end(self, event): pass
    listener = _L()
    ev.register("numba:compile", listener)
    def _compile_for_args(self, *args, **kws):
        if STATE["depth"] or STATE["stepped"]:
            return orig(self, *args, **kws)
        STATE["depth"] += 1
        n0, t0 = len(compiled), _t.perf_counter()
        try:
            return orig(self, *args, **kws)
        finally:
            STATE["depth"] -= 1
            LOADS.append((self.py_func.__qualname__, _t.perf_counter() - t0, len(compiled) > n0))
    Dispatcher._compile_for_args = _compile_for_args

def _timed(cls, name, key):
    orig = getattr(cls, name)
    def wrapper(self, *a, **k):
        t0 = _t.time()
        try:
            return orig(self, *a, **k)
        finally:
            MARKS.setdefault(key + "_start", t0)
            MARKS.setdefault(key + "_end", _t.time())
    setattr(cls, name, wrapper)

def _patch_trainer(mod):
    T = mod.Trainer
    _timed(T, "prepare", "prepare")
    _timed(T, "_load_data", "data")
    _timed(T, "_build", "model")
    orig_emit = T._emit
    def _emit(self, _kind, /, **fields):
        if _kind == "compiled":
            STATE["stepped"] = True
            MARKS.setdefault("compiled", _t.time())
            MARKS.setdefault("first_step", fields.get("seconds", 0.0))
            MARKS["cpu"] = sum(os.times()[:2])  # user + system seconds of every thread so far
            sys.stderr.write("\nSTARTUP-MARK compiled\n")
            sys.stderr.flush()
            orig_emit(self, _kind, **fields)
            _report()
            os._exit(0)  # measured: the first step's end; the rest of the run is not
        elif _kind == "compiling" and "kernel" not in fields:
            MARKS.setdefault("compiling", _t.time())
        return orig_emit(self, _kind, **fields)
    T._emit = _emit

def _patch_app(mod):
    orig = mod.start_session  # called once the app's first frame is drawn
    def start_session(session):
        MARKS.setdefault("first_frame", _t.time())
        return orig(session)
    mod.start_session = start_session

HOOKS = {"numba.core.dispatcher": _patch_numba, "tuinet.training.trainer": _patch_trainer,
         "tuinet.app.app": _patch_app}

class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module, hook = spec.loader.exec_module, HOOKS[name]
        def run(module):
            exec_module(module)
            hook(module)
        spec.loader.exec_module = run
        return spec

sys.meta_path.insert(0, _Hook())

def _report():
    sys.stdout.flush()
    with open(os.environ["STARTUP_REPORT"], "w") as f:
        json.dump({"marks": MARKS, "loads": LOADS}, f)

sys.argv = ["tuinet"] + json.loads(os.environ["STARTUP_ARGS"])
from tuinet.cli.entry import run
run()
'''

GROUPS = ("numpy", "numba", "llvmlite", "scipy", "textual", "rich", "optuna", "click", "PIL", "plotext", "apprise",
          "threadpoolctl")


def group_of(module: str) -> str:
    """The group an imported module's time is counted in: its top-level package, tuinet by subpackage."""
    parts = module.split(".")
    if parts[0] == "tuinet":
        return "tuinet." + parts[1] if len(parts) > 1 else "tuinet"
    return parts[0] if parts[0] in GROUPS else "other"


def import_groups(stderr: str) -> dict[str, float]:
    """Seconds of ``-X importtime`` self time per module group, for the imports before the first step's end."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith("STARTUP-MARK compiled"):
            break
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum, name = (s.strip() for s in line[len("import time:"):].split("|"))
        g = group_of(name)
        out[g] = out.get(g, 0.0) + int(self_us) / 1e6
    out["all"] = sum(out.values())
    return out


def _run_on_pty(cmd: list[str], env: dict[str, str], cwd: Path, size: tuple[int, int] = (120, 40)) -> int:
    """Run ``cmd`` with a pseudo-terminal of ``size`` (columns, rows) as its stdin, stdout and stderr, reading and
    discarding what it draws (a terminal nobody reads would fill and block the app); its exit code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    env = dict(env, TERM=env.get("TERM") or "xterm-256color")
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
    finally:
        os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:  # EIO once the child's side is closed
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(5)
        os.close(master)


def run_once(python: str, tree: str | None, model: str, workdir: Path, importtime: bool = False,
             limit: int | None = None, dataset: str | None = None, app: bool = False) -> dict[str, Any]:
    """One fresh process training ``model`` to the end of its first step (then it exits); its phase times.

    ``app``: in the live app on a pseudo-terminal instead of ``--headless --json`` (not with ``importtime``)."""
    if app and importtime:
        raise ValueError("-X importtime writes to stderr, which the app draws on: not both")
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    mode = [] if app else ["--headless", "--json"]
    args = ["train", *mode, "--epochs", "1", "--runs-dir", str(workdir / "runs"),
            *(["--dataset", dataset] if dataset else []),
            *(["--model", model] if model != "default" else []), *(["--limit", str(limit)] if limit else [])]
    env = dict(os.environ, STARTUP_REPORT=str(report), STARTUP_ARGS=json.dumps(args))
    if tree:
        env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python, *(["-X", "importtime"] if importtime else []), "-c", BOOTSTRAP]
    spawned = time.time()
    if app:
        code, stderr = _run_on_pty(cmd, env, workdir), "(drawn on the pseudo-terminal)"
    else:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, check=False)
        code, stderr = out.returncode, out.stderr
    if code != 0 or not report.exists():
        raise SystemExit(f"{model}: the run failed ({code}):\n{stderr[-3000:]}")
    rep = json.loads(report.read_text())
    m = rep["marks"]
    loads = [(name, s) for name, s, was_compiled in rep["loads"] if not was_compiled]
    frame = m.get("first_frame", m["prepare_end"])  # the app's first frame (headless: none, no time)
    result = {
        "interpreter": m["boot"] - spawned,
        "imports": m["prepare_start"] - m["boot"],
        "data": m["data_end"] - m["data_start"],
        "model": m["model_end"] - m["model_start"],
        "app start": frame - m["prepare_end"],
        "to step": m["compiling"] - frame,
        "first step": m["first_step"],
        "cache loads": sum(s for _, s in loads),
        "kernels loaded": len(loads),
        "kernels compiled": sum(1 for *_, c in rep["loads"] if c),
        "total": m["compiled"] - spawned,
        "cpu": m["cpu"],
        "load names": [name for name, _ in loads],
    }
    if importtime:
        result["groups"] = import_groups(stderr)
    return result


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


PHASES = ("interpreter", "imports", "data", "model", "app start", "to step", "first step", "cache loads",
          "kernels loaded", "total", "cpu")


def median_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per phase, one column per (label, model): medians of the runs."""
    labels = list(results)
    lines = ["phase".ljust(16) + "".join(label.rjust(18) for label in labels)]
    for phase in PHASES:
        cells = []
        for label in labels:
            vals = [r[phase] for r in results[label]]
            med = statistics.median(vals)
            cells.append((f"{med:.0f}" if phase == "kernels loaded" else f"{med:.3f} s").rjust(18))
        lines.append(phase.ljust(16) + "".join(cells))
    # the fastest run: closest to what an idle machine gives, where the background work overlaps fully
    lines.append("total, fastest".ljust(16) + "".join(f"{min(r['total'] for r in results[label]):.3f} s".rjust(18)
                                                      for label in labels))
    return lines


def group_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Median ``-X importtime`` self seconds per module group (groups above 5 ms in some column)."""
    labels = list(results)
    names = sorted({g for runs in results.values() for r in runs for g in r["groups"]})
    med = {(label, g): statistics.median(r["groups"].get(g, 0.0) for r in results[label])
           for label in labels for g in names}
    keep = [g for g in names if g != "all" and max(med[label, g] for label in labels) >= 0.005] + ["all"]
    keep.sort(key=lambda g: (g == "all", -max(med[label, g] for label in labels)))
    lines = ["imports (-X importtime)".ljust(24) + "".join(label.rjust(18) for label in labels)]
    for g in keep:
        lines.append(g.ljust(24) + "".join(f"{med[label, g]:.3f} s".rjust(18) for label in labels))
    return lines


def main(argv: list[str] | None = None) -> None:
    """Print the warm-start phases per model (and per tree with --base), medians of alternated runs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs per model and tree (default 5)")
    p.add_argument("--models", default="default,cnn", help="comma-separated: default (MNIST's mlp), cnn, ... "
                                                          "(default: default,cnn)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the install to measure (default: this)")
    p.add_argument("--tree", help="source tree to put first on PYTHONPATH (default: what --python imports)")
    p.add_argument("--base", help="a second source tree (e.g. a worktree of main) run alternately with this one")
    p.add_argument("--base-python", help="interpreter for --base, or alone: another install to run alternately "
                                         "(e.g. a venv with main installed)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs per model and tree first (default 1)")
    p.add_argument("--dataset", help="pass --dataset NAME (default: MNIST, the default run's)")
    p.add_argument("--limit", type=int, help="pass --limit N (default: the whole dataset, as a real run loads it)")
    p.add_argument("--importtime", action="store_true", help="also runs under -X importtime: time per module group")
    p.add_argument("--app", action="store_true", help="runs in the live app on a 120x40 pseudo-terminal instead of "
                                                      "--headless --json (not with --importtime)")
    p.add_argument("--verbose", action="store_true", help="print every run and the kernels loaded")
    args = p.parse_args(argv)
    if args.app and args.importtime:
        p.error("--app and --importtime: -X importtime writes to stderr, which the app draws on")
    models = args.models.split(",")
    trees: list[tuple[str, str, str | None]] = [("this", args.python, args.tree)]
    if args.base or args.base_python:  # a source tree, or another install (its own interpreter)
        trees.insert(0, ("base", args.base_python or args.python, args.base))
    results: dict[str, list[dict[str, Any]]] = {}
    importtimes: dict[str, list[dict[str, Any]]] = {}
    loads_before = load_average()
    with tempfile.TemporaryDirectory(prefix="tuinet-startup-") as tmp:
        work = Path(tmp)
        for _ in range(args.warmup):
            for model in models:
                for _label, python, tree in trees:
                    run_once(python, tree, model, work, limit=args.limit, dataset=args.dataset, app=args.app)
        for i in range(args.runs):
            for model in models:
                for label, python, tree in trees:
                    key = f"{label}:{model}" if len(trees) > 1 else model
                    r = run_once(python, tree, model, work, limit=args.limit, dataset=args.dataset, app=args.app)
                    results.setdefault(key, []).append(r)
                    if args.verbose:
                        print(f"run {i} {key}: total {r['total']:.3f} s, imports {r['imports']:.3f} s, "
                              f"loads {r['kernels loaded']} in {r['cache loads']:.3f} s, load {load_average()}",
                              flush=True)
                    if args.importtime:
                        importtimes.setdefault(key, []).append(run_once(python, tree, model, work, importtime=True,
                                                                              limit=args.limit,
                                                                              dataset=args.dataset))
    print(f"warm start to the end of the first step{' in the app (120x40)' if args.app else ''}, medians of "
          f"{args.runs} runs; python {args.python}"
          + "".join(f", {label}: {python} {tree or ''}" for label, python, tree in trees[:-1]))
    print(f"load average before {loads_before}, after {load_average()}")
    print("\n".join(median_table(results)))
    if any(r["kernels compiled"] for runs in results.values() for r in runs):
        print("note: some runs compiled kernels (not all were in the cache): run again")
    if args.importtime:
        print("\n".join(group_table(importtimes)))
    if args.verbose:
        for key, runs in results.items():
            print(f"{key}: kernels loaded before the first step's end: {', '.join(runs[-1]['load names'])}")
    print(json.dumps({"load_average": load_average(), "medians": {
        key: {ph: statistics.median(r[ph] for r in runs) for ph in PHASES} for key, runs in results.items()}}))


if __name__ == "__main__":
    main()
