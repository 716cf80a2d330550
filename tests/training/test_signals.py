"""The one signal helper: a stop signal calls the callback while the block runs, and the old handler comes back."""

from __future__ import annotations

import os
import signal

from tuinet.training.signals import handle_stop_signals


def test_signals_go_to_the_callback_inside_the_block_only():
    got: list[int] = []
    before = signal.getsignal(signal.SIGHUP)
    with handle_stop_signals(got.append):
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
    assert got == [signal.SIGHUP, signal.SIGTERM]
    assert signal.getsignal(signal.SIGHUP) is before


def test_none_swallows_the_signal():
    with handle_stop_signals(None, (signal.SIGTERM,)):
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
