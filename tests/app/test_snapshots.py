"""Snapshot tests of the app's main screens (pytest-textual-snapshot), from a replayed, deterministic event stream.

The stream is synthetic but shaped exactly like a trainer's (same event types and fields), so the screens are the
same on every run and machine. Update the snapshots after an intended change with
``pytest tests/app/test_snapshots.py --snapshot-update`` and look at the report before committing.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tests.app.runs_fixture import make_runs
from tuinet.app.app import TuinetApp
from tuinet.app.compare import CompareApp
from tuinet.app.replay import ReplaySession
from tuinet.training.compare import load_runs

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC

# 3x5 bitmaps of the digits, drawn large and blurred into 28x28 "handwriting"
FONT = {
    0: ["###", "#.#", "#.#", "#.#", "###"], 1: [".#.", "##.", ".#.", ".#.", "###"],
    2: ["###", "..#", "###", "#..", "###"], 3: ["###", "..#", ".##", "..#", "###"],
    4: ["#.#", "#.#", "###", "..#", "..#"], 5: ["###", "#..", "###", "..#", "###"],
    6: ["###", "#..", "###", "#.#", "###"], 7: ["###", "..#", ".#.", ".#.", ".#."],
    8: ["###", "#.#", "###", "#.#", "###"], 9: ["###", "#.#", "###", "..#", "###"],
}


def digit_image(d: int, shift: int = 0) -> list[list[float]]:
    img = np.zeros((28, 28))
    for r, row in enumerate(FONT[d]):
        for c, ch in enumerate(row):
            if ch == "#":
                img[4 + r * 4:8 + r * 4, 8 + shift + c * 4:12 + shift + c * 4] = 1.0
    blur = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 0) + np.roll(img, -1, 1)) / 5
    return np.round(blur, 2).tolist()


def blob(rng, n: int = 28) -> list[list[float]]:
    """A smooth random weight map."""
    a = rng.normal(size=(n, n))
    for _ in range(3):
        a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 0) + np.roll(a, -1, 1)) / 5
    return np.round(a * 0.3, 3).tolist()


class Stream:
    """Builds events with increasing timestamps."""

    def __init__(self):
        self.t = T0
        self.events: list[dict] = []

    def __call__(self, _kind: str, dt: float = 0.0, **fields) -> None:
        self.t += dt
        self.events.append({"event": _kind, "v": 1, "time": round(self.t, 3), **fields})


def mnist_events() -> list[dict]:
    """Three of five epochs of an mlp on MNIST, with the events a user would have triggered."""
    rng = np.random.default_rng(0)
    e = Stream()
    spe, epochs = 100, 5
    layers = [{"name": "dense_1", "kind": "Dense", "describe": "Dense(256)", "output_shape": [256], "params": 200960},
              {"name": "relu_2", "kind": "ReLU", "describe": "ReLU", "output_shape": [256], "params": 0},
              {"name": "dense_3", "kind": "Dense", "describe": "Dense(128)", "output_shape": [128], "params": 32896},
              {"name": "relu_4", "kind": "ReLU", "describe": "ReLU", "output_shape": [128], "params": 0},
              {"name": "dense_5", "kind": "Dense", "describe": "Dense(10)", "output_shape": [10], "params": 1290}]
    e("started", name="mlp-mnist-20260101-000000", run_dir="runs/mlp-mnist-20260101-000000",
      config={"model": "mlp", "dataset": "mnist", "optimizer": "adam", "lr": None, "batch_size": 64, "epochs": 5},
      dataset={"name": "mnist", "task": "classification", "input_shape": [28, 28, 1], "num_outputs": 10,
               "class_names": [str(i) for i in range(10)], "sizes": {"train": 54000, "val": 6000, "test": 10000}},
      model="", layers=layers, num_params=235146, steps_per_epoch=spe, total_steps=spe * epochs, epochs=epochs,
      batch_size=64, optimizer="adam", hyperparams={"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08,
                                                     "weight_decay": 0.0, "amsgrad": False},
      lr=0.001, resumed=False, epoch=0, step=0)
    e("compiling", 0.2, message="compiling kernels")
    e("compiled", 1.3, seconds=1.3)
    lr = 0.001
    for step in range(5, spe * 3 + 1, 5):
        ep = step / spe
        loss = 2.2 * math.exp(-step / 40) + 0.12 + 0.04 * rng.normal()
        acc = min(0.99, 1 - 0.85 * math.exp(-step / 35) - 0.04 + 0.02 * rng.normal())
        e("step", 0.25, step=step, epoch=ep, loss=loss, penalty=0.0, accuracy=acc, lr=lr,
          samples_per_second=1280.0 + 10 * rng.normal(), batches=5)
        if step % 20 == 0:
            e("layer_stats", step=step, epoch=int(ep), layers=[
                {"name": "dense_1", "kind": "Dense", "describe": "Dense(256)", "output_shape": [256], "params": 200960,
                 "weight_mean": 0.0012, "weight_std": 0.0531 + step * 1e-5, "weight_min": -0.24, "weight_max": 0.23,
                 "grad_norm": 0.9 * math.exp(-step / 150) + 0.05 * rng.random(), "weight_norm": 23.8,
                 "update_ratio": 0.0016, "dead_fraction": 0.02, "flag": ""},
                {"name": "dense_3", "kind": "Dense", "describe": "Dense(128)", "output_shape": [128], "params": 32896,
                 "weight_mean": 0.003, "weight_std": 0.0923, "weight_min": -0.3, "weight_max": 0.31,
                 "grad_norm": 0.6 * math.exp(-step / 150) + 0.05 * rng.random(), "weight_norm": 16.7,
                 "update_ratio": 0.0011, "dead_fraction": 0.08, "flag": ""},
                {"name": "dense_5", "kind": "Dense", "describe": "Dense(10)", "output_shape": [10], "params": 1290,
                 "weight_mean": -0.0058, "weight_std": 0.1294, "weight_min": -0.4, "weight_max": 0.38,
                 "grad_norm": 0.5 * math.exp(-step / 150) + 0.05 * rng.random(), "weight_norm": 4.6,
                 "update_ratio": 0.0008, "flag": ""}])
        if step == 130:
            e("paused", 0.5, reason="user", step=step)
            e("lr_changed", 2.0, lr=0.002, old_lr=0.001, source="user", step=step)
            lr = 0.002
            e("resumed", 1.0, step=step)
        if step == 210:
            e("checkpoint_saved", path="runs/mlp-mnist-20260101-000000/latest.npz", kind="latest", step=step,
              epoch=2)
        if step % spe == 0:
            k = step // spe
            e("epoch", epoch=k, step=step, train_loss=0.9 / k, train_accuracy=0.8 + 0.05 * k, val_loss=0.5 / k,
              val_accuracy=0.86 + 0.03 * k, lr=lr, seconds=25.0, samples_per_second=1280.0)
            m = np.zeros((10, 10), dtype=int)
            for i in range(10):
                m[i, i] = 560 + 10 * k + i
                m[i, (i + 3) % 10] = 12 - 2 * k
                m[i, (i + 7) % 10] = 5
            e("confusion", epoch=k, split="val", matrix=m.tolist(), class_names=[str(i) for i in range(10)])
            e("checkpoint_saved", path="runs/mlp-mnist-20260101-000000/latest.npz", kind="latest", step=step,
              epoch=k)
    e("evaluated", 0.3, split="test", step=300, loss=0.21, accuracy=0.9391)
    hist = {"counts": [int(3000 * math.exp(-((i - 11.5) / 4) ** 2)) for i in range(24)],
            "edges": [round(-0.24 + i * 0.02, 5) for i in range(25)]}
    e("weights", step=300, layers=[
        {"name": "dense_1", "kind": "Dense", "histogram": hist, "pictures": [blob(rng) for _ in range(8)]},
        {"name": "dense_3", "kind": "Dense", "histogram": hist},
        {"name": "dense_5", "kind": "Dense", "histogram": hist}])
    samples = []
    for i, (label, pred, conf) in enumerate([(7, 7, 0.99), (2, 2, 0.97), (1, 1, 0.99), (0, 0, 0.98),
                                              (4, 4, 0.93), (9, 4, 0.61), (5, 5, 0.88), (3, 3, 0.95)]):
        samples.append({"index": 100 + i, "label": label, "pred": pred, "confidence": conf,
                        "image": digit_image(label, shift=i % 3 - 1)})
    wrong = [{"index": 900 + i, "label": lab, "pred": pr, "confidence": c, "image": digit_image(lab, shift=1)}
             for i, (lab, pr, c) in enumerate([(4, 9, 0.97), (3, 5, 0.95), (7, 1, 0.93), (8, 3, 0.9)])]
    e("samples", step=300, epoch=3, class_names=[str(i) for i in range(10)], samples=samples, wrong=wrong)
    labels = rng.integers(0, 10, 400)
    centres = np.stack([np.cos(labels * 0.63), np.sin(labels * 0.63)], axis=1) * 0.7
    views = [{"name": name, "dims": dims, "explained": explained, "neighbours": near,
              "points": np.round(np.clip(centres + rng.normal(0, spread, (400, 2)), -1, 1), 3).tolist()}
             for name, dims, spread, explained, near in (("the input (784 values)", 784, 0.45, 0.17, 0.86),
                                                         ("dense_3's input (256 values)", 256, 0.2, 0.31, 0.95),
                                                         ("the output (10 scores)", 10, 0.08, 0.52, 0.97))]
    e("embedding", step=300, epoch=3.0, class_names=[str(i) for i in range(10)], labels=labels.tolist(),
      preds=labels.tolist(), views=views)
    return e.events


def spiral_events() -> list[dict]:
    """A two-class spiral run, with its decision-boundary map."""
    rng = np.random.default_rng(1)
    e = Stream()
    e("started", name="mlp-spiral-20260101-000000", run_dir="runs/mlp-spiral-20260101-000000",
      config={"model": "mlp", "dataset": "spiral"},
      dataset={"name": "spiral", "task": "classification", "input_shape": [2], "num_outputs": 2,
               "class_names": ["0", "1"], "sizes": {"train": 800, "val": 100, "test": 100}},
      model="", layers=[{"name": "dense_0", "kind": "Dense", "output_shape": [256], "params": 768},
                        {"name": "dense_2", "kind": "Dense", "output_shape": [2], "params": 514}],
      num_params=1282, steps_per_epoch=25, total_steps=2500, epochs=100, batch_size=32, optimizer="adam",
      hyperparams={"lr": 0.001}, lr=0.001, epoch=0, step=0)
    for step in range(5, 1001, 5):
        e("step", 0.05, step=step, epoch=step / 25, loss=0.69 * math.exp(-step / 300) + 0.05,
          accuracy=1 - 0.5 * math.exp(-step / 250), lr=0.001, samples_per_second=9000.0)
        if step % 25 == 0:
            e("epoch", epoch=step // 25, step=step, train_loss=0.3, train_accuracy=0.9, val_loss=0.69 *
              math.exp(-step / 300) + 0.08, val_accuracy=1 - 0.5 * math.exp(-step / 250) - 0.02, lr=0.001,
              seconds=0.3)
    rows, cols = 24, 48
    xs = np.linspace(-1.1, 1.1, cols)
    ys = np.linspace(1.1, -1.1, rows)
    gx, gy = np.meshgrid(xs, ys)
    r = np.hypot(gx, gy)
    th = np.arctan2(gy, gx)
    f = np.sin(th + 4 * r * math.pi / 2)
    classes = (f > 0).astype(int)
    conf = np.clip(0.5 + np.abs(f) / 2, 0.5, 1.0)
    t = np.linspace(0.1, 1.0, 60)
    pts = []
    for lab in (0, 1):
        ang = t * 2 * math.pi * 1.0 + lab * math.pi
        for a, rr in zip(ang, t):
            pts.append([round(float(rr * math.cos(a) + 0.02 * rng.normal()), 3),
                        round(float(rr * math.sin(a) + 0.02 * rng.normal()), 3), lab])
    e("boundary", step=1000, epoch=40, cols=cols, rows=rows, xrange=[-1.1, 1.1], yrange=[-1.1, 1.1],
      classes=classes.tolist(), confidence=np.round(conf, 3).tolist(), points=pts)
    e("confusion", epoch=40, split="val", matrix=[[47, 3], [4, 46]], class_names=["0", "1"])
    return e.events


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Log timestamps in UTC, so snapshots do not depend on the machine's time zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def truecolor(monkeypatch):
    """A truecolor terminal, whatever TERM the tests run under: the weight pictures pick their palette from it."""
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.delenv("NO_COLOR", raising=False)


def replay_app(events) -> TuinetApp:
    return TuinetApp(ReplaySession(events))


def test_dashboard(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(120, 40))


def test_dashboard_80x24(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(80, 24))


def test_dashboard_log_scale(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(120, 40), press=["l"])


def test_inspector(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(120, 40), press=["2"])


async def predictions_drawn(pilot, layers: bool = True) -> None:
    """The Predictions tab with its panels drawn (one a tick: the samples, the confusion matrix, and, with
    ``layers``, the layers)."""
    from tuinet.app.testing import wait_until
    from tuinet.app.widgets.embedding import EmbeddingView

    await pilot.press("3")
    app = pilot.app
    await wait_until(pilot, lambda: not {"samples", "confusion"} & app.state.dirty
                     and (not layers or app.query_one(EmbeddingView).event is not None), what="the panels drawn")
    await pilot.pause(0.1)


async def predictions_drawn_80x24(pilot) -> None:
    """The same on a terminal too short for the layers' panel (it is not asked for)."""
    await predictions_drawn(pilot, layers=False)


def test_predictions(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(120, 40), run_before=predictions_drawn)


def draw_events() -> list[dict]:
    """The MNIST stream, with the network's answer to a drawn 7 (what a live trainer sends for it)."""
    events = mnist_events()
    probs = [0.001, 0.004, 0.012, 0.031, 0.002, 0.001, 0.0005, 0.912, 0.016, 0.0205]
    rng = np.random.default_rng(7)
    forward = []
    for i, (kind, size) in enumerate((("Flatten", 784), ("Dense", 256), ("ReLU", 256), ("Dense", 128), ("ReLU", 128),
                                      ("Dense", 10))):
        pre = np.round(rng.normal(size=min(size, 64)) * 60).clip(-100, 100)
        units = np.maximum(pre, 0) if kind == "ReLU" else pre
        forward.append({"name": f"{kind.lower()}_{i}", "kind": kind, "shape": [size], "units": units.astype(int).tolist(),
                        "scale": 3.0, "size": size, "stats": {"mean": 0.1, "std": 1.0, "min": -3.0, "max": 3.0,
                                                              "zero": 0.55 if kind == "ReLU" else 0.0}})
    change = np.zeros((7, 7))
    change[1, 2:5], change[2:6, 4 - np.arange(4) // 2] = -0.3, -0.5  # the 7's bar and stroke matter
    change[4, 1] = 0.1
    events.append({**events[-1], "event": "probe", "step": 1500, "epoch": 3.0, "probs": probs, "pred": 7,
                   "forward": forward, "occlusion": {"patch": 4, "class": 7, "change": (change * 8).tolist(),
                                                   "score": 9.7}})
    return events


def draw_a_seven(size: tuple[int, int]):
    async def run_before(pilot) -> None:
        from tuinet.app.widgets.drawpad import DrawCanvas, stroke

        await pilot.press("6")
        canvas = pilot.app.query_one(DrawCanvas)
        ink = np.zeros((28, 28), np.float32)
        stroke(ink, (6.0, 7.0), (6.0, 20.0))
        stroke(ink, (6.0, 20.0), (23.0, 12.0))
        stroke(ink, (14.0, 11.0), (14.0, 20.0))
        canvas.set_ink(ink)
        await pilot.pause()
        pilot.app.state.dirty.update(("probe", "probe_layers"))
        from tuinet.app.testing import wait_until

        app = pilot.app
        await wait_until(pilot, lambda: "91.2%" in str(app.query_one("#draw-probs").render()), what="the answer")
        if size[1] >= 32:  # (the layers panel is not shown on short terminals)
            await wait_until(pilot, lambda: "dense_1" in str(app.query_one("#draw-layers").render()),
                             what="the layers, a tick after the answer")
        await pilot.pause(0.1)
    return run_before


def test_draw(snap_compare):
    """The Draw tab: a 7 drawn on the canvas, the 28x28 the network is given (centred as MNIST's), its answer."""
    assert snap_compare(replay_app(draw_events()), terminal_size=(120, 40), run_before=draw_a_seven((120, 40)))


def test_draw_80x24(snap_compare):
    """The same at 80x24: the canvas in half blocks."""
    assert snap_compare(replay_app(draw_events()), terminal_size=(80, 24), run_before=draw_a_seven((80, 24)))


def test_predictions_80x24(snap_compare):
    """80x24: the samples beside the confusion matrix, one readable picture per row (stacked they got two rows)."""
    assert snap_compare(replay_app(mnist_events()), terminal_size=(80, 24), run_before=predictions_drawn_80x24)


def test_boundary(snap_compare):
    assert snap_compare(replay_app(spiral_events()), terminal_size=(120, 40), press=["4"])


def test_help_screen(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(100, 30), press=["question_mark"])


def test_optimizer_dialog(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(100, 30), press=["o"])


def test_diverged_dialog(snap_compare):
    events = mnist_events()[:40] + [{"event": "diverged", "v": 1, "time": T0 + 20, "step": 60, "loss": None,
                                     "lr": 1.0, "new_lr": 0.5, "action": "paused"},
                                    {"event": "paused", "v": 1, "time": T0 + 20, "reason": "diverged", "step": 60}]
    assert snap_compare(replay_app(events), terminal_size=(100, 30))


def test_diverged_dialog_80x24(snap_compare):
    """At 80 columns every button of the divergence dialog is whole; a repeated blow-up says so and offers ÷10."""
    events = mnist_events()[:40] + [{"event": "diverged", "v": 1, "time": T0 + 20, "step": 60, "loss": 3.2e29,
                                     "lr": 1.0, "new_lr": 0.1, "factor": 0.1, "repeated": True, "reason": "blow-up",
                                     "action": "paused"},
                                    {"event": "paused", "v": 1, "time": T0 + 20, "reason": "diverged", "step": 60}]
    assert snap_compare(replay_app(events), terminal_size=(80, 24))


def test_inspector_80x24(snap_compare):
    assert snap_compare(replay_app(mnist_events()), terminal_size=(80, 24), press=["2"])


def test_inspector_shows_the_weights_step_whole_at_80_and_120_columns():
    """The step of the weights snapshot sits in the pane's border title: on the text's first line, after a layer
    name and its shape, it was cut at the pane's width (it read "step 3" at step 3000)."""
    import asyncio

    from tuinet.app.testing import wait_until

    events = [dict(e, step=123456) if e["event"] == "weights" else e for e in mnist_events()]

    async def run(size):
        app = replay_app(events)
        async with app.run_test(size=size) as pilot:
            await pilot.press("2")
            await wait_until(pilot, lambda: app.active_tab == "inspector" and "weights · step" in str(
                app.query_one("#layer-hist").border_title), what="the weights pane drawn")
            return str(app.query_one("#layer-hist").border_title), app.export_screenshot()

    for size in ((120, 40), (80, 24)):
        title, svg = asyncio.run(run(size))
        assert title == "weights · step 123456"
        assert "step&#160;123456" in svg


def test_no_color_boundary_tells_classes_apart_by_glyph(monkeypatch):
    import asyncio

    from tuinet.app.testing import wait_until
    from tuinet.app.widgets.boundary import BoundaryMap

    monkeypatch.setenv("NO_COLOR", "1")
    app = replay_app(spiral_events())

    async def run():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("4")
            await wait_until(pilot, lambda: app.active_tab == "boundary" and "boundary" not in app.state.dirty,
                             what="the map drawn")
            return app.query_one(BoundaryMap).render().plain

    plain = asyncio.run(run())
    assert app.no_color
    assert "●" in plain and "○" in plain and "▀" not in plain


def compare_app(tmp_path) -> CompareApp:
    """The Compare screen over the deterministic runs folder of tests/app/runs_fixture.py (no live polling)."""
    runs = make_runs(tmp_path / "runs")
    return CompareApp(load_runs(runs), "runs", charted=["live-run", "sgd-lr0.1", "adam-lr0.01-dropout"], poll=False)


def test_compare(snap_compare, tmp_path):
    assert snap_compare(compare_app(tmp_path), terminal_size=(120, 40))


def test_compare_80x24(snap_compare, tmp_path):
    assert snap_compare(compare_app(tmp_path), terminal_size=(80, 24))


def test_compare_both_curves_by_step_80x24(snap_compare, tmp_path):
    """Train and validation curves of three runs against the step, the diff in the table's place."""
    assert snap_compare(compare_app(tmp_path), terminal_size=(80, 24), press=["x", "v", "v", "D"])


def test_compare_run_summary(snap_compare, tmp_path):
    assert snap_compare(compare_app(tmp_path), terminal_size=(120, 40), press=["down", "down", "enter"])
