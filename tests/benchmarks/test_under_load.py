"""The under-load benchmark's code path runs (its figures are printed by ``python -m benchmarks.under_load``)."""

from __future__ import annotations

import pytest

from benchmarks import under_load


@pytest.mark.slow  # two short training processes, each with a competing busy loop
def test_under_load_reports_rates_before_and_after_the_competitor():
    out = under_load.main(["--seconds", "2.5", "--quiet", "0.5", "--rounds", "1", "--settings", "tuned,single",
                           "--json"])
    assert set(out["settings"]) == {"tuned", "single"}
    for r in out["settings"].values():
        assert r["before"] > 0 and r["after"] > 0 and r["worst_second"] >= 0
    assert out["settings"]["single"]["fell_back"] == "0/1"  # a pinned mode never switches
