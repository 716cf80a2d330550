"""Make the README's screenshots: drive the real app over real (small) training runs and save SVGs.

    python scripts/screenshots.py [--out screenshots] [--size 120x40] [--only mnist|augment|regularize|batch|boundary|neurons|compare|lesson|lrfind|sweep|serve]

Writes ``dashboard.svg``, ``inspector.svg``, ``predictions.svg``, ``draw.svg`` (a 7 drawn with the mouse on the
Draw tab) and ``stepview.svg`` (one step after ``n``, stage by stage) from an mlp learning MNIST (10,000 training images, a few epochs), ``boundary.svg`` from an mlp learning the 2-D spiral, and ``compare.svg``: the Compare
screen over four small digits runs (three learning rates and one with dropout) and a fifth still training,
``neurons.svg``: the spiral learnt from Playground's input features with one hidden unit's map drawn large beside
the neuron maps, and ``lesson.svg``: the vanishing-gradients lesson on the Compare screen with its measured result.
Each run is paused before its screenshot, so the picture is of a consistent state; runs go to a temporary folder.
``regularize.svg`` is an mlp overfitting 3,000 MNIST digits, given dropout and L2 at epoch 40 through the
regularization dialog (``g``), at epoch 90; ``batchsize.svg`` the default mlp on 6,000 digits whose batch size goes
from 128 to 16 at epoch 6 through the batch-size dialog (``B``), at epoch 11. ``lrfind.svg`` is the learning-rate finder (``f``) on the default mlp on MNIST (10,000 images) before training starts.
``sweep.svg`` is the Sweep screen of a real 12-trial sweep on digits (``tuinet sweep --detach``, two workers), taken
once most trials are done. ``firstrun.svg`` is the first run of the cnn preset on an empty Numba cache while its
kernels compile in two processes (the trainer and the compile helper). ``serve.png`` is `tuinet serve` in headless
Chromium on a live detached digits run (scripts/browser_shot.py; needs chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from textual.pilot import Pilot

from browser_shot import serve_shot  # noqa: E402 - scripts/ is on sys.path when run as a script
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
        await draw_seven(pilot, app)
        await settle(app, 1.0)
        app.save_screenshot("draw.svg", str(out))
        await press(pilot, "n")  # one step of the paused run, stage by stage
        await wait_for(pilot, lambda: app.state.step_detail is not None and not app.pending, what="the step view")
        await settle(app, 1.0)
        app.save_screenshot("stepview.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def augment_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The Predictions tab of a run with --augment, scrolled to what it trains on."""
    cfg = TrainConfig(dataset="mnist", limit=1000, epochs=30, batch_size=32, augment="shift=2,rotate=15,scale=0.1",
                      runs_dir=runs, on_divergence="pause", log_every=5)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state.epoch >= 16.5, what="augmented MNIST training")
        await press(pilot, "space")
        await wait_for(pilot, lambda: app.state.paused, what="pause")
        session.send(make_command("snapshot"))  # the samples event of the step it paused at
        step = app.state.step
        await wait_for(pilot, lambda: (app.state.samples or {}).get("step") == step, what="the samples event")
        await press(pilot, "3")
        await settle(app, 1.0)
        app.query_one("#samples-scroll").scroll_to_widget(app.query_one("#augmented"), animate=False, top=True)
        await settle(app, 1.0)
        app.save_screenshot("augment.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


def pause_at_epoch(session: Session, trainer: Trainer, epoch: int) -> None:
    """Pause the run at the end of ``epoch``, from the trainer's own thread (the app's view of a run this fast lags
    it)."""
    session.add_listener(lambda e: trainer.commands.put(make_command("pause")) if e["event"] == "epoch"
                         and e["epoch"] == epoch else None)


async def changed_mid_run(out: Path, size: tuple[int, int], cfg: TrainConfig, at: int, key: str, dialog: type,
                          fill, confirmed, until: int, name: str) -> None:
    """A run paused at the end of epoch ``at``; ``key`` opens ``dialog``, ``fill(screen)`` types in it, enter sends
    it; once ``confirmed(state)``, resumed and paused again at epoch ``until``, where ``name`` is saved."""
    trainer = Trainer(cfg)
    session = Session(trainer)
    pause_at_epoch(session, trainer, at)
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state.paused, what=f"the pause after {at} epochs")
        await press(pilot, key)
        await wait_for(pilot, lambda: isinstance(app.screen, dialog), what="the dialog")
        fill(app.screen)
        await press(pilot, "enter")
        await wait_for(pilot, lambda: confirmed(app.state), what="the trainer's confirmation")
        pause_at_epoch(session, trainer, until)
        await press(pilot, "space")
        await wait_for(pilot, lambda: app.state.paused and app.state.epoch >= until, what=f"epoch {until}")
        await settle(app)
        app.save_screenshot(name, str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def regularize_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """An mlp overfitting 3,000 MNIST digits without dropout; at epoch 40 paused, dropout 0.3 and L2 0.001 typed in
    the regularization dialog (g), resumed; the dashboard at epoch 90: the curves before and after."""
    from textual.widgets import Input

    from tuinet.app.screens.dialogs import RegularizationDialog

    def fill(screen) -> None:
        screen.query_one("#reg-l2", Input).value = "0.001"
        screen.query_one("#reg-dropout", Input).value = "0.3"
        screen.query_one("#reg-dropout", Input).focus()

    cfg = TrainConfig(dataset="mnist", limit=3000, epochs=100, dropout=0.0, keep_epochs=0, runs_dir=runs,
                      optimizer="adamw", schedule="cosine", lr=0.002, batch_size=128, on_divergence="pause",
                      log_every=6)
    await changed_mid_run(out, size, cfg, 40, "g", RegularizationDialog, fill,
                          lambda st: st.config.get("dropout") == 0.3, 90, "regularize.svg")


async def batch_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The default mlp on 6,000 MNIST digits at batch 128; at the end of epoch 6 paused, batch 16 typed in the
    batch-size dialog (B), resumed; the dashboard at epoch 11: the noisier, slower steps after the change."""
    from textual.widgets import Input

    from tuinet.app.screens.dialogs import BatchSizeDialog

    def fill(screen) -> None:
        screen.query_one("#batch-input", Input).value = "16"

    cfg = TrainConfig(dataset="mnist", limit=6000, epochs=12, dropout=0.1, keep_epochs=0, runs_dir=runs,
                      optimizer="adamw", weight_decay=0.05, schedule="cosine", lr=0.002, batch_size=128,
                      on_divergence="pause", log_every=2)
    await changed_mid_run(out, size, cfg, 6, "B", BatchSizeDialog, fill, lambda st: st.batch_size == 16, 11,
                          "batchsize.svg")


async def draw_seven(pilot: Pilot, app: TuinetApp) -> None:
    """The Draw tab: a 7 drawn with the mouse (strokes of pressed-button moves, as a terminal reports a drag), then
    the live weights' answer."""
    from textual.events import MouseMove

    from tuinet.app.widgets.drawpad import DrawCanvas

    await press(pilot, "6")
    canvas = app.query_one(DrawCanvas)
    for path in (((6, 7), (6, 20), (23, 12)), ((14, 11), (14, 19))):  # (row, column) pixels: the 7, its bar
        cells = [(1 + 2 * c, 1 + r) for r, c in path]  # two columns a pixel, inside the border
        await pilot.mouse_down(canvas, offset=cells[0])
        for (x0, y0), (x1, y1) in zip(cells, cells[1:]):
            for i in range(1, 9):
                at = (round(x0 + (x1 - x0) * i / 8), round(y0 + (y1 - y0) * i / 8))
                await pilot._post_mouse_events([MouseMove], canvas, offset=at, button=1)
        await pilot.mouse_up(canvas, offset=cells[-1])
    await wait_for(pilot, lambda: (app.state.probe or {}).get("probs") is not None, what="the answer to the 7")


async def paused_on_boundary(pilot, app: TuinetApp, accuracy: float, epochs: int) -> None:
    """Train until ``accuracy`` (validation) or ``epochs``, pause, and show the Boundary tab with a fresh snapshot."""
    await wait_for(pilot, lambda: (app.state.val_accuracy or 0) >= accuracy or app.state.epoch >= epochs,
                   what="spiral training")
    await press(pilot, "space")
    await wait_for(pilot, lambda: app.state.paused, what="pause")
    seen = app.state.boundary
    await press(pilot, "4")
    await wait_for(pilot, lambda: app.state.boundary is not seen, what="boundary snapshot")
    await settle(app, 1.0)


async def boundary_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The default spiral run (the dataset's row of defaults, as `tuinet train --dataset spiral` has it)."""
    from tuinet.training.defaults import with_dataset_defaults

    cfg = TrainConfig(**with_dataset_defaults({"dataset": "spiral", "runs_dir": runs, "on_divergence": "pause",
                                               "log_every": 10}))
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await paused_on_boundary(pilot, app, 0.98, 80)
        app.save_screenshot("boundary.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def neurons_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The spiral from x, y, x², y², sin x, sin y through two tanh layers of 8; a second-layer unit drawn large."""
    cfg = TrainConfig(dataset="spiral", model="8,8", activation="tanh", features="x,y,x^2,y^2,sinx,siny",
                      epochs=400, batch_size=16, lr=0.03, runs_dir=runs, on_divergence="pause", log_every=10)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await paused_on_boundary(pilot, app, 0.97, 300)
        await press(pilot, "tab", "down", "right", "down", "down")  # the third unit of the second hidden layer
        await settle(app, 0.5)
        app.save_screenshot("neurons.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)


async def lesson_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """`tuinet learn vanishing`, its four runs trained first, then its Compare screen with the measured result."""
    from tuinet.app.screens.lesson import LessonResultScreen
    from tuinet.training.compare import load_runs
    from tuinet.training.lessons import get_lesson, lesson_folder, result_text, summarize

    lesson = get_lesson("vanishing")
    folder = lesson_folder(runs, lesson.name)
    for label, opts in lesson.configs():
        await asyncio.to_thread(Trainer(TrainConfig(**opts, runs_dir=str(folder), name=label)).run)
    text = result_text(lesson, [summarize(label, folder / label) for label, _ in lesson.runs])
    app = CompareApp(load_runs(folder), folder, poll=False,
                     lesson=(f"lesson {lesson.name}: {lesson.title}", lesson.caption, lambda: text))
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LessonResultScreen) and app.screen.is_mounted, what="the lesson's result")
        await pilot.pause(0.5)
        app.save_screenshot("lesson.svg", str(out))


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


async def lrfind_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The learning-rate finder, opened before the first step of an mlp on MNIST, its cursor moved a little."""
    from tuinet.app.screens.lrfind import LrFindScreen

    cfg = TrainConfig(dataset="mnist", limit=10000, epochs=3, runs_dir=runs, on_divergence="pause")
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await press(pilot, "f")
        await wait_for(pilot, lambda: isinstance(app.screen, LrFindScreen) and app.screen.is_mounted and app.screen.result is not None,
                       what="the range test")
        await press(pilot, "right", "right")
        await asyncio.sleep(1.0)
        app.save_screenshot("lrfind.svg", str(out))
        await press(pilot, "escape")
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 60)
async def first_run_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """The very first run of the cnn preset: the status line while its kernels compile, in two processes (run with an
    empty Numba cache: :func:`main` starts this group in a child process with its own ``NUMBA_CACHE_DIR``)."""
    cfg = TrainConfig(dataset="mnist", model="cnn", limit=2048, epochs=1, runs_dir=runs)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state.compiling and (app.state.compile_helper or 0) >= 3
                       and app.state.compile_done >= 12, what="the helper's kernels", timeout=600)
        app.state.dirty.add("status")
        app._tick()
        await asyncio.sleep(0.3)
        app.save_screenshot("firstrun.svg", str(out))
        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 600)


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
    p.add_argument("--only", choices=("mnist", "augment", "regularize", "batch", "boundary", "neurons", "compare", "lesson", "lrfind", "sweep",
                                      "serve", "firstrun"),
                   help="make one group of screenshots")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    groups = {"mnist": (mnist_shots, ("dashboard", "inspector", "predictions", "draw", "stepview")),
              "augment": (augment_shot, ("augment",)),
              "regularize": (regularize_shot, ("regularize",)),
              "batch": (batch_shot, ("batchsize",)),
              "boundary": (boundary_shot, ("boundary",)), "neurons": (neurons_shot, ("neurons",)),
              "compare": (compare_shot, ("compare",)), "lesson": (lesson_shot, ("lesson",)),
              "lrfind": (lrfind_shot, ("lrfind",)), "sweep": (sweep_shot, ("sweep",)),
              "serve": (serve_shot, ("serve",)),  # a PNG from headless Chromium (scripts/browser_shot.py)
              "firstrun": (first_run_shot, ("firstrun",))}
    for group, (shots, names) in groups.items():
        if args.only not in (None, group):
            continue
        if group == "firstrun" and not os.environ.get("TUINET_SCREENSHOT_EMPTY_CACHE"):
            with tempfile.TemporaryDirectory() as cache:  # this process's Numba cache is set: a child, an empty one
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, TUINET_SCREENSHOT_EMPTY_CACHE="1")
                subprocess.run([sys.executable, __file__, "--out", str(out), "--size", args.size, "--only", group],
                               env=env, check=True)
            continue
        with tempfile.TemporaryDirectory() as runs:
            asyncio.run(shots(out, (cols, rows), runs))
        for name in names:
            print(out / f"{name}.{'png' if name == 'serve' else 'svg'}")


if __name__ == "__main__":
    main()
