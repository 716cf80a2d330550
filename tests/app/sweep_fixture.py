"""A deterministic sweep for the Sweep screen's tests: trial run folders written by hand (tests/app/runs_fixture.py,
fixed times) and the snapshots :func:`tuinet.sweep.state.read_sweep` would return of them, so no study, no training
and no clock is involved, and snapshots do not move.

Trials: four complete, two pruned, one failed, one running (its trainer.lock names this test process), one waiting.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.app.runs_fixture import write_run
from tuinet.sweep.state import SweepSnapshot, TrialRow, best_trial
from tuinet.training.compare import load_run


BUDGET = 12
PLANNED = 16
#: number -> (state, params, loss speed, epochs run, run-folder status, where)
TRIALS = {
    0: ("complete", {"lr": 0.0031, "dropout": 0.12, "optimizer": "adam", "model": "mlp"}, 1.5, 12, "finished",
        "local"),
    1: ("pruned", {"lr": 0.00012, "dropout": 0.41, "optimizer": "sgd", "model": "mlp"}, 0.3, 3, "stopped", "local"),
    2: ("complete", {"lr": 0.021, "dropout": 0.05, "optimizer": "adam", "model": "128,64"}, 1.2, 12, "finished",
        "local"),
    3: ("pruned", {"lr": 0.08, "dropout": 0.33, "optimizer": "sgd", "model": "128,64"}, 0.5, 4, "stopped", "local"),
    4: ("failed", {"lr": 0.095, "dropout": 0.2, "optimizer": "sgd", "model": "mlp"}, 0.4, 1, "failed", "local"),
    5: ("running", {"lr": 0.0045, "dropout": 0.18, "optimizer": "adam", "model": "mlp"}, 1.4, 6, "live", "local"),
    6: ("complete", {"lr": 0.0009, "dropout": 0.27, "optimizer": "adam", "model": "128,64"}, 1.0, 12, "finished",
        "local"),
    7: ("complete", {"lr": 0.011, "dropout": 0.36, "optimizer": "sgd", "model": "mlp"}, 0.9, 12, "finished", "local"),
    8: ("waiting", {"lr": 0.0021, "dropout": 0.09, "optimizer": "adam", "model": "mlp"}, 1.0, 0, "", "local"),
}
IMPORTANCES = {"lr": 0.58, "optimizer": 0.23, "dropout": 0.13, "model": 0.06}
#: the searched space as the sweep folder's sweep.json records it
SPACE = {
    "lr": {"name": "lr", "kind": "log_uniform", "low": 1e-4, "high": 0.1, "step": None, "values": []},
    "dropout": {"name": "dropout", "kind": "uniform", "low": 0.0, "high": 0.5, "step": None, "values": []},
    "optimizer": {"name": "optimizer", "kind": "choice", "low": None, "high": None, "step": None,
                  "values": ["adam", "sgd"]},
    "model": {"name": "model", "kind": "choice", "low": None, "high": None, "step": None,
              "values": ["mlp", "128,64"]},
}


def trial_dir(runs: Path, number: int) -> Path:
    """Where the fixture writes trial ``number``'s run folder."""
    return runs / f"lr-search-trial-{number:04d}"


def make_sweep(folder: Path, numbers: list[int] | None = None) -> SweepSnapshot:
    """Write the sweep's sweep.json and its trials' run folders under ``folder``/runs and return the snapshot of the
    trials ``numbers`` (default: all); a trial's value is its run's best validation loss."""
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps({"name": "lr-search", "train": {"dataset": "digits", "epochs": BUDGET},
                                                   "search": SPACE, "objective": "val_loss", "trials": PLANNED}))
    rows = []
    for n in numbers if numbers is not None else list(TRIALS):
        state, params, speed, epochs, status, where = TRIALS[n]
        d = trial_dir(runs, n)
        value = None
        if status and not d.exists():
            changes = {k: v for k, v in params.items() if k in ("lr", "dropout", "optimizer", "model")}
            write_run(runs, d.name, {**changes, "epochs": BUDGET, "seed": n}, speed, status, epochs, 60.0 * n)
        if status:
            value = load_run(d).best_val_loss if state != "failed" else None
        rows.append(TrialRow(n, state, dict(params), value, epochs, BUDGET, d if status else None, where,
                             run_name=d.name if status else None))
    return snapshot_of(folder, rows)


def snapshot_of(folder: Path, rows: list[TrialRow], *, live: bool = True) -> SweepSnapshot:
    """The snapshot of ``rows``: the best by value, epochs run, epochs pruning saved (a pruned trial's unrun
    budget)."""
    scored = [t for t in rows if t.value is not None]
    best = best_trial(rows, "minimize")
    run = sum(t.epochs for t in rows)
    saved = sum(t.budget - t.epochs for t in rows if t.state == "pruned")
    return SweepSnapshot(folder, "lr-search", "val_loss", "minimize", tuple(rows), best,
                         dict(IMPORTANCES) if len(scored) >= 2 else {}, run, saved, live, planned=PLANNED, workers=2)


def with_state(snap: SweepSnapshot, number: int, **changes) -> SweepSnapshot:
    """``snap`` with trial ``number`` changed (its state, epochs, value …) and the totals recomputed."""
    rows = [dataclasses.replace(t, **changes) if t.number == number else t for t in snap.trials]
    return snapshot_of(snap.folder, rows, live=snap.live)


class Recorder:
    """A stand-in for :mod:`tuinet.sweep.control` that records what the screen asked."""

    def __init__(self):
        self.calls: list[tuple[str, Path, int]] = []

    def stop_trial(self, folder: Path, number: int) -> None:
        self.calls.append(("stop", folder, number))

    def promote_trial(self, folder: Path, number: int) -> None:
        self.calls.append(("promote", folder, number))
