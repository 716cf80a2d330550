"""``tuinet attach`` and ``tuinet stop`` (and, from :mod:`tuinet.cli.serve`, ``tuinet serve``): commands for detached
trainers."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import click

from tuinet.cli.common import CONTEXT, friendly_errors, runs_dir_option
from tuinet.errors import ConfigError, TuinetError
from tuinet.protocol import FINAL_EVENTS, exit_code, final_event


def _choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Ask which of several live runs to attach to (on a terminal)."""
    if not sys.stdin.isatty():
        names = ", ".join(s["name"] for s in runs)
        raise ConfigError(f"{len(runs)} live runs ({names}); say which: `tuinet attach NAME`")
    click.echo("live runs:")
    for i, s in enumerate(runs, 1):
        click.echo(f"  {i}. {s['name']}  ({s.get('status')}, epoch {s.get('epoch', '-')}/{s.get('epochs', '-')}, "
                   f"{s.get('dataset', '-')}, {s.get('model', '-')})")
    i = click.prompt("attach to", type=click.IntRange(1, len(runs)), default=1)
    return runs[i - 1]


def _config(rd):
    from tuinet.training.config import TrainConfig

    try:
        return TrainConfig.from_dict(rd.read_json("config.json"))
    except TuinetError:
        return None


def _final_code(session) -> int:
    """The exit code of a viewer whose connection ended: the run's (:func:`tuinet.protocol.exit_code`), or 0 when
    there is no final event but the run is still going (this viewer detached)."""
    final = final_event(session.last)
    if final is None and session.running:
        return 0
    return exit_code(final)


@click.command("attach", context_settings=CONTEXT)
@click.argument("run", required=False)
@runs_dir_option
@click.option("--headless", is_flag=True, help="No app: print the progress so far, then live (Ctrl-C detaches).")
@click.option("--json", "json_lines", is_flag=True, help="No app: print the hello, the history and the live "
                                                         "events as JSON lines (Ctrl-C detaches).")
@click.option("--app", "force_app", is_flag=True, hidden=True, help="Open the app even when stdout is not a "
                                                                    "terminal.")
@click.option("--page", is_flag=True, hidden=True, help="A browser tab of tuinet serve: the app on the run, or the "
                                                        "runs page saying why there is no live run to show.")
@friendly_errors
def attach_cmd(run: str | None, runs_dir: str | None, headless: bool, json_lines: bool, force_app: bool,
               page: bool) -> None:
    """Watch and steer a detached run, or a sweep (RUN names a sweep: its Sweep screen).

    Opens the app on RUN (by default the only live run; with several, asks which). Several viewers can attach to
    one run; a change made in one shows in all. In the app, d detaches (training goes on) and q asks whether to
    stop training or leave it running."""
    from tuinet.cli.sweep import attach_sweep, find_sweep
    from tuinet.remote.client import RemoteSession
    from tuinet.remote.runs import resolve

    if page:
        from tuinet.app.served import run_page

        sys.exit(run_page(run, runs_dir))
    sweep_folder = find_sweep(run, runs_dir)
    if sweep_folder is not None:  # a sweep: its Sweep screen (or its events, headless)
        attach_sweep(sweep_folder, headless, json_lines, force_app)
        return
    rd, status = resolve(run, runs_dir, choose=_choose)
    use_app = not headless and not json_lines and (force_app or sys.stdout.isatty())
    session = RemoteSession(status["socket"])
    if session.warning:
        click.echo(f"tuinet: {session.warning}", err=True)
    if use_app:
        from tuinet.app.remote import run_remote_app

        code, outcome = run_remote_app(session, _config(rd))
        if outcome == "detached":
            click.echo(f"detached from {rd.name}; training goes on (`tuinet attach {rd.name}` to come back)")
        elif outcome == "detached-paused":
            click.echo(f"detached from {rd.name}; it stays paused (`tuinet attach {rd.name}`, then space, resumes "
                       "it)")
        sys.exit(code)
    sys.exit(_print_events(session, rd.name, json_lines))


def _print_events(session, name: str, json_lines: bool) -> int:
    """Print the history and the live events until the run ends or Ctrl-C (which detaches)."""
    from tuinet.protocol import to_json
    from tuinet.training.console import ConsolePrinter, JsonPrinter

    lock = threading.Lock()
    printer = JsonPrinter() if json_lines else ConsolePrinter()

    def show(e: dict[str, Any]) -> None:
        with lock:
            try:
                printer(e)  # the console ignores the socket's own events (hello, disconnected)
            except (KeyError, TypeError, ValueError):
                pass

    if json_lines:
        click.echo(to_json(session.hello))
    for e in session.history:
        show(e)
    session.add_listener(show)
    try:
        while not session.join(0.5):
            pass
    except KeyboardInterrupt:
        session.close()
        click.echo(f"\ndetached from {name}; training goes on (`tuinet attach {name}` to come back)", err=True)
        return 0
    return _final_code(session)


@click.command("stop", context_settings=CONTEXT)
@click.argument("run")
@runs_dir_option
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the checkpoint to be written.")
@friendly_errors
def stop_cmd(run: str, runs_dir: str | None, timeout: float) -> None:
    """Stop a detached run cleanly: it saves a checkpoint, and `tuinet resume RUN` continues it later."""
    from tuinet.protocol import make_command
    from tuinet.remote.client import RemoteSession
    from tuinet.remote.runs import probe
    from tuinet.remote.sockets import RemoteError
    from tuinet.training.procs import pid_alive
    from tuinet.training.rundir import find_run

    rd = find_run(run, runs_dir)
    status = rd.read_json("status.json")
    state = probe(status)
    pid = status.get("pid")
    if state == "stale":
        raise ConfigError(f"run {rd.name} already crashed (pid {pid} is gone; its stale socket was removed)")
    if state == "ended":
        raise ConfigError(f"run {rd.name} is not running (status: {status.get('status', 'unknown')})")
    if state == "live":
        try:
            session = RemoteSession(status["socket"])
        except RemoteError as e:
            click.echo(f"tuinet: {e}; sending SIGTERM to pid {pid} instead", err=True)
            session = None
    else:
        session = None
    if session is not None:
        over = threading.Event()  # the trainer's final event, or the connection's end, has come
        session.add_listener(lambda e: over.set() if e.get("event") in (*FINAL_EVENTS, "disconnected") else None)
        session.send(make_command("stop", reason="tuinet stop"))
        click.echo(f"stopping {rd.name}: waiting for the checkpoint…", err=True)
        # the final event may have come before the listener (the run finished or stopped as we connected): it is
        # read from the session, not only waited for
        if session.final_event() is None:
            over.wait(timeout)
        e = session.final_event()
        ended = not session.running
        session.close()
        if not ended and e is None:
            raise ConfigError(f"run {rd.name} did not stop within {timeout:.0f} s (is it compiling?); try again, "
                              f"or `kill {pid}`")
        if e is None:
            raise ConfigError(f"lost run {rd.name} before it confirmed the stop; see `tuinet runs`")
        if e["event"] == "stopped":
            click.echo(f"stopped {rd.name} at epoch {e.get('epoch')} step {e.get('step')}; checkpoint "
                       f"{e.get('checkpoint') or '-'}; `tuinet resume {rd.name}` continues it")
        else:
            click.echo(f"{rd.name} had already {e['event']}")
        return
    # no socket (a foreground headless run, or a socket that refused us): SIGTERM means "stop with a checkpoint"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        raise ConfigError(f"run {rd.name} (pid {pid}) is still running {timeout:.0f} s after SIGTERM")
    click.echo(f"stopped {rd.name} (status: {rd.read_json('status.json').get('status', 'unknown')})")


def register(main: click.Group) -> None:
    """Add attach, stop and serve to the ``tuinet`` group."""
    from tuinet.cli.serve import serve_cmd

    for cmd in (attach_cmd, stop_cmd, serve_cmd):
        main.add_command(cmd)
