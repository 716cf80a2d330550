"""Helpers the sweep tests share: SPEC files, running `tuinet sweep` in this process or as a process, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuinet.cli.group import main

#: a SPEC on digits with a tiny model: epochs take milliseconds, so a sweep of a few trials takes seconds
SMALL = """
[train]
dataset = "digits"
model = "16"
batch_size = {batch}
epochs = {epochs}
keep_epochs = 0
log_every = 1000
[search]
lr = {{log_uniform = [1e-5, 3e-2]}}
[sweep]
trials = {trials}
sampler = "random"
pruner = "{pruner}"
startup_trials = 2
"""


def write_spec(tmp_path: Path, text: str | None = None, name: str = "spec.toml", **fields) -> Path:
    """A SPEC file (the SMALL one filled with ``fields`` when ``text`` is None)."""
    values = {"batch": 64, "epochs": 4, "trials": 4, "pruner": "none", **fields}
    path = tmp_path / name
    path.write_text(text if text is not None else SMALL.format(**values))
    return path


def run_cli(*args):
    """``tuinet ARGS...`` in this process; returns click's result."""
    return CliRunner().invoke(main, [str(a) for a in args])


def start_sweep(*args, env=None) -> subprocess.Popen:
    """``tuinet sweep ARGS... --headless`` as a process (its own session, so a test can kill it alone)."""
    return subprocess.Popen([sys.executable, "-m", "tuinet.cli.entry", "sweep", *map(str, args), "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def wait_until(cond, timeout: float = 60.0, what: str = "condition"):
    """Poll ``cond()`` until it returns something true (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill_tree(pid: int) -> None:
    """SIGKILL a process (gone already is fine)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def cleanup_trainers(tmp_path):
    """Kill any trainer process still holding a run folder under ``tmp_path`` when the test ends."""
    yield
    from tuinet.training.rundir import list_runs

    for s in list_runs(tmp_path / "runs"):
        pid = s.get("pid")
        if s.get("status") in ("loading", "running", "paused", "testing") and isinstance(pid, int):
            kill_tree(pid)
