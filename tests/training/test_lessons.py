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
    # the verdict's accuracies on moved digits: the checkpoint's own, and the move is a move (checked against
    # np.roll, which wraps MNIST's black right border onto the left: the same inputs but for its outer columns)
    import numpy as np

    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.training.evaluation import checkpoint_model, rebuild_test_split
    from tuinet.training.lessons import SHIFTED_DIGITS, shifted_accuracy

    for run in result["runs"]:
        label = Path(run["run_dir"]).name
        acc = shifted_accuracy(run["run_dir"])
        line = next(x for x in result["result"].splitlines() if x.strip().startswith(f"{label}: "))
        assert f"as they are {100 * acc[0]:.1f}%, moved 2 pixels right {100 * acc[1]:.1f}%" in line
        ckpt = load_checkpoint(Path(run["run_dir"]) / "latest.npz")
        model = checkpoint_model(ckpt)
        x, y, _ = rebuild_test_split(ckpt)
        x, y = x[:SHIFTED_DIGITS], y[:SHIFTED_DIGITS]
        rolled = np.ascontiguousarray(np.roll(x, 2, axis=2))
        assert abs(np.mean(model.predict_proba(rolled).argmax(axis=1) == y) - acc[1]) <= 0.01
        assert np.mean(model.predict_proba(x).argmax(axis=1) == y) == acc[0]
    assert "w (draw), m (centring off)" in result["result"]


@pytest.mark.slow
def test_augmentation_lesson_closes_the_gap_and_reads_moved_digits(tmp_path, capsys):
    """With the lesson's own settings (1,000 digits, 30 epochs): the unaugmented net learns its training digits by
    heart, the augmented ones do not, and they read digits moved 2 pixels far better; every figure in the result
    is the runs' own (their last epoch, their checkpoint)."""
    from tuinet.training.lessons import shifted_accuracy

    result, _ = _run("augmentation", tmp_path, capsys, {})
    lines = {x.strip().split(":")[0]: x for x in result["result"].splitlines() if ": train " in x}
    gap, moved = {}, {}
    for run in result["runs"]:
        label, folder = Path(run["run_dir"]).name, Path(run["run_dir"])
        last = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["event"] == "epoch"][-1]
        gap[label] = last["train_accuracy"] - last["val_accuracy"]
        acc = shifted_accuracy(folder)
        moved[label] = acc[1]
        assert (f"train {100 * last['train_accuracy']:.1f}%, validation {100 * last['val_accuracy']:.1f}% "
                f"(gap {100 * gap[label]:.1f} points)") in lines[label]
        assert f"as they are {100 * acc[0]:.1f}%, moved 2 pixels right {100 * acc[1]:.1f}%" in lines[label]
    assert set(gap) == {"none", "shift", "shift-rotate-scale"}
    assert gap["none"] > 0.05 and gap["shift"] < gap["none"] / 2 and gap["shift-rotate-scale"] < gap["none"] / 2
    assert moved["shift"] > moved["none"] + 0.1 and moved["shift-rotate-scale"] > moved["none"] + 0.1


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


@pytest.mark.slow
def test_l1_zeroes_weights_and_l2_shrinks_them(tmp_path, capsys):
    """The L1/L2 lesson at its own settings: its verdict's figures are the checkpoints' own, and the penalties do what
    the caption says: L1 leaves most first-layer weights at zero, L2 few but a smaller norm than none."""
    import numpy as np

    from tuinet.training.lessons import ZERO, first_layer_weights

    result, _ = _run("l1-vs-l2", tmp_path, capsys, {"epochs": 30})
    zero, norm = {}, {}
    for run in result["runs"]:
        w = first_layer_weights(run["run_dir"])
        assert w is not None and w.shape == (64, 64)
        label = Path(run["run_dir"]).name
        zero[label], norm[label] = np.mean(np.abs(w) < ZERO), float(np.sqrt(np.sum(w.astype(np.float64) ** 2)))
        line = next(x for x in result["result"].splitlines() if x.strip().startswith(f"{label}: first layer"))
        assert f"first layer {100 * zero[label]:.0f}% of its 4,096 weights at zero" in line
        assert f"weight norm {norm[label]:.3g}," in line
    assert zero["l1"] > 0.5 and zero["none"] < 0.05 and zero["l2"] < 0.05
    assert norm["l2"] < 0.8 * norm["none"] and norm["l1"] < 0.8 * norm["none"]


def test_split_verdict_states_each_validation_sets_error_and_its_distance_to_test(tmp_path):
    from tuinet.training.lessons import RunSummary, result_text

    small = RunSummary("2-percent", tmp_path, status="finished", test_accuracy=0.95,
                       epochs=[{"epoch": 1, "val_accuracy": 0.75}, {"epoch": 2, "val_accuracy": 0.9}],
                       sizes={"train": 1581, "val": 36, "test": 180})
    large = RunSummary("30-percent", tmp_path, status="finished", test_accuracy=0.94,
                       epochs=[{"epoch": 1, "val_accuracy": 0.93}, {"epoch": 2, "val_accuracy": 0.95}],
                       sizes={"train": 1078, "val": 539, "test": 180})
    text = result_text(get_lesson("splits"), [small, large])
    # one standard error of an accuracy p on n samples: sqrt(p (1 - p) / n)
    assert ("2-percent: 36 validation samples, best validation accuracy 90.0% (one standard error about ±5.0 "
            "points), test accuracy 95.0% on 180: validation was 5.0 points below") in text
    assert "30-percent: 539 validation samples, best validation accuracy 95.0% (one standard error about ±0.9" in text
    assert "validation was 1.0 points above" in text
    # a perfect score on a few samples is not "no error": the error floor is one sample's worth
    perfect = RunSummary("tiny", tmp_path, epochs=[{"epoch": 1, "val_accuracy": 1.0}], sizes={"val": 4})
    assert "±25.0 points" in result_text(get_lesson("splits"), [perfect, large])


def test_init_lesson_shows_the_gradient_vanish_and_explode(tmp_path, capsys):
    """The initialization lesson at its own settings: x0.5 leaves layer 1 a tiny share of the output's gradient,
    He keeps them alike, x2 starts with a gradient and a loss far larger; the result says so in its own figures."""
    from tuinet.training.lessons import summarize

    result, _ = _run("init", tmp_path, capsys, {"epochs": 15})
    runs = {Path(r["run_dir"]).name: summarize(Path(r["run_dir"]).name, r["run_dir"]) for r in result["runs"]}
    small, he, large = runs["x0.5"], runs["he"], runs["x2"]
    ratio = {k: r.first_grad_norms[0] / r.first_grad_norms[-1] for k, r in runs.items()}
    assert ratio["x0.5"] < 0.05 and 0.2 < ratio["he"] < 5
    assert large.first_grad_norms[0] > 10 * he.first_grad_norms[0]
    assert large.epochs[0]["train_loss"] > 10 * he.epochs[0]["train_loss"]
    assert he.best_val_accuracy > max(small.best_val_accuracy, large.best_val_accuracy) + 0.2
    for label, r in runs.items():
        line = next(x for x in result["result"].splitlines() if x.strip().startswith(f"{label}: at step"))
        assert f"(ratio {ratio[label]:.2g})" in line
    assert "blew up" in next(x for x in result["result"].splitlines() if x.strip().startswith("x2: "))
