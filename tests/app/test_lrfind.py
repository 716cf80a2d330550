"""The learning-rate finder screen: ``f`` asks the trainer for a range test, the curve arrives as events, the cursor
moves along it, enter sets the chosen lr (and resumes a run the trainer paused for the test), escape leaves it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.replay import ReplaySession
from tuinet.app.screens.lrfind import LrFindScreen, chart_data
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.charts import render_text
from tuinet.protocol import make_event
from tuinet.training.lrfind import EXPLODE_FACTOR, RULES, lr_schedule, smooth, suggest


def finder_events(step: int = 300, paused_for_test: bool = True) -> list[dict]:
    """The lr_find events of a range test on a made-up but typical curve: flat, a long fall from 1e-4 to 1e-2, a
    bottom, then the explosion that stops it (smoothed and read by the real rules)."""
    rng = np.random.default_rng(0)
    lrs = lr_schedule(1e-7, 10.0, 100)
    x = np.log10(lrs)
    raw = 2.3 - 2.0 / (1 + np.exp(-(x + 3.2) * 2.2)) + np.where(x > -1.6, (x + 1.6) ** 2 * 6, 0.0)
    raw = raw + 0.04 * rng.normal(size=len(raw))
    sm = smooth(raw.tolist())
    end = next(i for i in range(len(sm)) if sm[i] > EXPLODE_FACTOR * sm[:i + 1].min()) + 1
    lrs, raw, sm = lrs[:end].tolist(), raw[:end].tolist(), sm[:end].tolist()
    sug, idx = suggest(lrs[:-1], sm[:-1])
    base = dict(step=step, paused_for_test=paused_for_test, current_lr=0.002)
    return [make_event("paused", reason="lr_find", step=step),
            make_event("lr_find", phase="started", steps=100, start_lr=1e-7, end_lr=10.0, **base),
            make_event("lr_find", phase="done", lrs=lrs, losses=raw, smoothed=sm, suggestions=sug, indices=idx,
                       stop_reason="exploded", steps=100, start_lr=1e-7, end_lr=10.0, seconds=1.8,
                       suggested_lr=sug["valley"], suggested_rule="valley", **base)]


def _finder(app: TuinetApp) -> LrFindScreen | None:
    return app.screen if isinstance(app.screen, LrFindScreen) else None


def _status(app: TuinetApp) -> str:
    screen = _finder(app)
    return str(screen.query_one("#lrf-status").render()) if screen is not None and screen.is_mounted else ""


@async_test
async def test_f_opens_the_finder_cursor_moves_and_enter_sets_the_lr_and_resumes():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.status == "running", what="the run")
        await press(pilot, "f")
        await wait_until(pilot, lambda: "lr_find" in fake.kinds() and _finder(app), what="the finder")
        await wait_until(pilot, lambda: "waiting for the trainer" in _status(app), what="the waiting line")
        events = finder_events(step=15)
        for e in events:
            fake.emit(e)
        screen = _finder(app)
        await wait_until(pilot, lambda: screen.result is not None, what="the curve")
        done = events[-1]
        assert screen.chosen == done["suggested_lr"] and done["lrs"][screen.cursor] == pytest.approx(
            done["suggested_lr"])
        start = screen.cursor
        await press(pilot, "right", "right", "shift+left")
        assert screen.cursor == start + 2 - 10 and screen.chosen == done["lrs"][screen.cursor]
        await press(pilot, "s")
        assert screen.chosen == done["suggestions"]["steepest"]
        chosen = screen.chosen
        await press(pilot, "enter")
        await wait_until(pilot, lambda: fake.kinds()[-1:] == ["resume"], what="set_lr then resume")
        assert fake.kinds()[-2:] == ["set_lr", "resume"] and fake.sent[-2]["lr"] == chosen
        assert _finder(app) is None


@async_test
async def test_escape_leaves_the_lr_and_a_finder_closed_early_still_resumes_the_run():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.state.status == "running", what="the run")
        # escape after the curve: no lr sent; the run was paused for the test, so it is resumed
        await press(pilot, "f")
        await wait_until(pilot, lambda: _finder(app), what="the finder")
        for e in finder_events(step=15):
            fake.emit(e)
        await wait_until(pilot, lambda: _finder(app).result is not None, what="the curve")
        await press(pilot, "escape")
        await wait_until(pilot, lambda: fake.kinds()[-1:] == ["resume"], what="resume")
        assert "set_lr" not in fake.kinds()
        # escape while the test still runs: the run is resumed when the test ends, still without an lr
        await press(pilot, "f")
        await wait_until(pilot, lambda: _finder(app), what="the finder")
        await press(pilot, "escape")
        n = len(fake.sent)
        for e in finder_events(step=20):
            fake.emit(e)
        await wait_until(pilot, lambda: len(fake.sent) > n, what="resume after the test")
        assert fake.kinds()[n:] == ["resume"] and "set_lr" not in fake.kinds()


@async_test
async def test_a_failed_test_says_why_and_a_paused_run_stays_paused():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.state.status == "running", what="the run")
        await press(pilot, "space")
        await wait_until(pilot, lambda: app.state.paused, what="paused")
        await press(pilot, "f")
        await wait_until(pilot, lambda: _finder(app), what="the finder")
        fake.emit(make_event("lr_find", phase="failed", error="the training split is empty", step=15,
                             paused_for_test=False, current_lr=0.001))
        await wait_until(pilot, lambda: "the training split is empty" in _status(app), what="the failure")
        await press(pilot, "enter")
        await wait_until(pilot, lambda: _finder(app) is None, what="closed")
        assert fake.kinds()[-1] == "lr_find"  # neither an lr nor a resume


def _footer_keys(screen) -> list[str]:
    return [k.description for k in screen.query("FooterKey")]


@async_test
async def test_the_footer_under_the_finder_says_resume_once_the_trainer_pauses():
    """The finder is a modal screen over the main one, whose footer (still on screen) listens only to its own screen:
    the trainer's "paused" arriving while the finder is up must still turn its Pause key into Resume. The events
    come at once after the key, before the finder has started (where CI once drew Pause)."""
    app, _ = _snapshot_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "Pause" in _footer_keys(app.screen), what="the main footer")
        await pilot.press("f")
        for e in finder_events():
            app.session.emit(e)
        await wait_until(pilot, lambda: app.paused and _finder(app) is not None, what="paused under the finder")
        main = app.screen_stack[0]
        await wait_until(pilot, lambda: "Resume" in _footer_keys(main), what="the footer's Resume")
        assert "Pause" not in _footer_keys(main)


def test_the_chart_marks_each_rule_with_its_own_glyph_and_the_cursor():
    done = finder_events()[-1]
    text = render_text(chart_data(done, cursor=10), 70, 16).plain
    for glyph in ("●", "▼", "◆"):
        assert glyph in text
    assert "1e-05" in text and "0.001" in text  # lr on a log axis: powers of ten
    without = render_text(chart_data(done), 70, 16).plain
    assert without != text  # the cursor line
    assert set(done["suggestions"]) == set(RULES)


def _snapshot_app() -> tuple[TuinetApp, ReplaySession]:
    from tests.app.test_snapshots import mnist_events

    session = ReplaySession(mnist_events())
    return TuinetApp(session), session


async def _open_finder(pilot) -> None:
    app = pilot.app
    await press(pilot, "f")
    await wait_until(pilot, lambda: _finder(app), what="the finder")
    for e in finder_events():
        app.session.emit(e)
    await wait_until(pilot, lambda: _finder(app).result is not None, what="the curve")
    # the footer under the finder says Resume once the app has taken in the "paused" event
    await wait_until(pilot, lambda: any(getattr(k, "description", None) == "Resume"
                                        for screen in app.screen_stack for k in screen.query("FooterKey")),
                     what="the footer's Resume")
    await press(pilot, "right", "right")
    await pilot.pause()


def test_finder_snapshot(snap_compare):
    app, _ = _snapshot_app()
    assert snap_compare(app, terminal_size=(120, 40), run_before=_open_finder)


def test_finder_snapshot_80x24(snap_compare):
    app, _ = _snapshot_app()
    assert snap_compare(app, terminal_size=(80, 24), run_before=_open_finder)
