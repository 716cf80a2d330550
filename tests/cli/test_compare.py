"""`tuinet compare` and `tuinet runs --compare` on real small runs, through click's CliRunner."""

from __future__ import annotations

import json
import re

import pytest
from tests.cli.conftest import assert_clean_error, invoke
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

ANSI = re.compile(r"\x1b\[")
RUNS = (("base", {"lr": 0.01}), ("slow", {"lr": 0.001}), ("drop", {"lr": 0.01, "dropout": 0.3}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished runs on digits that differ in learning rate and dropout, trained in this order."""
    root = tmp_path_factory.mktemp("runs")
    for name, kw in RUNS:
        final = Trainer(TrainConfig(runs_dir=str(root), name=name, dataset="digits", model="32", epochs=2,
                                    log_every=5, seed=1, **kw)).run()
        assert final["event"] == "finished", final
    return root


def test_headless_prints_table_diff_and_curves(runs):
    r = invoke("compare", "--runs-dir", runs, "--headless", "--width", "120")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert not ANSI.search(out)  # not a terminal: no colour
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["RUN", "STATUS", "DATASET", "MODEL"]
    # newest first, each with its marker
    assert [ln.split()[:3] for ln in lines[1:4]] == [["•", "drop", "finished"], ["x", "slow", "finished"],
                                                     ["+", "base", "finished"]]
    assert "settings that differ" in out
    diff = {ln.split()[0]: ln.split()[1:] for ln in out[out.index("SETTING"):].splitlines()[1:3]}
    assert diff == {"lr": ["0.01", "0.001", "0.01"], "dropout": ["0.3", "0", "0"]}
    for title in ("train loss", "validation loss", "train accuracy", "validation accuracy"):
        assert title in out
    assert "curves against epoch:   • drop   x slow   + base" in out
    # printed into a pipe, the four panels (two rows of two at 120 columns) keep their 14 rows each; plotext fitted
    # them into an 80x24 terminal and the 120 columns into 80
    charts = out[out.index("curves against"):].splitlines()[1:]
    assert len(charts) >= 2 * 14 and max(len(line) for line in charts) > 100, out
    assert "comparing the 3 most recent runs in" in r.stderr and "drop, slow, base" in r.stderr


def test_a_settings_diff_too_wide_for_the_terminal_is_narrowed():
    """Too wide for the terminal (eight runs with long names and values ran to 500 columns), the settings diff heads
    each run's column with its marker alone and cuts long values to fit; one that fits is left whole."""
    from types import SimpleNamespace

    from tuinet.cli.compare import diff_table

    records = [SimpleNamespace(name=f"mlp-mnist-20261204-08{i:02d}39") for i in range(8)]
    diff = [("lr", [0.002] * 7 + [3.0]), ("dataset_defaults", [["model", "optimizer", "lr", "weight_decay", "batch_size", "schedule"]] * 8)]
    wide = diff_table(records, diff)
    assert max(len(line) for line in wide.splitlines()) > 300 and "mlp-mnist-20261204-080039" in wide
    narrow = diff_table(records, diff, width=100).splitlines()
    assert "each run under its marker" in narrow[0]
    assert narrow[1].split() == ["SETTING", "•", "x", "+", "o", "*", "#", "%", "@"]
    assert all(len(line) <= 100 for line in narrow[1:]), narrow
    assert narrow[2].split() == ["lr"] + ["0.002"] * 7 + ["3"]
    assert narrow[3].split()[1] == "model," and narrow[3].rstrip().endswith("…")
    assert diff_table(records[:2], diff[:1], width=200) == diff_table(records[:2], diff[:1])  # it fits: whole


def test_the_chart_legend_goes_one_run_a_line_when_it_would_not_fit(runs):
    r = invoke("compare", "--runs-dir", runs, "--headless", "--width", "40")
    assert r.exit_code == 0, r.output
    legend = r.stdout[r.stdout.index("curves against"):].splitlines()[:4]
    assert legend == ["curves against epoch:", "  • drop", "  x slow", "  + base"]


def test_named_runs_keep_their_order_and_the_x_axis_changes(runs):
    r = invoke("compare", "base", "slow", "--runs-dir", runs, "--headless", "--x", "samples", "--width", "80")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [ln.split()[1] for ln in lines[1:3]] == ["base", "slow"]
    assert "curves against samples seen" in r.stdout
    assert "settings that differ" in r.stdout and r.stderr == ""  # named runs: nothing to announce


def test_json_output(runs):
    r = invoke("compare", "--runs-dir", runs, "--json", "--sort", "-best_val_accuracy")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    accs = [x["best_val_accuracy"] for x in d["runs"]]
    assert len(accs) == 3 and accs == sorted(accs, reverse=True)
    assert {x["setting"] for x in d["diff"]} == {"lr", "dropout"}
    run = d["runs"][0]
    assert set(run["columns"]) >= {"name", "status", "params", "best_val_loss", "test_accuracy"}
    assert run["status"] == "finished" and run["params"] > 0 and run["notes"] == []
    curve = run["curves"]["train_loss"]
    assert set(curve) == {"epoch", "step", "samples", "time", "y"}
    assert 2 <= len(curve["y"]) <= 200 and len(curve["step"]) == len(curve["y"])
    assert len(run["curves"]["val_accuracy"]["y"]) == 2


def test_filter_and_limit(runs):
    r = invoke("compare", "--runs-dir", runs, "--json", "--filter", "lr>=0.01", "--limit", "1")
    assert r.exit_code == 0, r.output
    assert [x["name"] for x in json.loads(r.stdout)["runs"]] == ["drop"]
    assert "first" not in r.stderr and "1 most recent of 2 runs matching the filter" in r.stderr


def test_runs_compare(runs):
    r = invoke("runs", "--runs-dir", runs, "--compare")
    assert r.exit_code == 0, r.output
    assert "settings that differ" in r.stdout and "validation loss" in r.stdout
    j = invoke("runs", "--runs-dir", runs, "--compare", "--json")
    assert [x["name"] for x in json.loads(j.stdout)["runs"]] == ["drop", "slow", "base"]


@pytest.mark.parametrize("args, words", [
    (("--filter", "lr<<1"), ["Error:", "not an operator"]),
    (("--filter", "lrr<1"), ["unknown filter key 'lrr'"]),
    (("--sort", "speed"), ["unknown sort key 'speed'"]),
    (("nope",), ["no run 'nope'"]),
    (("--filter", "dataset=mnist"), ["no run in", "matches the filter"]),
])
def test_errors_are_one_line(runs, args, words):
    assert_clean_error(invoke("compare", "--runs-dir", runs, "--headless", *args), *words)


def test_help_states_every_default():
    from tuinet.cli import main

    r = invoke("compare", "--help")
    assert r.exit_code == 0 and "Compare runs side by side" in r.output
    for p in main.commands["compare"].params:
        if p.param_type_name == "option" and p.name != "help":
            assert p.help and ("default" in p.help.lower() or p.show_default), p.name


def test_a_terminal_opens_the_compare_screen(runs, monkeypatch):
    import sys
    import types

    import tuinet.cli.compare as cli_compare

    calls = []
    fake = types.ModuleType("tuinet.app.compare")
    fake.run_compare_app = lambda records, runs_dir: calls.append(([r.name for r in records], runs_dir)) or 0
    monkeypatch.setitem(sys.modules, "tuinet.app.compare", fake)
    monkeypatch.setattr(cli_compare, "stdout_is_terminal", lambda: True)
    r = invoke("compare", "--runs-dir", runs, "base", "drop")
    assert r.exit_code == 0, r.output
    assert calls == [(["base", "drop"], str(runs))] and r.stdout == ""
    r = invoke("compare", "--runs-dir", runs, "base", "--headless")
    assert "settings: one run" in r.stdout and len(calls) == 1
    assert ANSI.search(r.stdout)  # a terminal: colours
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(invoke("compare", "--runs-dir", runs, "base", "--headless").stdout)


def test_nothing_to_compare(tmp_path):
    assert_clean_error(invoke("compare", "--runs-dir", tmp_path / "none", "--headless"), "no runs to compare")


def test_damaged_run_is_shown_with_a_note(runs, tmp_path):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(runs / "base", root / "base")
    shutil.copytree(runs / "slow", root / "slow")
    with open(root / "slow" / "metrics.jsonl", "a") as f:
        f.write('{"event":"step","v":1,"time":1.0,"st\n{"event":"step", broken\n')
    (root / "slow" / "status.json").unlink()
    r = invoke("compare", "--runs-dir", root, "--headless")
    assert r.exit_code == 0, r.output
    assert "notes" in r.stdout and "status.json is missing" in r.stdout
    assert "2 damaged lines skipped in metrics.jsonl" in r.stdout
