"""Run folders are never clobbered: one trainer per folder (a flock), atomic creation, a failed resume changes
nothing, dataset paths that work from any folder, private files, status.json never ahead of its checkpoint."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tuinet.cli import main
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import LOCK_NAME, RunDir, RunLockedError, absolute_dataset
from tuinet.training.trainer import Trainer

# holds the lock of the run folder argv[1] until stdin closes; says "locked" once it has it
HOLDER = textwrap.dedent("""
    import sys
    from tuinet.training.rundir import RunDir
    rd = RunDir(sys.argv[1])
    rd.lock()
    print("locked", flush=True)
    sys.stdin.read()
""")

# round after round: waits for the file <argv[1]>/go<i> to appear, then tries to create run "same" in <argv[1]>/runs<i>
RACER = textwrap.dedent("""
    import os, sys, time
    from tuinet.errors import ConfigError
    from tuinet.training.rundir import RunDir
    base, rounds = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    for i in range(rounds):
        while not os.path.exists(os.path.join(base, f"go{i}")):
            time.sleep(0.0005)
        try:
            rd = RunDir.create(os.path.join(base, f"runs{i}"), "same", "mnist", "mlp")
            print("won", flush=True)
        except ConfigError as e:
            print("lost", flush=True)
""")


def _csv(path: Path, n: int = 120) -> Path:
    """A small two-class table: two features, a label column."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,label\n" + "".join(f"{a:.4f},{b:.4f},{c}\n" for (a, b), c in zip(x, y)))
    return path


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file in the folder: content hash and mtime (ns)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


def _finished_run(tmp_path, monkeypatch, name: str = "tab", epochs: int = 1) -> RunDir:
    """A finished run on a CSV given by a path relative to the folder it was started from (tmp/a)."""
    a = tmp_path / "a"
    _csv(a / "data" / "table.csv")
    monkeypatch.chdir(a)
    cfg = TrainConfig(dataset="data/table.csv", epochs=epochs, batch_size=16, name=name,
                      runs_dir=str(tmp_path / "runs"))
    final = Trainer(cfg).run()
    assert final["event"] == "finished", final
    return RunDir(tmp_path / "runs" / name)


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


# --- dataset paths and failed resumes ---------------------------------------------------------------------------------


def test_dataset_path_is_stored_absolute_and_the_run_resumes_from_another_folder(tmp_path, monkeypatch):
    rd = _finished_run(tmp_path, monkeypatch)
    stored = rd.read_json("config.json")["dataset"]
    assert stored == str(tmp_path / "a" / "data" / "table.csv")
    assert absolute_dataset("mnist") == "mnist" and absolute_dataset("Iris") == "Iris"  # built-in names stay
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    r = CliRunner().invoke(main, ["resume", str(rd.path), "--epochs", "2", "--headless"])
    assert r.exit_code == 0, r.output
    status = rd.read_json("status.json")
    assert status["status"] == "finished" and status["epoch"] == 2


@pytest.mark.parametrize("damage", ["relative_path_from_elsewhere", "dataset_gone"])
def test_a_resume_that_cannot_start_leaves_the_run_as_it_was(tmp_path, monkeypatch, damage):
    rd = _finished_run(tmp_path, monkeypatch)
    if damage == "relative_path_from_elsewhere":  # a run written before paths were stored absolute
        cfg = rd.read_json("config.json")
        cfg["dataset"] = "data/table.csv"
        rd.write_json("config.json", cfg)
    else:
        shutil.rmtree(tmp_path / "a" / "data")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    before = _snapshot(rd.path)
    status = rd.read_json("status.json")
    assert status["status"] == "finished" and status["epoch"] == 1
    r = CliRunner().invoke(main, ["resume", str(rd.path), "--epochs", "3", "--headless"])
    assert r.exit_code == 1
    assert "table.csv: no such file or folder" in r.output
    after = _snapshot(rd.path)
    after.pop(LOCK_NAME), before.pop(LOCK_NAME)  # the lock file records who held it last: that is all it is for
    assert after == before
    assert rd.read_json("status.json") == status  # still finished at epoch 1, not `failed, epoch 0`
    # and the lock was let go: the run can be taken again at once
    assert RunDir(rd.path).lock()


# --- one trainer per run folder -------------------------------------------------------------------------------------


@pytest.mark.slow  # a second process holds the lock
def test_a_locked_run_refuses_a_second_trainer_and_changes_nothing(tmp_path, monkeypatch):
    rd = _finished_run(tmp_path, monkeypatch)
    holder = _start(HOLDER, str(rd.path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(rd.path)
        with pytest.raises(RunLockedError, match=rf"run tab is in use by another trainer \(pid {holder.pid}\)"):
            Trainer.resume(RunDir(rd.path), epochs=3)
        r = CliRunner().invoke(main, ["resume", str(rd.path), "--epochs", "3", "--headless"])
        assert r.exit_code == 1
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert lines == [f"Error: run tab is in use by another trainer (pid {holder.pid}); one trainer per run "
                         f"folder: wait for it to end, or stop it with `tuinet stop tab`"]
        # a trainer given the folder directly is refused before it writes anything
        cfg = TrainConfig.from_dict(rd.read_json("config.json"))
        final = Trainer(cfg, run_dir=RunDir(rd.path)).run()
        assert final["event"] == "failed" and "in use by another trainer" in final["error"]
        assert _snapshot(rd.path) == before
    finally:
        holder.stdin.close()
        holder.wait(10)
    # the holder is gone: its lock went with it
    t = Trainer.resume(RunDir(rd.path), epochs=2)
    assert t.run()["event"] == "finished"


def test_the_lock_is_held_for_the_trainers_lifetime(tmp_path):
    cfg = TrainConfig(dataset="iris", epochs=2, batch_size=16, name="life", runs_dir=str(tmp_path / "runs"))
    seen = []

    def on_event(e):
        if e["event"] in ("started", "epoch"):
            with pytest.raises(RunLockedError):  # another object (another open file) cannot take it meanwhile
                RunDir(tmp_path / "runs" / "life").lock()
            seen.append(e["event"])

    t = Trainer(cfg, emit=on_event)
    assert t.run()["event"] == "finished"
    assert seen == ["started", "epoch", "epoch"]
    other = RunDir(tmp_path / "runs" / "life")
    assert other.lock() and not other.lock()  # free after the run; taking it twice is a no-op
    other.unlock()


@pytest.mark.slow  # racing processes
def test_two_runs_started_at_once_with_the_same_name_get_one_folder(tmp_path):
    rounds, n = 10, 4
    racers = [_start(RACER, str(tmp_path), str(rounds)) for _ in range(n)]
    try:
        for p in racers:
            assert p.stdout.readline().strip() == "ready"
        for i in range(rounds):
            (tmp_path / f"go{i}").touch()
            results = [p.stdout.readline().strip() for p in racers]
            assert sorted(results) == ["lost"] * (n - 1) + ["won"], (i, results)
            assert [d.name for d in (tmp_path / f"runs{i}").iterdir()] == ["same"]
    finally:
        for p in racers:
            p.kill()
            p.wait()


# --- files on disk ----------------------------------------------------------------------------------------------------


def test_run_folder_and_files_are_private(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        rd = _finished_run(tmp_path, monkeypatch)
    finally:
        os.umask(old)
    assert stat.S_IMODE(rd.path.stat().st_mode) == 0o700
    names = {p.name for p in rd.path.iterdir()}
    assert {"config.json", "status.json", "metrics.jsonl", "latest.npz", LOCK_NAME} <= names
    for p in rd.path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_an_older_runs_open_files_are_made_private_when_a_trainer_takes_it(tmp_path, monkeypatch):
    rd = _finished_run(tmp_path, monkeypatch)
    os.chmod(rd.path, 0o755)
    os.chmod(rd.path / "metrics.jsonl", 0o644)
    t = Trainer.resume(RunDir(rd.path), epochs=2)
    assert t.run()["event"] == "finished"
    assert stat.S_IMODE(rd.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((rd.path / "metrics.jsonl").stat().st_mode) == 0o600


def test_temporary_files_of_interrupted_writes_are_removed_when_a_trainer_takes_the_folder(tmp_path, monkeypatch):
    rd = _finished_run(tmp_path, monkeypatch)
    torn = [rd.path / ".latest.npz.k2j4x1.tmp", rd.path / ".status.json.abcd.tmp"]
    for p in torn:
        p.write_bytes(b"half")
    keep = rd.path / "notes.tmp"  # not one of ours (no leading dot): left alone
    keep.write_text("mine")
    t = Trainer.resume(RunDir(rd.path), epochs=2)
    assert not any(p.exists() for p in torn) and keep.exists()
    assert t.run()["event"] == "finished"


def test_status_json_is_written_after_the_checkpoint_it_describes(tmp_path, monkeypatch):
    """At every status.json write, latest.npz already holds the epoch the status reports."""
    checked = []
    real = RunDir.update_status

    def update_status(self, **fields):
        status = real(self, **fields)
        if status.get("epoch") and status.get("status") in ("running", "finished"):
            ck = load_checkpoint(self.latest)
            assert ck.extra["trainer"]["epoch"] >= status["epoch"], (status["epoch"], ck.extra["trainer"]["epoch"])
            checked.append(status["epoch"])
        return status

    monkeypatch.setattr(RunDir, "update_status", update_status)
    cfg = TrainConfig(dataset="iris", epochs=3, batch_size=16, name="order", runs_dir=str(tmp_path / "runs"))
    assert Trainer(cfg).run()["event"] == "finished"
    assert checked and max(checked) == 3


def test_held_writes_are_written_when_the_run_starts(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.write_json("status.json", {"status": "finished", "epoch": 4})
    rd.hold_until_started()
    rd.update_status(status="loading", pid=1)
    rd.append_event({"event": "log", "level": "info", "message": "cleaning"})
    assert rd.read_json("status.json") == {"status": "finished", "epoch": 4}
    assert not (rd.path / "metrics.jsonl").exists()
    rd.append_event({"event": "started", "v": 1, "time": time.time()})
    assert rd.read_json("status.json")["status"] == "loading"
    assert [e["event"] for e in rd.events()] == ["log", "started"]
    rd.close()
