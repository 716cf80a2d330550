"""The test figures a run ends with: of its best validation epoch's weights (best.npz) and of its last weights."""

from __future__ import annotations

import json

import pytest
from tests.cli.conftest import invoke
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir
from tuinet.training.trainer import Trainer

#: a small net at a high lr on digits: it overfits, so its best validation epoch comes before its last
OVERFIT = dict(dataset="digits", model="64", lr=0.05, batch_size=32, epochs=8, seed=3, keep_epochs=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    events: list[dict] = []
    final = Trainer(TrainConfig(runs_dir=str(root), name="over", **OVERFIT), emit=events.append).run()
    assert final["event"] == "finished", final
    return root, final, events


def test_final_on_best_equals_eval_of_best_npz(finished):
    root, final, events = finished
    epochs = [e for e in events if e["event"] == "epoch"]
    assert final["best_epoch"] < final["epochs"], "the fixture should overfit: pick a config whose best comes early"
    best = json.loads(invoke("eval", "over", "--runs-dir", root, "--best", "--json").output)
    last = json.loads(invoke("eval", "over", "--runs-dir", root, "--last", "--json").output)
    assert best["epoch"] == final["test_best"]["epoch"] == final["best_epoch"]
    assert final["test_best"]["accuracy"] == best["test_accuracy"]
    assert final["test_best"]["loss"] == pytest.approx(best["test_loss"], rel=1e-6)
    assert last["epoch"] == final["test_last"]["epoch"] == final["epochs"]
    assert final["test_last"]["accuracy"] == last["test_accuracy"]
    assert final["test_last"]["loss"] == pytest.approx(last["test_loss"], rel=1e-6)
    # the run reports the best weights' figures by default, and eval of the run does the same, naming the other
    assert final["final"] == "best" and final["test_accuracy"] == best["test_accuracy"]
    plain = json.loads(invoke("eval", "over", "--runs-dir", root, "--json").output)
    assert plain["weights"] == "best" and plain["test_accuracy"] == best["test_accuracy"]
    assert plain["other"]["weights"] == "last" and plain["other"]["test_accuracy"] == last["test_accuracy"]
    # best val accuracy is the highest one, best val loss the lowest, whatever epochs they come from
    assert final["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs)
    assert final["best_val_loss"] == min(e["val_loss"] for e in epochs)
    st = RunDir(root / "over").read_json("status.json")
    assert st["test_best"] == final["test_best"] and st["test_last"] == final["test_last"]
    assert st["best_val_accuracy"] == final["best_val_accuracy"] and st["best_val_loss"] == final["best_val_loss"]


def test_runs_and_eval_text_say_which_is_which(finished):
    root, final, _ = finished
    out = invoke("runs", "--runs-dir", root).output
    row = next(line for line in out.splitlines() if "over" in line)
    assert f"{final['test_best']['accuracy'] * 100:.2f}%" in row and f"{final['test_last']['accuracy'] * 100:.2f}%" in row
    assert f"{final['best_val_accuracy'] * 100:.2f}%" in row
    text = invoke("eval", "over", "--runs-dir", root).output
    assert "best validation epoch's weights" in text.splitlines()[0] and "the last weights (latest.npz" in text


def test_final_last_reports_the_last_weights(tmp_path):
    final = Trainer(TrainConfig(runs_dir=str(tmp_path), name="last", final="last", **OVERFIT)).run()
    assert final["final"] == "last" and final["test_accuracy"] == final["test_last"]["accuracy"]
    assert final["test_best"] is not None  # both are still evaluated
    plain = json.loads(invoke("eval", "last", "--runs-dir", tmp_path, "--json").output)
    assert plain["weights"] == "last" and plain["test_accuracy"] == final["test_last"]["accuracy"]
