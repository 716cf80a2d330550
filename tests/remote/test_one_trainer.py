"""One trainer per run folder, with real processes: a second trainer on a live run (detached or foreground) is
refused with one line naming the holder, and changes nothing; a live control socket is never unlinked."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.remote.conftest import attach, wait_until
from tests.remote.test_socket import FakeSession
from tuinet.cli import main
from tuinet.errors import TuinetError
from tuinet.remote.server import ControlServer
from tuinet.remote.sockets import socket_path_for
from tuinet.training.procs import remove_stale_socket, socket_listening
from tuinet.training.rundir import RunDir

pytestmark = pytest.mark.slow  # trainer processes


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_a_second_trainer_on_a_live_detached_run_is_refused_and_changes_nothing(start_trainer):
    rd, proc = start_trainer("busy")
    wait_until(lambda: rd.latest.exists(), timeout=60)  # a checkpointed run, as in the reported case
    sock = socket_path_for(rd.path)
    runs = str(rd.path.parent)
    status = rd.read_json("status.json")
    config = (rd.path / "config.json").read_bytes()
    expected = (f"Error: run busy is in use by another trainer (pid {proc.pid}); one trainer per run folder: wait "
                f"for it to end, or stop it with `tuinet stop busy`")
    # `tuinet resume`, in the foreground and detached
    for extra in (["--headless"], ["--detach"]):
        r = CliRunner().invoke(main, ["resume", "busy", "--runs-dir", runs, *extra])
        assert r.exit_code == 1 and _error_lines(r.output) == [expected], r.output
    # a trainer process started on the folder by hand
    second = subprocess.run([sys.executable, "-m", "tuinet.remote.daemon", str(rd.path), "--resume"],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"run busy is in use by another trainer (pid {proc.pid})" in second.stderr
    now = rd.read_json("status.json")
    assert (now["pid"], now["socket"], now["detached"]) == (status["pid"], status["socket"], True)
    assert (rd.path / "config.json").read_bytes() == config
    # the live socket is kept: nothing takes it for a stale one
    assert socket_listening(sock) and not remove_stale_socket(sock)
    with pytest.raises(TuinetError, match="another trainer is listening"):
        ControlServer(FakeSession(), sock, "intruder").start()
    assert sock.exists()
    assert stat.S_IMODE(rd.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((rd.path / "daemon.log").stat().st_mode) == 0o600
    session, history, live = attach(rd)
    try:
        assert session.hello["pid"] == proc.pid
        seen = max([e["step"] for e in history if e["event"] == "step"] or [0])
        live.wait_for(lambda e: e["event"] == "step" and e["step"] > seen)
    finally:
        session.close()
    assert proc.poll() is None


def test_a_dead_socket_is_still_cleaned_up(tmp_path):
    path = tmp_path / "control.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound, never listening: what a killed trainer leaves
    assert path.exists() and not socket_listening(path)
    assert remove_stale_socket(path) and not path.exists()
    srv = ControlServer(FakeSession(), path, "new")  # and a new trainer can take its place
    srv.start()
    try:
        assert socket_listening(path)
    finally:
        srv.close(grace=0.5)


def test_resume_while_the_run_trains_in_the_foreground_is_refused(tmp_path):
    """The reported case: `tuinet resume RUN` while RUN trains in the foreground started a second trainer."""
    runs = tmp_path / "runs"
    fg = subprocess.Popen([sys.executable, "-m", "tuinet.cli", "train", "--headless", "-d", "iris", "--epochs",
                           "100000", "--name", "fg", "--runs-dir", str(runs)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        folder = runs / "fg"
        wait_until(lambda: fg.poll() is not None or (folder / "latest.npz").exists(), timeout=60)
        assert fg.poll() is None, fg.stderr.read()
        rd = RunDir(folder)
        wait_until(lambda: rd.read_json("status.json").get("epoch"), timeout=60)
        r = subprocess.run([sys.executable, "-m", "tuinet.cli", "resume", "fg", "--headless", "--runs-dir",
                            str(runs)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert _error_lines(r.stderr) == [f"Error: run fg is in use by another trainer (pid {fg.pid}); one trainer "
                                          "per run folder: wait for it to end, or stop it with `tuinet stop fg`"]
        assert r.stdout == ""
        epoch = rd.read_json("status.json")["epoch"]
        wait_until(lambda: rd.read_json("status.json")["epoch"] > epoch, timeout=60)  # the first trainer goes on
    finally:
        fg.send_signal(signal.SIGTERM)
        fg.wait(60)
    assert fg.returncode == 128 + signal.SIGTERM
    status = rd.read_json("status.json")
    assert status["status"] == "stopped" and status["pid"] == fg.pid
    events = [json.loads(line) for line in (rd.path / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("started") == 1  # one trainer ever wrote to this run
    # the trainer has gone, and its lock with it: now the run resumes
    r = subprocess.run([sys.executable, "-m", "tuinet.cli", "resume", "fg", "--headless", "--runs-dir", str(runs),
                        "--epochs", str(status["epoch"] + 1)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert rd.read_json("status.json")["status"] == "finished"


def test_a_detached_resume_that_cannot_start_leaves_the_run_as_it_was(tmp_path):
    from tests.training.test_rundir import _csv
    from tuinet.training.config import TrainConfig
    from tuinet.training.trainer import Trainer

    table = _csv(tmp_path / "data" / "table.csv")
    cfg = TrainConfig(dataset=str(table), epochs=1, batch_size=16, name="gone", runs_dir=str(tmp_path / "runs"))
    assert Trainer(cfg).run()["event"] == "finished"
    rd = RunDir(tmp_path / "runs" / "gone")
    table.unlink()
    status = rd.read_json("status.json")
    metrics = (rd.path / "metrics.jsonl").read_bytes()
    r = CliRunner().invoke(main, ["resume", "gone", "--runs-dir", str(rd.path.parent), "--detach", "--epochs", "3"])
    assert r.exit_code == 1
    [line] = _error_lines(r.output)
    assert line.startswith("Error: ") and f"{table}: no such file or folder" in line
    assert rd.read_json("status.json") == status  # finished at epoch 1, no socket: as it was
    assert (rd.path / "metrics.jsonl").read_bytes() == metrics
    assert not socket_path_for(rd.path).exists()
    wait_until(lambda: RunDir(rd.path).lock(), timeout=20)  # the background process let go of the run
