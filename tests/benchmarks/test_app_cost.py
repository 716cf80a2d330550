"""The app benchmark's code paths run (its figures are printed by ``python -m benchmarks.app_cost``, never asserted)."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from benchmarks import app_cost as bench


def _args(**kw) -> argparse.Namespace:
    base = dict(dataset="spiral", model="mlp", epochs=2, limit=None, batch_size=32, switch_interval=0.001, tab="dashboard")
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.slow  # a headless run, then 60 epochs with the app open and keys pressed
def test_headless_and_app_runs_report_throughput_and_key_latency(tmp_path):
    h = bench.run_headless(_args(), str(tmp_path))
    assert h["samples_per_second"] > 0 and h["train_seconds"] > 0
    # long enough that a key is pressed (every 0.5 s once steps flow) before it ends, whatever the load
    a = asyncio.run(bench._run_app(_args(epochs=300), str(tmp_path), keys=True))
    assert a["samples_per_second"] > 0 and a["redraws"] > 0
    assert a["answers"] and len(a["effects"]) >= 1  # keys were pressed, answered and confirmed by the trainer


@pytest.mark.slow  # four timed phases of an app run
def test_ab_run_alternates_paused_and_drawing_phases(tmp_path):
    r = asyncio.run(bench._run_ab(_args(epochs=10_000), str(tmp_path), phase_seconds=0.5, phases=4))
    assert len(r["rates"]["off"]) == 2 and len(r["rates"]["on"]) == 2
    assert all(x > 0 for x in r["rates"]["off"] + r["rates"]["on"])
    assert r["redraws"] > 0


@pytest.mark.slow  # four timed phases of an app run on the digits
def test_ab_run_on_the_draw_tab_alternates_a_digit_and_an_empty_canvas(tmp_path, monkeypatch):
    from tuinet.app.app import TuinetApp

    seen: list[dict] = []
    on_tick = TuinetApp._tick

    def tick(app):  # the answers the app received, to see the phases in them
        if app.state.probe is not None and (not seen or seen[-1] is not app.state.probe):
            seen.append(app.state.probe)
        on_tick(app)

    monkeypatch.setattr(TuinetApp, "_tick", tick)
    r = asyncio.run(bench._run_ab(_args(dataset="digits", epochs=10_000, tab="draw"), str(tmp_path),
                                  phase_seconds=0.5, phases=4))
    assert len(r["rates"]["off"]) == 2 and len(r["rates"]["on"]) == 2
    assert [e for e in seen if e.get("probs")] and [e for e in seen if e.get("probs") is None]  # drawn, then cleared
