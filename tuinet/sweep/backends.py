"""Where a sweep's trials run: a backend starts, resumes and adopts trial handles, and says how many run at once.

:class:`LocalBackend` runs each trial as a local trainer process pinned to one core; the Ray backend
(:mod:`tuinet.sweep.ray_backend`, ``pip install 'tuinet[ray]'``) runs them as Ray tasks on a cluster.
"""

from __future__ import annotations

from pathlib import Path

from tuinet.errors import ConfigError
from tuinet.sweep.local import LocalTrial, available_cores, default_workers, trainer_holding

MAX_WORKERS = 256


class LocalBackend:
    """Trials as local worker processes, one core each (``--workers``; default: one per core).

    Args:
        workers: trials at once; with more workers than cores, cores are shared round-robin.
    """

    kind = "local"

    def __init__(self, workers: int | None = None):
        self.cores = available_cores()
        self.capacity = workers or default_workers()
        self._free = list(range(self.capacity))  # worker slots; slot i runs on core cores[i % len(cores)]
        self._slot: dict[int, int] = {}  # id(handle) -> slot

    def _take(self) -> tuple[int, set[int]]:
        slot = self._free.pop(0) if self._free else 0
        return slot, {self.cores[slot % len(self.cores)]}

    def _bind(self, handle, slot: int):
        self._slot[id(handle)] = slot
        return handle

    def start(self, number: int, config) -> LocalTrial:
        """A new trial run of ``config``."""
        slot, cpus = self._take()
        try:
            return self._bind(LocalTrial.start(number, config, cpus), slot)
        except BaseException:
            self._free.insert(0, slot)
            raise

    def resume(self, number: int, run_dir: Path, epochs: int | None = None) -> LocalTrial:
        """Continue the trial run in ``run_dir`` from its latest checkpoint (``epochs``: its budget)."""
        slot, cpus = self._take()
        try:
            return self._bind(LocalTrial.resume(number, run_dir, cpus, epochs=epochs), slot)
        except BaseException:
            self._free.insert(0, slot)
            raise

    def adopt(self, number: int, run_dir: Path) -> LocalTrial | None:
        """Watch the trial's trainer when it is still alive (an earlier driver was killed); None otherwise."""
        if trainer_holding(run_dir) is None:
            return None
        slot, _cpus = self._take()
        return self._bind(LocalTrial.adopt(number, run_dir), slot)

    def discard(self, run_dir: Path) -> None:
        """Remove an interrupted trial's folder that has no checkpoint (it runs again from scratch)."""
        LocalTrial.restart_fresh(run_dir)

    def release(self, handle) -> None:
        """The trial ended: its slot (and core) is free."""
        slot = self._slot.pop(id(handle), None)
        if slot is not None:
            self._free.append(slot)
            self._free.sort()

    def settings(self) -> dict:
        """What ``sweep.json`` records of this backend (nothing beyond the workers)."""
        return {}

    def close(self) -> None:
        """Nothing to shut down: trial processes end by themselves."""


def make_backend(kind: str, workers: int | None, spec=None, ray_address: str | None = None,
                 shared_dir: str | None = None):
    """The backend for ``kind`` ("local" or "ray"), checked: one clear line for a bad value."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= MAX_WORKERS):
        raise ConfigError(f"option --workers must be a whole number from 1 to {MAX_WORKERS}, got {workers!r}")
    if kind == "ray":
        from tuinet.sweep.ray_backend import RayBackend

        return RayBackend(ray_address or "auto", workers, runs_dir=spec.runs_dir if spec else None,
                          shared_dir=shared_dir)
    return LocalBackend(workers)
