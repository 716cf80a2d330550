"""Ctrl-C or SIGTERM while the command line is still starting (importing NumPy and Numba) exits quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_exits_quietly(tmp_path, sig):
    """The signal lands while the interpreter imports the command line's modules (a fresh process, 0.15 s in):
    no KeyboardInterrupt traceback, exit code 128 + the signal."""
    p = subprocess.Popen([sys.executable, "-m", "tuinet.cli", "train", "--headless", "--dataset", "digits",
                          "--epochs", "1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "0"})
    time.sleep(0.15)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err + out, err
    assert p.returncode == 128 + sig
