"""The sweep driver: owns the Optuna study, keeps W trials running, reports each epoch to the pruner, stops pruned
trials through the trainer's ``stop`` command, and resumes after a kill.

One driver per sweep folder (an flock on ``driver.lock``). Where trials run is a backend's business (local worker
processes in :mod:`tuinet.sweep.local`, Ray tasks in :mod:`tuinet.sweep.ray_backend`); the driver sees each
trial as a handle with ``poll()`` (new events), ``send(command)``, ``done`` and ``final``.

Run it in the background with ``python -m tuinet.sweep.driver SWEEP_FOLDER`` (``tuinet sweep --detach``).
"""

from __future__ import annotations

import math
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuinet.errors import ConfigError
from tuinet.protocol import make_command
from tuinet.sweep.control import take_requests
from tuinet.sweep.files import SPEC_NAME, STATE_NAME, DriverLock, read_json, run_curve, save_spec, write_json
from tuinet.sweep.spec import SweepSpec
from tuinet.sweep.study import importances, open_study, trial_by_number

POLL_SECONDS = 0.2  # the driver's loop: events, requests, free slots
STATE_SECONDS = 1.0  # state.json is rewritten at least this often while something changes
STOP_GRACE = 60.0  # seconds running trials get to save their checkpoint when the sweep is stopped
MAX_RESTARTS = 1  # a trial whose trainer died without a final event is resumed (or re-run) this many times

Report = Callable[[dict[str, Any]], None]


@dataclass
class Active:
    """A trial the driver runs now."""

    number: int
    trial: Any  # optuna.trial.Trial
    handle: Any
    params: dict[str, Any]
    budget: int
    run_name: str
    curve: dict[int, float] = field(default_factory=dict)
    stopping: str | None = None  # the reason of a stop sent to it
    promoted: bool = False
    restarts: int = 0
    extended: bool = False  # a promoted trial's budget was doubled once


class SweepDriver:
    """Run the sweep ``spec`` to its end (or until stopped).

    Args:
        spec: the parsed SPEC.
        backend: where trials run (:class:`~tuinet.sweep.local.LocalBackend` or the Ray backend).
        report: called with each sweep event (a dict with ``event``), for the console or JSON lines.
        storage: an RDB URL shared with other hosts; None for the journal in the sweep folder.
        worker: join a shared study as one more worker (no ``state.json``, the first driver's folder is elsewhere).
    """

    def __init__(self, spec: SweepSpec, backend, report: Report | None = None, storage: str | None = None,
                 worker: bool = False):
        self.spec, self.backend, self.storage, self.worker = spec, backend, storage, worker
        self.report = report or (lambda e: None)
        self.folder = spec.folder
        self.host = socket.gethostname()
        self.active: dict[int, Active] = {}
        self.waiting: list[int] = []  # trials of ours left running by an earlier driver: resumed first
        self.promoted: set[int] = set()
        self.stop_signal: int | None = None
        self.started_at = time.time()
        self._dirty = True
        self._state_time = 0.0
        self._importances: dict[str, float] = {}
        self._complete_seen = -1
        self.wake = threading.Event()  # set by a trial's event: the loop wakes at once instead of sleeping on
        self._restarts: dict[int, int] = {}  # trial -> times its trainer was lost and it was started again

    # --- events out --------------------------------------------------------------------------------------------------

    def _say(self, kind: str, **fields: Any) -> None:
        self.report({"event": kind, "time": round(time.time(), 3), "sweep": self.spec.name, **fields})

    # --- setup -------------------------------------------------------------------------------------------------------

    def _write_spec(self) -> None:
        save_spec(self.folder, self.spec, {"storage": self.storage, "backend": self.backend.kind,
                                           "workers": self.backend.capacity, **self.backend.settings()})

    def _ours(self, frozen) -> bool:
        attrs = frozen.user_attrs
        return attrs.get("host") == self.host and attrs.get("folder") == str(self.folder.absolute())

    def _recover(self) -> None:
        """Trials an earlier driver left running: told now when their run ended meanwhile, else queued to resume."""
        import optuna

        from tuinet.sweep.local import run_status

        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if not self._ours(frozen):
                continue
            run_dir = Path(frozen.user_attrs.get("run_dir", ""))
            status, _alive = run_status(run_dir) if frozen.user_attrs.get("run_dir") else ("unknown", False)
            n = frozen.number
            if frozen.user_attrs.get("promoted"):
                self.promoted.add(n)
            curve: dict[int, float] = {}
            if status in ("finished", "pruned"):  # it ended while no driver watched: its own record says how
                trial = trial_by_number(self.study, n)
                curve = run_curve(run_dir, self.spec.objective)
                for epoch, value in curve.items():
                    if epoch not in frozen.intermediate_values:
                        trial.report(value, epoch)
            if status == "finished" and curve and n not in self.promoted:
                self._tell_complete(n, curve, frozen.params)
            elif status == "pruned":
                self._tell_pruned(n, curve, frozen.user_attrs.get("budget", 0))
            else:
                self.waiting.append(n)

    # --- the loop ----------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until every trial has ended; returns the exit code (0 done, 128+signal when stopped)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = DriverLock(self.folder)
        lock.acquire()
        try:
            self._write_spec()
            self.study = open_study(self.spec, self.folder, self.storage)
            self._recover()
            self._say("sweep_started", folder=str(self.folder), trials=self.spec.trials,
                      workers=self.backend.capacity, backend=self.backend.kind, objective=self.spec.objective,
                      direction=self.spec.direction, resumed=len(self.waiting),
                      done=self._count_ended())
            while True:
                self._requests()
                for a in list(self.active.values()):
                    try:
                        self._watch(a)
                    except Exception as e:  # one trial's trouble (a folder gone, a refused resume) ends it alone
                        if self.active.pop(a.number, None) is not None:
                            a.handle.close()
                            self.backend.release(a.handle)
                            self._fail(a.number, f"{type(e).__name__}: {e}")
                if self.stop_signal is None:
                    self._fill()
                self._write_state()
                if not self.active and (self.stop_signal is not None or not self._more_to_run()):
                    break
                if self.stop_signal is not None and time.monotonic() > self._stop_deadline:
                    break  # trainers that did not stop in time train on; the next driver adopts them
                self.wake.wait(POLL_SECONDS)
                self.wake.clear()
            self._write_state(force=True)
            if self.stop_signal is not None:
                self._say("sweep_stopped", signal=signal.Signals(self.stop_signal).name,
                          resume=f"run the same `tuinet sweep` command again to resume {self.spec.name}")
                return 128 + self.stop_signal
            self._say("sweep_finished", **self.summary())
            return 0
        finally:
            for a in self.active.values():
                a.handle.close()
            self.backend.close()
            lock.release()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop the sweep: every running trial saves a checkpoint and stays to be resumed by the next driver."""
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        self._stop_deadline = time.monotonic() + STOP_GRACE
        for a in self.active.values():
            if a.stopping is None:
                a.stopping = "sweep stopped"
                a.handle.send(make_command("stop", reason="sweep stopped"))

    def _count_ended(self) -> int:
        import optuna

        S = optuna.trial.TrialState
        return len(_counted(self.study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL))))

    def _more_to_run(self) -> bool:
        return bool(self.waiting) or len(_counted(self.study.get_trials(deepcopy=False))) < self.spec.trials

    def _fill(self) -> None:
        """Start trials in the free slots: interrupted ones first, then new ones the sampler asks for."""
        while len(self.active) < self.backend.capacity:
            if self.waiting:
                self._restart(self.waiting.pop(0))
            elif len(_counted(self.study.get_trials(deepcopy=False))) < self.spec.trials:
                self._start_new()
            else:
                return

    def _start_new(self) -> None:
        import optuna

        trial = self.study.ask(fixed_distributions=self.spec.distributions())
        n = trial.number
        # drivers sharing the study (--storage) count its trials, then ask: two can count the same free place. The
        # storage numbers trials in the order they were made, so the trials before this one say whether it is over
        # the budget; if it is, it is told failed without running (marked surplus, left out of every count and view)
        ahead = _counted(t for t in self.study.get_trials(deepcopy=False) if t.number < n)
        if len(ahead) >= self.spec.trials:
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        params = dict(trial.params)
        name = f"{self.spec.name}-t{n:03d}"
        budget = self.spec.budget(params)
        config = self.spec.trial_config(params, name)
        for key, value in (("host", self.host), ("folder", str(self.folder.absolute())), ("run_name", name),
                           ("budget", budget), ("where", self.backend.kind)):
            trial.set_user_attr(key, value)
        try:
            handle = self.backend.start(n, config)
        except Exception as e:  # the run folder could not be made, the process not started: this trial fails
            self._fail(n, f"could not start: {e}")
            return
        trial.set_user_attr("run_dir", str(handle.run_dir.absolute()))
        handle.wake = self.wake
        self.active[n] = Active(n, trial, handle, params, budget, name, promoted=n in self.promoted)
        self._dirty = True
        self._say("trial_started", trial=n, run=name, params=params, budget=budget, where=handle.where,
                  run_dir=str(handle.run_dir))

    def _restart(self, n: int) -> None:
        """Resume trial ``n`` from its checkpoint, or run it again from scratch when it has none."""
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == n)
        attrs = frozen.user_attrs
        run_dir = Path(attrs["run_dir"]) if attrs.get("run_dir") else None
        params = dict(frozen.params)
        name = attrs.get("run_name") or f"{self.spec.name}-t{n:03d}"
        budget = int(attrs.get("budget") or self.spec.budget(params))
        trial = trial_by_number(self.study, n)
        how = "resumed"
        try:
            handle = self.backend.adopt(n, run_dir) if run_dir else None
            if handle is not None:
                how = "adopted"
            elif run_dir is not None and (run_dir / "latest.npz").exists():
                handle = self.backend.resume(n, run_dir, epochs=budget)
            else:
                if run_dir is not None and run_dir.exists():
                    self.backend.discard(run_dir)
                handle = self.backend.start(n, self.spec.trial_config(params, name))
                how = "restarted"
        except Exception as e:
            self._fail(n, f"could not resume: {e}")
            return
        trial.set_user_attr("run_dir", str(handle.run_dir.absolute()))
        handle.wake = self.wake
        curve = {int(k): float(v) for k, v in frozen.intermediate_values.items()}
        self.active[n] = Active(n, trial, handle, params, budget, name, curve=curve, promoted=n in self.promoted,
                                restarts=self._restarts.get(n, 0), extended=bool(attrs.get("extended")))
        self._dirty = True
        self._say("trial_started", trial=n, run=name, params=params, budget=budget, where=handle.where,
                  run_dir=str(handle.run_dir), resumed=how)

    # --- one trial ---------------------------------------------------------------------------------------------------

    def _watch(self, a: Active) -> None:
        for e in a.handle.poll():
            kind = e.get("event")
            if kind == "epoch":
                self._on_epoch(a, e)
            elif kind == "started" and e.get("where"):
                a.trial.set_user_attr("where", e["where"])
        if not a.handle.done:
            return
        self._dirty = True
        final = a.handle.final
        kind = final.get("event") if final else None
        epochs = max(a.curve, default=0)
        if kind == "finished":
            if a.promoted and not a.extended and epochs >= a.budget and self.stop_signal is None:
                self._extend(a)
                return
            del self.active[a.number]
            a.handle.close()
            self.backend.release(a.handle)
            if not a.curve:
                self._fail(a.number, f"no {self.spec.objective} was reported (does the data have a validation "
                                     "split?)")
            else:
                self._tell_complete(a.number, a.curve, a.params)
            return
        del self.active[a.number]
        a.handle.close()
        self.backend.release(a.handle)
        if kind == "stopped" and (final.get("reason") == "pruned" or a.stopping == "pruned"
                                  or (a.stopping is None and self.stop_signal is None)):
            # pruned, stopped from the Sweep screen, or by `tuinet stop RUN`: the trial ends here, pruned
            self._tell_pruned(a.number, a.curve, a.budget, by=final.get("reason"))
        elif self.stop_signal is not None and kind in ("stopped", None):
            self.waiting.append(a.number)  # left running in the study: the next driver resumes it
        elif kind == "failed":
            self._fail(a.number, str(final.get("error") or "the trainer failed"))
        elif a.restarts < MAX_RESTARTS:
            self._say("trial_lost", trial=a.number, restarts=a.restarts + 1,
                      message="the trainer ended without a final event; resuming it")
            self.waiting.insert(0, a.number)
            self._restarts[a.number] = a.restarts + 1
        else:
            self._fail(a.number, "the trainer ended without a final event (killed?)")

    def _on_epoch(self, a: Active, e: dict[str, Any]) -> None:
        value = e.get(self.spec.objective)
        epoch = e.get("epoch")
        if not isinstance(epoch, int) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if epoch in a.curve:
            return  # a replayed history (a resumed or adopted trial) repeats epochs already reported
        a.curve[epoch] = float(value)
        self._dirty = True
        a.trial.report(float(value), epoch)
        best = self._best_value(a.curve)
        self._say("trial_epoch", trial=a.number, epoch=epoch, budget=a.budget, value=value, best=best,
                  where=a.handle.where)
        if a.stopping is None and not a.promoted and epoch < a.budget and a.trial.should_prune():
            a.stopping = "pruned"
            a.handle.send(make_command("stop", reason="pruned"))

    def _extend(self, a: Active) -> None:
        """A promoted trial reached its budget: it goes on for as many epochs again."""
        a.handle.close()
        self.backend.release(a.handle)
        a.budget *= 2
        a.extended = True
        a.trial.set_user_attr("budget", a.budget)
        a.trial.set_user_attr("extended", True)
        a.handle = self.backend.resume(a.number, a.handle.run_dir, epochs=a.budget)
        a.handle.wake = self.wake
        self._say("trial_promoted", trial=a.number, budget=a.budget, message="runs past its budget")

    def _best_value(self, curve: dict[int, float]) -> float | None:
        if not curve:
            return None
        return min(curve.values()) if self.spec.direction == "minimize" else max(curve.values())

    def _tell_complete(self, n: int, curve: dict[int, float], params: dict[str, Any]) -> None:
        value = self._best_value(curve)
        self._attr(n, "epochs", max(curve, default=0))
        self.study.tell(n, value)
        self._dirty = True
        self._say("trial_complete", trial=n, value=value, epochs=max(curve, default=0), params=params)

    def _tell_pruned(self, n: int, curve: dict[int, float], budget: int, by: str | None = "pruned") -> None:
        import optuna

        epochs = max(curve, default=0)
        self._attr(n, "epochs", epochs)
        if by and by != "pruned":
            self._attr(n, "stopped_by", by)
        self.study.tell(n, state=optuna.trial.TrialState.PRUNED)
        self._dirty = True
        self._say("trial_pruned", trial=n, epoch=epochs, budget=budget, saved=max(int(budget) - epochs, 0),
                  value=self._best_value(curve), reason=by or "pruned")

    def _fail(self, n: int, message: str) -> None:
        import optuna

        self._attr(n, "error", message[:500])
        self.study.tell(n, state=optuna.trial.TrialState.FAIL)
        self._dirty = True
        self._say("trial_failed", trial=n, error=message)

    def _attr(self, n: int, key: str, value: Any) -> None:
        """Set a user attribute of trial ``n`` (running or not yet told)."""
        trial_by_number(self.study, n).set_user_attr(key, value)

    # --- requests from viewers ---------------------------------------------------------------------------------------

    def _requests(self) -> None:
        import optuna

        for req in take_requests(self.folder):
            n, kind = req["trial"], req["request"]
            a = self.active.get(n)
            if kind == "promote":
                self.promoted.add(n)
                if a is not None:
                    a.promoted = True
                try:
                    self._attr(n, "promoted", True)
                except (StopIteration, RuntimeError, ValueError):
                    continue  # no such trial, or it has ended
                self._say("trial_promoted", trial=n, message="never pruned; runs past its budget")
            elif kind == "stop":
                if a is not None and a.stopping is None:
                    a.stopping = "pruned"
                    a.handle.send(make_command("stop", reason="pruned"))
                    self._say("trial_stopping", trial=n, message="stopped from the sweep: counts as pruned")
                elif n in self.waiting:
                    self.waiting.remove(n)
                    frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == n)
                    if frozen.state == optuna.trial.TrialState.RUNNING:
                        self._tell_pruned(n, {int(k): v for k, v in frozen.intermediate_values.items()},
                                          frozen.user_attrs.get("budget", 0), by="user")
            self._dirty = True

    # --- what viewers read -------------------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Every trial of the study as ``state.json`` stores it."""
        import optuna

        S = optuna.trial.TrialState
        names = {S.COMPLETE: "complete", S.PRUNED: "pruned", S.FAIL: "failed", S.RUNNING: "running",
                 S.WAITING: "waiting"}
        out = []
        for t in _counted(self.study.get_trials(deepcopy=False)):
            a = self.active.get(t.number)
            curve = dict(a.curve) if a else {int(k): float(v) for k, v in t.intermediate_values.items()}
            state = names.get(t.state, "waiting")
            attrs = t.user_attrs
            if state == "running" and a is None and attrs.get("host") in (None, self.host):
                state = "waiting"  # ours, interrupted: resumed when a slot is free (another host's runs there)
            value = t.value if t.state == S.COMPLETE else self._best_value(curve)
            out.append({"number": t.number, "state": state, "params": dict(t.params), "value": value,
                        "epochs": max(curve, default=0) if curve else int(attrs.get("epochs") or 0),
                        "budget": a.budget if a else int(attrs.get("budget") or 0),
                        "run_dir": str(a.handle.run_dir) if a else attrs.get("run_dir"),
                        "run_name": attrs.get("run_name"),
                        "where": a.handle.where if a else (attrs.get("where", "local") if attrs.get("host") in
                                                           (None, self.host) else str(attrs["host"])),
                        "promoted": t.number in self.promoted or bool(attrs.get("promoted")),
                        "curve": [curve[k] for k in sorted(curve)], "error": attrs.get("error")})
        return out

    def _write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not (self._dirty and now - self._state_time >= STATE_SECONDS):
            return
        self._dirty = False
        self._state_time = now
        complete = self._count_complete()
        if complete != self._complete_seen:
            self._complete_seen = complete
            self._importances = importances(self.study)
        if self.worker:
            return
        write_json(self.folder / STATE_NAME, {"name": self.spec.name, "updated": time.time(),
                                              "workers": self.backend.capacity, "trials": self.rows(),
                                              "importances": self._importances})

    def _count_complete(self) -> int:
        import optuna

        return len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    def summary(self) -> dict[str, Any]:
        """The sweep's figures: trials by state, the best trial, epochs run and saved by pruning."""
        rows = self.rows()
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        full = sum(int(r["budget"] or 0) for r in rows if r["state"] in ("complete", "pruned"))
        run = sum(int(r["epochs"] or 0) for r in rows)
        saved = sum(max(int(r["budget"] or 0) - int(r["epochs"] or 0), 0) for r in rows if r["state"] == "pruned")
        done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
        sign = 1 if self.spec.direction == "minimize" else -1
        best = min(done, key=lambda r: sign * r["value"], default=None)
        return {"counts": counts, "epochs_run": run, "epochs_saved": saved, "epochs_full": full,
                "seconds": round(time.time() - self.started_at, 1),
                "best": None if best is None else {"trial": best["number"], "value": best["value"],
                                                   "params": best["params"], "run": best["run_name"],
                                                   "run_dir": best["run_dir"]},
                "importances": self._importances}


def _counted(trials) -> list:
    """The trials of the budget: all but the surplus ones (asked by a driver that lost a race for the last place)."""
    return [t for t in trials if not t.user_attrs.get("surplus")]


def main(argv: list[str] | None = None) -> int:
    """``python -m tuinet.sweep.driver FOLDER``: the detached driver of the sweep in FOLDER (from its sweep.json)."""
    import argparse

    from tuinet.sweep.backends import make_backend
    from tuinet.sweep.launch import EventLog
    from tuinet.sweep.report import LinePrinter
    from tuinet.training.signals import handle_stop_signals

    ap = argparse.ArgumentParser(prog="python -m tuinet.sweep.driver", description=main.__doc__)
    ap.add_argument("folder")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal or dropped SSH session must not end it
    saved = read_json(Path(args.folder) / SPEC_NAME)
    try:
        spec = SweepSpec.from_dict(saved)
        backend = make_backend(saved.get("backend", "local"), saved.get("workers"), spec,
                               ray_address=saved.get("ray_address"), shared_dir=saved.get("shared_dir"))
        report = EventLog(Path(args.folder), LinePrinter(sys.stdout, tty=False, epochs=False))
        driver = SweepDriver(spec, backend, report, storage=saved.get("storage"))
        with handle_stop_signals(lambda s: driver.stop(s), (signal.SIGTERM, signal.SIGINT)):
            return driver.run()
    except ConfigError as e:
        print(f"tuinet: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
