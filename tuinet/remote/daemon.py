"""The detached trainer process: ``python -m tuinet.remote.daemon RUN_DIR [--resume] [--epochs N] [--lock-fd FD]``.

Trains the run whose ``config.json`` is in RUN_DIR (or resumes it from ``latest.npz``) in a Session, serves it
on the run's control socket, and prints the headless console lines to stdout (the launcher points stdout at
``RUN_DIR/daemon.log``). SIGHUP is ignored; SIGTERM and SIGINT stop training cleanly with a checkpoint.

The process holds the run's lock (one trainer per run folder) for its whole life: the launcher takes it and hands
it down as ``--lock-fd``, or, without that option, the process takes it itself and exits 1 (changing nothing) when
another trainer has it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the detached trainer; returns the process exit code (0 finished, 3 stopped, 1 failed)."""
    ap = argparse.ArgumentParser(prog="python -m tuinet.remote.daemon", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    ap.add_argument("--epochs", type=int, help="with --resume: change the planned number of epochs")
    ap.add_argument("--lock-fd", type=int, help="descriptor of the run's lock, taken by the launcher")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal or dropped SSH session must not end training

    from tuinet.errors import TuinetError
    from tuinet.training.rundir import RunDir

    rd = RunDir(Path(args.run_dir))
    try:
        if args.lock_fd is not None:
            rd.adopt_lock(args.lock_fd)
        else:
            rd.lock()
    except (TuinetError, OSError) as e:  # another trainer has the run: touch nothing
        print(f"tuinet: {e}", file=sys.stderr, flush=True)
        return 1
    try:
        return _serve(rd, args)
    finally:
        rd.unlock()


def _serve(rd, args) -> int:
    """Train the locked run ``rd`` behind its control socket; returns the exit code."""
    from tuinet.errors import TuinetError
    from tuinet.protocol import exit_code, final_event, make_command
    from tuinet.remote.server import ControlServer
    from tuinet.remote.sockets import socket_path_for
    from tuinet.training.config import TrainConfig
    from tuinet.training.console import ConsolePrinter
    from tuinet.training.session import Session
    from tuinet.training.signals import handle_stop_signals
    from tuinet.training.trainer import Trainer

    path = socket_path_for(rd.path)
    if args.resume:
        rd.hold_until_started()  # a resume that cannot start leaves status.json and metrics.jsonl as they were
    rd.update_status(name=rd.name, status="loading", pid=os.getpid(), socket=str(path), detached=True)
    try:
        if args.resume:
            history = list(rd.events())
            trainer = Trainer.resume(rd, epochs=args.epochs)
        else:
            history = []
            config = TrainConfig.from_dict(rd.read_json("config.json"), source=str(rd.path / "config.json"))
            trainer = Trainer(config, run_dir=rd)
        session = Session(trainer)
        server = ControlServer(session, path, rd.name, history=history)
        server.start()
    except (TuinetError, OSError) as e:
        print(f"tuinet: {e}", file=sys.stderr, flush=True)
        rd.update_status(status="failed", error=str(e), socket=None)
        rd.close()
        return 1

    session.add_listener(ConsolePrinter(sys.stdout, tty=False))
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        if not signals:  # the first one stops; more only wait for the checkpoint (SIGKILL if you must)
            session.send(make_command("stop", reason=signal.Signals(signum).name))
        signals.append(signum)

    try:
        with handle_stop_signals(on_signal, (signal.SIGTERM, signal.SIGINT)):  # SIGHUP stays ignored (above)
            session.start()
            while not session.join(0.5):
                pass
    finally:
        server.close(grace=3.0)
        rd.update_status(socket=None)
    return exit_code(final_event(session.last))  # a signal's stop is 3 here, like any stop on request


if __name__ == "__main__":
    sys.exit(main())
