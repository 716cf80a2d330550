"""The augmentation-cost benchmark's code path runs (its figures are printed by ``python -m benchmarks.augment_cost``)."""

from __future__ import annotations

import pytest

from benchmarks import augment_cost


@pytest.mark.slow  # a few short real training runs
def test_augment_cost_measures_every_setting_against_none(capsys):
    r = augment_cost.main(["--models", "32", "--rounds", "2", "--limit", "640", "--settings", "none;shift=1;noise=0.1"])
    rows = r["32"]
    assert list(rows) == ["none", "shift=1", "noise=0.1"]
    assert rows["none"]["ratio"] == 1.0 and rows["none"]["ms_per_batch"] == 0.0
    assert all(row["samples_per_second"] > 0 and row["ms_per_batch"] > 0 for k, row in rows.items() if k != "none")
    out = capsys.readouterr().out
    assert "32: samples/s (median of 2)" in out and "shift=1" in out
