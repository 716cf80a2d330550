"""The ``tuinet`` console script: the command line, with Ctrl-C during start-up answered by a quiet exit.

Importing NumPy, Numba and the rest takes a second or more; a Ctrl-C (or SIGTERM) in that time would print a
KeyboardInterrupt traceback from deep inside an import. Until a command installs its own handlers (training stops
with a checkpoint), these signals end the process with 128 + the signal number and no traceback: nothing has been
started that needs saving.
"""

from __future__ import annotations

import signal
import sys


def _quiet_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run() -> None:
    """Run the command line."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _quiet_exit)
    from tuinet.cli.group import main

    main()


if __name__ == "__main__":  # pragma: no cover
    run()
    sys.exit(0)
