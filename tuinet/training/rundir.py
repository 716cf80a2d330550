"""A run on disk: ``runs/<name>/`` with config.json, metrics.jsonl, status.json, latest/best checkpoints, a log.

``metrics.jsonl`` gets every event except the bulky picture events (weights, samples, boundary), one JSON line
each, flushed as it goes. ``status.json`` is rewritten atomically on every lifecycle change and each epoch, and is
what ``tuinet runs`` lists.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from tuinet.engine.checkpoint import atomic_write_bytes
from tuinet.errors import ConfigError
from tuinet.protocol import LIVE_STATUSES, PICTURE_EVENTS, to_json
from tuinet.training.procs import pid_alive, remove_stale_socket


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "run"


class RunDir:
    """One run's folder.

    Args:
        path: the run folder (created if missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self._log = None

    @classmethod
    def create(cls, runs_dir: str | Path, name: str | None, dataset: str, model: str) -> "RunDir":
        """A new run folder; the name defaults to ``<model>-<dataset>-<timestamp>`` and never reuses a folder."""
        runs = Path(runs_dir)
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{runs}: cannot create the runs folder ({e.strerror})") from None
        base = _slug(name) if name else f"{_slug(Path(model).stem)}-{_slug(Path(dataset).stem)}-" \
                                         f"{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        candidate, i = base, 1
        while (runs / candidate).exists():
            if name:
                raise ConfigError(f"run '{name}' already exists in {runs}; choose another --name or "
                                  f"continue it with `tuinet resume {name}`")
            i += 1
            candidate = f"{base}-{i}"
        return cls(runs / candidate)

    @property
    def name(self) -> str:
        """The run's name (its folder name)."""
        return self.path.name

    @property
    def latest(self) -> Path:
        """Path of the latest checkpoint."""
        return self.path / "latest.npz"

    @property
    def best(self) -> Path:
        """Path of the best (lowest validation loss) checkpoint."""
        return self.path / "best.npz"

    def write_json(self, filename: str, data: dict[str, Any]) -> None:
        """Write a JSON file atomically."""
        payload = json.dumps(data, indent=2, default=str).encode()
        atomic_write_bytes(self.path / filename, lambda f: f.write(payload))

    def read_json(self, filename: str) -> dict[str, Any]:
        """Read a JSON file of the run ({} when missing or unreadable)."""
        try:
            return json.loads((self.path / filename).read_text())
        except (OSError, ValueError):
            return {}

    def append_event(self, event: dict[str, Any]) -> None:
        """Append an event to metrics.jsonl (flushed) unless it is a bulky picture event."""
        if event.get("event") in PICTURE_EVENTS:
            return
        if self._metrics is None:
            self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._metrics.write(to_json(event) + "\n")
        self._metrics.flush()

    def log(self, message: str) -> None:
        """Append a timestamped line to log.txt."""
        if self._log is None:
            self._log = open(self.path / "log.txt", "a", buffering=1)
        self._log.write(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
        self._log.flush()

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into status.json (atomically) and return the new status."""
        status = self.read_json("status.json")
        status.update(fields)
        status["updated"] = time.time()
        self.write_json("status.json", status)
        return status

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event in metrics.jsonl (a torn last line from a crash is skipped)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def close(self) -> None:
        """Close open files."""
        for f in (self._metrics, self._log):
            if f is not None:
                f.close()
        self._metrics = self._log = None


def find_run(ref: str, runs_dir: str | Path | None = None) -> RunDir:
    """A run by name (in ``runs_dir``) or by path; a clear error when there is none."""
    from tuinet.training.config import default_runs_dir

    p = Path(ref)
    if (p / "config.json").exists():
        return RunDir(p)
    runs = Path(runs_dir or default_runs_dir())
    if (runs / ref / "config.json").exists():
        return RunDir(runs / ref)
    raise ConfigError(f"no run '{ref}' in {runs} (see `tuinet runs`)")


def list_runs(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Status of every run in ``runs_dir``, newest first; live runs whose process is gone are marked 'crashed'."""
    from tuinet.training.config import default_runs_dir

    runs = Path(runs_dir or default_runs_dir())
    out = []
    if not runs.is_dir():
        return out
    for d in runs.iterdir():
        if not (d / "config.json").exists():
            continue
        rd = RunDir.__new__(RunDir)
        rd.path, rd._metrics, rd._log = d, None, None
        status = rd.read_json("status.json")
        status.setdefault("name", d.name)
        status.setdefault("status", "unknown")
        if status["status"] in LIVE_STATUSES and not pid_alive(status.get("pid")):
            status["status"] = "crashed"
            remove_stale_socket(status.get("socket"))
        status["path"] = str(d)
        out.append(status)
    out.sort(key=lambda s: s.get("started", 0), reverse=True)
    return out



def run_summaries(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`list_runs` with each run's dataset, model and epochs filled in from its configuration, and a ``live``
    flag (a trainer process is running it now)."""
    out = []
    for s in list_runs(runs_dir):
        if not s.get("dataset") or not s.get("model"):
            cfg = RunDir(s["path"]).read_json("config.json")
            s.setdefault("epochs", cfg.get("epochs"))
            s["dataset"] = s.get("dataset") or cfg.get("dataset")
            s["model"] = s.get("model") or cfg.get("model")
        s["live"] = s.get("status") in LIVE_STATUSES and pid_alive(s.get("pid"))
        out.append(s)
    return out


def metric_events(run: RunDir) -> list[dict[str, Any]]:
    """The run's step, validation and epoch events in order; when a resumed run repeats a step or epoch (after a
    crash, events past the last checkpoint are written again), the later one wins."""
    kept: dict[tuple[str, Any], dict[str, Any]] = {}
    for e in run.events():
        kind = e.get("event")
        if kind in ("step", "validation"):
            key = (kind, e.get("step"))
        elif kind == "epoch":
            key = (kind, e.get("epoch"))
        else:
            continue
        kept.pop(key, None)
        kept[key] = e
    events = list(kept.values())
    order = {"step": 0, "validation": 1, "epoch": 2}
    events.sort(key=lambda e: (e.get("step") or 0, order[e["event"]]))
    return events
