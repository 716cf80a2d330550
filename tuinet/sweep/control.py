"""Requests to a running sweep driver from a viewer (the Sweep screen) or the command line: stop or promote a trial.

A request is a small JSON file dropped atomically into the sweep folder's ``control/``; the driver picks it up
within a fraction of a second and acts on it (it owns the study, so it alone decides a trial's fate): a stopped
trial gets the trainer's ``stop`` command (its checkpoint is saved) and is told to the study as pruned; a promoted
trial is never pruned and runs past its budget.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.sweep.files import CONTROL_DIR, driver_pid, is_sweep

#: request kinds the driver understands
REQUESTS = ("stop", "promote")


def _request(folder: str | Path, kind: str, number: int) -> Path:
    folder = Path(folder)
    if not is_sweep(folder):
        raise ConfigError(f"{folder}: not a sweep folder")
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ConfigError(f"trial number must be a whole number >= 0, got {number!r}")
    if driver_pid(folder) is None:
        raise ConfigError(f"sweep {folder.name} is not running; run the same `tuinet sweep` command again to "
                          "resume it")
    d = folder / CONTROL_DIR
    d.mkdir(mode=0o700, exist_ok=True)
    body = json.dumps({"request": kind, "trial": number, "time": time.time(), "pid": os.getpid()}).encode()
    name = f"{time.time_ns()}-{kind}-{number}-{secrets.token_hex(3)}"
    tmp = d / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, d / f"{name}.json")  # the driver only reads *.json: it never sees a half-written request
    return d / f"{name}.json"


def stop_trial(folder: str | Path, number: int) -> None:
    """Stop trial ``number`` of the sweep in ``folder`` (its checkpoint is saved); it counts as pruned."""
    _request(folder, "stop", number)


def promote_trial(folder: str | Path, number: int) -> None:
    """Let trial ``number`` run past its budget and never prune it."""
    _request(folder, "promote", number)


def take_requests(folder: str | Path) -> list[dict[str, Any]]:
    """The driver's side: the pending requests, oldest first, each removed as it is read."""
    d = Path(folder) / CONTROL_DIR
    try:
        names = sorted(p for p in os.listdir(d) if p.endswith(".json") and not p.startswith("."))
    except OSError:
        return []
    out = []
    for name in names:
        path = d / name
        try:
            req = json.loads(path.read_text())
            path.unlink()
        except (OSError, ValueError):
            continue
        if isinstance(req, dict) and req.get("request") in REQUESTS and isinstance(req.get("trial"), int):
            out.append(req)
    return out
