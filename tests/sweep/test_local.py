"""Local sweeps for real: trials are detached trainers on digits; pruning, kill and resume, stop and promote."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.sweep.conftest import kill_tree, run_cli, start_sweep, wait_until, write_spec
from tuinet.sweep.control import promote_trial, stop_trial
from tuinet.sweep.files import driver_pid
from tuinet.sweep.state import read_sweep
from tuinet.training.rundir import RunDir, list_runs

pytestmark = pytest.mark.slow


def _events(run_dir):
    return list(RunDir(run_dir).events())


def _study_trials(folder):
    """Every trial the study holds (read with Optuna, the source of truth)."""
    import optuna

    from tuinet.sweep.study import quiet_optuna

    quiet_optuna()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    return optuna.load_study(study_name=folder.name, storage=storage).get_trials(deepcopy=False)


def test_pruning_stops_bad_trials_early_with_a_checkpoint_and_says_what_it_saved(tmp_path, cleanup_trainers):
    spec = write_spec(tmp_path, name="pr.toml", epochs=8, batch=16, trials=6, pruner="median")
    result = run_cli("sweep", spec, "--json", "--workers", 2, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    pruned = [e for e in events if e["event"] == "trial_pruned"]
    assert pruned, "no trial was pruned"
    assert all(e["epoch"] < e["budget"] and e["saved"] == e["budget"] - e["epoch"] for e in pruned)
    finished = events[-1]
    assert finished["event"] == "sweep_finished" and finished["epochs_saved"] == sum(e["saved"] for e in pruned)
    assert finished["counts"]["pruned"] == len(pruned) and sum(finished["counts"].values()) == 6

    snap = read_sweep(tmp_path / "runs" / "pr")
    assert not snap.live and snap.epochs_saved == finished["epochs_saved"] > 0
    assert snap.best is not None and snap.best.state == "complete"
    assert snap.best.value == min(t.value for t in snap.trials if t.state == "complete")
    for t in snap.trials:
        status = RunDir(t.run_dir).read_json("status.json")
        assert status["status"] == ("pruned" if t.state == "pruned" else "finished")
        if t.state == "pruned":
            assert (t.run_dir / "latest.npz").exists() and t.epochs < t.budget
            stopped = [e for e in _events(t.run_dir) if e["event"] == "stopped"]
            assert stopped[-1]["reason"] == "pruned"
    # every trial is a normal run in the runs dir
    names = {s["name"]: s["status"] for s in list_runs(tmp_path / "runs")}
    assert {t.run_name for t in snap.trials} == set(names)
    assert sorted(names.values()).count("pruned") == len(pruned)


def test_a_killed_sweep_resumes_and_no_trial_runs_twice(tmp_path, cleanup_trainers):
    spec = write_spec(tmp_path, name="kr.toml", epochs=12, batch=16, trials=4)
    runs, folder = tmp_path / "runs", tmp_path / "runs" / "kr"
    proc = start_sweep(spec, "--workers", 2, "--runs-dir", runs)
    try:
        wait_until(lambda: any(t.epochs >= 2 for t in read_sweep(folder).trials) if (folder / "state.json").exists()
                   else False, what="a trial's second epoch")
        proc.send_signal(signal.SIGTERM)  # trials save their checkpoints and stay to be resumed
        out, _ = proc.communicate(timeout=60)
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped (SIGTERM)" in out
    interrupted = [t for t in read_sweep(folder).trials if t.state == "waiting"]
    assert interrupted and all((t.run_dir / "latest.npz").exists() for t in interrupted)

    # killed outright this time: its trainers train on, and the next driver takes them over
    proc = start_sweep(spec, "--workers", 2, "--runs-dir", runs)
    try:
        wait_until(lambda: "resumed" in proc.stdout.readline(), what="a resumed trial")
        kill_tree(proc.pid)
        proc.wait(10)
    finally:
        kill_tree(proc.pid)

    result = run_cli("sweep", spec, "--headless", "--workers", 2, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    trials = _study_trials(folder)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    for t in trials:  # each trial trained each epoch once: a resume went on from the checkpoint
        events = _events(t.user_attrs["run_dir"])
        epochs = [e["epoch"] for e in events if e["event"] == "epoch"]
        assert sorted(epochs) == list(range(1, 13)) and len([e for e in events if e["event"] == "finished"]) == 1
        assert t.value == min(e["val_loss"] for e in events if e["event"] == "epoch")
    resumed = [t for t in trials if any(e["event"] == "started" and e.get("resumed")
                                        for e in _events(t.user_attrs["run_dir"]))]
    assert {t.number for t in resumed} >= {t.number for t in interrupted}
    assert len(list(runs.glob("kr-t*"))) == 4


def test_stop_and_promote_reach_a_detached_sweep(tmp_path, cleanup_trainers):
    # epochs of 15-30 ms: trial 1 must still be running when the stop reaches it (through state.json, written
    # every 0.2 s, and the driver's next poll), whichever trial started first; with 30 epochs a CI run saw it end
    # first ("complete"). The promoted trial then runs twice as many.
    epochs = 300
    spec = write_spec(tmp_path, name="sp.toml", epochs=epochs, batch=8, trials=2)
    runs, folder = tmp_path / "runs", tmp_path / "runs" / "sp"
    result = run_cli("sweep", spec, "--detach", "--workers", 2, "--runs-dir", runs)
    assert result.exit_code == 0 and "started in the background" in result.output, result.output
    driver = driver_pid(folder)
    try:
        wait_until(lambda: len([t for t in read_sweep(folder).trials if t.state == "running" and t.epochs >= 1]) == 2,
                   what="both trials running")
        stop_trial(folder, 1)
        promote_trial(folder, 0)
        wait_until(lambda: driver_pid(folder) is None, timeout=120, what="the sweep's end")
        # started by this process, which lives on (as the sweep's app does): reaped, not left a zombie
        wait_until(lambda: not os.path.exists(f"/proc/{driver}"), timeout=30, what="the driver reaped")
    finally:
        pid = driver_pid(folder)
        if pid and pid > 0:
            kill_tree(pid)
    snap = read_sweep(folder)
    promoted, stopped = snap.trials
    assert promoted.promoted and promoted.state == "complete" and promoted.budget == promoted.epochs == 2 * epochs
    assert stopped.state == "pruned" and stopped.epochs < epochs
    assert RunDir(stopped.run_dir).read_json("status.json")["status"] == "pruned"
    attach = run_cli("attach", "sp", "--json", "--runs-dir", runs)  # the whole story, then the end
    kinds = [json.loads(line)["event"] for line in attach.output.splitlines()]
    assert attach.exit_code == 0 and kinds[0] == "sweep_started" and kinds[-1] == "sweep_finished"
    assert "trial_promoted" in kinds and "trial_pruned" in kinds


def test_two_processes_share_one_study_through_an_rdb_storage(tmp_path, cleanup_trainers):
    """`--storage URL --worker` on one "host", the first driver on another (two runs dirs here): one study, each
    trial run once by one of them."""
    spec = write_spec(tmp_path, name="sh.toml", epochs=8, batch=8, trials=4)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    worker = start_sweep(spec, "--storage", url, "--worker", "--workers", 1, "--runs-dir", tmp_path / "b")
    try:
        wait_until(lambda: "started" in worker.stdout.readline(), what="the worker's first trial")
        result = run_cli("sweep", spec, "--headless", "--storage", url, "--workers", 1, "--runs-dir", tmp_path / "a")
        assert result.exit_code == 0, result.output
        out, _ = worker.communicate(timeout=120)
    finally:
        kill_tree(worker.pid)
    assert worker.returncode == 0, out
    here = {p.name for p in (tmp_path / "a").glob("sh-t*")}
    there = {p.name for p in (tmp_path / "b").glob("sh-t*")}
    assert here and there and not here & there and len(here | there) == 4
    import optuna

    every = optuna.load_study(study_name="sh", storage=url).get_trials(deepcopy=False)
    trials = [t for t in every if not t.user_attrs.get("surplus")]  # a driver that lost the race for the last place
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in trials)
    assert all(t.state.name == "FAIL" and "run_dir" not in t.user_attrs for t in every if t not in trials)
    snap = read_sweep(tmp_path / "a" / "sh")  # the first driver's folder shows every trial, the other host's too
    assert len(snap.trials) == 4 and snap.backend == "local"
