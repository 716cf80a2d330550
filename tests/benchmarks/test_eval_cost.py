"""The evaluation-cost benchmark's code path runs (its figures are printed by ``python -m benchmarks.eval_cost``)."""

from __future__ import annotations

import pytest

from benchmarks import eval_cost


@pytest.mark.slow  # a short real training run
def test_eval_cost_splits_the_run_into_its_parts():
    r = eval_cost.main(["--dataset", "spiral", "--model", "mlp", "--epochs", "2", "--json"])
    assert r["training steps"] > 0 and r["evaluation"] > 0 and r["pictures"] > 0
    parts = sum(v for k, v in r.items() if isinstance(v, float) and k != "wall")
    assert parts == pytest.approx(r["wall"])  # every second of the run is in one part
    assert 0 < r["shares"]["training steps"] < 1
    from tuinet.engine.model import Sequential
    from tuinet.training.trainer import Trainer

    assert Sequential.evaluate.__qualname__ == "Sequential.evaluate"  # the timers are gone after the run
    assert Trainer.prepare.__qualname__ == "Trainer.prepare"
