"""Snapshot tests of the Step view (after ``n``) at 120x40 and 80x24, and of the Inspector's gradient profile with
its vanishing-gradient warning, from deterministic scripted events (tests/app/step_fixture.py)."""

from __future__ import annotations

import time

import pytest

from tests.app.fakes import FakeSession
from tests.app.test_snapshots import mnist_events
from tuinet.app.app import TuinetApp
from tuinet.app.screens.step import StepScreen
from tuinet.app.testing import press, wait_until


@pytest.fixture(autouse=True)
def steady(monkeypatch):
    """UTC log times and a truecolor terminal, as the other snapshot tests."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield
    monkeypatch.undo()
    time.tzset()


def step_app() -> TuinetApp:
    """The MNIST run of the other snapshots, live (scripted), so ``n`` applies."""
    return TuinetApp(FakeSession(mnist_events()))


async def open_step_view(pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.state.step >= 300, what="the run shown")
    await press(pilot, "n")
    await wait_until(pilot, lambda: isinstance(app.screen, StepScreen) and app.screen.is_mounted and app.state.step_detail is not None
                     and "stepview" not in app.state.dirty and not app.pending, what="the step view drawn")
    await pilot.pause()


def test_step_view(snap_compare):
    assert snap_compare(step_app(), terminal_size=(120, 40), run_before=open_step_view)


def test_step_view_80x24(snap_compare):
    assert snap_compare(step_app(), terminal_size=(80, 24), run_before=open_step_view)


def vanishing_events() -> list[dict]:
    """The MNIST run, then layer statistics of a gradient that fades toward the input, and the warning."""
    events = mnist_events()
    t = events[-1]["time"]
    rows = [dict(r) for r in next(e for e in reversed(events) if e["event"] == "layer_stats")["layers"]]
    for r, g in zip(rows, (2.1e-7, 3.3e-4, 0.41)):
        r["grad_norm"] = g
    events.append({"event": "layer_stats", "v": 1, "time": t + 1, "step": 300, "epoch": 3, "layers": rows,
                   "health": {"status": "vanishing", "ratio": 5.1e-7, "layers": ["dense_1", "dense_5"]}})
    events.append({"event": "gradient_health", "v": 1, "time": t + 1, "step": 300, "epoch": 3,
                   "status": "vanishing", "ratio": 5.1e-7, "layers": ["dense_1", "dense_5"],
                   "message": "vanishing gradients: dense_1 gets 5.1e-07 times the gradient norm of dense_5",
                   "hint": "the first layers barely learn. What usually helps: ReLU instead of sigmoid/tanh, batch "
                           "normalization (bn), skip connections (res blocks), He initialization, or a higher lr"})
    return events


def test_inspector_vanishing_warning(snap_compare):
    from tuinet.app.replay import ReplaySession

    assert snap_compare(TuinetApp(ReplaySession(vanishing_events())), terminal_size=(120, 40), press=["2"])
