"""`tuinet lr-find`: the range test from the command line, as a chart or one JSON object; bad options are one line."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import assert_clean_error, invoke

SMALL = ["--dataset", "moons", "--model", "16,16", "--optimizer", "sgd", "--batch-size", "32", "--seed", "1"]


def test_json_prints_one_object_with_the_suggestions_and_the_curve(tmp_path):
    r = invoke("lr-find", *SMALL, "--steps", "60", "--json")
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out["suggestions"]) == {"valley", "steepest", "minimum"} and out["suggested_rule"] == "valley"
    assert out["suggested_lr"] == out["suggestions"]["valley"] and 1e-3 < out["suggested_lr"] < 1.0
    n = len(out["lrs"])
    assert 10 <= n <= 60 and len(out["losses"]) == len(out["smoothed"]) == n and out["steps"] == 60
    assert out["lrs"] == sorted(out["lrs"]) and out["lrs"][0] == pytest.approx(1e-7)
    assert out["optimizer"] == "sgd" and out["batch_size"] == 32
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_plain_output_draws_the_curve_with_the_suggestions_marked():
    r = invoke("lr-find", *SMALL, "--steps", "40", "--start-lr", "1e-5", "--end-lr", "3")
    assert r.exit_code == 0, r.output
    for part in ("●", "▼", "◆", "valley", "(suggested)", "steepest", "min/10", "--lr ", "1e-05", "┤"):
        assert part in r.stdout, part


@pytest.mark.parametrize("args,words", [
    (["--steps", "3"], ["steps", "10 to 1000"]),
    (["--start-lr", "1", "--end-lr", "0.1"], ["end lr", "above the start lr"]),
    (["--end-lr", "-2"], ["end lr", "positive"]),
    (["--dataset", "moons", "--model", "nonsense"], ["nonsense"]),
    (["--dataset", "no-such-set"], ["no-such-set"]),
])
def test_bad_options_are_one_error_line(args, words):
    assert_clean_error(invoke("lr-find", *args), *words)
