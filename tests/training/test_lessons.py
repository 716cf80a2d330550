"""`tuinet learn`: every lesson runs headless on a small budget, its runs differ in exactly the one setting it is
about, and its result text reports what the runs measured."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuinet.cli.group import main
from tuinet.cli.learn import run_lesson_headless
from tuinet.errors import ConfigError
from tuinet.training.lessons import LESSONS, get_lesson

BUDGET = {"epochs": 1, "limit": 40}
IGNORED = {"name", "runs_dir"}  # where a run lives, not how it trains


def _differences(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if k not in IGNORED and a.get(k) != b.get(k)}


def _run(name: str, tmp_path: Path, capsys, budget=BUDGET) -> tuple[dict, list[dict]]:
    assert run_lesson_headless(get_lesson(name), dict(budget), str(tmp_path / "runs"), json_lines=True) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return lines[-1], lines[:-1]


def _check(name: str, tmp_path: Path, capsys, budget=BUDGET) -> None:
    lesson = get_lesson(name)
    result, events = _run(name, tmp_path, capsys, budget)
    assert result["lesson"] == name and len(result["runs"]) == len(lesson.runs)
    assert 2 <= len(lesson.runs) <= 4
    configs = []
    for run, (label, _) in zip(result["runs"], lesson.runs):
        folder = Path(run["run_dir"])
        assert folder.parent == Path(result["folder"]) and folder.name == label
        assert run["status"] == "finished"
        configs.append(json.loads((folder / "config.json").read_text()))
        # the result's line for this run says what its own metrics say
        epochs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()
                  if json.loads(x)["event"] == "epoch"]
        assert len(epochs) == budget["epochs"]
        best = max(e["val_accuracy"] for e in epochs)
        line = next(x for x in result["result"].splitlines() if x.strip().startswith(label + " "))
        assert f" val {100 * best:.1f}% " in line
    for cfg in configs:
        assert cfg["epochs"] == budget["epochs"] and cfg["limit"] == budget["limit"]
    for cfg in configs[1:]:
        diff = _differences(configs[0], cfg)
        assert len(diff) == 1 and diff <= set(lesson.varied), (name, diff)
    assert {k for cfg in configs[1:] for k in _differences(configs[0], cfg)} == set(lesson.varied)
    assert sum(1 for e in events if e.get("event") == "finished") == len(lesson.runs)


@pytest.mark.parametrize("name", [n for n in LESSONS if n != "cnn-vs-mlp"])
def test_lesson_runs_headless_and_its_runs_differ_in_one_setting(name, tmp_path, capsys):
    _check(name, tmp_path, capsys)


@pytest.mark.slow
def test_cnn_vs_mlp_lesson(tmp_path, capsys):
    _check("cnn-vs-mlp", tmp_path, capsys, {"epochs": 1, "limit": 200})
    result, events = _run("cnn-vs-mlp", tmp_path / "again", capsys, {"epochs": 1, "limit": 100})
    params = [e["num_params"] for e in events if e.get("event") == "started"]
    assert abs(params[0] - params[1]) / max(params) < 0.1  # "the same parameter count", within 10%
    assert f"{params[0]:,} parameters" in result["result"]


def test_a_lesson_refuses_to_set_what_it_compares():
    with pytest.raises(ConfigError, match="lesson lr compares runs that differ in lr; --lr cannot be set"):
        get_lesson("lr").configs({"lr": 0.1})
    assert get_lesson("overfitting").configs({"epochs": 40})[0][1]["epochs"] == 40


def test_learn_lists_lessons_and_names_a_wrong_one():
    runner = CliRunner()
    out = runner.invoke(main, ["learn"])
    assert out.exit_code == 0 and all(name in out.output for name in LESSONS)
    bad = runner.invoke(main, ["learn", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: no lesson called 'nope'")
    clash = runner.invoke(main, ["learn", "batch-size", "--batch-size", "8", "--headless"])
    assert clash.exit_code == 1 and "--batch-size cannot be set" in clash.output


@pytest.mark.slow
def test_in_the_app_the_runs_train_side_by_side_in_the_background(tmp_path, monkeypatch, capsys):
    """`tuinet learn NAME` on a terminal: every run started detached in one lesson folder, the Compare screen given
    the lesson (its title, caption and result function), the result printed when it closes."""
    import time

    import tuinet.app.compare as compare_app
    from tuinet.cli.learn import run_lesson_app

    seen = {}

    def fake_compare(records, runs_dir, lesson=None):
        seen.update(names=sorted(r.name for r in records), folder=Path(runs_dir), lesson=lesson)
        deadline = time.monotonic() + 120
        while lesson[2]() is None:  # the runs train in their own processes
            assert time.monotonic() < deadline, "the lesson's runs did not finish"
            time.sleep(0.2)
        return 0

    monkeypatch.setattr(compare_app, "run_compare_app", fake_compare)
    assert run_lesson_app(get_lesson("normalization"), dict(BUDGET), str(tmp_path / "runs")) == 0
    assert seen["names"] == ["off", "standardized"] and seen["folder"].parent == tmp_path / "runs"
    title, caption, _ = seen["lesson"]
    assert title.startswith("lesson normalization") and caption == get_lesson("normalization").caption
    for name in seen["names"]:
        status = json.loads((seen["folder"] / name / "status.json").read_text())
        assert status["status"] == "finished" and status["pid"] != os.getpid()  # trained by its own process
    assert "What happened in these runs (normalization)" in capsys.readouterr().out
