"""What a viewer sees of a sweep: :func:`read_sweep` folds the sweep folder into a :class:`SweepSnapshot`.

The driver rewrites ``state.json`` atomically whenever a trial changes (from the Optuna study, the single source
of truth); this module reads that file and each running trial's ``status.json`` (fresher epochs and metrics), never
the study itself: so it needs no Optuna, costs a few small file reads (fine to poll once a second), and a
half-written journal or a killed driver cannot break it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuinet.protocol import LIVE_STATUSES
from tuinet.sweep.files import SPEC_NAME, STATE_NAME, driver_pid, read_json
from tuinet.training.procs import pid_alive

#: the states a trial can be in, as the Sweep screen shows them
TRIAL_STATES = ("waiting", "running", "complete", "pruned", "failed")
#: objective -> the direction Optuna optimizes it in
DIRECTIONS = {"val_loss": "minimize", "val_accuracy": "maximize"}


@dataclass(frozen=True)
class TrialRow:
    """One trial of a sweep.

    Args:
        number: the Optuna trial number (0, 1, ...).
        state: "waiting" | "running" | "complete" | "pruned" | "failed".
        params: the sampled values, by SPEC name.
        value: the trial's objective (the best epoch's value; best so far while running).
        epochs: epochs run.
        budget: epochs it may run (more once promoted).
        run_dir: the trial's normal tuinet run folder (None before it has one, or when it ran on another host).
        where: "local", or the Ray node (or the host, for ``--worker`` processes) it runs on.
        run_name: the run's name (``tuinet attach NAME``), None before it has one.
        promoted: the user let it run past the budget; it is never pruned.
        curve: the objective after each epoch (for the parameter plots and the top-trials overlay).
    """

    number: int
    state: str
    params: dict[str, object]
    value: float | None
    epochs: int
    budget: int
    run_dir: Path | None
    where: str
    run_name: str | None = None
    promoted: bool = False
    curve: tuple[float, ...] = field(default=())


@dataclass(frozen=True)
class SweepSnapshot:
    """A whole sweep at one moment.

    Args:
        folder: the sweep folder.
        name: the sweep's name (its folder name).
        objective: "val_loss" | "val_accuracy".
        direction: "minimize" | "maximize" (follows from the objective).
        trials: every trial, by number.
        best: the best complete trial (the best running one while none is complete), None when no trial has a value.
        importances: Optuna's parameter importances ({} when too few trials are complete).
        epochs_run: epochs run by all trials together.
        epochs_saved: epochs pruning saved against every trial running its full budget.
        live: a sweep driver is running on this folder now.
        planned: how many trials the sweep runs in all.
        workers: trials run at once.
        backend: "local", "ray" or "storage" (trials shared with other hosts through an RDB storage).
    """

    folder: Path
    name: str
    objective: str
    direction: str
    trials: tuple[TrialRow, ...]
    best: TrialRow | None
    importances: dict[str, float]
    epochs_run: int
    epochs_saved: int
    live: bool
    planned: int = 0
    workers: int = 0
    backend: str = "local"


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _better(direction: str):
    return (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)


def _row(raw: dict[str, Any], objective: str, direction: str, live: bool) -> TrialRow | None:
    """A TrialRow from one ``state.json`` entry, refreshed from the run's ``status.json`` while it runs."""
    number = raw.get("number")
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    state = raw.get("state") if raw.get("state") in TRIAL_STATES else "waiting"
    run_dir = Path(raw["run_dir"]) if isinstance(raw.get("run_dir"), str) else None
    value, epochs = _float(raw.get("value")), _int(raw.get("epochs"))
    curve = tuple(v for v in (_float(x) for x in raw.get("curve") or ()) if v is not None)
    if state == "running" and run_dir is not None:
        status = read_json(run_dir / "status.json")
        trainer_alive = status.get("status") in LIVE_STATUSES and pid_alive(status.get("pid"))
        epochs = max(epochs, _int(status.get("epoch")))
        best = _float(status.get(f"best_{objective}"))
        if best is not None and (value is None or _better(direction)(best, value)):
            value = best
        if not live and not trainer_alive and raw.get("where", "local") == "local":
            state = "waiting"  # interrupted: the next driver on this folder resumes it
    params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
    return TrialRow(number=number, state=state, params=dict(params), value=value, epochs=epochs,
                    budget=_int(raw.get("budget")), run_dir=run_dir, where=str(raw.get("where") or "local"),
                    run_name=raw.get("run_name") if isinstance(raw.get("run_name"), str) else None,
                    promoted=bool(raw.get("promoted")), curve=curve)


def best_trial(trials: tuple[TrialRow, ...] | list[TrialRow], direction: str) -> TrialRow | None:
    """The best complete trial; while none is complete, the best running one; None when no trial has a value."""
    better = _better(direction)
    for states in (("complete",), ("running",)):
        best = None
        for t in trials:
            if t.state in states and t.value is not None and (best is None or better(t.value, best.value)):
                best = t
        if best is not None:
            return best
    return None


def read_sweep(folder: str | Path) -> SweepSnapshot:
    """The sweep in ``folder`` as it is now; cheap enough to poll once a second.

    Reads ``sweep.json`` and the driver's ``state.json`` (both written atomically: a reader never sees half a
    file) and the ``status.json`` of the trials that run. A folder whose driver has not written a state yet gives
    a snapshot without trials. Raises ConfigError only when ``folder`` is not a sweep at all.
    """
    from tuinet.errors import ConfigError

    folder = Path(folder)
    spec = read_json(folder / SPEC_NAME)
    if not spec:
        raise ConfigError(f"{folder}: not a sweep folder (no {SPEC_NAME})")
    objective = spec.get("objective") if spec.get("objective") in DIRECTIONS else "val_loss"
    direction = DIRECTIONS[objective]
    live = driver_pid(folder) is not None
    state = read_json(folder / STATE_NAME)
    rows = [r for r in (_row(t, objective, direction, live) for t in state.get("trials") or () if isinstance(t, dict))
            if r is not None]
    rows.sort(key=lambda r: r.number)
    trials = tuple(rows)
    imp = state.get("importances") if isinstance(state.get("importances"), dict) else {}
    importances = {str(k): float(v) for k, v in imp.items() if _float(v) is not None}
    saved = sum(max(t.budget - t.epochs, 0) for t in trials if t.state == "pruned")
    return SweepSnapshot(folder=folder, name=str(spec.get("name") or folder.name), objective=objective,
                         direction=direction, trials=trials, best=best_trial(trials, direction),
                         importances=importances, epochs_run=sum(t.epochs for t in trials), epochs_saved=saved,
                         live=live, planned=_int(spec.get("trials")), workers=_int(state.get("workers")),
                         backend=str(spec.get("backend") or "local"))
