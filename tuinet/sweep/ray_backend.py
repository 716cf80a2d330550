"""Trials as Ray tasks on a Ray cluster (``tuinet sweep --ray ADDRESS``; ``pip install 'tuinet[ray]'``).

Who owns what: the driver (this process) owns the Optuna study, asks for trials, decides pruning and tells
results, as with local workers. Each trial runs as one Ray task (``num_cpus=1``, one thread) that trains a normal
run folder on whichever node Ray picks. Events flow back through an ``EventHub`` actor pinned to the driver's
node: the task pushes its events there in small batches (every 0.25 s) and takes the commands queued for it (stop,
prune), so nothing assumes a filesystem shared between nodes. The driver mirrors each trial's events into a run
folder in its own runs dir while it runs (so ``tuinet runs``, ``compare`` and the Sweep screen see it live), and
when the task ends its whole run folder comes back as a tar archive and replaces the mirror (or, with
``--shared-dir``, trials write into a folder every node sees and nothing is copied).

A task lost with its node (or its worker process) is retried by the driver: resumed from the checkpoint that came
back, else run again from scratch, once; then it is marked failed. The study itself lives with the driver and is
never on a worker node, so losing a node loses at most the trials running there.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.protocol import FINAL_EVENTS, PICTURE_EVENTS
from tuinet.sweep.local import PIN_ENV

PUSH_SECONDS = 0.25  # a task sends its events (and takes its commands) this often
FORWARDED_OUT = PICTURE_EVENTS | {"layer_stats", "confusion"}  # bulky events that stay on the node


class EventHub:
    """A Ray actor on the driver's node: events from trials in, commands to trials out, by trial key."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}

    def push(self, key: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store a trial's events; returns the commands queued for it (one round trip for both)."""
        self.events.extend((key, e) for e in batch)
        return self.commands.pop(key, [])

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event since the last drain, in arrival order."""
        out, self.events = self.events, []
        return out

    def command(self, key: str, cmd: dict[str, Any]) -> None:
        """Queue a command for the trial ``key``."""
        self.commands.setdefault(key, []).append(cmd)


def _pack(folder: Path) -> bytes:
    """A run folder as a tar archive (its lock file left out)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(folder.iterdir()):
            if p.name != "trainer.lock" and not p.name.startswith(".") and p.is_file():
                tar.add(p, arcname=f"{folder.name}/{p.name}")
    return buf.getvalue()


def _unpack(data: bytes, into: Path) -> Path:
    """Extract a run folder archived by :func:`_pack` under ``into``; returns the folder."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        if len(names) != 1:
            raise ValueError("a trial archive holds one run folder")
        tar.extractall(into, filter="data")
    return into / names.pop()


def trial_task(key: str, config: dict[str, Any], hub, shared_dir: str | None, archive: bytes | None,
               epochs: int | None) -> dict[str, Any]:
    """Train one trial on this node (a Ray task): events to ``hub``, commands from it; returns the final event,
    where it ran, and (without ``shared_dir``) the run folder as a tar archive."""
    import ray

    from tuinet.protocol import final_event
    from tuinet.training.config import TrainConfig
    from tuinet.training.rundir import RunDir
    from tuinet.training.session import Session
    from tuinet.training.trainer import Trainer

    ctx = ray.get_runtime_context()
    where = f"ray:{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    base = Path(shared_dir) if shared_dir else Path(tempfile.mkdtemp(prefix="tuinet-ray-"))
    try:
        if archive is not None:
            run = RunDir(_unpack(archive, base)) if not shared_dir else RunDir(base / config["name"])
            trainer = Trainer.resume(run, epochs=epochs)
        else:
            cfg = TrainConfig.from_dict({**config, "runs_dir": str(base)})
            if shared_dir and (base / cfg.name).exists():
                shutil.rmtree(base / cfg.name)  # a lost attempt's folder: this attempt starts over
            run = RunDir.create(base, cfg.name, cfg.dataset, cfg.model)
            run.write_config(cfg.to_dict())
            trainer = Trainer(cfg, run_dir=run)
        session = Session(trainer)
        pending: list[dict[str, Any]] = []
        lock = threading.Lock()

        def collect(e: dict[str, Any]) -> None:
            if e.get("event") in FORWARDED_OUT:
                return
            if e.get("event") == "started":
                e = {**e, "where": where}
            with lock:
                pending.append(e)

        def flush() -> None:
            with lock:
                batch = pending[:]
                pending.clear()
            for cmd in ray.get(hub.push.remote(key, batch)):
                try:
                    session.send(cmd)
                except ConfigError:
                    pass

        session.add_listener(collect)
        session.start()
        while not session.join(PUSH_SECONDS):
            flush()
        flush()
        run.unlock()
        out = {"final": final_event(session.last), "where": where}
        if not shared_dir:
            out["archive"] = _pack(run.path)
        return out
    finally:
        if not shared_dir:
            shutil.rmtree(base, ignore_errors=True)


class _Proxy:
    """A Ray trial's session as the driver sees it, served on the mirror's control socket, so ``tuinet attach RUN``
    (and the Sweep screen's enter) watch and steer a trial running on another node: events as they stream back,
    commands through the hub. Satisfies what :class:`~tuinet.remote.server.ControlServer` uses of a Session."""

    def __init__(self, trial: "RayTrial"):
        self.trial = trial
        self._listeners: list = []
        self._state: dict[str, Any] = {"status": "loading"}
        self._lock = threading.Lock()

    def add_listener(self, fn) -> None:
        """Call ``fn(event)`` for every event from now on."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        """Stop calling ``fn``."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def feed(self, e: dict[str, Any]) -> None:
        """An event that came back from the task."""
        from tuinet.remote.client import _fold_state  # the viewer's own folding of events into a state

        with self._lock:
            _fold_state(self._state, e)
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(e)
            except Exception:  # noqa: BLE001 - a broken viewer must not break the driver
                pass

    @property
    def state(self) -> dict[str, Any]:
        """The trial's state as of its last event."""
        with self._lock:
            return dict(self._state)

    def send(self, command: dict[str, Any]) -> None:
        """Queue a viewer's command for the task (validated first)."""
        from tuinet.protocol import validate_command

        self.trial.send(validate_command(command))


class RayTrial:
    """The driver's handle on one trial running as a Ray task."""

    def __init__(self, backend: "RayBackend", number: int, run_dir: Path, ref, key: str):
        self.backend, self.number, self.run_dir, self.ref, self.key = backend, number, run_dir, ref, key
        self.where = "ray"
        self.final: dict[str, Any] | None = None
        self.wake = None
        self._ended = False
        self._mirror = None if backend.shared_dir else _Mirror(run_dir)
        self._server = None
        if self._mirror is not None:
            self._serve()

    def _serve(self) -> None:
        """The mirror's control socket (see :class:`_Proxy`); without one the trial is still steered by the sweep."""
        from tuinet.remote.server import ControlServer
        from tuinet.remote.sockets import socket_path_for

        self.proxy = _Proxy(self)
        path = socket_path_for(self.run_dir)
        try:
            server = ControlServer(self.proxy, path, self.run_dir.name, history=list(self._mirror.run.events()))
            server.start()
        except (OSError, ConfigError):
            return
        self._server = server
        self._mirror.run.update_status(socket=str(path))

    def poll(self) -> list[dict[str, Any]]:
        """The trial's new events (streamed through the hub); notices when the task has ended."""
        import ray

        events = self.backend.take_events(self.key)
        for e in events:
            if e.get("event") == "started" and e.get("where"):
                self.where = e["where"]
            if self._mirror is not None:
                self._mirror.add(e, self.where)
            if self._server is not None:
                self.proxy.feed(e)
        if not self._ended:
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:
                self._finish()
        return events

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.close(grace=1.0)
            self._server = None
            if self._mirror is not None:
                self._mirror.run.update_status(socket=None)

    def _finish(self) -> None:
        import ray

        self._ended = True
        self._close_server()
        try:
            result = ray.get(self.ref)
        except Exception as e:  # the node or worker died, the task raised: the trial is lost
            self.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if self._mirror is not None:
                self._mirror.lost(self.error)
            return
        self.final = result.get("final")
        self.where = result.get("where", self.where)
        if result.get("archive") is not None:
            tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.run_dir.parent))
            try:
                got = _unpack(result["archive"], tmp)
                if self._mirror is not None:
                    self._mirror.close()
                shutil.rmtree(self.run_dir, ignore_errors=True)
                os.replace(got, self.run_dir)  # the real run folder replaces the mirror
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    @property
    def done(self) -> bool:
        """The task has ended and its events were read."""
        return self._ended and not self.backend.has_events(self.key)

    def send(self, command: dict[str, Any]) -> None:
        """Queue a command for the trial (it takes it within PUSH_SECONDS)."""
        self.backend.hub.command.remote(self.key, command)

    def close(self) -> None:
        """Stop serving the mirror's socket (the task ends by itself)."""
        self._close_server()
        if self._mirror is not None:
            self._mirror.close()


class _Mirror:
    """The driver's copy of a remote trial's run folder while it runs: its events and a status, so the runs list,
    the Compare screen and the Sweep screen see it live; replaced by the real folder when the task ends."""

    def __init__(self, run_dir: Path):
        from tuinet.training.rundir import RunDir

        self.run = RunDir(run_dir)
        self.best: dict[str, float] = {}

    def add(self, e: dict[str, Any], where: str) -> None:
        self.run.append_event(e)
        kind = e.get("event")
        if kind == "started":
            self.run.update_status(name=self.run.name, status="running", pid=os.getpid(), where=where,
                                   started=e.get("time"), epochs=e.get("epochs"), epoch=e.get("epoch", 0))
        elif kind == "epoch":
            fields: dict[str, Any] = {"epoch": e.get("epoch")}
            vl, va = e.get("val_loss"), e.get("val_accuracy")
            if isinstance(vl, (int, float)) and vl < self.best.get("val_loss", float("inf")):
                self.best["val_loss"] = vl
                fields.update(best_val_loss=vl, best_val_accuracy=va)
            self.run.update_status(**fields)
        elif kind in FINAL_EVENTS:
            status = kind if not (kind == "stopped" and e.get("reason") == "pruned") else "pruned"
            self.run.update_status(status=status)

    def lost(self, error: str) -> None:
        self.run.update_status(status="failed", error=error)
        self.close()

    def close(self) -> None:
        self.run.close()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` that nothing answers on is one line at once (Ray itself would retry for minutes)."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--ray {address}: give HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


class RayBackend:
    """Run trials as Ray tasks on the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``).

    Args:
        workers: trials at once (default: the cluster's CPUs).
        runs_dir: the driver's runs dir (where trial folders come back to).
        shared_dir: a folder every node sees: trials write there and nothing is copied.
    """

    kind = "ray"

    def __init__(self, address: str, workers: int | None, runs_dir: str | None = None,
                 shared_dir: str | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'tuinet[ray]'") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.address = address
        self.shared_dir = shared_dir
        self.runs_dir = Path(runs_dir or "runs")
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            _check_reachable(address)
            try:
                ray.init(address=address, runtime_env={"env_vars": dict(PIN_ENV)}, log_to_driver=False,
                         logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"--ray {address}: cannot connect to the Ray cluster "
                                  f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = workers or max(1, cpus)
        here = ray.get_runtime_context().get_node_id()
        hub_cls = ray.remote(num_cpus=0)(EventHub)
        self.hub = hub_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        self._task = ray.remote(num_cpus=1, max_retries=0)(trial_task)
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._drained = 0.0
        self._attempt = 0

    def settings(self) -> dict[str, Any]:
        """What ``sweep.json`` records: the address and the shared folder."""
        return {"ray_address": self.address, "shared_dir": self.shared_dir}

    def _key(self, number: int) -> str:
        self._attempt += 1
        return f"{number}.{self._attempt}"

    def _run_dir(self, name: str) -> Path:
        return (Path(self.shared_dir) if self.shared_dir else self.runs_dir) / name

    def start(self, number: int, config) -> RayTrial:
        """Submit a new trial."""
        run_dir = self._run_dir(config.name)
        if not self.shared_dir:
            from tuinet.training.rundir import RunDir

            rd = RunDir.create(self.runs_dir, config.name, config.dataset, config.model)  # the mirror
            rd.write_config(config.to_dict())
            rd.update_status(name=rd.name, status="loading", pid=os.getpid(), dataset=config.dataset,
                             model=config.model, epochs=config.epochs, started=time.time())
            rd.unlock()
        data = config.to_dict()
        key = self._key(number)
        ref = self._task.remote(key, data, self.hub, self.shared_dir, None, None)
        return RayTrial(self, number, run_dir, ref, key)

    def resume(self, number: int, run_dir: Path, epochs: int | None = None) -> RayTrial:
        """Continue a trial from the run folder that came back (sent along as an archive)."""
        from tuinet.training.config import TrainConfig
        from tuinet.training.rundir import RunDir

        config = TrainConfig.from_dict(RunDir(run_dir).read_json("config.json"))
        archive = None if self.shared_dir else _pack(Path(run_dir))
        key = self._key(number)
        ref = self._task.remote(key, {**config.to_dict(), "name": Path(run_dir).name}, self.hub, self.shared_dir,
                                archive if not self.shared_dir else b"", epochs)
        return RayTrial(self, number, Path(run_dir), ref, key)

    def adopt(self, number: int, run_dir: Path):
        """Ray tasks do not outlive their driver's connection: nothing to adopt."""
        return None

    def discard(self, run_dir: Path) -> None:
        """Remove a lost trial's folder (it runs again from scratch)."""
        shutil.rmtree(run_dir, ignore_errors=True)

    def release(self, handle) -> None:
        """Nothing to free: Ray schedules the CPUs."""

    def take_events(self, key: str) -> list[dict[str, Any]]:
        """The events of trial ``key`` received so far (the hub is drained at most every PUSH_SECONDS / 2)."""
        import ray

        now = time.monotonic()
        if now - self._drained >= PUSH_SECONDS / 2:
            self._drained = now
            for k, e in ray.get(self.hub.drain.remote()):
                self._events.setdefault(k, []).append(e)
        return self._events.pop(key, [])

    def has_events(self, key: str) -> bool:
        """Events of ``key`` wait in the hub or here (read once more before the trial counts as done)."""
        import ray

        for k, e in ray.get(self.hub.drain.remote()):
            self._events.setdefault(k, []).append(e)
        return bool(self._events.get(key))

    def close(self) -> None:
        """Let go of the cluster (a cluster this process joined is left running)."""
        import ray

        try:
            ray.kill(self.hub)
        except Exception:
            pass
        if self._owns_connection:
            ray.shutdown()
