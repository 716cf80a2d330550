"""The gradient-profile benchmark's code paths run (its figures are printed by ``python -m
benchmarks.gradient_profile``, never asserted)."""

from __future__ import annotations

from benchmarks import gradient_profile as bench


def test_ab_rounds_and_the_direct_timing_report_figures(capsys):
    r = bench.main(["--dataset", "digits", "--model", "16", "--rounds", "1", "--epochs", "1", "--every", "5"])
    assert len(r["off"]) == len(r["on"]) == 1 and r["median_off"] > 0 and r["median_on"] > 0
    assert r["stats_events_per_run"] > 0  # the B runs did compute the profile, the A runs (below) did not
    assert bench.run(bench.argparse.Namespace(dataset="digits", model="16", epochs=1, limit=None, batch_size=64,
                                              seed=0), bench.OFF)["stats_events"] == 0
    assert r["direct"]["steps_seconds"] > 0 and r["direct"]["profile_seconds"] is not None
    assert "cost of the profile" in capsys.readouterr().out
