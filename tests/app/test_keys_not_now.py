"""Keys that cannot apply do not do nothing silently: the footer greys them (or, once the run is over, drops pause,
resume and detach), and a press says why in a toast."""

from __future__ import annotations

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.remote import RemoteApp
from tuinet.app.testing import async_test, press, wait_until
from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig

SIZE = (120, 40)


def record_toasts(app) -> list[str]:
    """The texts of the toasts ``app`` shows from now on."""
    toasts: list[str] = []
    show = app.notify

    def notify(message, **kwargs):
        toasts.append(str(message))
        return show(message, **kwargs)

    app.notify = notify
    return toasts


def footer(app) -> dict[str, bool]:
    """The footer's keys: label → enabled (shown keys only)."""
    return {b.description: enabled for _, b, enabled, _ in app.screen.active_bindings.values() if b.show}


@async_test
async def test_d_and_4_in_a_plain_run_say_why_they_do_nothing():
    fake = FakeSession(opening(dataset="mnist"), started=True)
    app = TuinetApp(fake, config=TrainConfig(dataset="mnist"), session_factory=lambda c: fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        toasts = record_toasts(app)
        await press(pilot, "d")
        await wait_until(pilot, lambda: toasts, what="a toast for d")
        assert "detached run" in toasts[-1] and "q stops it" in toasts[-1]
        await press(pilot, "4")
        await wait_until(pilot, lambda: len(toasts) == 2, what="a toast for 4")
        assert "mnist is not a 2-D dataset" in toasts[-1]
        assert app.active_tab == "dashboard" and app.return_value is None and fake.kinds() == []
        await press(pilot, "space")  # applies: no toast, a pause
        await wait_until(pilot, lambda: app.paused, what="paused")
        assert len(toasts) == 2


@async_test
async def test_a_viewer_greys_restart_and_a_stopped_run_offers_no_pause_detach_or_eta():
    fake = FakeSession(opening(), started=True)
    fake.run = "mlp-spiral"
    app = RemoteApp(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        toasts = record_toasts(app)
        keys = footer(app)
        assert keys["Restart"] is False and keys["Pause"] is True and keys["Detach"] is True
        await press(pilot, "r")
        await wait_until(pilot, lambda: toasts, what="a toast for r")
        assert "restart works in the app that trains the run" in toasts[-1]
        assert "ETA" in str(app.query_one("#topbar").render())

        fake.send(make_command("stop", reason="tuinet stop"))  # another terminal stops the run
        await wait_until(pilot, lambda: app.state.status == "stopped", what="the run stopped")
        await wait_until(pilot, lambda: "Pause" not in footer(app), what="pause gone from the footer")
        keys = footer(app)
        assert "Detach" not in keys and "Resume" not in keys and keys["lr×2"] is False
        for where in ("#topbar", "#status"):
            assert "ETA" not in str(app.query_one(where).render()), where
        assert "stopped" in str(app.query_one("#topbar").render())
        over = "the run is over (stopped): q quits; `tuinet resume mlp-spiral` continues it"
        for key, why in (("space", over), ("plus", over)):
            await press(pilot, key)
            await wait_until(pilot, lambda: why in (toasts[-1] if toasts else ""), what=f"a toast for {key}")
            toasts.clear()
        assert app.return_value is None


@async_test
async def test_detaching_a_paused_run_says_it_stays_paused():
    fake = FakeSession(opening(), started=True)
    app = RemoteApp(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        await press(pilot, "space")
        await wait_until(pilot, lambda: app.paused, what="paused")
        await press(pilot, "d")
        await wait_until(pilot, lambda: app.return_value is not None, what="the app exiting")
    assert app.outcome == "detached-paused" and fake.running
