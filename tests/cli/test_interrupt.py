"""Ctrl-C or SIGTERM while the command line is still starting (importing NumPy and Numba) exits quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _wait_until_it_catches(pid: int, sig: int, timeout: float = 30.0) -> bool:
    """Wait until process ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc/PID/status); False where
    /proc cannot tell."""
    path = f"/proc/{pid}/status"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        except (OSError, StopIteration, ValueError):
            return False
        if mask >> (sig - 1) & 1:
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_exits_quietly(tmp_path, sig):
    """The signal lands while the interpreter imports the command line's modules: no KeyboardInterrupt traceback,
    exit code 128 + the signal. The signal is sent as soon as the console script has set its handlers (Linux: it
    catches SIGTERM then, /proc says), before the imports that take most of a second; elsewhere 0.15 s in."""
    p = subprocess.Popen([sys.executable, "-m", "tuinet.cli", "train", "--headless", "--dataset", "digits",
                          "--epochs", "1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "0"})
    if not _wait_until_it_catches(p.pid, signal.SIGTERM):
        time.sleep(0.15)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err + out, err
    assert p.returncode == 128 + sig
