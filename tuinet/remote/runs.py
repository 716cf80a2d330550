"""Finding detached trainers: which runs are live, which left a stale socket behind (cleaned up here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.protocol import LIVE_STATUSES
from tuinet.training.procs import pid_alive, remove_stale_socket
from tuinet.training.rundir import RunDir, find_run, list_runs


def probe(status: dict[str, Any]) -> str:
    """``live`` (its trainer runs and serves a socket), ``foreground`` (runs, no socket), ``stale`` (the trainer
    died and left its socket: removed now) or ``ended``."""
    sock = status.get("socket")
    alive = pid_alive(status.get("pid"))
    if sock and alive and Path(sock).exists():
        return "live"
    if sock and not alive:
        remove_stale_socket(sock)
        return "stale"
    if alive and status.get("status") in LIVE_STATUSES:
        return "foreground"
    return "ended"


def live_runs(runs_dir: str | None = None) -> list[dict[str, Any]]:
    """Status dicts of the runs a viewer can attach to, newest first (stale sockets are cleaned up on the way)."""
    out = []
    for s in list_runs(runs_dir):
        if probe(s) == "live":
            out.append(s)
    return out


def resolve(ref: str | None, runs_dir: str | None = None, choose=None) -> tuple[RunDir, dict[str, Any]]:
    """The live run named ``ref`` (or the only live run); ``choose(runs)`` picks one of several, else an error."""
    if ref is None:
        runs = live_runs(runs_dir)
        if not runs:
            raise ConfigError("no live runs to attach to; start one with `tuinet train --detach ...` "
                              "(`tuinet runs` lists them all)")
        if len(runs) > 1:
            if choose is None:
                names = ", ".join(s["name"] for s in runs)
                raise ConfigError(f"{len(runs)} live runs ({names}); say which: `tuinet attach NAME`")
            picked = choose(runs)
        else:
            picked = runs[0]
        return RunDir(picked["path"]), picked
    rd = find_run(ref, runs_dir)
    status = rd.read_json("status.json")
    state = probe(status)
    if state == "live":
        return rd, status
    if state == "stale":
        raise ConfigError(f"run {rd.name} crashed (its trainer, pid {status.get('pid')}, is gone; its stale socket "
                          f"was removed); `tuinet resume {rd.name}` continues from the latest checkpoint")
    if state == "foreground":
        raise ConfigError(f"run {rd.name} is training in the foreground (pid {status.get('pid')}) without a control "
                          "socket; only runs started with `tuinet train --detach` can be attached")
    raise ConfigError(f"run {rd.name} is not running (status: {status.get('status', 'unknown')}); "
                      f"`tuinet plot {rd.name}` shows its curves")
