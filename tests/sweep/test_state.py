"""read_sweep and the control requests on sweep folders written by hand (no driver, no training)."""

from __future__ import annotations

import json
import os

import pytest

from tuinet.errors import ConfigError
from tuinet.sweep.control import promote_trial, stop_trial, take_requests
from tuinet.sweep.files import DriverLock
from tuinet.sweep.state import read_sweep


def _folder(tmp_path, trials):
    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"name": "s", "objective": "val_accuracy", "trials": 5}))
    (folder / "state.json").write_text(json.dumps({"trials": trials, "workers": 2,
                                                   "importances": {"lr": 0.75, "dropout": 0.25}}))
    return folder


def test_read_sweep_folds_the_state_and_the_running_trials_status(tmp_path):
    run = tmp_path / "runs" / "s-t002"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid(), "epoch": 3,
                                                 "best_val_accuracy": 0.91}))
    folder = _folder(tmp_path, [
        {"number": 0, "state": "complete", "params": {"lr": 0.1}, "value": 0.9, "epochs": 4, "budget": 4},
        {"number": 1, "state": "pruned", "params": {"lr": 0.5}, "value": 0.2, "epochs": 1, "budget": 4},
        {"number": 2, "state": "running", "params": {"lr": 0.01}, "value": 0.8, "epochs": 2, "budget": 4,
         "run_dir": str(run), "curve": [0.5, 0.8]},
        {"number": "bad"}])
    snap = read_sweep(folder)
    assert (snap.name, snap.objective, snap.direction, snap.planned, snap.workers) == ("s", "val_accuracy",
                                                                                      "maximize", 5, 2)
    assert [t.number for t in snap.trials] == [0, 1, 2]
    running = snap.trials[2]
    assert (running.epochs, running.value, running.curve) == (3, 0.91, (0.5, 0.8))  # fresher status.json wins
    assert snap.best.number == 2 or snap.best.number == 0
    assert snap.best.number == 0  # the best complete trial, not a running one
    assert (snap.epochs_run, snap.epochs_saved) == (4 + 1 + 3, 3)
    assert snap.importances == {"lr": 0.75, "dropout": 0.25}
    assert snap.live is False


def test_read_sweep_survives_a_missing_or_torn_state(tmp_path):
    folder = _folder(tmp_path, [])
    (folder / "state.json").write_text('{"trials": [{"number": 0, "sta')
    snap = read_sweep(folder)
    assert snap.trials == () and snap.best is None and snap.epochs_saved == 0
    with pytest.raises(ConfigError, match="not a sweep folder"):
        read_sweep(tmp_path)


def test_requests_need_a_live_driver_and_reach_it_in_order(tmp_path):
    folder = _folder(tmp_path, [])
    with pytest.raises(ConfigError, match="is not running"):
        stop_trial(folder, 0)
    lock = DriverLock(folder)
    lock.acquire()
    try:
        with pytest.raises(ConfigError, match="already running"):
            DriverLock(folder).acquire()
        assert read_sweep(folder).live
        stop_trial(folder, 3)
        promote_trial(folder, 1)
        with pytest.raises(ConfigError, match="whole number"):
            stop_trial(folder, -1)
        got = take_requests(folder)
        assert [(r["request"], r["trial"]) for r in got] == [("stop", 3), ("promote", 1)]
        assert take_requests(folder) == []
    finally:
        lock.release()
    assert not read_sweep(folder).live
