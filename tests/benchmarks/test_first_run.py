"""The first-run benchmark's code path runs (its figures are printed by ``python -m benchmarks.first_run``, never
asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import first_run as bench


@pytest.mark.slow  # two cold-cache runs of a small dense model
def test_first_run_alternates_without_and_with_the_helper(capsys, monkeypatch):
    monkeypatch.setenv("TUINET_THREADS", "2")  # the helper runs on 2 cores or more, whatever this machine has
    assert bench.main(["--models", "64", "--pairs", "1", "--limit", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    off, on = out["runs"]
    assert (off["helper"], on["helper"]) == (False, True)
    assert off["helper_kernels"] is None and isinstance(on["helper_kernels"], int)
    assert all(r["first_step"] > 0 and r["cpu"] > 0 and r["wall"] > r["first_step"] for r in out["runs"])
    assert set(out["medians"]) == {"64 helper off", "64 helper on"}
