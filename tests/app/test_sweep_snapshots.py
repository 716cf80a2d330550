"""Snapshot tests of the Sweep screen (pytest-textual-snapshot) over the deterministic sweep of
tests/app/sweep_fixture.py, at 120x40 and 80x24. The sweep folder is given relative to a temporary working
directory, so the title line is the same on every run. Update after an intended change with
``pytest tests/app/test_sweep_snapshots.py --snapshot-update`` and look at the report before committing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.sweep_fixture import Recorder, make_sweep
from tuinet.app.screens.sweep import SweepView
from tuinet.app.sweep import SweepApp
from tuinet.app.testing import wait_until

FOLDER = Path("sweeps") / "lr-search"


@pytest.fixture
def sweep_app(tmp_path, monkeypatch) -> SweepApp:
    monkeypatch.chdir(tmp_path)
    snapshot = make_sweep(FOLDER)
    return SweepApp(FOLDER, reader=lambda folder: snapshot, control=Recorder(), poll=False)


async def _loaded(pilot) -> None:
    view = pilot.app.screen.query_one(SweepView)
    await wait_until(pilot, lambda: view.table.row_count == 9 and view.chart.builds > 0, what="the sweep")
    await pilot.pause()


def test_sweep(snap_compare, sweep_app):
    assert snap_compare(sweep_app, terminal_size=(120, 40), run_before=_loaded)


def test_sweep_80x24(snap_compare, sweep_app):
    assert snap_compare(sweep_app, terminal_size=(80, 24), run_before=_loaded)


def test_sweep_parameters_80x24(snap_compare, sweep_app):
    assert snap_compare(sweep_app, terminal_size=(80, 24), run_before=_loaded, press=["down"] * 5 + ["i"])
