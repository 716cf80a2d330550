"""Detached trainers for real: a background process, viewers that crash and come back, two viewers, SIGHUP, SIGKILL.

Each test starts its own trainer process (MNIST, 2000 samples) and its finalizer kills it, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.remote.conftest import LOG_EVERY, attach, attach_alone, kill, wait_until
from tuinet.cli import main
from tuinet.errors import ConfigError
from tuinet.protocol import make_command
from tuinet.remote.runs import probe
from tuinet.remote.sockets import socket_path_for
from tuinet.training.procs import pid_alive
from tuinet.training.rundir import list_runs

pytestmark = pytest.mark.slow  # every test here runs a trainer process

def _assert_continuous(events: list[dict]) -> list[int]:
    """Each step event averages the `batches` steps since the previous one: no gap, no duplicate."""
    steps = [e for e in events if e["event"] == "step"]
    assert steps, "no step events"
    prev = 0
    for e in steps:
        assert e["step"] - e["batches"] == prev, f"gap or duplicate before step {e['step']} (previous {prev})"
        prev = e["step"]
    return [e["step"] for e in steps]


def test_viewer_crash_reattach_is_continuous_and_trainer_survives_sighup(start_trainer):
    rd, proc = start_trainer("cont")
    # a real viewer process, killed without warning
    viewer = subprocess.Popen([sys.executable, "-m", "tuinet.cli", "attach", "--json", str(rd.path)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        hello = json.loads(viewer.stdout.readline())
        assert hello["event"] == "hello" and hello["run"] == "cont" and hello["pid"] == proc.pid
        for line in viewer.stdout:
            if json.loads(line).get("event") == "step":
                break
    finally:
        viewer.kill()
        viewer.wait(10)
    os.kill(proc.pid, signal.SIGHUP)  # the terminal closes: the trainer must not care

    session, history, live = attach(rd)
    try:
        assert proc.poll() is None
        first = max([e["step"] for e in history if e["event"] == "step"] or [0])
        live.wait_for(lambda e: e["event"] == "step" and e["step"] >= first + 3 * LOG_EVERY)
        assert pid_alive(proc.pid) and proc.poll() is None  # survived the viewer crash and SIGHUP
        steps = _assert_continuous(history + live.events)
        assert steps[-1] > first
        assert history[0]["event"] == "started"
        assert not any(e["event"] in ("stopped", "failed") for e in history + live.events)
        # what the viewer saw is exactly what the run logged
        logged = [e["step"] for e in rd.events() if e["event"] == "step"]
        assert logged[:len(steps)] == steps
    finally:
        session.close()
    assert proc.poll() is None  # a viewer detaching leaves training running
    again, _, more = attach(rd)  # ... and it goes on: a new viewer sees steps beyond the last one seen
    try:
        more.wait_for(lambda e: e["event"] == "step" and e["step"] > steps[-1])
    finally:
        again.close()


def test_two_viewers_share_commands(start_trainer):
    rd, proc = start_trainer("two")
    a, _, ev_a = attach_alone(rd)
    b, _, ev_b = attach(rd)
    try:
        assert b.hello["viewers"] == 2
        a.send(make_command("pause"))
        for ev in (ev_a, ev_b):
            ev.wait_for(lambda e: e["event"] == "paused")
        assert a.state["paused"] and b.state["paused"]
        b.send(make_command("set_lr", lr=0.0005))
        for ev in (ev_a, ev_b):
            ev.wait_for(lambda e: e["event"] == "lr_changed" and e["lr"] == 0.0005)
        assert a.state["lr"] == b.state["lr"] == 0.0005
        b.send(make_command("set_optimizer", name="sgd", hyperparams={"momentum": 0.9}))
        for ev in (ev_a, ev_b):
            ev.wait_for(lambda e: e["event"] == "optimizer_changed")
        assert a.state["optimizer"] == b.state["optimizer"] == "sgd"
        with pytest.raises(ConfigError):  # validated by the viewer: never reaches the trainer
            a.send({"command": "set_lr", "lr": -1})
        a.close()  # one viewer leaves; the other goes on steering
        b.send(make_command("resume"))
        ev_b.wait_for(lambda e: e["event"] == "resumed")
        assert not b.state["paused"] and b.running
    finally:
        a.close()
        b.close()


def test_killed_trainer_is_reported_and_its_socket_cleaned_up(start_trainer):
    rd, proc = start_trainer("killed")
    session, _, live = attach(rd)
    sock = socket_path_for(rd.path)
    proc.kill()
    proc.wait(10)
    e = live.wait_for(lambda e: e["event"] == "failed")
    assert e["synthetic"] and "died" in e["error"] and str(proc.pid) in e["error"]
    assert session.join(5) and not session.running
    assert live.events[-1]["event"] == "disconnected" and live.events[-1]["trainer_alive"] is False
    assert sock.exists()  # left behind by SIGKILL
    [status] = [s for s in list_runs(rd.path.parent) if s["name"] == "killed"]
    assert status["status"] == "crashed"
    assert not sock.exists()  # `tuinet runs` cleaned it up
    r = CliRunner().invoke(main, ["attach", "killed", "--runs-dir", str(rd.path.parent)])
    assert r.exit_code == 1 and "crashed" in r.output


def test_stale_socket_is_detected_by_attach(start_trainer):
    rd, proc = start_trainer("stale")
    sock = socket_path_for(rd.path)
    proc.kill()
    proc.wait(10)
    assert sock.exists()
    assert probe(rd.read_json("status.json")) == "stale"
    assert not sock.exists()


def test_cli_detach_then_stop(tmp_path, request):
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "tuinet.cli", "train", "--detach", "-d", "mnist", "--limit", "2000",
                        "--epochs", "200", "--name", "bg", "--runs-dir", str(runs)],
                       capture_output=True, text=True, timeout=120)
    status = json.loads((runs / "bg" / "status.json").read_text())
    request.addfinalizer(lambda: kill(status["pid"]))
    assert r.returncode == 0, r.stderr
    assert "run bg started in the background" in r.stdout and "tuinet attach bg" in r.stdout
    assert status["detached"] and Path(status["socket"]).exists()
    runs_out = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs)])
    assert "*" in runs_out.output
    r = CliRunner().invoke(main, ["stop", "bg", "--runs-dir", str(runs)])
    assert r.exit_code == 0, r.output
    assert "stopped bg" in r.output
    assert (runs / "bg" / "latest.npz").exists()
    wait_until(lambda: not pid_alive(status["pid"]), timeout=20)
    assert not pid_alive(status["pid"])
    final = json.loads((runs / "bg" / "status.json").read_text())
    assert final["status"] == "stopped" and final["socket"] is None
    assert not Path(status["socket"]).exists()


def test_stop_reports_a_run_that_ended_as_it_connected(start_trainer, monkeypatch):
    """`tuinet stop` on a run whose final event arrives between the connection and the stop command (another client
    stopped it, or its last epoch ended) reports that end at once: the event was read with the connection, so
    waiting for it timed out (a CI cleanup waited past its 120 s for a branch run that had just finished)."""
    from tuinet.remote.client import RemoteSession

    rd, proc = start_trainer("raced")
    connect = RemoteSession.__init__

    def connect_then_lose_the_race(self, *args, **kwargs):
        connect(self, *args, **kwargs)
        self.send(make_command("stop", reason="another client"))
        assert self.join(60), "the trainer did not stop for the other client"

    monkeypatch.setattr(RemoteSession, "__init__", connect_then_lose_the_race)
    r = CliRunner().invoke(main, ["stop", "raced", "--runs-dir", str(rd.path.parent), "--timeout", "30"])
    assert r.exit_code == 0, r.output
    assert "stopped raced at epoch" in r.output
    proc.wait(20)
    assert json.loads((rd.path / "status.json").read_text())["status"] == "stopped"


def test_a_detached_run_started_by_a_process_that_lives_on_leaves_no_zombie(tmp_path):
    """A lesson's app starts its runs detached and stays open after they end: each ended trainer is reaped."""
    import io

    from tuinet.remote.detach import detach_training
    from tuinet.training.config import TrainConfig

    info = detach_training(TrainConfig(dataset="spiral", epochs=2, runs_dir=str(tmp_path), name="z"), out=io.StringIO())
    pid = info["pid"]
    try:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=60)  # a zombie keeps its /proc entry
    finally:
        kill(pid)
    assert json.loads((tmp_path / "z" / "status.json").read_text())["status"] == "finished"
