"""The batch-change benchmark's code path runs (its figures are printed by ``python -m benchmarks.batch_change``)."""

from __future__ import annotations

import math

import pytest

from benchmarks import batch_change


@pytest.mark.slow  # two short real training runs, each in its own process
def test_batch_change_runs_each_size_from_the_epoch_asked(capsys):
    rows = batch_change.main(["--epochs", "2", "--at", "1", "--sizes", "128,32,32s", "--limit", "1280"])
    assert list(rows) == ["128", "32", "32s"]
    assert rows["128"]["steps_per_epoch"] == math.ceil(1280 / 128) and rows["32"]["steps_per_epoch"] == 1280 // 32
    assert rows["32"]["lr"] == rows["128"]["lr"] == 0.002 and rows["32s"]["lr"] == 0.0005
    assert all(r["samples_per_second"] > 0 and r["spread"] >= 0 and 0 < r["val_accuracy"] <= 1 for r in rows.values())
    out = capsys.readouterr().out
    assert "the default MNIST run on 1,280 digits, 2 epochs, batch 128 until epoch 1, then:" in out
