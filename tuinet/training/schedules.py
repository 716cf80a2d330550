"""Learning-rate schedules as a factor on a base learning rate, following torch.optim.lr_scheduler.

The trainer sets ``lr = base_lr * factor(step)`` before each step. When the user changes the learning rate while a
schedule runs, the base is rescaled so the current lr becomes the requested one and the schedule's shape goes on
from there. State (base lr, plateau counters) is saved in checkpoints so a resumed run continues the same curve.
"""

from __future__ import annotations

import math
from typing import Any


class Schedule:
    """Base: constant factor 1.

    Args:
        steps_per_epoch: optimizer steps in one epoch.
        epochs: planned epochs.
    """

    name = "constant"

    def __init__(self, steps_per_epoch: int, epochs: int, **_: Any):
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.epochs = max(1, epochs)
        self.total_steps = self.steps_per_epoch * self.epochs

    def factor(self, step: int) -> float:
        """Multiplier on the base lr for the 0-based global ``step``."""
        return 1.0

    def on_epoch_end(self, val_loss: float | None) -> bool:
        """Called after validation; return True when the factor changed (plateau)."""
        return False

    def state(self) -> dict[str, Any]:
        """JSON state for checkpoints."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


class StepSchedule(Schedule):
    """Multiply by ``gamma`` every ``step_size`` epochs (StepLR)."""

    name = "step"

    def __init__(self, steps_per_epoch, epochs, step_size: int = 1, gamma: float = 0.5, **_):
        super().__init__(steps_per_epoch, epochs)
        self.step_size, self.gamma = max(1, step_size), gamma

    def factor(self, step):
        return self.gamma ** ((step // self.steps_per_epoch) // self.step_size)


class ExponentialSchedule(Schedule):
    """Multiply by ``gamma`` every epoch (ExponentialLR)."""

    name = "exponential"

    def __init__(self, steps_per_epoch, epochs, gamma: float = 0.5, **_):
        super().__init__(steps_per_epoch, epochs)
        self.gamma = gamma

    def factor(self, step):
        return self.gamma ** (step // self.steps_per_epoch)


class CosineSchedule(Schedule):
    """Cosine annealing from the base lr to 0 over the whole run, per step (CosineAnnealingLR, eta_min 0)."""

    name = "cosine"

    def factor(self, step):
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


class OneCycleSchedule(Schedule):
    """One-cycle policy as torch's OneCycleLR (cos annealing, pct_start 0.3, div_factor 25, final_div 1e4).

    The base lr is the peak (``max_lr``): it warms up from max_lr/25 to max_lr over the first 30% of steps, then
    anneals to max_lr/(25*1e4).
    """

    name = "onecycle"

    def __init__(self, steps_per_epoch, epochs, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, **_):
        super().__init__(steps_per_epoch, epochs)
        self.initial = 1.0 / div_factor
        self.final = self.initial / final_div_factor
        self.up_end = float(pct_start * self.total_steps) - 1
        self.down_end = float(self.total_steps - 1)

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def factor(self, step):
        step = min(step, self.total_steps - 1)
        if step <= self.up_end:
            pct = step / self.up_end if self.up_end > 0 else 1.0
            return self._cos(self.initial, 1.0, pct)
        span = self.down_end - self.up_end
        pct = (step - self.up_end) / span if span > 0 else 1.0
        return self._cos(1.0, self.final, pct)


class PlateauSchedule(Schedule):
    """Multiply by ``plateau_factor`` when validation loss has not improved for ``plateau_patience`` epochs."""

    name = "plateau"

    def __init__(self, steps_per_epoch, epochs, plateau_factor: float = 0.1, plateau_patience: int = 2,
                 min_delta: float = 0.0, **_):
        super().__init__(steps_per_epoch, epochs)
        self.reduce, self.patience, self.min_delta = plateau_factor, plateau_patience, min_delta
        self.current = 1.0
        self.best = math.inf
        self.bad = 0

    def factor(self, step):
        return self.current

    def on_epoch_end(self, val_loss):
        if val_loss is None or not math.isfinite(val_loss):
            return False
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
            return False
        self.bad += 1
        if self.bad > self.patience:
            self.current *= self.reduce
            self.bad = 0
            return True
        return False

    def state(self):
        return {"current": self.current, "best": self.best if math.isfinite(self.best) else None, "bad": self.bad}

    def load_state(self, state):
        self.current = state.get("current", 1.0)
        self.best = state.get("best") if state.get("best") is not None else math.inf
        self.bad = state.get("bad", 0)


SCHEDULE_TYPES = {cls.name: cls for cls in (Schedule, StepSchedule, ExponentialSchedule, CosineSchedule,
                                             OneCycleSchedule, PlateauSchedule)}


def make_schedule(name: str, steps_per_epoch: int, epochs: int, **options: Any) -> Schedule:
    """A schedule by name: constant, step, exponential, cosine, onecycle, plateau."""
    return SCHEDULE_TYPES[name](steps_per_epoch, epochs, **options)
