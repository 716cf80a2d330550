"""The Compare screen of `tuinet learn`: the lesson's title, its caption at the start, and its measured result over
the screen once the runs are done (not before)."""

from __future__ import annotations

from tests.app.runs_fixture import make_runs
from tuinet.app.compare import CompareApp
from tuinet.app.screens.lesson import LessonResultScreen
from tuinet.app.testing import async_test, press, wait_for_screen, wait_until
from tuinet.training.compare import load_runs


@async_test
async def test_the_result_shows_once_the_runs_are_done(tmp_path):
    done: list[str] = []
    app = CompareApp(load_runs(make_runs(tmp_path / "runs")), "runs", poll=False,
                     lesson=("lesson demo: a title", "look at the curves", lambda: done[0] if done else None))
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.title_line() == "lesson demo: a title"
        await wait_until(pilot, lambda: any(n.message == "look at the curves" for n in app._notifications),
                         what="the caption")
        app._check_lesson()  # what the once-a-second check does, while a run still goes on
        await pilot.pause()
        assert not isinstance(app.screen, LessonResultScreen) and app.lesson_result is None
        done.append("What happened in these runs (demo):\n  a  best val acc 90.0%")
        await wait_for_screen(pilot, LessonResultScreen, what="the result")
        assert "best val acc 90.0%" in str(app.screen.query_one("Static").render())
        await press(pilot, "escape")
        assert not isinstance(app.screen, LessonResultScreen) and app.lesson_result.startswith("What happened")
