"""Benchmark the app's cost: training throughput with the app open vs headless, and key latency while training.

Run: ``python -m benchmarks.app_cost [--rounds 3] [--epochs 1] [--limit N]``. Rounds alternate headless and app runs
(A B A B …) because these machines are noisy; the figures are medians. The app runs in Textual's headless mode at
120x40, so it lays out and renders every frame as on a terminal, without writing to one.

Throughput is the trainer's own ``samples_per_second`` (samples / time inside training steps) and also the wall
time of the epoch loop. Key latency is measured from a key event handed to the app (as its driver hands it,
:func:`tuinet.app.testing.send_key`) to (a) the action having run and the screen updated ("answer"), and (b) the
trainer having applied the command and the app showing its confirmation ("effect"); keys are + and - alternately,
twice a second while training runs.

``--ab`` compares drawing and not drawing within one run (see :func:`_run_ab`); ``--ab --tab inspector`` (or
``predictions``, ``boundary`` with a 2-D ``--dataset``, ``compare``) does it with that tab shown, whose panels draw
pictures and tables as the trainer sends them. ``--ab --tab draw`` keeps the screen drawing and alternates a digit on
the Draw tab's canvas (the trainer answering it as it learns, the tab redrawing its answer and the layers) with an
empty canvas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np

from tuinet.training.config import TrainConfig
from tuinet.protocol import make_command
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer


def _config(args, tmp: str) -> TrainConfig:
    return TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, limit=args.limit,
                       batch_size=args.batch_size, runs_dir=tmp, on_divergence="pause")


def run_headless(args, tmp: str) -> dict:
    """One headless run (a Session and no listener, as ``tuinet train --headless --json`` minus printing)."""
    session = Session(Trainer(_config(args, tmp)))
    t0 = time.perf_counter()
    session.start()
    session.join()
    wall = time.perf_counter() - t0
    fin = session.last["finished"]
    return {"samples_per_second": fin["samples_per_second"], "train_seconds": fin["train_seconds"], "wall": wall}


async def _run_app(args, tmp: str, keys: bool, switch_interval: float | None = None) -> dict:
    from tuinet.app.app import TuinetApp
    from tuinet.app.testing import send_key

    session = Session(Trainer(_config(args, tmp)))
    app = TuinetApp(session, config=session.trainer.config, switch_interval=switch_interval)
    answers: list[float] = []
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        n = 0
        c0 = w0 = None  # CPU of the UI thread (the event loop runs here) once steps flow, start-up excluded
        while not app.state.done:
            await asyncio.sleep(0.5)
            if c0 is None and app.state.step > 0 and not app.state.compiling:
                c0, w0 = time.thread_time(), time.perf_counter()
            if keys and session.running and not app.state.compiling and app.state.step > 0:
                key = "plus" if n % 2 == 0 else "minus"
                n += 1
                before = len(app.latencies)
                k0 = time.perf_counter()
                send_key(app, key)
                while "lr_changed" not in app.pending and len(app.latencies) == before:
                    await asyncio.sleep(0.002)
                    if time.perf_counter() - k0 > 5:  # the run ended before the key was handled
                        break
                else:
                    answers.append(time.perf_counter() - k0)
        wall = time.perf_counter() - t0
        ui_cpu = (time.thread_time() - c0) / (time.perf_counter() - w0) if c0 is not None else float("nan")
        await pilot.pause(0.1)
    fin = session.last["finished"]
    effects = [s for what, s in app.latencies if what.startswith("lr")]
    return {"samples_per_second": fin["samples_per_second"], "train_seconds": fin["train_seconds"], "wall": wall,
            "answers": answers, "effects": effects, "redraws": app.redraws, "ui_cpu": ui_cpu}


async def _run_ab(args, tmp: str, phase_seconds: float, phases: int) -> dict:
    """One long app run whose redraw timer is paused and resumed every ``phase_seconds`` (off, on, off, on …).

    The trainer's own counters (samples and seconds inside steps) are read at each phase boundary, so each phase
    gives a throughput with the app drawing and without. Alternating every few seconds inside one run cancels the
    slow swings of a shared machine that make separate runs hard to compare.
    """
    from tuinet.app.app import TuinetApp

    session = Session(Trainer(_config(args, tmp)))
    trainer = session.trainer
    app = TuinetApp(session, config=trainer.config, switch_interval=args.switch_interval or None)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    async with app.run_test(size=(120, 40)) as pilot:
        while not (trainer.samples_seen > 0 and not app.state.compiling) and not app.state.done:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # past the thread probe at the start
        if args.tab != "dashboard":
            app.action_show_tab(args.tab)
            await asyncio.sleep(1.0)
        canvas = seven = None
        if args.tab == "draw":
            from tuinet.app.widgets.drawpad import DrawCanvas, stroke

            canvas = app.query_one(DrawCanvas)
            seven = np.zeros_like(canvas.ink)
            for a, b in (((6.0, 7.0), (6.0, 20.0)), ((6.0, 20.0), (23.0, 12.0)), ((14.0, 11.0), (14.0, 19.0))):
                stroke(seven, a, b)
            # one answer before the phases: its first one compiles the layer-by-layer kernels (seconds on a cold
            # cache), which no phase should measure
            canvas.set_ink(seven)
            t0 = time.perf_counter()
            while not (app.state.probe or {}).get("probs") and time.perf_counter() - t0 < 120 and not app.state.done:
                await asyncio.sleep(0.1)
            canvas.clear()
            await asyncio.sleep(0.5)
        for i in range(phases):
            if app.state.done:
                break
            mode = "off" if i % 2 == 0 else "on"
            if canvas is not None:  # the Draw tab: a digit on the canvas, or none (the screen draws all along)
                canvas.set_ink(seven) if mode == "on" else canvas.clear()
            else:
                (app.drain_timer.pause if mode == "off" else app.drain_timer.resume)()
            n0, s0, c0, w0 = trainer.samples_seen, trainer.train_seconds, time.thread_time(), time.perf_counter()
            await asyncio.sleep(phase_seconds)
            n1, s1 = trainer.samples_seen, trainer.train_seconds
            if s1 > s0 and not app.state.done:
                rates[mode].append((n1 - n0) / (s1 - s0))
                cpu[mode].append((time.thread_time() - c0) / (time.perf_counter() - w0))
        app.drain_timer.resume()
        session.send(make_command("stop", reason="user"))
        await asyncio.to_thread(session.join, 60)
        await pilot.pause(0.1)
    return {"rates": rates, "ui_cpu": cpu, "redraws": app.redraws}


def main_ab(args) -> None:
    """Print the within-run comparison (``--ab``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run_headless(argparse.Namespace(**{**vars(args), "epochs": 1}), tmp)  # warm-up: data and kernel caches
        r = asyncio.run(_run_ab(args, tmp, args.phase_seconds, args.phases))
    off, on = r["rates"]["off"], r["rates"]["on"]
    pairs = [b / a for a, b in zip(off, on)]
    out = {"off_samples_per_second": [round(x) for x in off], "on_samples_per_second": [round(x) for x in on],
           "ratio_of_medians": statistics.median(on) / statistics.median(off),
           "median_pair_ratio": statistics.median(pairs),
           "ui_cpu_on": statistics.median(r["ui_cpu"]["on"]), "ui_cpu_off": statistics.median(r["ui_cpu"]["off"])}
    if args.json:
        print(json.dumps(out))
        return
    off_name, on_name = ("empty canvas", "a digit drawn") if args.tab == "draw" else ("drawing paused", "drawing")
    print(f"{off_name:<15} samples/s {out['off_samples_per_second']}")
    print(f"{on_name:<15} samples/s {out['on_samples_per_second']}")
    print(f"{on_name} / {off_name}: {out['ratio_of_medians']:.1%} (ratio of medians), "
          f"{out['median_pair_ratio']:.1%} (median of adjacent pairs)")
    print(f"UI thread CPU (fraction of one core): {on_name} {out['ui_cpu_on']:.3f}, {off_name} {out['ui_cpu_off']:.3f}")


def main(argv: list[str] | None = None) -> None:
    """Alternate headless and app runs; print the figures."""
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-keys", action="store_true", help="do not press keys during the app runs")
    p.add_argument("--switch-interval", type=float, default=0.0,
                   help="GIL switch interval the app sets (0, the default: leave Python's)")
    p.add_argument("--ab", action="store_true",
                   help="one long app run, its redraw paused and resumed every --phase-seconds (see _run_ab)")
    p.add_argument("--tab", default="dashboard",
                   choices=("dashboard", "inspector", "predictions", "boundary", "compare", "draw"),
                   help="(--ab) the tab shown while the redraw is paused and resumed")
    p.add_argument("--phases", type=int, default=20)
    p.add_argument("--phase-seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.ab:
        if args.epochs == 1:
            args.epochs = 100  # long enough for the phases; the run is stopped after them
        main_ab(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_headless(args, tmp)  # warm-up: data cache, kernel cache
        rows = {"headless": [], "app": []}
        for _ in range(args.rounds):
            rows["headless"].append(run_headless(args, tmp))
            rows["app"].append(asyncio.run(_run_app(args, tmp, keys=not args.no_keys,
                                                    switch_interval=args.switch_interval or None)))
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    h_sps = med([r["samples_per_second"] for r in rows["headless"]])
    a_sps = med([r["samples_per_second"] for r in rows["app"]])
    answers = [x for r in rows["app"] for x in r["answers"]]
    effects = [x for r in rows["app"] for x in r["effects"]]
    out = {
        "headless_samples_per_second": [round(r["samples_per_second"]) for r in rows["headless"]],
        "app_samples_per_second": [round(r["samples_per_second"]) for r in rows["app"]],
        "ratio": a_sps / h_sps,
        "headless_wall": [round(r["wall"], 2) for r in rows["headless"]],
        "app_wall": [round(r["wall"], 2) for r in rows["app"]],
        "key_answer_ms_median": 1000 * med(answers), "key_answer_ms_max": 1000 * max(answers, default=float("nan")),
        "key_effect_ms_median": 1000 * med(effects), "key_effect_ms_max": 1000 * max(effects, default=float("nan")),
        "keys": len(answers),
        "ui_thread_cpu": [round(r["ui_cpu"], 3) for r in rows["app"]],
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"headless samples/s {out['headless_samples_per_second']}  (wall {out['headless_wall']} s)")
    print(f"app      samples/s {out['app_samples_per_second']}  (wall {out['app_wall']} s)")
    print(f"app / headless: {out['ratio']:.1%}   UI thread CPU (fraction of one core): {out['ui_thread_cpu']}")
    print(f"key answer (action ran, screen updated): median {out['key_answer_ms_median']:.1f} ms, "
          f"max {out['key_answer_ms_max']:.1f} ms over {out['keys']} keys")
    print(f"key effect (trainer applied, shown):     median {out['key_effect_ms_median']:.1f} ms, "
          f"max {out['key_effect_ms_max']:.1f} ms")


if __name__ == "__main__":
    main()
