"""Make the README's screenshots: drive the real app over real (small) training runs and save SVGs.

    python scripts/screenshots.py [--out screenshots] [--size 120x40] [--only mnist|boundary|compare|sweep]

Writes ``dashboard.svg``, ``inspector.svg`` and ``predictions.svg`` from an mlp learning MNIST (10,000 training
images, a few epochs), ``boundary.svg`` from an mlp learning the 2-D spiral, and ``compare.svg``: the Compare
screen over four small digits runs (three learning rates and one with dropout) and a fifth still training, and
``sweep.svg``: the Sweep screen of a real 12-trial sweep on digits (``tuinet sweep --detach``, two workers), taken
once most trials are done. Each run is paused before its screenshot, so the picture is of a consistent state; runs
go to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from textual.pilot import Pilot

from tuinet.app.app import TuinetApp
from tuinet.app.compare import CompareApp
from tuinet.app.testing import press, wait_until
from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer


async def wait_for(pilot: Pilot, cond, what: str, timeout: float = 300.0) -> None:
    """Wait until ``cond()``; a clear exit when it never comes."""
    try:
        await wait_until(pilot, cond, timeout, what, poll=0.1)
    except TimeoutError as e:
        raise SystemExit(f"screenshots: {e}") from None


async def settle(app: TuinetApp, seconds: float = 1.5) -> None:
    """Let the app drain events and redraw (charts redraw at most once a second)."""
    await asyncio.sleep(seconds)
    app._last_chart = 0.0
    app.state.dirty.update(("charts", "status", "progress"))
    app._tick()
    await asyncio.sleep(0.5)


async def mnist_shots(out: Path, size: tuple[int, int], runs: str) -> None:
    cfg = TrainConfig(dataset="mnist", limit=10000, epochs=8, batch_size=64, runs_dir=runs, on_divergence="pause",
                      log_every=10)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg, session_factory=lambda c: Session(Trainer(c)))
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state.epoch >= 1.3, what="MNIST training")
        await press(pilot, "plus")  # a learning-rate change, as a user would make it
        await wait_for(pilot, lambda: app.state.epoch >= 3.5, what="MNIST epoch 3")
        await press(pilot, "space")
        await wait_for(pilot, lambda: app.state.paused, what="pause")
        await press(pilot, "e")
        await wait_for(pilot, lambda: app.state.evaluated is not None, what="evaluation")
        await settle(app)
        app.save_screenshot("dashboard.svg", str(out))
        seen = app.state.weights
        await press(pilot, "2")
        await wait_for(pilot, lambda: app.state.weights is not seen, what="weights snapshot")
        await settle(app, 1.0)
        app.save_screenshot("inspector.svg", str(out))
        await press(pilot, "3")
        await settle(app, 1.0)
        app.save_screenshot("predictions.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def boundary_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    cfg = TrainConfig(dataset="spiral", epochs=400, batch_size=32, runs_dir=runs, on_divergence="pause",
                      lr=0.01, log_every=10)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: (app.state.val_accuracy or 0) >= 0.97 or app.state.epoch >= 300,
                       what="spiral training")
        await press(pilot, "space")
        await wait_for(pilot, lambda: app.state.paused, what="pause")
        seen = app.state.boundary
        await press(pilot, "4")
        await wait_for(pilot, lambda: app.state.boundary is not seen, what="boundary snapshot")
        await settle(app, 1.0)
        app.save_screenshot("boundary.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def compare_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """Four finished digits runs and one live (paused) one, on the Compare screen."""
    from tuinet.training.compare import load_runs

    base = dict(dataset="digits", epochs=15, batch_size=64, runs_dir=runs, log_every=5)
    for name, extra in (("adam-lr0.01", {"lr": 0.01}), ("adam-lr0.001", {"lr": 0.001}),
                        ("adam-lr0.03", {"lr": 0.03}), ("adam-lr0.01-dropout0.3", {"lr": 0.01, "dropout": 0.3})):
        await asyncio.to_thread(Trainer(TrainConfig(**base, **extra, name=name)).run)
    cfg = TrainConfig(**{**base, "epochs": 60}, lr=0.003, optimizer="sgd", momentum=0.9, name="sgd-lr0.003")
    live = Session(Trainer(cfg))
    live.start()
    try:
        while (live.last.get("epoch") or {}).get("epoch", 0) < 10:
            await asyncio.sleep(0.1)
        live.send(make_command("pause"))
        while "paused" not in live.last:
            await asyncio.sleep(0.05)
        records = load_runs(runs)
        app = CompareApp(records, "runs", charted=["sgd-lr0.003", "adam-lr0.01", "adam-lr0.001", "adam-lr0.03"],
                         poll=False)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(1.0)
            app.save_screenshot("compare.svg", str(out))
    finally:
        live.send(make_command("stop"))
        await asyncio.to_thread(live.join, 60)


SWEEP_SPEC = """\
[train]
dataset = "digits"
epochs = 10
[search]
lr = {log_uniform = [1e-4, 1e-1]}
dropout = {uniform = [0.0, 0.5]}
optimizer = {choice = ["adam", "sgd"]}
[sweep]
name = "lr-search"
objective = "val_loss"
trials = 12
"""


async def sweep_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """A real sweep in the background; the Sweep screen once at least 9 of its 12 trials are done."""
    import os
    import signal
    import subprocess
    import sys

    from tuinet.app.sweep import SweepApp
    from tuinet.sweep.state import read_sweep

    spec = Path(runs) / "lr-search.toml"
    spec.write_text(SWEEP_SPEC)
    r = subprocess.run([sys.executable, "-m", "tuinet.cli", "sweep", str(spec), "--detach", "--workers", "2",
                        "--runs-dir", runs], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"screenshots: the sweep did not start: {r.stderr.strip()}")
    folder = Path(runs) / "lr-search"
    try:
        for _ in range(3000):
            snap = read_sweep(folder)
            if sum(t.state in ("complete", "pruned", "failed") for t in snap.trials) >= 9 or not snap.live:
                break
            await asyncio.sleep(0.2)
        here = os.getcwd()
        os.chdir(runs)  # the title line names the sweep folder as a user in the runs folder would
        try:
            app = SweepApp(Path(folder.name), poll=False)
            async with app.run_test(size=size) as pilot:
                await wait_for(pilot, lambda: app.view.table.row_count > 0 and app.view.chart.builds > 0,
                               what="the Sweep screen")
                await pilot.pause(1.0)
                app.save_screenshot("sweep.svg", str(out.resolve()))
        finally:
            os.chdir(here)
    finally:
        from tuinet.sweep.files import driver_pid

        pid = driver_pid(folder)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the trials save their checkpoints; the folder is thrown away
            for _ in range(600):
                if driver_pid(folder) is None:
                    break
                await asyncio.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "screenshots"))
    p.add_argument("--size", default="120x40", help="terminal size, COLSxROWS")
    p.add_argument("--only", choices=("mnist", "boundary", "compare", "sweep"), help="make one group of screenshots")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    groups = {"mnist": (mnist_shots, ("dashboard", "inspector", "predictions")),
              "boundary": (boundary_shot, ("boundary",)), "compare": (compare_shot, ("compare",)),
              "sweep": (sweep_shot, ("sweep",))}
    for group, (shots, names) in groups.items():
        if args.only not in (None, group):
            continue
        with tempfile.TemporaryDirectory() as runs:
            asyncio.run(shots(out, (cols, rows), runs))
        for name in names:
            print(out / f"{name}.svg")


if __name__ == "__main__":
    main()
