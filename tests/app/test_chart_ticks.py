"""Tick labels of the charts: never two ticks with one label, however large the loss grows."""

from __future__ import annotations

import pytest

from tuinet.app.widgets.charts import fmt_tick, nice_ticks


@pytest.mark.parametrize("lo, hi", [(1.0e30, 1.25e30), (0.0, 3e30), (0.5, 3e29), (1e-6, 5e-6), (2e5, 2.3e5),
                                    (0.0, 1.0)])
def test_tick_labels_are_distinct(lo, hi):
    ticks, step = nice_ticks(lo, hi, 4)
    labels = [fmt_tick(t, step) for t in ticks]
    assert len(ticks) >= 2 and len(set(labels)) == len(labels), labels


def test_a_diverged_loss_axis_reads_plainly():
    ticks, step = nice_ticks(1.0e30, 1.25e30, 4)
    assert [fmt_tick(t, step) for t in ticks][:3] == ["1.00e30", "1.05e30", "1.10e30"]
