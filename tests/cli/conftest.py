"""Helpers the command-line tests share: running ``tuinet`` in-process, checking one-line errors, a trainer process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner


def invoke(*args, env=None):
    """Run ``tuinet ARGS...`` through click's CliRunner (arguments may be paths or numbers)."""
    from tuinet.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_clean_error(result, *words):
    """The command failed with exactly one ``Error:`` line naming each of ``words``, and no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a handled error, not a crash
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def headless_trainer(tmp_path, request):
    """Start ``tuinet train --headless --json`` on an MNIST subset as a process, one step per event line; returns
    its Popen (stdout and stderr are pipes). Killed at the end of the test if it is still running."""

    def start(name: str, epochs: int = 300, runs_dir=None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "tuinet.cli", "train", "--dataset", "mnist", "--limit", "2000", "--model", "64",
               "--epochs", str(epochs), "--log-every", "1", "--headless", "--json",
               "--runs-dir", str(runs_dir or tmp_path), "--name", name]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tmp_path)

        def finalize():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

        request.addfinalizer(finalize)
        return proc

    return start
