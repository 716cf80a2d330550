"""Test helpers that look inside a training run."""

from __future__ import annotations

from typing import Any, Callable


def wrap_optimizer_step(trainer, events: list[dict[str, Any]], hook: Callable) -> None:
    """From the run's start, call ``hook(grads, real_step)`` in place of the optimizer's step (it returns what the
    step returns); every event goes to ``events``. The trainer builds its optimizer when the run starts, so the step
    is wrapped when the ``started`` event comes."""

    def on_event(e: dict[str, Any]) -> None:
        events.append(e)
        if e["event"] == "started":
            real_step = trainer.optimizer.step
            trainer.optimizer.step = lambda grads: hook(grads, real_step)

    trainer.emit = on_event
