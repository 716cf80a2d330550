"""The one way every mode (headless, the app, a detached trainer) takes the signals that should stop training.

SIGHUP (a closed terminal or SSH connection), SIGTERM and SIGINT (Ctrl-C) must not kill a process that trains: the
trainer finishes its step, saves a checkpoint and marks the run stopped. :func:`handle_stop_signals` routes them to
a callback for the life of a block and puts the old handlers back afterwards.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

#: the signals that stop training gracefully
STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def handle_stop_signals(on_signal: Callable[[int], None] | None,
                        signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While the block runs, each of ``signals`` calls ``on_signal(signum)`` (None: the signal is swallowed)
    instead of its default action. Main thread only: elsewhere (where Python cannot set handlers) a no-op."""
    def handler(signum, frame):
        if on_signal is not None:
            on_signal(signum)

    old = {}
    for sig in signals:
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
