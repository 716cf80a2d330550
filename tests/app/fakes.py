"""A scripted session for app tests that need no real training: it records the commands the app sends and answers
them with the events a trainer would send."""

from __future__ import annotations

import threading
from typing import Any, Iterable

from tuinet.protocol import FINAL_EVENTS, PICTURE_EVENTS, Listener, make_event, validate_command


def opening(dataset: str = "spiral", lr: float = 0.001, steps: int = 3) -> list[dict[str, Any]]:
    """The events of a run's start: started (a 2-D classification dataset unless ``dataset`` says otherwise),
    compiled, then ``steps`` logged steps."""
    two_d = dataset in ("spiral", "circles", "moons")
    ds = {"name": dataset, "task": "regression" if dataset == "housing" else "classification",
          "input_shape": [2] if two_d else [28, 28, 1], "class_names": ["0", "1"]}
    events = [make_event("started", name=f"mlp-{dataset}", run_dir=f"runs/mlp-{dataset}",
                         config={"model": "mlp", "dataset": dataset}, dataset=ds, model="",
                         layers=[{"name": "dense_1", "kind": "Dense", "output_shape": [2], "params": 6}],
                         steps_per_epoch=10, total_steps=1000, epochs=100, batch_size=32, optimizer="adam",
                         hyperparams={"lr": lr}, lr=lr, step=0, epoch=0),
              make_event("compiled", seconds=0.1)]
    for i in range(1, steps + 1):
        events.append(make_event("step", step=5 * i, epoch=0.5 * i, loss=1.0 / i, accuracy=0.5, lr=lr,
                                 samples_per_second=1000.0))
    return events


def finished() -> dict[str, Any]:
    """The ``finished`` event that ends a scripted run (after :func:`opening`)."""
    return make_event("finished", test_accuracy=0.9, test_loss=0.3, epochs=1, train_seconds=1.0,
                      samples_per_second=1000.0, run_dir="runs/x")


class FakeSession:
    """A :class:`tuinet.protocol.Session` with no trainer behind it.

    ``start()`` emits the scripted ``events`` (from the thread that calls it, as a training thread would); ``emit``
    sends more. Every command is validated and kept in ``sent``; while the fake "runs", each command is answered
    with the event that confirms it (``paused`` for pause, ``lr_changed`` for scale_lr …), unless ``answer`` is
    False; ``stop`` ends the run with a ``stopped`` event.

    Args:
        events: the events to emit on start.
        answer: confirm commands as a trainer would.
        started: True for a session that was started before the app attached (the app then replays its history
            and does not start it).
    """

    def __init__(self, events: Iterable[dict[str, Any]] = (), *, answer: bool = True, started: bool = False):
        self.script = list(events)
        self.answer = answer
        self.sent: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, dict[str, Any]] = {}
        self.starts = 0
        self.run: str | None = None  # the run's name, as a RemoteSession knows it
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._started = False
        self._paused = False
        self._lr = 0.001
        self._optimizer = "adam"
        self._step = 0
        if started:
            self.start()

    # --- the Session protocol ---------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once started."""
        return self._started

    @property
    def running(self) -> bool:
        """True from start until a final event."""
        return self._started and not any(k in self.last for k in FINAL_EVENTS)

    @property
    def state(self) -> dict[str, Any]:
        """The fake trainer's state."""
        status = next((k for k in FINAL_EVENTS if k in self.last), "paused" if self._paused else "running")
        return {"status": status, "paused": self._paused, "lr": self._lr, "optimizer": self._optimizer,
                "step": self._step}

    def start(self) -> None:
        """Emit the scripted events."""
        self.starts += 1
        self._started = True
        for e in self.script:
            self.emit(e)

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn`` for every event emitted from now on."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def send(self, command: dict[str, Any]) -> None:
        """Record ``command``; answer it as a trainer would."""
        self.sent.append(validate_command(command))
        if self.answer and self.running:
            for e in self._answers(command):
                self.emit(e)

    def join(self, timeout: float | None = None) -> bool:
        """True once the run ended (nothing to wait for: it ends when told)."""
        return not self.running

    # --- scripting ----------------------------------------------------------------------------------------------------

    def emit(self, e: dict[str, Any]) -> None:
        """Record ``e`` and pass it to the listeners."""
        kind = e["event"]
        with self._lock:
            self.last[kind] = e
            if kind not in PICTURE_EVENTS:
                self.history.append(e)
            listeners = list(self._listeners)
            self._step = e.get("step", self._step)
            self._lr = e.get("lr", self._lr)
        for fn in listeners:
            fn(e)

    def kinds(self) -> list[str]:
        """The kinds of the commands received, oldest first."""
        return [c["command"] for c in self.sent]

    def _answers(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        kind, step = cmd["command"], self._step
        if kind == "pause" or (kind == "toggle_pause" and not self._paused):
            self._paused = True
            return [make_event("paused", reason="user", step=step)]
        if kind in ("resume", "toggle_pause"):
            self._paused = False
            return [make_event("resumed", step=step)]
        if kind in ("scale_lr", "set_lr"):
            old = self._lr
            lr = old * cmd["factor"] if kind == "scale_lr" else cmd["lr"]
            return [make_event("lr_changed", lr=lr, old_lr=old, source="user", step=step)]
        if kind == "set_optimizer":
            self._optimizer = cmd["name"]
            lr = cmd.get("lr", self._lr)
            return [make_event("optimizer_changed", name=cmd["name"], requested=cmd["name"], hyperparams={"lr": lr},
                               describe=cmd["name"], previous="adam", state="fresh", step=step)]
        if kind == "save":
            return [make_event("checkpoint_saved", path="runs/fake/latest.npz", kind="latest", step=step, epoch=0)]
        if kind == "evaluate":
            return [make_event("evaluated", split="test", step=step, loss=0.5, accuracy=0.75)]
        if kind == "rollback":
            lr = self._lr * cmd.get("factor", 0.5)
            answers = [make_event("rolled_back", to_step=step, lr=lr)]
            if self._paused:
                self._paused = False
                answers.append(make_event("resumed", step=step))
            return answers
        if kind == "step":
            from tests.app.step_fixture import step_detail

            if not self._paused:
                return [make_event("log", level="error", message="command step refused: steps one at a time only "
                                                                  "while paused")]
            self._step = step + cmd.get("count", 1)
            return [{**step_detail(self._step), "time": make_event("log")["time"]}]
        if kind == "stop":
            return [make_event("stopped", reason=cmd.get("reason", "user"), step=step, epoch=0,
                               checkpoint="runs/fake/latest.npz")]
        return []
